//! Certificates and keys are read again on SIGHUP, for rotation during a migration of weeks:
//! connections open keep the TLS session they have, new ones use the new files. A reload that
//! fails (a missing file, a key that does not match) is logged and changes nothing.

use std::io;
use std::sync::{Arc, Mutex};
use std::thread;

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

    /// Reloads on every SIGHUP (which would otherwise end the process), on a thread of its
    /// own.
    pub fn reload_on_sighup(self: &Arc<Self>, options: TlsArgs) -> io::Result<()> {
        let mut signals = Signals::new([SIGHUP])?;
        let holder = Arc::clone(self);
        thread::Builder::new()
            .name("sighup".into())
            .spawn(move || {
                for _ in signals.forever() {
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
