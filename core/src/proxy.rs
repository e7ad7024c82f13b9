//! Proxy-level state shared by every session: the configuration, the prepared-statement map,
//! the write-timestamp generator, what was learned about the clusters, and the counters that
//! decide when a failure is worth a log line.
//!
//! Sessions hold an `Arc<Proxy>` and read or update it explicitly; nothing here is global, so
//! a simulation can run several proxies side by side.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::config::{Config, Upstream};
use crate::frame::ProtocolVersion;
use crate::prepared::PreparedCache;
use crate::session::{FailureKind, Session, SessionId};

/// A reading of the wall clock taken together with the monotonic clock, given by the driver.
///
/// The core never reads a clock; it turns the `now: Instant` of each call into wall-clock time
/// through this anchor, for the write timestamps it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    pub instant: Instant,
    /// Microseconds since the Unix epoch at `instant`.
    pub unix_micros: i64,
}

impl WallClock {
    pub fn new(instant: Instant, system: SystemTime) -> Self {
        let unix_micros = match system.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Self {
            instant,
            unix_micros,
        }
    }

    /// Wall-clock microseconds at `now`.
    pub fn micros_at(&self, now: Instant) -> i64 {
        let delta = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        if now >= self.instant {
            self.unix_micros.saturating_add(delta(now - self.instant))
        } else {
            self.unix_micros.saturating_sub(delta(self.instant - now))
        }
    }
}

/// The state shared by all sessions of one proxy.
#[derive(Debug)]
pub struct Proxy {
    config: Config,
    clock: Mutex<WallClock>,
    last_timestamp: AtomicI64,
    prepared: Mutex<PreparedCache>,
    next_session: AtomicU64,
    /// Highest protocol version each cluster accepted so far (starts at the highest we speak).
    max_version: [AtomicU8; 2],
    /// Per cluster and failure kind: whether the current run of failures was already reported.
    reported: [[AtomicBool; FailureKind::COUNT]; 2],
    /// Per cluster: a client's answer waited `--wait-timeout` for it in vain and it has not
    /// answered anything since, so clients do not wait for it at all.
    stalled: [AtomicBool; 2],
    stats: Stats,
}

/// Counters kept by the proxy, readable at any time.
#[derive(Debug, Default)]
pub struct Stats {
    pub sessions_opened: AtomicU64,
    pub sessions_closed: AtomicU64,
    /// Requests whose answer reached the client.
    pub requests: AtomicU64,
    /// Requests that failed on one cluster, indexed by [`Upstream::index`].
    pub failed: [AtomicU64; 2],
    /// Writes acknowledged to the client that did not reach the target.
    pub missed_target_writes: AtomicU64,
}

impl Proxy {
    /// A proxy for `config`; fails with a message naming the setting when it is unusable.
    pub fn new(config: Config, clock: WallClock) -> Result<Arc<Self>, String> {
        config.validate()?;
        let highest = config
            .protocol_versions
            .iter()
            .max()
            .map_or(5, |v| v.number());
        Ok(Arc::new(Self {
            prepared: Mutex::new(PreparedCache::new(config.prepared_cache_size)),
            config,
            clock: Mutex::new(clock),
            last_timestamp: AtomicI64::new(i64::MIN),
            next_session: AtomicU64::new(1),
            max_version: [AtomicU8::new(highest), AtomicU8::new(highest)],
            reported: Default::default(),
            stalled: Default::default(),
            stats: Stats::default(),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A session for a newly accepted client connection. Drain its actions right away: it
    /// asks for its backend connections.
    pub fn new_session(self: &Arc<Self>, now: Instant) -> Session {
        let id = SessionId(self.next_session.fetch_add(1, Ordering::Relaxed));
        self.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        Session::new(Arc::clone(self), id, now)
    }

    /// Re-anchors wall-clock time (e.g. after the system clock was corrected).
    pub fn set_wall_clock(&self, clock: WallClock) {
        *lock(&self.clock) = clock;
    }

    /// A write timestamp for `now`: wall-clock microseconds, strictly increasing across the
    /// proxy so that two writes never share one (as drivers' monotonic generators do).
    pub fn write_timestamp(&self, now: Instant) -> i64 {
        let wall = lock(&self.clock).micros_at(now);
        let mut last = self.last_timestamp.load(Ordering::Relaxed);
        loop {
            let next = wall.max(last.saturating_add(1));
            match self.last_timestamp.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    pub(crate) fn prepared(&self) -> MutexGuard<'_, PreparedCache> {
        lock(&self.prepared)
    }

    /// Protocol versions a client may use now: the configured ones that no cluster refused.
    pub fn accepted_versions(&self) -> Vec<ProtocolVersion> {
        let cap = self
            .max_version
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .min()
            .unwrap_or(5);
        self.config
            .protocol_versions
            .iter()
            .copied()
            .filter(|v| v.number() <= cap)
            .collect()
    }

    /// Records that `upstream` refused `version`: later clients are refused it up front.
    pub(crate) fn learn_refused_version(&self, upstream: Upstream, version: ProtocolVersion) {
        self.max_version[upstream.index()]
            .fetch_min(version.number().saturating_sub(1), Ordering::Relaxed);
    }

    /// Counts a failure and says whether it is the first of its kind since `upstream` last
    /// worked, which is when it deserves a log line.
    pub(crate) fn record_failure(&self, upstream: Upstream, kind: FailureKind) -> bool {
        self.stats.failed[upstream.index()].fetch_add(1, Ordering::Relaxed);
        !self.reported[upstream.index()][kind.index()].swap(true, Ordering::Relaxed)
    }

    /// Counts a request that failed on `upstream` because its connection failed (reported
    /// once, when the connection failed).
    pub(crate) fn count_failed(&self, upstream: Upstream) {
        self.stats.failed[upstream.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_closed(&self) {
        self.stats.sessions_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// A client's answer waited `--wait-timeout` for `upstream` in vain; true if that is news.
    pub(crate) fn mark_stalled(&self, upstream: Upstream) -> bool {
        !self.stalled[upstream.index()].swap(true, Ordering::Relaxed)
    }

    /// Whether `upstream` is known not to answer promptly: clients do not wait for it.
    pub(crate) fn is_stalled(&self, upstream: Upstream) -> bool {
        self.stalled[upstream.index()].load(Ordering::Relaxed)
    }

    /// `upstream` answered a request: the next failure of any kind is news again.
    pub(crate) fn record_success(&self, upstream: Upstream) {
        if self.stalled[upstream.index()].load(Ordering::Relaxed) {
            self.stalled[upstream.index()].store(false, Ordering::Relaxed);
        }
        for flag in &self.reported[upstream.index()] {
            if flag.load(Ordering::Relaxed) {
                flag.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// Locks a mutex, recovering from poisoning: the state behind it stays consistent because
/// every critical section is a single map update.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;
    use std::time::Duration;

    // One real instant as the base of the test's timeline; only offsets from it matter.
    #[allow(clippy::disallowed_methods)]
    fn proxy() -> Arc<Proxy> {
        let ep = |h: &str| {
            vec![Endpoint {
                host: h.into(),
                port: 9042,
            }]
        };
        let clock = WallClock {
            instant: Instant::now(),
            unix_micros: 1_000_000,
        };
        Proxy::new(Config::new(ep("s"), ep("t")), clock).unwrap()
    }

    #[test]
    fn timestamps_follow_the_wall_clock_and_never_repeat() {
        let p = proxy();
        let t0 = lock(&p.clock).instant;
        assert_eq!(p.write_timestamp(t0), 1_000_000);
        assert_eq!(p.write_timestamp(t0), 1_000_001);
        assert_eq!(p.write_timestamp(t0 + Duration::from_secs(1)), 2_000_000);
        // A clock moved backwards never makes timestamps go back.
        p.set_wall_clock(WallClock {
            instant: t0,
            unix_micros: 0,
        });
        assert_eq!(p.write_timestamp(t0 + Duration::from_secs(1)), 2_000_001);
    }

    #[test]
    fn refused_versions_narrow_what_clients_get() {
        let p = proxy();
        assert_eq!(p.accepted_versions(), ProtocolVersion::ALL.to_vec());
        p.learn_refused_version(Upstream::Target, ProtocolVersion::V5);
        assert_eq!(
            p.accepted_versions(),
            vec![ProtocolVersion::V3, ProtocolVersion::V4]
        );
    }

    #[test]
    fn failures_are_reported_once_per_kind_until_success() {
        let p = proxy();
        assert!(p.record_failure(Upstream::Target, FailureKind::Timeout));
        assert!(!p.record_failure(Upstream::Target, FailureKind::Timeout));
        assert!(p.record_failure(Upstream::Target, FailureKind::Closed));
        assert!(p.record_failure(Upstream::Source, FailureKind::Timeout));
        p.record_success(Upstream::Target);
        assert!(p.record_failure(Upstream::Target, FailureKind::Timeout));
        assert_eq!(p.stats().failed[1].load(Ordering::Relaxed), 4);
    }
}
