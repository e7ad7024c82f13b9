//! Logging to standard error, and the log line of each session event.

use std::io::Write;

use cqlmirror_core::proxy::SessionId;
use cqlmirror_core::session::{Event, Level};

/// Logs to standard error at info level (debug with `--debug`); `RUST_LOG` overrides. With
/// `json`, each line is a JSON object: `time`, `level`, `message`, and `connection` for the
/// lines of one client connection.
pub fn init(debug: bool, json: bool) {
    let level = if debug { "debug" } else { "info" };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    builder.format_target(false);
    if json {
        builder.format(|buf, record| {
            let mut fields = Fields(String::new());
            let _ = record.key_values().visit(&mut fields);
            writeln!(
                buf,
                "{{\"time\":\"{}\",\"level\":\"{}\",\"message\":{}{}}}",
                buf.timestamp_millis(),
                record.level(),
                json_string(&record.args().to_string()),
                fields.0
            )
        });
    }
    builder.init();
}

/// A log record's key-values as JSON members (`,"key":value`).
struct Fields(String);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let value = match value.to_u64() {
            Some(n) => n.to_string(),
            None => json_string(&value.to_string()),
        };
        self.0
            .push_str(&format!(",{}:{value}", json_string(key.as_str())));
        Ok(())
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// Logs a session event at its level.
pub fn log_event(session: SessionId, event: &Event) {
    let level = match event.level() {
        Level::Error => log::Level::Error,
        Level::Warn => log::Level::Warn,
        Level::Info => log::Level::Info,
        Level::Debug => log::Level::Debug,
    };
    log::log!(level, connection = session.0; "connection {session}: {event}");
}
