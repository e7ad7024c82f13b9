//! Proxy-level state shared by every session: the configuration, which cluster is primary,
//! the prepared-statement map, the write-timestamp generator, what was learned about the
//! clusters (topology, tables' primary keys), and the counters that decide when a failure is worth a log line.
//!
//! Sessions hold an `Arc<Proxy>` and read or update it explicitly; nothing here is global, so
//! a simulation can run several proxies side by side. Inputs that concern the whole proxy
//! (the wall clock, a switch of primary) are `handle_*` / `set_*` calls on it, made by the
//! runtime; sessions see them on their next request.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::admission::Admission;
use crate::config::{Config, Endpoint, Upstream, WaitPolicy, WriteOrder};
use crate::divergence::DivergenceReport;
use crate::entropy::{Entropy, Seed};
use crate::failure::FailureKind;
use crate::frame::ProtocolVersion;
use crate::generated::{Generated, TimeUuids};
use crate::health::{ClusterState, Reachability, Readiness};
use crate::message::Secret as Token;
use crate::prepared::PreparedCache;
use crate::report::Reporter;
use crate::routing::{ReadMode, ShadowBudget};
use crate::schema::{Schema, TableKey};
use crate::statement::functions::Function;
use crate::topology::ClusterView;

/// Identifies a session in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

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
        Self {
            instant,
            unix_micros: unix_micros(system),
        }
    }
}

fn unix_micros(system: SystemTime) -> i64 {
    match system.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => micros(d),
        Err(e) => -micros(e.duration()),
    }
}

fn read_mode_index(mode: ReadMode) -> u8 {
    ReadMode::ALL.iter().position(|m| *m == mode).unwrap_or(0) as u8
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Signed microseconds from `base` to `at`.
fn micros_since(base: Instant, at: Instant) -> i64 {
    if at >= base {
        micros(at - base)
    } else {
        -micros(base - at)
    }
}

/// The state shared by all sessions of one proxy.
#[derive(Debug)]
pub struct Proxy {
    config: Config,
    /// The instant wall-clock offsets are counted from: fixed, so that the offset alone is
    /// shared state and reading the wall clock takes one atomic load.
    base: Instant,
    /// Wall-clock microseconds at `base`, as of the latest reading of the system clock.
    wall_at_base: AtomicI64,
    last_timestamp: AtomicI64,
    /// The cluster whose answers clients get, by [`Upstream::index`]; the other is secondary.
    primary: AtomicU8,
    /// When clients get their answer ([`WaitPolicy`] as 0: both, 1: primary); starts as
    /// configured, changed at run time through the admin API.
    wait: AtomicU8,
    /// When the secondary gets a write ([`WriteOrder`] as 0: parallel, 1: primary first);
    /// starts as configured, changed at run time.
    write_order: AtomicU8,
    /// How reads are served, as an index into [`ReadMode::ALL`]; changed at run time.
    read_mode: AtomicU8,
    /// What shadow reads may cost (see [`ShadowBudget`]).
    shadow: Arc<ShadowBudget>,
    /// What the comparisons of the two clusters' answers found.
    divergences: DivergenceReport,
    /// What each cluster's control connection last found.
    reachability: Reachability,
    prepared: Mutex<PreparedCache>,
    next_session: AtomicU64,
    /// Highest protocol version each cluster accepted so far (starts at the highest we speak).
    max_version: [AtomicU8; 2],
    admission: Arc<Admission>,
    /// Client errors (malformed frames, stalled handshakes) logged per window.
    client_errors: Reporter,
    /// Per cluster and failure kind: whether the current run of failures was already reported.
    reported: [[AtomicBool; FailureKind::COUNT]; 2],
    /// Per cluster and failure kind: when it was last reported, so that a cluster whose
    /// answers alternate with failures gets one log line a minute, not one per failure.
    last_reported: Mutex<[[Option<Instant>; FailureKind::COUNT]; 2]>,
    /// Per cluster: when a session's connection that came back (see `session/reconnect.rs`)
    /// was last worth a log line. Many sessions lose a node at once and come back together:
    /// one line per [`REPORT_INTERVAL`] says so, the rest are debug detail.
    last_reconnect_reported: Mutex<[Option<Instant>; 2]>,
    /// Per cluster: a client's answer waited `--wait-timeout` for it in vain and it has not
    /// answered anything since, so clients do not wait for it at all.
    stalled: [AtomicBool; 2],
    /// Per cluster: what it says of its topology, as last read.
    views: [Mutex<Option<Arc<ClusterView>>>; 2],
    /// Per cluster: its tables' primary keys, as last read. Replaced whole on each read, so a
    /// lookup holds the lock for one map lookup and an `Arc` clone.
    schemas: [Mutex<Option<Arc<Schema>>>; 2],
    /// Node addresses a ghost map lacks, reported once each.
    unmapped: Mutex<std::collections::BTreeSet<std::net::IpAddr>>,
    /// Per cluster: the SASL token of a client login that succeeded there through the proxy,
    /// for the control connection when the proxy has no credentials of its own for it. Never
    /// logged.
    learned_logins: [Mutex<Option<Token>>; 2],
    /// Nodes not to open connections to, per cluster: reported down (until reported up), or
    /// unreachable (until the instant given).
    down: Mutex<std::collections::BTreeMap<(Upstream, std::net::SocketAddr), Option<Instant>>>,
    stats: Stats,
    entropy: Entropy,
    /// Made at the first time-based UUID (its node id drawn from `entropy` then).
    time_uuids: std::sync::OnceLock<TimeUuids>,
}

/// Counters kept by the proxy, readable at any time.
#[derive(Debug, Default)]
pub struct Stats {
    pub sessions_opened: AtomicU64,
    pub sessions_closed: AtomicU64,
    /// Requests that failed on one cluster, indexed by [`Upstream::index`].
    pub failed: [AtomicU64; 2],
    /// Writes acknowledged to the client (the primary applied them) that did not reach this
    /// cluster as the secondary, indexed by [`Upstream::index`].
    pub missed_writes: [AtomicU64; 2],
    /// Reads of `system.local`, `system.peers` and `system.peers_v2` the proxy answered.
    pub topology_reads: AtomicU64,
    /// Nodes left out of answers or events because the ghost map lacks their address.
    pub unmapped_nodes: AtomicU64,
    /// Requests the sessions hold now: not answered to the client yet, or still running on a
    /// cluster.
    pub in_flight: AtomicI64,
    /// Requests the secondary has not finished, over all client connections (see
    /// `--max-secondary-lag`).
    pub secondary_lag: AtomicI64,
}

impl Proxy {
    /// A proxy for `config`; fails with a message naming the setting when it is unusable.
    /// Its random values come from `seed` (see [`crate::entropy`]).
    pub fn new(config: Config, clock: WallClock, seed: Seed) -> Result<Arc<Self>, String> {
        config.validate()?;
        let highest = config
            .protocol_versions
            .iter()
            .max()
            .map_or(5, |v| v.number());
        let wait = u8::from(config.wait == WaitPolicy::Primary);
        let write_order = config.write_order;
        let (primary, read_mode) = (config.primary, config.read_mode);
        let shadow = Arc::new(ShadowBudget::new(
            config.shadow_sample,
            config.shadow_max_in_flight,
        ));
        let divergences = DivergenceReport::new(config.divergence_samples);
        Ok(Arc::new(Self {
            prepared: Mutex::new(PreparedCache::new(config.prepared_cache_size)),
            admission: Admission::new(config.max_connections),
            client_errors: Reporter::new(CLIENT_ERRORS_PER_WINDOW),
            config,
            base: clock.instant,
            wall_at_base: AtomicI64::new(clock.unix_micros),
            last_timestamp: AtomicI64::new(i64::MIN),
            primary: AtomicU8::new(primary.index() as u8),
            wait: AtomicU8::new(wait),
            write_order: AtomicU8::new(u8::from(write_order == WriteOrder::PrimaryFirst)),
            read_mode: AtomicU8::new(read_mode_index(read_mode)),
            shadow,
            divergences,
            reachability: Reachability::default(),
            next_session: AtomicU64::new(1),
            max_version: [AtomicU8::new(highest), AtomicU8::new(highest)],
            reported: Default::default(),
            last_reported: Mutex::new([[None; FailureKind::COUNT]; 2]),
            last_reconnect_reported: Mutex::new([None; 2]),
            stalled: Default::default(),
            views: Default::default(),
            schemas: Default::default(),
            unmapped: Mutex::new(std::collections::BTreeSet::new()),
            learned_logins: Default::default(),
            down: Mutex::new(std::collections::BTreeMap::new()),
            stats: Stats::default(),
            entropy: Entropy::new(seed),
            time_uuids: std::sync::OnceLock::new(),
        }))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether a client error deserves a log line now (see [`Reporter`]).
    pub fn note_client_error(&self, now: Instant) -> bool {
        self.client_errors.note(now).is_some()
    }

    /// The client errors that were not logged, once their window is over: for the runtime
    /// to log now and then.
    pub fn client_errors_report(&self, now: Instant) -> Option<String> {
        self.client_errors.flush(now).map(|count| {
            format!(
                "{count} more client error{} (malformed frames, stalled handshakes, timeouts) in the last {:?} were logged at debug level only",
                if count == 1 { "" } else { "s" },
                crate::report::REPORT_WINDOW
            )
        })
    }

    /// Client connections: the runtime asks here before it serves an accepted one.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// 64 random bits from the proxy's seeded generator.
    pub fn random_u64(&self) -> u64 {
        self.entropy.next_u64()
    }

    /// The id of the next session.
    pub(crate) fn next_session_id(&self) -> SessionId {
        self.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// The cluster whose answers clients get now.
    pub fn primary(&self) -> Upstream {
        if self.primary.load(Ordering::Relaxed) == Upstream::Target.index() as u8 {
            Upstream::Target
        } else {
            Upstream::Source
        }
    }

    /// Makes `upstream` the primary. Requests already received keep the route they started
    /// with; every later request of every session takes the new one.
    pub fn set_primary(&self, upstream: Upstream) {
        self.primary
            .store(upstream.index() as u8, Ordering::Relaxed);
    }

    /// When clients get their answer now.
    pub fn wait_policy(&self) -> WaitPolicy {
        if self.wait.load(Ordering::Relaxed) == 1 {
            WaitPolicy::Primary
        } else {
            WaitPolicy::Both
        }
    }

    /// Changes when clients get their answer, for every answer given from now on.
    pub fn set_wait_policy(&self, wait: WaitPolicy) {
        self.wait
            .store(u8::from(wait == WaitPolicy::Primary), Ordering::Relaxed);
    }

    /// When the secondary gets a write now.
    pub fn write_order(&self) -> WriteOrder {
        if self.write_order.load(Ordering::Relaxed) == 1 {
            WriteOrder::PrimaryFirst
        } else {
            WriteOrder::Parallel
        }
    }

    /// Changes when the secondary gets a write, for every write received from now on.
    pub fn set_write_order(&self, order: WriteOrder) {
        self.write_order.store(
            u8::from(order == WriteOrder::PrimaryFirst),
            Ordering::Relaxed,
        );
    }

    /// How reads are served now.
    pub fn read_mode(&self) -> ReadMode {
        ReadMode::ALL
            .get(usize::from(self.read_mode.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or_default()
    }

    /// Changes how reads are served, for every read received from now on.
    pub fn set_read_mode(&self, mode: ReadMode) {
        self.read_mode
            .store(read_mode_index(mode), Ordering::Relaxed);
    }

    /// The budget of shadow reads (its fraction can change at run time).
    pub fn shadow(&self) -> &Arc<ShadowBudget> {
        &self.shadow
    }

    /// What comparing the clusters' answers found so far.
    pub fn divergences(&self) -> &DivergenceReport {
        &self.divergences
    }

    /// What the control connection of `upstream` found: it answers, or why not.
    pub fn note_cluster_state(&self, upstream: Upstream, state: ClusterState) {
        self.reachability.note(upstream, state);
    }

    /// Whether the proxy can serve clients now, with the reasons (see [`crate::health`]).
    pub fn readiness(&self) -> Readiness {
        Readiness::assess(
            self.primary(),
            [
                self.reachability.get(Upstream::Source),
                self.reachability.get(Upstream::Target),
            ],
            self.config.ready_without_secondary,
        )
    }

    /// The system clock read `system` at `now`: write timestamps follow it from here on. The
    /// runtime calls this periodically, so that timestamps track the system clock (and its
    /// corrections) rather than drift with the monotonic one over a weeks-long migration.
    pub fn handle_wall_clock(&self, system: SystemTime, now: Instant) {
        let at_base = unix_micros(system).saturating_sub(micros_since(self.base, now));
        self.wall_at_base.store(at_base, Ordering::Relaxed);
    }

    /// Wall-clock microseconds at `now`.
    pub fn wall_micros(&self, now: Instant) -> i64 {
        self.wall_at_base
            .load(Ordering::Relaxed)
            .saturating_add(micros_since(self.base, now))
    }

    /// A value for a call of `function` (see [`crate::generated`]) at `now`.
    pub fn generate(&self, function: Function, now: Instant) -> Generated {
        let uuids = self
            .time_uuids
            .get_or_init(|| TimeUuids::new(self.random_u64()));
        Generated::of(function, self.wall_micros(now), uuids, || self.random_u64())
    }

    /// A write timestamp for `now`: wall-clock microseconds, strictly increasing across the
    /// proxy so that two writes never share one (as drivers' monotonic generators do), also
    /// when the system clock is set back.
    pub fn write_timestamp(&self, now: Instant) -> i64 {
        let wall = self.wall_micros(now);
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

    /// What `upstream` says of its topology, as last read.
    pub fn view(&self, upstream: Upstream) -> Option<Arc<ClusterView>> {
        lock(&self.views[upstream.index()]).clone()
    }

    /// `upstream`'s topology tables were read (by a control connection, or by a session that
    /// needed them): answers to drivers are built from this view from now on.
    pub fn handle_cluster_view(&self, upstream: Upstream, view: ClusterView) {
        *lock(&self.views[upstream.index()]) = Some(Arc::new(view));
    }

    /// `upstream`'s tables were read (by its control connection): their keys replace what
    /// was known of that cluster.
    pub fn note_schema(&self, upstream: Upstream, schema: Schema) {
        let schema = Some(Arc::new(schema));
        // The old schema is freed after the lock is released, not while readers wait.
        let _old = std::mem::replace(&mut *lock(&self.schemas[upstream.index()]), schema);
    }

    /// How many tables of `upstream` have a known primary key (their reads are compared row
    /// by row).
    pub fn known_tables(&self, upstream: Upstream) -> usize {
        lock(&self.schemas[upstream.index()])
            .as_ref()
            .map_or(0, |schema| schema.len())
    }

    /// The primary key of `keyspace`.`table` (names as the cluster stores them) on `upstream`,
    /// or else on the other cluster: a table just created on one cluster, or a cluster whose
    /// schema could not be read yet, still has a key (a migration keeps the two schemas
    /// alike).
    pub fn table_key(
        &self,
        upstream: Upstream,
        keyspace: &str,
        table: &str,
    ) -> Option<Arc<TableKey>> {
        let known = |upstream: Upstream| {
            lock(&self.schemas[upstream.index()])
                .as_ref()
                .and_then(|schema| schema.key(keyspace, table))
        };
        known(upstream).or_else(|| known(upstream.other()))
    }

    /// The SASL token of a client login that succeeded on `upstream`.
    pub(crate) fn learned_login(&self, upstream: Upstream) -> Option<Token> {
        lock(&self.learned_logins[upstream.index()]).clone()
    }

    /// A client logged in on `upstream` with `token` through the proxy.
    pub(crate) fn learn_login(&self, upstream: Upstream, token: Token) {
        let mut slot = lock(&self.learned_logins[upstream.index()]);
        if slot.is_none() {
            *slot = Some(token);
        }
    }

    /// `upstream` reports the node whose clients connect at `address` up or down.
    pub fn handle_node_status(
        &self,
        upstream: Upstream,
        address: SocketAddr,
        up: bool,
        _now: Instant,
    ) {
        let mut down = lock(&self.down);
        if up {
            down.remove(&(upstream, address));
        } else {
            down.insert((upstream, address), None);
        }
    }

    /// A connection to the node at `address` could not be opened: new connections avoid it
    /// for a while.
    pub(crate) fn note_unreachable(&self, upstream: Upstream, address: SocketAddr, now: Instant) {
        lock(&self.down)
            .entry((upstream, address))
            .or_insert(Some(now + UNREACHABLE_FOR));
    }

    /// Whether `upstream` reported the node at `ip` down (on any port).
    pub(crate) fn is_node_down(&self, upstream: Upstream, ip: std::net::IpAddr) -> bool {
        lock(&self.down)
            .iter()
            .any(|((u, address), until)| *u == upstream && address.ip() == ip && until.is_none())
    }

    fn is_down(&self, upstream: Upstream, address: SocketAddr, now: Instant) -> bool {
        lock(&self.down)
            .get(&(upstream, address))
            .is_some_and(|until| until.is_none_or(|until| until > now))
    }

    /// The nodes of `upstream` that clients' connections may go to: those of the data center
    /// configured for it, or else of the node its topology was read from, that are not down;
    /// in the order of the view.
    pub fn usable_nodes(&self, upstream: Upstream, now: Instant) -> Vec<SocketAddr> {
        let Some(view) = self.view(upstream) else {
            return Vec::new();
        };
        let cluster = self.config.cluster(upstream);
        let default_port = cluster.contact_points.first().map_or(9042, |e| e.port);
        let dc = cluster
            .data_center
            .clone()
            .or_else(|| view.local_data_center().map(str::to_owned));
        view.nodes(default_port)
            .into_iter()
            .filter(|n| dc.is_none() || n.data_center == dc)
            .map(|n| n.address)
            .filter(|a| !self.is_down(upstream, *a, now))
            .collect()
    }

    /// Where a new backend connection to `upstream` goes: spread over the usable nodes by
    /// `seed` (the session id), or over the contact points while no topology is known.
    pub fn pick_node(&self, upstream: Upstream, seed: u64, now: Instant) -> Endpoint {
        let nodes = self.usable_nodes(upstream, now);
        if !nodes.is_empty() {
            let node = nodes[(seed as usize) % nodes.len()];
            return Endpoint {
                host: node.ip().to_string(),
                port: node.port(),
            };
        }
        let points = &self.config.cluster(upstream).contact_points;
        points
            .get((seed as usize) % points.len().max(1))
            .cloned()
            .unwrap_or(Endpoint {
                host: String::new(),
                port: 0,
            })
    }

    /// Where the control connection to `upstream` may connect, in order of preference: the
    /// usable nodes, then the contact points.
    pub fn candidates(&self, upstream: Upstream) -> Vec<Endpoint> {
        let cluster = self.config.cluster(upstream);
        let default_port = cluster.contact_points.first().map_or(9042, |e| e.port);
        let mut out: Vec<Endpoint> = self
            .view(upstream)
            .map(|v| v.nodes(default_port))
            .unwrap_or_default()
            .into_iter()
            .map(|n| Endpoint {
                host: n.address.ip().to_string(),
                port: n.address.port(),
            })
            .collect();
        for point in &self.config.cluster(upstream).contact_points {
            if !out.contains(point) {
                out.push(point.clone());
            }
        }
        out
    }

    /// A node address the ghost map lacks was left out; true the first time for `address`.
    pub(crate) fn record_unmapped(&self, address: std::net::IpAddr) -> bool {
        self.stats.unmapped_nodes.fetch_add(1, Ordering::Relaxed);
        lock(&self.unmapped).insert(address)
    }

    pub(crate) fn prepared(&self) -> MutexGuard<'_, PreparedCache> {
        lock(&self.prepared)
    }

    /// Statements in the prepared-statement map (for metrics).
    /// Prepared statements evicted from the cache so far.
    pub fn prepared_evictions(&self) -> u64 {
        self.prepared().evictions()
    }

    pub fn prepared_len(&self) -> usize {
        self.prepared().len()
    }

    /// Protocol versions a client may use now: the configured ones that no cluster refused.
    pub fn accepted_versions(&self) -> Vec<ProtocolVersion> {
        let cap = self.version_cap();
        self.config
            .protocol_versions
            .iter()
            .copied()
            .filter(|v| v.number() <= cap)
            .collect()
    }

    /// Whether a client may use `version` now (one of [`Self::accepted_versions`]), without
    /// building the list: asked for every client frame.
    pub fn accepts(&self, version: ProtocolVersion) -> bool {
        version.number() <= self.version_cap() && self.config.protocol_versions.contains(&version)
    }

    /// The highest version no cluster refused.
    fn version_cap(&self) -> u8 {
        self.max_version
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .min()
            .unwrap_or(5)
    }

    /// Records that `upstream` refused `version`: later clients are refused it up front.
    pub(crate) fn learn_refused_version(&self, upstream: Upstream, version: ProtocolVersion) {
        self.max_version[upstream.index()]
            .fetch_min(version.number().saturating_sub(1), Ordering::Relaxed);
    }

    /// Counts a failure and says whether it deserves a log line: the first of its kind since
    /// `upstream` last worked, and none of its kind was reported in the last
    /// [`REPORT_INTERVAL`].
    pub(crate) fn record_failure(
        &self,
        upstream: Upstream,
        kind: FailureKind,
        now: Instant,
    ) -> bool {
        self.stats.failed[upstream.index()].fetch_add(1, Ordering::Relaxed);
        let flag = &self.reported[upstream.index()][kind.index()];
        if flag.load(Ordering::Relaxed) {
            return false;
        }
        let mut last = lock(&self.last_reported);
        let last = &mut last[upstream.index()][kind.index()];
        if last.is_some_and(|at| now.saturating_duration_since(at) < REPORT_INTERVAL) {
            // Too soon: this run is not marked reported, so that it is once the interval is
            // over if it lasts that long.
            return false;
        }
        *last = Some(now);
        !flag.swap(true, Ordering::Relaxed)
    }

    /// A session's connection to `upstream` came back; true when that deserves a log line
    /// (none did in the last [`REPORT_INTERVAL`]).
    pub(crate) fn note_reconnected(&self, upstream: Upstream, now: Instant) -> bool {
        let mut last = lock(&self.last_reconnect_reported);
        let last = &mut last[upstream.index()];
        if last.is_some_and(|at| now.saturating_duration_since(at) < REPORT_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Counts a request that failed on `upstream` because its connection failed (reported
    /// once, when the connection failed).
    pub(crate) fn count_failed(&self, upstream: Upstream) {
        self.stats.failed[upstream.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write the client was told succeeded that `upstream` (the secondary) missed.
    pub(crate) fn count_missed_write(&self, upstream: Upstream) {
        self.stats.missed_writes[upstream.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_closed(&self) {
        self.stats.sessions_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// A client's answer waited `--wait-timeout` for `upstream` in vain; true if that is news.
    pub(crate) fn mark_stalled(&self, upstream: Upstream) -> bool {
        !self.stalled[upstream.index()].swap(true, Ordering::Relaxed)
    }

    /// Whether `upstream` is known not to answer promptly: clients do not wait for it.
    pub fn is_stalled(&self, upstream: Upstream) -> bool {
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

/// Client errors logged per [`crate::report::REPORT_WINDOW`]; the rest are counted.
pub const CLIENT_ERRORS_PER_WINDOW: u64 = 20;

/// A cluster's failures of one kind get at most one log line in this time.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// How long a node that could not be connected to is avoided by new connections.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// Locks a mutex, recovering from poisoning: the state behind it stays consistent because
/// every critical section is a single map update.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Endpoint;

    /// A proxy in front of clusters `s:9042` and `t:9042`, and the start of the test's
    /// timeline (one real instant; only offsets from it matter).
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn proxy() -> (Arc<Proxy>, Instant) {
        let ep = |h: &str| {
            vec![Endpoint {
                host: h.into(),
                port: 9042,
            }]
        };
        let t0 = Instant::now();
        let clock = WallClock {
            instant: t0,
            unix_micros: 1_000_000,
        };
        (
            Proxy::new(
                Config::new(ep("s"), ep("t")),
                clock,
                crate::entropy::Seed(1),
            )
            .unwrap(),
            t0,
        )
    }

    fn at_micros(m: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(m)
    }

    #[test]
    fn timestamps_follow_the_wall_clock_and_never_repeat() {
        let (p, t0) = proxy();
        assert_eq!(p.write_timestamp(t0), 1_000_000);
        assert_eq!(p.write_timestamp(t0), 1_000_001);
        assert_eq!(p.write_timestamp(t0 + Duration::from_secs(1)), 2_000_000);
        // A clock set back never makes timestamps go back.
        p.handle_wall_clock(at_micros(0), t0 + Duration::from_secs(1));
        assert_eq!(p.write_timestamp(t0 + Duration::from_secs(1)), 2_000_001);
    }

    #[test]
    fn the_wall_clock_is_re_anchored_by_readings_of_the_system_clock() {
        let (p, t0) = proxy();
        // A day later by the monotonic clock, the system clock says 5 s more than that: the
        // monotonic clock drifted (or the system clock was corrected). Stamps follow the
        // system clock from the reading on, also at instants before it.
        let day = Duration::from_secs(86_400);
        p.handle_wall_clock(at_micros(1_000_000 + 86_405_000_000), t0 + day);
        assert_eq!(p.wall_micros(t0 + day), 1_000_000 + 86_405_000_000);
        assert_eq!(
            p.write_timestamp(t0 + day + Duration::from_millis(1)),
            1_000_000 + 86_405_001_000
        );
        assert_eq!(p.wall_micros(t0), 1_000_000 + 5_000_000);
    }

    #[test]
    fn the_primary_can_change_at_run_time() {
        let (p, _) = proxy();
        assert_eq!(p.primary(), Upstream::Source);
        p.set_primary(Upstream::Target);
        assert_eq!(p.primary(), Upstream::Target);
        p.set_primary(Upstream::Source);
        assert_eq!(p.primary(), Upstream::Source);
    }

    #[test]
    fn a_table_key_comes_from_the_cluster_asked_or_else_the_other() {
        use crate::schema::tests::schema_result;
        let (p, _) = proxy();
        let read = |rows| Schema::from_result(&schema_result(rows), ProtocolVersion::V4).unwrap();
        assert_eq!(p.table_key(Upstream::Source, "ks", "t"), None);
        p.note_schema(
            Upstream::Source,
            read(&[("ks", "t", "a", "partition_key", 0)]),
        );
        p.note_schema(
            Upstream::Target,
            read(&[
                ("ks", "t", "b", "partition_key", 0),
                ("ks", "new", "n", "partition_key", 0),
            ]),
        );
        let names = |upstream, table| {
            p.table_key(upstream, "ks", table)
                .map(|k| k.partition.clone())
        };
        assert_eq!(names(Upstream::Source, "t"), Some(vec!["a".to_owned()]));
        assert_eq!(names(Upstream::Target, "t"), Some(vec!["b".to_owned()]));
        assert_eq!(names(Upstream::Source, "new"), Some(vec!["n".to_owned()]));
        assert_eq!(names(Upstream::Source, "other"), None);
        // A new read replaces the old one whole.
        p.note_schema(Upstream::Target, Schema::default());
        assert_eq!(names(Upstream::Source, "new"), None);
    }

    #[test]
    fn refused_versions_narrow_what_clients_get() {
        let (p, _) = proxy();
        assert_eq!(p.accepted_versions(), ProtocolVersion::ALL.to_vec());
        p.learn_refused_version(Upstream::Target, ProtocolVersion::V5);
        assert_eq!(
            p.accepted_versions(),
            vec![ProtocolVersion::V3, ProtocolVersion::V4]
        );
        for version in ProtocolVersion::ALL {
            assert_eq!(
                p.accepts(version),
                p.accepted_versions().contains(&version),
                "{version}"
            );
        }
    }

    #[test]
    fn a_flood_of_client_errors_is_logged_as_a_count() {
        let (p, now) = proxy();
        let logged = (0..25).filter(|_| p.note_client_error(now)).count();
        assert_eq!(logged, CLIENT_ERRORS_PER_WINDOW as usize);
        assert!(
            p.client_errors_report(now).is_none(),
            "the window is not over"
        );
        let report = p
            .client_errors_report(now + crate::report::REPORT_WINDOW)
            .unwrap();
        assert!(report.starts_with("5 more client errors"), "{report}");
    }

    #[test]
    fn sessions_coming_back_together_make_one_log_line_a_minute_per_cluster() {
        let (p, now) = proxy();
        let (t, s) = (Upstream::Target, Upstream::Source);
        assert!(p.note_reconnected(t, now));
        for session in 1..100 {
            let at = now + Duration::from_millis(session);
            assert!(!p.note_reconnected(t, at), "session {session}");
        }
        assert!(p.note_reconnected(s, now), "each cluster its own");
        assert!(p.note_reconnected(t, now + REPORT_INTERVAL));
    }

    #[test]
    fn failures_are_reported_once_per_kind_until_success_and_at_most_once_an_interval() {
        let (p, now) = proxy();
        let (t, s) = (Upstream::Target, Upstream::Source);
        assert!(p.record_failure(t, FailureKind::Timeout, now));
        assert!(!p.record_failure(t, FailureKind::Timeout, now));
        assert!(p.record_failure(t, FailureKind::Closed, now));
        assert!(p.record_failure(s, FailureKind::Timeout, now));
        // A cluster that answers between failures: not one line per failure.
        for second in 1..10 {
            p.record_success(t);
            let at = now + Duration::from_secs(second);
            assert!(!p.record_failure(t, FailureKind::Timeout, at), "{second}s");
        }
        // Once the interval is over, the run of failures is news again, once.
        let later = now + REPORT_INTERVAL;
        assert!(p.record_failure(t, FailureKind::Timeout, later));
        assert!(!p.record_failure(t, FailureKind::Timeout, later));
        assert_eq!(p.stats().failed[1].load(Ordering::Relaxed), 14);
    }
}
