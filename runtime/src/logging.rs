//! Logging to standard error, and the log line of each session event.

use cqlmirror_core::proxy::SessionId;
use cqlmirror_core::session::{Event, Level};

/// Logs to standard error at info level (debug with `--debug`); `RUST_LOG` overrides.
pub fn init(debug: bool) {
    let level = if debug { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .init();
}

/// Logs a session event at its level.
pub fn log_event(session: SessionId, event: &Event) {
    let level = match event.level() {
        Level::Error => log::Level::Error,
        Level::Warn => log::Level::Warn,
        Level::Info => log::Level::Info,
        Level::Debug => log::Level::Debug,
    };
    log::log!(level, "connection {session}: {event}");
}
