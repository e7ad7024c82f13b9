//! One client connection and its two backend connections, as a deterministic state machine.
//!
//! The run loop a driver follows is the crate's (see the [crate docs](crate)): inputs are
//! `handle_*` calls, outputs `poll_*` calls, `now` last, and after every input the outputs are
//! drained in a fixed order: actions, transmits per peer, events, the timer.
//!
//! The session's work is split by what it handles:
//! - `intake`: client frames, what each request is, what each cluster gets;
//! - `handshake`: OPTIONS, STARTUP and authentication on three connections;
//! - `answer`: cluster frames, answering the client, failures and repairs;
//! - `order`: when a cluster gets a request (its handshake, causal order, the primary's
//!   answer with `--write-order primary-first`);
//! - `lag`: how far the secondary may fall behind the client (`--max-secondary-lag`);
//! - `leg`, `outbox`, `streams`: each connection's framing, queue and stream ids;
//! - `request`: requests in flight and what each cluster did with them.
//!
//! Wire problems are never errors of these calls: a malformed frame from the client becomes a
//! protocol ERROR sent to it, an [`Event`] and a close; a cluster that misbehaves is marked
//! failed. Nothing here panics on input.

mod agreement;
mod answer;
mod compare;
mod functions;
mod handshake;
mod intake;
mod journal;
mod lag;
mod leg;
mod order;
mod outbox;
pub mod reconnect;
mod request;
mod streams;
mod supported;
mod topology;

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::{Endpoint, Upstream};
use crate::failure::FailureKind;
use crate::frame::{Compression, Opcode, ProtocolVersion, StreamId};
use crate::proxy::{Proxy, SessionId};

use leg::{ClientLeg, UpstreamLeg};
use request::RequestTable;

/// One of the three connections of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Client,
    Source,
    Target,
}

impl Peer {
    pub const ALL: [Self; 3] = [Self::Client, Self::Source, Self::Target];

    pub const fn upstream(self) -> Option<Upstream> {
        match self {
            Self::Client => None,
            Self::Source => Some(Upstream::Source),
            Self::Target => Some(Upstream::Target),
        }
    }

    pub const fn of(upstream: Upstream) -> Self {
        match upstream {
            Upstream::Source => Self::Source,
            Upstream::Target => Self::Target,
        }
    }

    /// 0 for the client, 1 for the source, 2 for the target: an index into per-peer arrays.
    pub const fn index(self) -> usize {
        match self {
            Self::Client => 0,
            Self::Source => 1,
            Self::Target => 2,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Client => "client",
            Self::Source => "source",
            Self::Target => "target",
        })
    }
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open the connection to `upstream` at `endpoint`; report the outcome with
    /// [`Session::handle_connected`] or [`Session::handle_closed`].
    Connect {
        upstream: Upstream,
        endpoint: Endpoint,
    },
    /// Write out what [`Session::poll_transmit`] still yields for the peer, then close its
    /// socket. The session will not ask about that peer again.
    Close(Peer),
}

/// Something that happened, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed: the client may send queries.
    Ready {
        version: ProtocolVersion,
        compression: Option<Compression>,
        /// The cluster that mirrors this client's writes.
        secondary: Upstream,
        /// Whether the secondary is usable; when not, writes are counted as missed.
        secondary_ready: bool,
    },
    /// A request to a cluster, or the connection to it, failed. `first` is true for the first
    /// failure of this kind since the cluster last answered: the one worth a log line.
    Failure {
        upstream: Upstream,
        kind: FailureKind,
        detail: String,
        first: bool,
    },
    /// A write the client was told succeeded (the primary applied it) did not reach
    /// `upstream`, the secondary.
    MissedWrite {
        upstream: Upstream,
        opcode: Opcode,
        /// The tables the write changes, when the proxy knows the statement.
        tables: Vec<crate::statement::tables::TableRef>,
    },
    /// The client sent something the proxy refused, or was closed for stalling; the detail
    /// says what. `quiet` when many clients did so lately (an attack, a broken deployment):
    /// such events are debug detail, and their count is reported instead (see
    /// [`crate::proxy::Proxy::client_errors_report`]).
    ClientError { detail: String, quiet: bool },
    /// One cluster is done with a request: it answered (`result` says whether with an ERROR)
    /// or failed, `latency` after the request arrived. For per-cluster latency and errors.
    ClusterDone {
        upstream: Upstream,
        opcode: Opcode,
        write: bool,
        latency: Duration,
        result: ClusterResult,
    },
    /// Both clusters answered a request and the answers differ: one with an ERROR and the
    /// other not, or (for compared reads) in their rows.
    OutcomesDiffer { opcode: Opcode, write: bool },
    /// The answers of both clusters to a read were compared (shadow or compare read mode), or
    /// the outcomes of a write differed: `divergence` says how, when they differ (it is in
    /// the proxy's [`DivergenceReport`](crate::divergence::DivergenceReport) too).
    Compared {
        table: crate::divergence::TableName,
        divergence: Option<Arc<crate::divergence::Divergence>>,
    },
    /// A request was answered with the answer (or the failure) of `primary`.
    Answered {
        opcode: Opcode,
        write: bool,
        latency: Duration,
        /// What the proxy added after the primary's answer: waiting for the secondary
        /// (`--wait true`), answers held back to keep the client's order.
        added: Duration,
        primary: Upstream,
    },
    /// The session was asked to shut down: it takes no new requests and closes once those
    /// in flight are answered; `in_flight` were.
    Draining { in_flight: usize },
    /// A node of the primary is not in the ghost map: it was left out of what the client
    /// sees. `first` is true the first time the proxy met that address.
    UnmappedNode { address: IpAddr, first: bool },
    /// The secondary, `upstream`, reached `--max-secondary-lag` (`requests` not finished
    /// there) or `--max-secondary-lag-bytes` (`bytes`) behind this client: the client is not
    /// read until it catches up.
    SecondaryLag {
        upstream: Upstream,
        requests: usize,
        bytes: usize,
    },
    /// The session's connection to `upstream`, its secondary, failed earlier: an attempt to
    /// open it again failed, or it is back (see `reconnect.rs`). `first` is true for the
    /// first reconnection of that cluster in a minute: the one worth an info line when many
    /// sessions come back at once.
    SecondaryReconnect {
        upstream: Upstream,
        result: reconnect::Reconnect,
        first: bool,
    },
    /// After a schema change, `upstream`'s nodes agreed on the schema (`reached`), or the
    /// proxy stopped waiting for them after `waited`.
    SchemaAgreement {
        upstream: Upstream,
        reached: bool,
        waited: Duration,
    },
    /// The proxy generated the value of a call of `function` in a write (`--uuid`).
    GeneratedValue {
        function: crate::statement::functions::Function,
    },
    /// With [`Config::journal`](crate::config::Config::journal): what replay needs to apply a
    /// write the secondary missed (emitted with its [`Event::MissedWrite`]), for the journal.
    Journal(Arc<crate::journal::Record>),
    /// With [`Config::journal`](crate::config::Config::journal): a write the secondary missed
    /// that no record can describe, so the journal cannot hold it (see [`Unjournaled`]).
    Unjournaled {
        upstream: Upstream,
        reason: Unjournaled,
    },
}

/// Why a missed write has no journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unjournaled {
    /// An EXECUTE, or a BATCH entry, of a statement the proxy no longer knows (its prepared
    /// cache forgot it, or the proxy restarted since it was prepared): its text is unknown.
    UnknownStatement,
    /// A schema change, TRUNCATE or access-control statement: applied later, out of order
    /// with the writes around it, it could destroy data; the operator applies it.
    NotDataWrite,
    /// The request's body could not be read again (it was read once to be sent).
    Malformed,
}

impl Unjournaled {
    pub const ALL: [Self; 3] = [Self::UnknownStatement, Self::NotDataWrite, Self::Malformed];

    /// The metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UnknownStatement => "unknown-statement",
            Self::NotDataWrite => "not-data-write",
            Self::Malformed => "malformed",
        }
    }
}

/// How one cluster finished its part of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterResult {
    /// An answer other than ERROR.
    Ok,
    /// An ERROR answer with this code.
    Error(crate::message::ErrorCode),
    /// No answer: the connection failed or the request timed out.
    Failed(FailureKind),
}

/// How much a log reader cares about an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Event {
    /// The level to log the event at: the first failure of a kind is a warning, repeats and
    /// per-request events are debug detail.
    pub fn level(&self) -> Level {
        match self {
            Self::Failure { first: true, .. } => Level::Warn,
            Self::Failure { first: false, .. } => Level::Debug,
            Self::ClientError { quiet: false, .. } => Level::Info,
            Self::ClientError { quiet: true, .. } => Level::Debug,
            Self::UnmappedNode { first: true, .. } => Level::Warn,
            Self::UnmappedNode { first: false, .. } => Level::Debug,
            Self::SchemaAgreement { reached: false, .. } => Level::Warn,
            Self::SchemaAgreement { reached: true, .. } => Level::Debug,
            Self::SecondaryReconnect { first: true, .. } => Level::Info,
            Self::SecondaryReconnect { first: false, .. } => Level::Debug,
            Self::Unjournaled { .. } => Level::Warn,
            Self::Ready { .. }
            | Self::MissedWrite { .. }
            | Self::ClusterDone { .. }
            | Self::OutcomesDiffer { .. }
            | Self::Compared { .. }
            | Self::Answered { .. }
            | Self::GeneratedValue { .. }
            | Self::Journal(_)
            | Self::Draining { .. }
            | Self::SecondaryLag { .. } => Level::Debug,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready {
                version,
                compression,
                secondary,
                secondary_ready,
            } => write!(
                f,
                "client ready: protocol {version}, compression {}, {secondary} (secondary) {}",
                compression.map_or("none", |c| c.name()),
                if *secondary_ready {
                    "ready"
                } else {
                    "not ready (still in its handshake, with requests for it waiting, or failed as logged)"
                }
            ),
            Self::Failure {
                upstream,
                kind,
                detail,
                first,
            } => write!(
                f,
                "{upstream} cluster: {kind}: {detail}{}",
                if *first {
                    " (further failures of this kind are logged at debug level until it answers again, and at most once a minute)"
                } else {
                    ""
                }
            ),
            Self::MissedWrite {
                upstream,
                opcode,
                tables,
            } => {
                write!(f, "a {opcode} write did not reach the {upstream} cluster")?;
                for (i, table) in tables.iter().enumerate() {
                    let keyspace = table.keyspace.as_deref().unwrap_or("?");
                    let sep = if i == 0 { " (" } else { ", " };
                    write!(f, "{sep}{keyspace}.{}", table.table)?;
                }
                if tables.is_empty() {
                    Ok(())
                } else {
                    write!(f, ")")
                }
            }
            Self::ClientError { detail, .. } => write!(f, "client: {detail}"),
            Self::ClusterDone {
                upstream,
                opcode,
                latency,
                result,
                ..
            } => write!(
                f,
                "the {upstream} cluster finished {opcode} in {latency:?}: {}",
                match result {
                    ClusterResult::Ok => "answered".to_owned(),
                    ClusterResult::Error(code) => format!(
                        "ERROR {} (0x{:04x})",
                        code.name().unwrap_or("unknown"),
                        code.0
                    ),
                    ClusterResult::Failed(kind) => kind.name().to_owned(),
                }
            ),
            Self::OutcomesDiffer { opcode, .. } => {
                write!(f, "the clusters' answers to a {opcode} differ")
            }
            Self::Compared {
                table,
                divergence: None,
            } => write!(f, "the clusters' answers about {} agree", table.qualified()),
            Self::Compared {
                table,
                divergence: Some(d),
            } => {
                write!(
                    f,
                    "the clusters' answers about {} differ:",
                    table.qualified()
                )?;
                for (kind, n) in &d.counts {
                    write!(f, " {} {n}", kind.label())?;
                }
                Ok(())
            }
            Self::Answered {
                opcode,
                write,
                latency,
                added,
                primary,
            } => write!(
                f,
                "answered {opcode}{} in {latency:?} ({primary} primary; {added:?} after its answer)",
                if *write { " (write)" } else { "" }
            ),
            Self::GeneratedValue { function } => {
                write!(f, "generated the value of a {} call", function.label())
            }
            Self::Journal(record) => write!(
                f,
                "journaled a {} write the {} cluster missed ({})",
                record.kind.name(),
                record.cluster,
                record.outcome.name()
            ),
            Self::Unjournaled { upstream, reason } => write!(
                f,
                "a write the {upstream} cluster missed is not in the journal: {}",
                match reason {
                    Unjournaled::UnknownStatement =>
                        "its prepared statement is no longer known to the proxy (raise --prepared-cache-size); compare the tables it wrote",
                    Unjournaled::NotDataWrite =>
                        "a schema change, TRUNCATE or access-control statement is never replayed; apply it to that cluster by hand",
                    Unjournaled::Malformed => "its body could not be read again",
                }
            ),
            Self::Draining { in_flight } => write!(
                f,
                "shutting down: no new requests; closing after the {in_flight} in flight"
            ),
            Self::SchemaAgreement {
                upstream,
                reached: true,
                waited,
            } => write!(
                f,
                "the {upstream} cluster's nodes agreed on the schema after {waited:?}"
            ),
            Self::SchemaAgreement {
                upstream,
                reached: false,
                waited,
            } => write!(
                f,
                "the {upstream} cluster's nodes did not agree on the schema within {waited:?} (--schema-agreement-timeout): the schema change is answered anyway; a node may be down"
            ),
            Self::SecondaryLag {
                upstream,
                requests,
                bytes,
            } => write!(
                f,
                "the {upstream} cluster (secondary) has {requests} requests ({bytes} bytes) of this client unfinished (--max-secondary-lag, --max-secondary-lag-bytes): the client is not read until it catches up"
            ),
            Self::SecondaryReconnect {
                upstream,
                result:
                    reconnect::Reconnect::Reconnected {
                        down,
                        attempts,
                        missed,
                    },
                first,
            } => write!(
                f,
                "the connection to the {upstream} cluster (secondary) is back after {down:?} ({attempts} attempt(s)); {missed} write(s) were missed meanwhile{}",
                if *first {
                    " (further reconnections of this cluster within a minute are logged at debug level)"
                } else {
                    ""
                }
            ),
            Self::SecondaryReconnect {
                upstream,
                result: reconnect::Reconnect::Failed { attempt, retry_in },
                ..
            } => write!(
                f,
                "attempt {attempt} to connect to the {upstream} cluster (secondary) again failed; next in {retry_in:?}"
            ),
            Self::UnmappedNode { address, .. } => write!(
                f,
                "node {address} is not in --ghostIps: drivers are not told about it (add it to the map to let them use it)"
            ),
        }
    }
}

/// Timers of a session. Connect timers wait in [`Session::timers`]; request deadlines are kept
/// with their stream ids (see [`Session::stream_check`]) and found by a scan when due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Connect(Upstream),
    Stream(Upstream, StreamId),
    /// Read the schema versions again (see `agreement.rs`).
    Agreement(Upstream, request::RequestId),
    /// Open the failed connection to the secondary again (see `reconnect.rs`).
    Reconnect(Upstream),
}

/// Where the handshake with the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for STARTUP (OPTIONS is answered meanwhile).
    Startup,
    /// STARTUP is with the clusters.
    Starting,
    /// The primary asked for credentials; AUTH_RESPONSE goes to it.
    Authenticating,
    /// Queries flow.
    Ready,
}

/// A client connection with its connections to the two clusters.
#[derive(Debug)]
pub struct Session {
    proxy: Arc<Proxy>,
    id: SessionId,
    phase: Phase,
    /// The protocol version fixed by STARTUP.
    version: Option<ProtocolVersion>,
    /// The version of the client's last valid frame (OPTIONS may come before STARTUP).
    spoken: Option<ProtocolVersion>,
    /// The body compression the client negotiated (v3/v4), or lz4 segments (v5).
    compression: Option<Compression>,
    /// The keyspace of the primary's connection (`USE`), for prepared statements.
    keyspace: Option<String>,
    /// The primary when STARTUP arrived: the client authenticates with it, whatever the
    /// proxy's primary becomes during the handshake.
    handshake_primary: Option<Upstream>,
    client: ClientLeg,
    upstreams: [UpstreamLeg; 2],
    requests: RequestTable,
    /// Bytes of answers held in `requests` (the primary's, until the client may have them,
    /// and the handshake's): counted as queued for the client.
    stored: usize,
    serials: u64,
    /// Requests whose primary answered while the client's answer waits for the secondary,
    /// with the deadline of that wait (`--wait-timeout`), in deadline order.
    waits: VecDeque<(Instant, request::RequestId, u64)>,
    order: order::Order,
    /// What the secondary has not finished (see `lag.rs`).
    lag: lag::Lag,
    timers: BTreeSet<(Instant, Timer)>,
    /// No in-flight request's deadline is earlier than this. Keeping one timer per request
    /// in `timers` cost a tree insert and removal per request and cluster; instead, when this
    /// passes, the stream tables are scanned for expired requests and it is recomputed. In
    /// steady traffic that is one scan per request timeout.
    stream_check: Option<Instant>,
    idle_deadline: Option<Instant>,
    /// The client must be ready by then (`--handshake-timeout`); `None` once it is.
    handshake_deadline: Option<Instant>,
    /// Since when a frame the client started has been incomplete (`--frame-timeout`).
    partial_since: Option<Instant>,
    /// The backend connections were asked for (at the client's first bytes).
    upstreams_requested: bool,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// Shutting down: no new requests; close once nothing is in flight.
    draining: bool,
    finished: bool,
    /// The address the client connected to (this proxy instance, as the client reaches it).
    local_address: Option<SocketAddr>,
    /// The session's own read of the primary's topology, and the client reads waiting for it.
    fetch: topology::Fetch,
    /// Schema changes waiting for a cluster's nodes to agree.
    agreements: Vec<agreement::Agreement>,
    /// What the session needs to open a failed secondary's connection again.
    rejoin: reconnect::Rejoin,
    /// What this session added to the proxy-wide gauges of requests in flight and of
    /// requests the secondary has not finished (see [`Session::publish_gauges`]).
    published: [i64; 2],
}

/// What a session counted in the proxy-wide gauges goes with it.
impl Drop for Session {
    fn drop(&mut self) {
        let stats = self.proxy.stats();
        let [in_flight, lag] = self.published;
        stats.in_flight.fetch_sub(in_flight, Ordering::Relaxed);
        stats.secondary_lag.fetch_sub(lag, Ordering::Relaxed);
    }
}

impl Session {
    /// A session for a newly accepted client connection of `proxy`. It asks for its backend
    /// connections when the client's first bytes arrive.
    pub fn new(proxy: Arc<Proxy>, now: Instant) -> Self {
        let id = proxy.next_session_id();
        let config = proxy.config();
        let max_frame = config.max_frame_size;
        Self {
            id,
            phase: Phase::Startup,
            version: None,
            spoken: None,
            compression: None,
            keyspace: None,
            handshake_primary: None,
            client: ClientLeg::new(max_frame),
            upstreams: [
                UpstreamLeg::new(Upstream::Source, max_frame),
                UpstreamLeg::new(Upstream::Target, max_frame),
            ],
            requests: RequestTable::default(),
            stored: 0,
            serials: 0,
            waits: VecDeque::new(),
            order: order::Order::default(),
            lag: lag::Lag::default(),
            timers: BTreeSet::new(),
            stream_check: None,
            idle_deadline: config.idle_timeout.map(|d| now + d),
            handshake_deadline: Some(now + config.handshake_timeout),
            partial_since: None,
            upstreams_requested: false,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            draining: false,
            finished: false,
            local_address: None,
            fetch: topology::Fetch::default(),
            agreements: Vec::new(),
            rejoin: reconnect::Rejoin::default(),
            published: [0; 2],
            proxy,
        }
    }

    /// Asks for the two backend connections, once the client sent its first bytes: a client
    /// that connects and says nothing costs one socket, not three, until
    /// `--handshake-timeout` closes it.
    fn open_upstreams(&mut self, now: Instant) {
        if self.upstreams_requested {
            return;
        }
        self.upstreams_requested = true;
        for upstream in Upstream::BOTH {
            let endpoint = self.proxy.pick_node(upstream, self.id.0, now);
            self.upstreams[upstream.index()].endpoint = Some(endpoint.clone());
            let deadline = now + self.proxy.config().connect_timeout;
            self.timers.insert((deadline, Timer::Connect(upstream)));
            self.actions
                .push_back(Action::Connect { upstream, endpoint });
        }
    }

    /// A session for a client that connected to this proxy at `local` (the address it
    /// advertises to that client when no proxy instances are configured).
    pub fn accepted(proxy: Arc<Proxy>, local: SocketAddr, now: Instant) -> Self {
        let mut session = Self::new(proxy, now);
        session.local_address = Some(local);
        session
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    // ---- inputs ------------------------------------------------------------------------

    /// Bytes arrived from the client: whole frames are taken from `buf`, a partial one stays.
    pub fn handle_client_bytes(&mut self, buf: &mut BytesMut, now: Instant) {
        self.touch(now);
        if !buf.is_empty() {
            self.open_upstreams(now);
        }
        self.read_client(buf, now);
        self.partial_since = if self.client.has_partial(buf) {
            self.partial_since.or(Some(now))
        } else {
            None
        };
        self.after_input(now);
    }

    /// Bytes arrived from a cluster.
    pub fn handle_upstream_bytes(&mut self, upstream: Upstream, buf: &mut BytesMut, now: Instant) {
        self.read_upstream(upstream, buf, now);
        // An answer frees a stream id, which a request held for want of one may take.
        self.release_held(now);
        self.after_input(now);
    }

    /// The connection to `upstream` is established.
    pub fn handle_connected(&mut self, upstream: Upstream, now: Instant) {
        self.upstreams[upstream.index()].connected();
        self.after_input(now);
    }

    /// `peer`'s connection closed, or could not be opened; `reason` is for the logs.
    pub fn handle_closed(&mut self, peer: Peer, reason: &str, now: Instant) {
        match peer.upstream() {
            Some(upstream) => self.upstream_lost(upstream, reason, now),
            None => self.client_gone(now),
        }
        self.after_input(now);
    }

    /// The proxy is shutting down: take no new requests from the client, answer those in
    /// flight, then close the client connection (at once if nothing is in flight). What the
    /// clusters still do for requests already answered (a secondary's writes) goes on until
    /// done or timed out, then the session finishes. The runtime gives up on sessions still
    /// open after its drain deadline.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.stop_reconnecting();
        if !self.draining && !self.finished {
            self.draining = true;
            self.events.push_back(Event::Draining {
                in_flight: self.requests.len(),
            });
        }
        self.after_input(now);
    }

    /// The timer armed from [`Session::poll_timeout`] fired (early or late calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            due.push((at, timer));
        }
        while let Some(&(at, id, serial)) = self.waits.front() {
            if at > now {
                break;
            }
            self.waits.pop_front();
            self.wait_expired(id, serial, now);
        }
        self.expire_held(now);
        self.lag_check(now);
        let scan = self.stream_check.is_some_and(|check| check <= now);
        if scan {
            for leg in &self.upstreams {
                for (stream, in_flight) in leg.streams.iter() {
                    if !in_flight.timed_out && in_flight.deadline <= now {
                        due.push((in_flight.deadline, Timer::Stream(leg.which, stream)));
                    }
                }
            }
            // Deadline order, as one timer per request would fire.
            due.sort_unstable();
        }
        for (at, timer) in due {
            match timer {
                Timer::Connect(upstream) => self.connect_timed_out(upstream, now),
                Timer::Stream(upstream, stream) => self.stream_timed_out(upstream, stream, at, now),
                Timer::Agreement(upstream, id) => self.agreement_poll(upstream, id, now),
                Timer::Reconnect(upstream) => self.reconnect(upstream, now),
            }
        }

        if scan {
            self.stream_check = self
                .upstreams
                .iter()
                .flat_map(|leg| leg.streams.iter())
                .filter(|(_, in_flight)| !in_flight.timed_out)
                .map(|(_, in_flight)| in_flight.deadline)
                .min();
        }
        self.check_client_deadlines(now);
        if self.idle_deadline.is_some_and(|d| d <= now) && self.client.is_open() {
            let idle = self.proxy.config().idle_timeout.unwrap_or_default();
            let detail = format!("closing the client connection after {idle:?} without traffic");
            self.client_error(detail, now);
            self.close_client(now);
        }
        self.after_input(now);
    }

    /// Adds what changed since the last input to the proxy-wide gauges of requests in flight
    /// and of requests the secondary has not finished. Once per input, not per request: every
    /// worker thread's sessions add to the same two counters, and a counter both threads
    /// change with every request moves its cache line between cores each time.
    fn publish_gauges(&mut self) {
        let now = [self.requests.len(), self.lag.requests()]
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let stats = self.proxy.stats();
        for ((gauge, published), now) in [&stats.in_flight, &stats.secondary_lag]
            .into_iter()
            .zip(&mut self.published)
            .zip(now)
        {
            if now != *published {
                gauge.fetch_add(now - *published, Ordering::Relaxed);
                *published = now;
            }
        }
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The next thing the driver must do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next bytes to write to `peer`, oldest first.
    #[must_use]
    pub fn poll_transmit(&mut self, peer: Peer) -> Option<Bytes> {
        match peer.upstream() {
            None => self.client.outbox.pop(),
            Some(upstream) => self.upstreams[upstream.index()].poll_transmit(),
        }
    }

    /// The next event for logs and metrics.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|&(at, _)| at);
        let idle = self.idle_deadline.filter(|_| self.client.is_open());
        let wait = self.waits.front().map(|&(at, _, _)| at);
        let held = self.order.next_deadline();
        let lag = self.lag.deadline();
        let handshake = self.handshake_deadline.filter(|_| self.client.is_open());
        let partial = self
            .partial_since
            .filter(|_| self.client.is_open())
            .map(|since| since + self.proxy.config().frame_timeout);
        [
            timer,
            self.stream_check,
            idle,
            wait,
            held,
            lag,
            handshake,
            partial,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the driver should read from `peer` now. False while the other side's queue is
    /// over `--write-buffer-size`, so that no buffer grows without bound, and for the client
    /// once the session is shutting down.
    ///
    /// The client is also not read while its own queue is full: a client that sends requests
    /// and never reads their answers would otherwise make the proxy keep answering it (with
    /// the clusters' answers, or with errors once the clusters' stream ids ran out) into a
    /// queue nobody drains. Nor while `--max-in-flight` of its requests are in flight to the
    /// primary: a client that sends without reading would otherwise push up to 32768
    /// requests per cluster connection onto the clusters before its answers fill the queue,
    /// and the next request would only get an "out of stream ids" error. Requests that timed
    /// out do not count: their ids stay taken until a late answer, and a cluster that never
    /// sends it must get clients errors (OVERLOADED once the ids run out), not silence.
    ///
    /// Nor while the secondary lags `--max-secondary-lag` requests or
    /// `--max-secondary-lag-bytes` behind this client (see `lag.rs`), unless it stalls.
    #[must_use]
    pub fn wants_read(&self, peer: Peer) -> bool {
        let limit = self.proxy.config().write_buffer_size;
        match peer.upstream() {
            None => {
                let primary = &self.upstreams[self.proxy.primary().index()];
                // Requests held for a cluster count as queued for it.
                self.client.is_open()
                    && !self.draining
                    && self.client.outbox.queued() + self.stored < limit
                    && primary.live_in_flight() < self.proxy.config().max_in_flight
                    && !self.lag_pauses()
                    && self
                        .upstreams
                        .iter()
                        .all(|u| u.outbox.queued() + self.order.held_bytes(u.which) < limit)
            }
            // The secondary's answers are read whatever the client's queue holds: each one
            // lets a stored answer of the primary go to the client, so the two together never
            // grow, and an answer of the secondary is kept only as a digest. Not reading it
            // would hold the stored answers until `--wait-timeout` and mark it stalled.
            Some(upstream) if upstream != self.proxy.primary() => {
                self.upstreams[upstream.index()].is_readable()
            }
            Some(upstream) => {
                self.upstreams[upstream.index()].is_readable()
                    && self.client.outbox.queued() + self.stored < limit
            }
        }
    }

    /// Whether [`Session::poll_transmit`] has bytes for `peer` now.
    #[must_use]
    pub fn has_transmit(&self, peer: Peer) -> bool {
        match peer.upstream() {
            None => self.client.outbox.queued() > 0,
            Some(upstream) => {
                let leg = &self.upstreams[upstream.index()];
                leg.is_readable() && leg.outbox.queued() > 0
            }
        }
    }

    /// Bytes held for `peer`: queued and not yet pulled, and (for the client) answers waiting
    /// for the other cluster, (for a cluster) requests held for it. This is what backpressure
    /// limits.
    #[must_use]
    pub fn queued(&self, peer: Peer) -> usize {
        match peer.upstream() {
            None => self.client.outbox.queued() + self.stored,
            Some(upstream) => {
                self.upstreams[upstream.index()].outbox.queued() + self.order.held_bytes(upstream)
            }
        }
    }

    /// Bytes of cluster answers the session holds in its table of requests in flight,
    /// counted by walking the table (for tests and diagnostics; it is not what backpressure
    /// uses). Answers are kept only until they are no longer needed: the primary's until the
    /// client has it, the handshake's until the handshake step is done.
    #[must_use]
    pub fn held_answer_bytes(&self) -> usize {
        self.requests.held_answer_bytes()
    }

    /// True once the client is gone and every request has ended: the driver can drop the
    /// session after writing what is still queued.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Requests in flight (for metrics).
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Stream ids in flight on the connection to `upstream`, including those of requests that
    /// timed out and are still unanswered.
    #[must_use]
    pub fn upstream_in_flight(&self, upstream: Upstream) -> usize {
        self.upstreams[upstream.index()].streams.len()
    }

    // ---- shared plumbing ---------------------------------------------------------------

    fn touch(&mut self, now: Instant) {
        if let Some(idle) = self.proxy.config().idle_timeout {
            self.idle_deadline = Some(now + idle);
        }
    }

    /// Bookkeeping after any input: a draining session closes the client once it has all its
    /// answers; once the client is gone and nothing is in flight, close the backend
    /// connections and finish.
    fn after_input(&mut self, now: Instant) {
        self.publish_gauges();
        // The client has every answer it waits for: it goes; what a cluster still works on
        // for it finishes in the background (a write to a slow secondary is not abandoned).
        if self.draining
            && self.client.is_open()
            && self.requests.all_answered()
            && self.fetch.is_idle()
        {
            self.close_client(now);
        }
        if self.finished || self.client.is_open() || !self.requests.is_empty() {
            return;
        }
        for leg in &mut self.upstreams {
            if let Some(action) = leg.shut() {
                self.actions.push_back(action);
            }
        }
        self.timers.clear();
        self.stream_check = None;
        self.finished = true;
        self.proxy.session_closed();
    }

    fn client_gone(&mut self, _now: Instant) {
        self.client.closed();
    }

    /// Closes a client that stalls its handshake (`--handshake-timeout`) or a frame
    /// (`--frame-timeout`): one byte every few seconds would otherwise hold a connection, and
    /// its two backend connections, for ever.
    fn check_client_deadlines(&mut self, now: Instant) {
        if !self.client.is_open() {
            return;
        }
        let config = self.proxy.config();
        if self.handshake_deadline.is_some_and(|d| d <= now) {
            let detail = format!(
                "closing the client connection: its handshake (STARTUP through READY) did not complete within {:?} (--handshake-timeout)",
                config.handshake_timeout
            );
            self.client_error(detail, now);
            return self.close_client(now);
        }
        let frame_timeout = config.frame_timeout;
        if let Some(since) = self.partial_since.filter(|&s| s + frame_timeout <= now) {
            if !self.wants_read(Peer::Client) {
                // The proxy is not reading (backpressure): that time is not the client's.
                self.partial_since = Some(now);
                return;
            }
            let detail = format!(
                "closing the client connection: a frame it started {:?} ago is still incomplete (--frame-timeout {frame_timeout:?})",
                now.saturating_duration_since(since)
            );
            self.client_error(detail, now);
            self.close_client(now);
        }
    }

    /// Reports what the client did wrong: logged, unless many clients did so lately.
    pub(crate) fn client_error(&mut self, detail: String, now: Instant) {
        let quiet = !self.proxy.note_client_error(now);
        self.events.push_back(Event::ClientError { detail, quiet });
    }

    /// Ends the client connection after what is queued for it (e.g. a protocol error).
    fn close_client(&mut self, _now: Instant) {
        if self.client.is_open() {
            self.client.closing();
            self.actions.push_back(Action::Close(Peer::Client));
        }
    }

    fn request_timeout(&self) -> Duration {
        self.proxy.config().request_timeout
    }

    fn next_serial(&mut self) -> u64 {
        self.serials += 1;
        self.serials
    }
}
