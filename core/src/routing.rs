//! Where a request goes: a pure policy of what the request is and how the proxy is set up.
//!
//! Keeping this a function of values (no session state) makes the policy easy to test and to
//! change. Writes go to both clusters; reads go where the [`ReadMode`] says.
//!
//! Clusters have an identity ([`Upstream`]: source or target) and, per request, a [`Role`]:
//! the primary answers the client, the secondary mirrors it. Which cluster is primary is a
//! proxy-level setting that can change at run time; a request keeps the [`Route`] it got when
//! it arrived.

use crate::config::Upstream;
use crate::statement::Statement;

/// What a client request is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// OPTIONS, STARTUP, AUTH_RESPONSE before the connection is ready.
    Handshake,
    /// OPTIONS after the handshake: drivers' heartbeats.
    Heartbeat,
    /// SELECT and other statements that change nothing.
    Read,
    /// A read of a `system*` keyspace: each cluster's own, served by the primary alone.
    SystemRead,
    /// Data and schema writes, USE, access control: anything that changes a cluster or the
    /// connection's state.
    Write,
    /// PREPARE: both clusters must know every statement.
    Prepare,
    /// REGISTER for events.
    Register,
}

/// How reads (SELECT) are served. Writes always go to both clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadMode {
    /// The primary serves reads; the secondary never sees them (half the secondary's load
    /// during its bulk copy, and reads as fast as the primary alone).
    #[default]
    Primary,
    /// The primary serves reads; a sample of them also goes to the secondary, whose answer is
    /// compared and never waited for (see [`ShadowBudget`]).
    Shadow,
    /// Reads go to both clusters and the client waits for both; the answers are compared.
    Compare,
}

impl ReadMode {
    pub const ALL: [Self; 3] = [Self::Primary, Self::Shadow, Self::Compare];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Shadow => "shadow",
            Self::Compare => "compare",
        }
    }

    /// Parses a name as [`ReadMode::name`] gives it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl std::fmt::Display for ReadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a cluster is to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Its answer is the client's.
    Primary,
    /// It mirrors the request; its answer is compared, counted and otherwise dropped.
    Secondary,
}

impl Role {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The clusters a request is sent to and the one whose answer the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub primary: Upstream,
    pub secondary: Option<Upstream>,
    /// What the secondary's part is for.
    pub mirror: Mirror,
}

/// Why a request goes to the secondary too, which decides whether the client waits for it and
/// whether the answers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mirror {
    /// The secondary must apply it too (writes, PREPARE, the handshake): the client waits for
    /// it as the wait policy says; outcomes (success or ERROR) are compared.
    Apply,
    /// A shadowed read: the client never waits for the secondary; the answers are compared.
    Shadow,
    /// A compared read: the client waits for both answers, which are compared.
    Compare,
}

impl Route {
    /// Whether the request goes to `upstream`.
    pub fn includes(&self, upstream: Upstream) -> bool {
        self.role_of(upstream).is_some()
    }

    /// What `upstream` is to this request, if the request goes there.
    pub fn role_of(&self, upstream: Upstream) -> Option<Role> {
        if upstream == self.primary {
            Some(Role::Primary)
        } else if self.secondary == Some(upstream) {
            Some(Role::Secondary)
        } else {
            None
        }
    }
}

/// What a statement is to routing, with `keyspace` the connection's or the prepared
/// statement's when the statement names none: reads of the system keyspaces, other reads, and
/// writes (everything else, unknown statements included: the safe side).
pub fn class_of(statement: &Statement, keyspace: Option<&str>) -> RequestClass {
    if statement.reads_system(keyspace) {
        RequestClass::SystemRead
    } else if statement.kind.is_read() {
        RequestClass::Read
    } else {
        RequestClass::Write
    }
}

/// The routing policy. `shadowed` says whether this read is within the shadow budget (only
/// asked of reads in [`ReadMode::Shadow`]).
pub fn route(
    class: RequestClass,
    mode: ReadMode,
    primary: Upstream,
    shadowed: impl FnOnce() -> bool,
) -> Route {
    let mirrored = |mirror| Route {
        primary,
        secondary: Some(primary.other()),
        mirror,
    };
    let alone = Route {
        primary,
        secondary: None,
        mirror: Mirror::Apply,
    };
    match (class, mode) {
        (
            RequestClass::Handshake
            | RequestClass::Heartbeat
            | RequestClass::Write
            | RequestClass::Prepare
            | RequestClass::Register,
            _,
        ) => mirrored(Mirror::Apply),
        // The system keyspaces are each cluster's own (nodes, schema versions, its
        // auth tables): nothing to mirror or compare.
        (RequestClass::SystemRead, _) | (RequestClass::Read, ReadMode::Primary) => alone,
        (RequestClass::Read, ReadMode::Shadow) => {
            if shadowed() {
                mirrored(Mirror::Shadow)
            } else {
                alone
            }
        }
        (RequestClass::Read, ReadMode::Compare) => mirrored(Mirror::Compare),
    }
}

/// Keeps shadow reads within a budget: a fraction of the reads, and a bound on those in
/// flight, so that a slow secondary costs the proxy a bounded amount of memory and work and
/// the clients nothing. Deterministic (no random source): every n-th read, as the fraction
/// says.
#[derive(Debug)]
pub struct ShadowBudget {
    /// Reads shadowed, per million.
    per_million: std::sync::atomic::AtomicU32,
    max_in_flight: usize,
    /// Reads seen in shadow mode, for the sampling.
    seen: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Reads not shadowed because `max_in_flight` were.
    skipped: std::sync::atomic::AtomicU64,
}

/// One shadow read in flight: returned to the budget when dropped.
#[derive(Debug)]
pub struct ShadowPermit(std::sync::Arc<ShadowBudget>);

impl Drop for ShadowPermit {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ShadowBudget {
    /// `fraction` of the reads (clamped to 0..=1), at most `max_in_flight` at once.
    pub fn new(fraction: f64, max_in_flight: usize) -> Self {
        Self {
            per_million: std::sync::atomic::AtomicU32::new(Self::to_per_million(fraction)),
            max_in_flight,
            seen: Default::default(),
            in_flight: Default::default(),
            skipped: Default::default(),
        }
    }

    fn to_per_million(fraction: f64) -> u32 {
        if fraction.is_nan() {
            return 0;
        }
        (fraction.clamp(0.0, 1.0) * 1e6).round() as u32
    }

    pub fn fraction(&self) -> f64 {
        f64::from(self.per_million.load(std::sync::atomic::Ordering::Relaxed)) / 1e6
    }

    pub fn set_fraction(&self, fraction: f64) {
        self.per_million.store(
            Self::to_per_million(fraction),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Shadow reads in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads left unshadowed because the in-flight bound was reached.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A permit for the next read, if it is sampled and the bound allows.
    pub fn take(self: &std::sync::Arc<Self>) -> Option<ShadowPermit> {
        use std::sync::atomic::Ordering::Relaxed;
        let rate = u64::from(self.per_million.load(Relaxed));
        let n = self.seen.fetch_add(1, Relaxed);
        // Read n is sampled when the running count of sampled reads steps up at it.
        if rate == 0 || (n + 1) * rate / 1_000_000 == n * rate / 1_000_000 {
            return None;
        }
        let taken = self
            .in_flight
            .fetch_update(Relaxed, Relaxed, |now| {
                (now < self.max_in_flight).then_some(now + 1)
            })
            .is_ok();
        if taken {
            Some(ShadowPermit(std::sync::Arc::clone(self)))
        } else {
            self.skipped.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_ASKED: fn() -> bool = || panic!("the shadow budget is only asked in shadow mode");

    #[test]
    fn writes_and_the_handshake_go_to_both_with_the_primary_answering() {
        for class in [
            RequestClass::Handshake,
            RequestClass::Heartbeat,
            RequestClass::Write,
            RequestClass::Prepare,
            RequestClass::Register,
        ] {
            for mode in ReadMode::ALL {
                for primary in Upstream::BOTH {
                    let r = route(class, mode, primary, NOT_ASKED);
                    assert_eq!(r.primary, primary);
                    assert_eq!(r.mirror, Mirror::Apply);
                    assert_eq!(r.role_of(primary), Some(Role::Primary));
                    assert_eq!(r.role_of(primary.other()), Some(Role::Secondary));
                }
            }
        }
    }

    #[test]
    fn reads_follow_the_read_mode() {
        for primary in Upstream::BOTH {
            let r = route(RequestClass::Read, ReadMode::Primary, primary, NOT_ASKED);
            assert_eq!((r.primary, r.secondary), (primary, None));
            assert!(!r.includes(primary.other()));
            let r = route(RequestClass::Read, ReadMode::Compare, primary, NOT_ASKED);
            assert_eq!(r.secondary, Some(primary.other()));
            assert_eq!(r.mirror, Mirror::Compare);
            let r = route(RequestClass::Read, ReadMode::Shadow, primary, || true);
            assert_eq!(
                (r.secondary, r.mirror),
                (Some(primary.other()), Mirror::Shadow)
            );
            let r = route(RequestClass::Read, ReadMode::Shadow, primary, || false);
            assert_eq!(r.secondary, None);
        }
    }

    /// Real statements as drivers, tools and applications send them.
    #[test]
    fn statements_are_classified_by_kind() {
        use RequestClass::{Read, SystemRead, Write};
        let corpus: &[(&str, Option<&str>, RequestClass)] = &[
            ("SELECT * FROM ks.t WHERE k = ?", None, Read),
            ("select * from t", Some("ks"), Read),
            ("  \n\tSELECT v FROM t", Some("ks"), Read),
            ("/* leading comment */ SELECT v FROM ks.t", None, Read),
            ("-- a line comment\nSELECT v FROM ks.t", None, Read),
            ("// another\nSeLeCt v FROM ks.t", None, Read),
            ("SELECT JSON k, v FROM ks.t", None, Read),
            ("SELECT DISTINCT k FROM \"MyKs\".\"MyTable\"", None, Read),
            (
                "SELECT count(*) FROM ks.t WHERE k IN (1, 2) ALLOW FILTERING",
                None,
                Read,
            ),
            ("SELECT writetime(v), ttl(v) FROM ks.t", None, Read),
            ("SELECT * FROM system.peers_v2", None, SystemRead),
            ("SELECT * FROM system_schema.keyspaces", None, SystemRead),
            ("SELECT * FROM local", Some("system"), SystemRead),
            ("SELECT role FROM roles", Some("system_auth"), SystemRead),
            ("SELECT * FROM system_views.clients", None, SystemRead),
            ("SELECT * FROM \"system\".local", Some("ks"), SystemRead),
            ("SELECT * FROM ks.system_like", None, Read),
            ("LIST ROLES", None, Read),
            ("LIST ALL PERMISSIONS OF alice", None, Read),
            ("DESCRIBE KEYSPACES", None, Read),
            ("INSERT INTO ks.t (k, v) VALUES (1, 'SELECT')", None, Write),
            ("insert into t json '{\"k\": 1}'", Some("ks"), Write),
            (
                "UPDATE ks.t USING TTL 10 SET v = 'x' WHERE k = 1",
                None,
                Write,
            ),
            ("DELETE FROM ks.t WHERE k = 1 IF EXISTS", None, Write),
            (
                "BEGIN BATCH INSERT INTO ks.t (k) VALUES (1); APPLY BATCH",
                None,
                Write,
            ),
            (
                "BEGIN UNLOGGED BATCH USING TIMESTAMP 5 INSERT INTO t (k) VALUES (1) APPLY BATCH",
                Some("ks"),
                Write,
            ),
            (
                "BEGIN COUNTER BATCH UPDATE c SET n = n + 1 WHERE k = 1 APPLY BATCH",
                Some("ks"),
                Write,
            ),
            ("TRUNCATE ks.t", None, Write),
            ("TRUNCATE TABLE t", Some("ks"), Write),
            ("CREATE TABLE ks.t (k int PRIMARY KEY)", None, Write),
            ("ALTER TABLE ks.t ADD w text", None, Write),
            ("DROP KEYSPACE ks", None, Write),
            ("CREATE INDEX ON ks.t (v)", None, Write),
            ("USE ks", None, Write),
            ("USE \"MixedCase\"", None, Write),
            ("GRANT SELECT ON KEYSPACE ks TO alice", None, Write),
            ("REVOKE MODIFY ON ks.t FROM bob", None, Write),
            (
                "CREATE ROLE alice WITH PASSWORD = 'x' AND LOGIN = true",
                None,
                Write,
            ),
            ("ALTER USER bob WITH PASSWORD 'y'", None, Write),
            (
                "INSERT INTO system_auth.roles (role) VALUES ('x')",
                None,
                Write,
            ),
            ("SOMETHING NEW IN CQL 6", None, Write),
            ("", None, Write),
            ("/* only a comment */", None, Write),
        ];
        for (text, keyspace, class) in corpus {
            let statement = Statement::classify(text);
            assert_eq!(
                class_of(&statement, *keyspace),
                *class,
                "{text:?} in {keyspace:?}"
            );
        }
    }

    #[test]
    fn system_reads_never_reach_the_secondary() {
        for mode in ReadMode::ALL {
            for primary in Upstream::BOTH {
                let r = route(RequestClass::SystemRead, mode, primary, NOT_ASKED);
                assert_eq!((r.primary, r.secondary), (primary, None));
            }
        }
    }

    #[test]
    fn the_shadow_budget_samples_evenly_and_bounds_what_is_in_flight() {
        let budget = std::sync::Arc::new(ShadowBudget::new(0.1, 1000));
        let permits: Vec<_> = (0..1000).filter_map(|_| budget.take()).collect();
        assert_eq!(permits.len(), 100);
        assert_eq!(budget.in_flight(), 100);
        drop(permits);
        assert_eq!(budget.in_flight(), 0);

        let all = std::sync::Arc::new(ShadowBudget::new(1.0, 3));
        let held: Vec<_> = (0..10).filter_map(|_| all.take()).collect();
        assert_eq!(held.len(), 3, "no more than the bound in flight");
        assert_eq!(all.skipped(), 7);
        drop(held);
        assert!(all.take().is_some(), "a finished read frees its place");

        let none = std::sync::Arc::new(ShadowBudget::new(0.0, 10));
        assert!((0..100).all(|_| none.take().is_none()));
        none.set_fraction(0.5);
        assert_eq!((0..100).filter_map(|_| none.take()).count(), 50);
    }
}
