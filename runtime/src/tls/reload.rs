//! Certificates and keys are read again on SIGHUP, and when one of the files changes, for
//! rotation during a migration of weeks: connections open keep the TLS session they have, new
//! ones use the new files. A reload that fails (a missing file, a key that does not match) is
//! logged and changes nothing.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;

use super::TlsSettings;
use crate::cli::TlsArgs;

/// The TLS settings in force.
#[derive(Debug)]
pub struct TlsHolder {
    current: Mutex<Arc<TlsSettings>>,
}

impl TlsHolder {
    pub fn new(settings: TlsSettings) -> Arc<Self> {
        Arc::new(Self {
            current: Mutex::new(Arc::new(settings)),
        })
    }

    /// The settings for a connection opened now.
    pub fn current(&self) -> Arc<TlsSettings> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace(&self, settings: TlsSettings) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }

    /// Reads the files `options` name again, and on success uses them from now on.
    pub fn reload(&self, options: &TlsArgs) -> Result<String, String> {
        let settings = options.settings()?;
        let described = settings.describe();
        self.replace(settings);
        Ok(described)
    }

    /// Reloads when one of the files `options` names changes (its modification time, its
    /// size, or whether it exists), checked every `period` on a thread of its own. A file
    /// being rewritten may be caught half-written: that reload fails, changes nothing, and
    /// the next check, which sees the file changed again, reads it whole.
    pub fn reload_on_change(
        self: &Arc<Self>,
        options: TlsArgs,
        period: Duration,
    ) -> io::Result<()> {
        let files = options.files();
        if files.is_empty() {
            return Ok(());
        }
        let holder = Arc::clone(self);
        thread::Builder::new()
            .name("tls-files".into())
            .spawn(move || {
                let mut seen = stamps(&files);
                loop {
                    thread::sleep(period);
                    let now = stamps(&files);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match holder.reload(&options) {
                        Ok(described) => log::info!(
                            "TLS files changed: certificates and keys read again; new connections use them ({described}); open connections keep theirs"
                        ),
                        Err(e) => log::error!(
                            "TLS files changed, but cannot be used: {e}; the ones in use stay"
                        ),
                    }
                }
            })?;
        Ok(())
    }

    /// Reloads on every SIGHUP (which would otherwise end the process), on a thread of its
    /// own. Without TLS there is nothing to read: the signal is only kept from ending the
    /// process (the config file, if any, has its own reader).
    pub fn reload_on_sighup(self: &Arc<Self>, options: TlsArgs) -> io::Result<()> {
        let mut signals = Signals::new([SIGHUP])?;
        let holder = Arc::clone(self);
        let current = self.current();
        let any_tls = !options.files().is_empty()
            || current.clients.is_some()
            || current.clusters.iter().any(Option::is_some);
        thread::Builder::new()
            .name("sighup".into())
            .spawn(move || {
                for _ in signals.forever() {
                    if !any_tls {
                        log::debug!("SIGHUP: no TLS to set up again");
                        continue;
                    }
                    match holder.reload(&options) {
                        Ok(now) => log::info!(
                            "SIGHUP: certificates and keys read again; new connections use them ({now}); open connections keep theirs"
                        ),
                        Err(e) => log::error!(
                            "SIGHUP: cannot reload the TLS files: {e}; the ones in use stay"
                        ),
                    }
                }
            })?;
        Ok(())
    }
}

/// What tells a file changed: its modification time and size, or its absence.
fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}
