//! Client connections the proxy admits: at most `--max-connections` open at once, the rest
//! refused at once (closed) and counted, with one log line per interval however many arrive.
//!
//! The runtime asks [`Admission::admit`] for every accepted socket and keeps the returned
//! [`Admitted`] for as long as the connection lives; dropping it frees the place. Refusing at
//! a limit derived from the descriptor limit keeps the proxy's own backend connections and
//! control connections from failing with "too many open files", which would look like an
//! unreachable cluster to every client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::report::Reporter;

/// Refusals (and accept failures) are logged at most once in this time, with a count.
pub const REFUSAL_REPORT_INTERVAL: Duration = crate::report::REPORT_WINDOW;

/// Descriptors each client connection may hold: its own and one per cluster.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 3;

/// Descriptors kept for everything else: listeners, control connections, logs, name
/// resolution.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The `--max-connections` that a descriptor limit allows.
pub fn max_connections_for(descriptor_limit: u64) -> usize {
    let usable = descriptor_limit.saturating_sub(RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION;
    usize::try_from(usable).unwrap_or(usize::MAX).max(1)
}

/// The proxy's count of open client connections against its limit.
#[derive(Debug)]
pub struct Admission {
    limit: usize,
    open: AtomicUsize,
    refused: AtomicU64,
    refusals: Reporter,
    accept_failures: Reporter,
}

/// One admitted client connection; its place is freed when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client connection refused because `--max-connections` are open.
#[derive(Debug)]
pub struct Refused {
    /// The line to log now, if one is due (see [`REFUSAL_REPORT_INTERVAL`]).
    pub report: Option<String>,
}

impl Admission {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            refusals: Reporter::new(1),
            accept_failures: Reporter::new(1),
        })
    }

    /// Takes a place for a newly accepted client connection, or refuses it.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Result<Admitted, Refused> {
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.limit).then_some(open + 1)
            });
        if taken.is_ok() {
            return Ok(Admitted {
                admission: Arc::clone(self),
            });
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let report = self.refusals.note(now).map(|count| {
            format!(
                "refused {count} client connection{} since the last report: --max-connections {} are open (raise --max-connections, and the descriptor limit with it, or add proxy instances)",
                if count == 1 { "" } else { "s" },
                self.limit
            )
        });
        Err(Refused { report })
    }

    /// The refusals not logged yet, once the interval since the last line is over: call it
    /// now and then, so that the count of a burst is logged even if no refusal follows it.
    pub fn pending_report(&self, now: Instant) -> Option<String> {
        self.refusals.flush(now).map(|count| {
            format!(
                "refused {count} client connection{} since the last report: --max-connections {} are open",
                if count == 1 { "" } else { "s" },
                self.limit
            )
        })
    }

    /// Accepting a connection failed (e.g. out of descriptors): the line to log now, if one
    /// is due, so that a persistent failure does not flood the log.
    pub fn accept_failed(&self, error: &str, now: Instant) -> Option<String> {
        self.accept_failures.note(now).map(|count| {
            format!(
                "accepting a client connection failed {count} time{} since the last report: {error} (the descriptor limit may be too low for --max-connections {})",
                if count == 1 { "" } else { "s" },
                self.limit
            )
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Client connections refused since start-up.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_places_on_drop() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let admission = Admission::new(2);
        let a = admission.admit(now).unwrap();
        let _b = admission.admit(now).unwrap();
        let refused = admission.admit(now).unwrap_err();
        assert!(
            refused
                .report
                .as_deref()
                .is_some_and(|r| r.contains("refused 1 client connection since")),
            "{refused:?}"
        );
        assert_eq!(admission.open(), 2);
        drop(a);
        assert_eq!(admission.open(), 1);
        let _c = admission.admit(now).unwrap();
        assert_eq!(admission.refused(), 1);
    }

    #[test]
    fn refusals_are_reported_once_per_interval_with_their_count() {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let admission = Admission::new(0);
        let mut lines = Vec::new();
        // A hundred refusals a second for thirty seconds.
        for i in 0..3000u64 {
            let at = now + Duration::from_millis(i * 10);
            if let Some(line) = admission.admit(at).unwrap_err().report {
                lines.push(line);
            }
        }
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].contains("refused 1 client connection since"));
        assert!(
            lines[1].contains("refused 1000 client connections"),
            "{}",
            lines[1]
        );
        assert_eq!(admission.refused(), 3000);
        // The rest of the burst is logged once its interval is over, with nothing after it.
        let end = now + Duration::from_millis(29_990);
        assert!(admission.pending_report(end).is_none(), "too early");
        let summary = admission
            .pending_report(end + REFUSAL_REPORT_INTERVAL)
            .unwrap();
        assert!(
            summary.contains("refused 999 client connections"),
            "{summary}"
        );
        assert!(
            admission
                .pending_report(end + 3 * REFUSAL_REPORT_INTERVAL)
                .is_none()
        );
        let failures = (0..100)
            .filter_map(|i| {
                admission.accept_failed("Too many open files", now + Duration::from_millis(i * 100))
            })
            .count();
        assert_eq!(failures, 1);
    }

    #[test]
    fn the_default_limit_leaves_room_for_three_descriptors_each() {
        assert_eq!(max_connections_for(20_000), (20_000 - 64) / 3);
        assert_eq!(max_connections_for(1024), 320);
        assert_eq!(max_connections_for(10), 1);
    }
}
