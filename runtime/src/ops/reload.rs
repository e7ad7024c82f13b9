//! SIGHUP reads the config file again: what can change while the proxy runs is applied (the
//! wait policy, the primary, the read mode, the shadow sample, the write order), every other change is logged as needing a restart, and a file that does not
//! read (bad TOML, an unknown key) changes nothing.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use clap::CommandFactory;
use cqlmirror_core::config::WaitPolicy;
use cqlmirror_core::proxy::Proxy;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;

use crate::cli::Cli;
use crate::cli::effective::{EffectiveOptions, is_secret};
use crate::cli::file::{self, FileOption};

/// The file's options by key.
type Snapshot = BTreeMap<String, Vec<String>>;

fn snapshot(options: Vec<FileOption>) -> Snapshot {
    options.into_iter().map(|o| (o.key, o.values)).collect()
}

/// Watches for SIGHUP on a thread of its own.
pub fn on_sighup(path: PathBuf, effective: EffectiveOptions, proxy: Arc<Proxy>) -> io::Result<()> {
    let command = Cli::command();
    let mut last = snapshot(file::read(&path, &command).unwrap_or_default());
    let mut signals = Signals::new([SIGHUP])?;
    thread::Builder::new()
        .name("config-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match file::read(&path, &command) {
                    Ok(options) => {
                        let now = snapshot(options);
                        apply(&path, &last, &now, &effective, &proxy);
                        last = now;
                    }
                    Err(e) => log::error!("SIGHUP: {e}; nothing changed"),
                }
            }
        })?;
    Ok(())
}

fn shown(key: &str, values: Option<&Vec<String>>) -> String {
    match values {
        None => "(not set)".into(),
        Some(_) if is_secret(key) => "***".into(),
        Some(v) => v.join(","),
    }
}

/// Applies the differences between two readings of the file.
fn apply(
    path: &std::path::Path,
    before: &Snapshot,
    after: &Snapshot,
    effective: &EffectiveOptions,
    proxy: &Proxy,
) {
    let file = path.display();
    let mut changed = 0;
    for key in before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (old, new) = (before.get(key), after.get(key));
        if old == new {
            continue;
        }
        changed += 1;
        let overridden = effective
            .0
            .iter()
            .find(|o| &o.name == key)
            .is_some_and(|o| matches!(o.source, "command line" | "environment"));
        let (old_text, new_text) = (shown(key, old), shown(key, new));
        if overridden {
            log::info!(
                "config file {file}: {key} changed ({old_text} -> {new_text}), but the command line or the environment sets it: ignored"
            );
        } else if key == "wait" {
            match new.and_then(|v| v.first()).map(|v| parse_bool(v)) {
                Some(Some(wait)) => {
                    let policy = if wait {
                        WaitPolicy::Both
                    } else {
                        WaitPolicy::Primary
                    };
                    proxy.set_wait_policy(policy);
                    log::info!(
                        "config file {file}: wait {old_text} -> {new_text}: applied to new requests"
                    );
                }
                _ => log::warn!(
                    "config file {file}: wait {old_text} -> {new_text}: not a boolean (or removed); the wait policy stays as it is"
                ),
            }
        } else if let Some(applied) = apply_read_setting(key, new.and_then(|v| v.first()), proxy) {
            match applied {
                Ok(()) => log::info!(
                    "config file {file}: {key} {old_text} -> {new_text}: applied to new requests"
                ),
                Err(why) => log::warn!(
                    "config file {file}: {key} {old_text} -> {new_text}: {why}; it stays as it is"
                ),
            }
        } else {
            log::warn!(
                "config file {file}: {key} changed ({old_text} -> {new_text}): takes effect after a restart"
            );
        }
    }
    if changed == 0 {
        log::info!("SIGHUP: config file {file} read again: nothing changed");
    }
}

/// Applies `primary`, `read-mode`, `shadow-sample` or `write-order` from the file; `None` for
/// other keys.
fn apply_read_setting(
    key: &str,
    value: Option<&String>,
    proxy: &Proxy,
) -> Option<Result<(), String>> {
    use cqlmirror_core::config::Upstream;
    use cqlmirror_core::routing::ReadMode;
    let value = value.map(String::as_str);
    Some(match key {
        "primary" => match value {
            Some("source") => {
                proxy.set_primary(Upstream::Source);
                Ok(())
            }
            Some("target") => {
                proxy.set_primary(Upstream::Target);
                Ok(())
            }
            _ => Err("not `source` or `target` (or removed)".to_owned()),
        },
        "read-mode" => match value.and_then(ReadMode::parse) {
            Some(mode) => {
                proxy.set_read_mode(mode);
                Ok(())
            }
            None => Err("not `primary`, `shadow` or `compare` (or removed)".to_owned()),
        },
        "shadow-sample" => match value.and_then(|v| v.parse::<f64>().ok()) {
            Some(f) if (0.0..=1.0).contains(&f) => {
                proxy.shadow().set_fraction(f);
                Ok(())
            }
            _ => Err("not a fraction from 0 to 1 (or removed)".to_owned()),
        },
        "write-order" => match value.and_then(cqlmirror_core::config::WriteOrder::parse) {
            Some(order) => {
                proxy.set_write_order(order);
                Ok(())
            }
            None => Err("not `parallel` or `primary-first` (or removed)".to_owned()),
        },
        _ => return None,
    })
}

/// `value` as the command line reads a boolean (`--wait`'s parser).
fn parse_bool(value: &str) -> Option<bool> {
    use clap::builder::TypedValueParser;
    clap::builder::BoolishValueParser::new()
        .parse_ref(&Cli::command(), None, std::ffi::OsStr::new(value))
        .ok()
}
