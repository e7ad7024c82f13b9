//! The control connection to one cluster: how the proxy learns the cluster's nodes and keeps
//! what drivers see of the topology current.
//!
//! One per cluster and proxy, as drivers keep one: it logs in (with the proxy's credentials for
//! that cluster, or else with the login of the first client that authenticated there through
//! the proxy), registers for topology, status and schema events, and reads `system.local`,
//! `system.peers` and `system.peers_v2`. The view it reads goes to the [`Proxy`]: sessions
//! answer drivers' reads of those tables from the primary's view, and pick the node of each new
//! backend connection among the nodes of the view that are up, in the local data center. It
//! reads again after every topology or status event and every [`REFRESH`] (which also tells
//! whether its node still answers), and when its node fails it moves to another, backing off.
//!
//! After each topology read it also reads `system_schema.columns` ([`SCHEMA_QUERY`]), for the
//! primary key of every table (a [`Schema`], handed to [`Proxy::note_schema`]): comparing the
//! two clusters' answers to a read row by row needs to know which row is which. A schema change
//! event leads to a read of the schema alone, shortly after. The schema is a convenience, not
//! what the connection's health rests on: a schema read that fails (an ERROR, a timeout, an
//! answer that cannot be read) leaves the connection and the last schema read as they are,
//! and is tried again at the next refresh. Only an answer too large to take (16 MiB) costs the
//! connection (its bytes cannot be skipped), once: the schema is not asked for again.
//!
//! Like a [`Session`](crate::session::Session), it is a sans-IO state machine: the runtime
//! owns the socket and the timer, carries out the [`ControlAction`]s, and on readiness calls
//! [`ControlConnection::handle_readable`] / [`ControlConnection::handle_writable`] with
//! closures doing one non-blocking read or vectored write (as with
//! [`Driver`](crate::driver::Driver)); the buffers are kept here.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::{Endpoint, Upstream};
use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::{
    Direction, Envelope, EnvelopeDecoder, Flags, FrameDecoder, FrameEncoder, HEADER_LEN, Header,
    Opcode, ProtocolVersion, StreamId,
};
use crate::health::ClusterState;
use crate::message::{
    AuthResponse, Body, ErrorCode, ErrorMessage, Event as EventMessage, Query, QueryParams,
    Register, Startup,
};
use crate::nonblocking::{self, READ_CHUNK};
use crate::proxy::Proxy;
use crate::schema::{SCHEMA_QUERY, Schema};
use crate::topology::SystemTable;
use crate::topology::view::{ClusterView, TableData, TableError};
use crate::wire::Consistency;

/// How often the topology is read again without an event.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How long after a topology or status event the topology is read again (events come in
/// bursts when nodes restart), and after a schema change event the schema (a migration script
/// creates tables one after another).
const EVENT_DELAY: Duration = Duration::from_secs(1);
/// Back-off between attempts to connect, doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// The largest frame the control connection accepts. Topology tables are small; the schema
/// read is one row of about 80 bytes per column of every table, so this is room for some
/// 200,000 columns (a larger schema is not read).
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Something the runtime must do for the control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlAction {
    /// Open a connection to `endpoint`; report with [`ControlConnection::handle_connected`]
    /// or [`ControlConnection::handle_closed`].
    Connect(Endpoint),
    /// Close the connection (what was queued may be dropped).
    Close,
}

/// Something that happened, for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlEvent {
    /// The topology was read through `endpoint`: `nodes` nodes.
    Refreshed {
        upstream: Upstream,
        endpoint: Endpoint,
        nodes: usize,
        first: bool,
    },
    /// A node was reported up or down.
    NodeStatus {
        upstream: Upstream,
        address: SocketAddr,
        up: bool,
    },
    /// The control connection failed; it tries again (another node) after `retry_in`.
    /// `first` when this failure is news: not the same as the last one reported within
    /// [`crate::proxy::REPORT_INTERVAL`] (retries fail the same way, every few seconds).
    Failed {
        upstream: Upstream,
        detail: String,
        retry_in: Duration,
        first: bool,
    },
    /// The schema was read: the primary keys of `tables` tables. `first`: the first read of
    /// this control connection.
    SchemaRead {
        upstream: Upstream,
        tables: usize,
        first: bool,
    },
    /// The schema could not be read; the last one read is kept, and the connection reads it
    /// again at the next refresh. `first` when this failure is news: not the same as the last
    /// schema failure reported since a schema read succeeded.
    SchemaFailed {
        upstream: Upstream,
        detail: String,
        first: bool,
    },
}

impl fmt::Display for ControlEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refreshed {
                upstream,
                endpoint,
                nodes,
                first,
            } => write!(
                f,
                "{} the {upstream} cluster's topology through {endpoint}: {nodes} nodes",
                if *first { "read" } else { "read again" }
            ),
            Self::NodeStatus {
                upstream,
                address,
                up,
            } => write!(
                f,
                "the {upstream} cluster reports node {address} {}",
                if *up { "up" } else { "down" }
            ),
            Self::Failed {
                upstream,
                detail,
                retry_in,
                first,
            } => write!(
                f,
                "control connection to the {upstream} cluster: {detail}; trying again in {retry_in:?}{}",
                if *first {
                    " (the same failure again is logged at debug level, and at most once a minute)"
                } else {
                    ""
                }
            ),
            Self::SchemaRead {
                upstream,
                tables,
                first,
            } => write!(
                f,
                "{} the {upstream} cluster's schema: the primary keys of {tables} table{}",
                if *first { "read" } else { "read again" },
                if *tables == 1 { "" } else { "s" }
            ),
            Self::SchemaFailed {
                upstream,
                detail,
                first,
            } => write!(
                f,
                "cannot read the {upstream} cluster's schema (system_schema.columns): {detail}; keeping what was read before, trying again at the next refresh{}",
                if *first {
                    " (the same failure again is logged at debug level)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// What an in-flight request of the control connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Startup,
    Login,
    Register,
    Table(SystemTable),
    /// `system_schema.columns`.
    Schema,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to connect again.
    Waiting,
    Connecting,
    /// Logging in and registering.
    Opening,
    Open,
}

/// The control connection to one cluster.
#[derive(Debug)]
pub struct ControlConnection {
    proxy: Arc<Proxy>,
    upstream: Upstream,
    state: State,
    version: ProtocolVersion,
    endpoint: Option<Endpoint>,
    /// Which candidate to try next.
    attempt: usize,
    failures: u32,
    /// The last failure reported as news, and when.
    reported: Option<(String, Instant)>,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    /// What arrived and is not a whole frame yet.
    recv: BytesMut,
    /// Frames encoded and not yet handed to `send`.
    out: BytesMut,
    /// Bytes the socket has not taken yet.
    send: VecDeque<Bytes>,
    next_stream: i16,
    asked: BTreeMap<i16, (Asked, Instant)>,
    local: Option<TableData>,
    peers: Option<Result<TableData, TableError>>,
    peers_v2: Option<Result<TableData, TableError>>,
    reading: bool,
    refreshed_once: bool,
    /// When to read the schema again after a schema change event. Kept while the topology or
    /// the schema is being read (the change may not be in what that read returns), and acted
    /// on when it is done.
    schema_due: Option<Instant>,
    schema_read_once: bool,
    /// The last schema failure reported as news, until a schema read succeeds.
    schema_reported: Option<String>,
    /// The schema's answer was larger than [`MAX_FRAME`]: it is not read again.
    schema_too_large: bool,
    /// When to connect again, read again, or send a heartbeat.
    wake_at: Option<Instant>,
    connect_deadline: Option<Instant>,
    actions: VecDeque<ControlAction>,
    events: VecDeque<ControlEvent>,
}

impl ControlConnection {
    /// A control connection to `upstream`; drain its actions at once: it asks to connect.
    pub fn new(proxy: Arc<Proxy>, upstream: Upstream, now: Instant) -> Self {
        let mut control = Self {
            proxy,
            upstream,
            state: State::Waiting,
            version: ProtocolVersion::V4,
            endpoint: None,
            attempt: 0,
            failures: 0,
            reported: None,
            decoder: Self::decoder(),
            encoder: FrameEncoder::new(),
            recv: BytesMut::new(),
            out: BytesMut::new(),
            send: VecDeque::new(),
            next_stream: 0,
            asked: BTreeMap::new(),
            local: None,
            peers: None,
            peers_v2: None,
            reading: false,
            refreshed_once: false,
            schema_due: None,
            schema_read_once: false,
            schema_reported: None,
            schema_too_large: false,
            wake_at: None,
            connect_deadline: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        control.connect(now);
        control
    }

    fn decoder() -> FrameDecoder {
        FrameDecoder::new(EnvelopeDecoder::new(MAX_FRAME).expecting(Direction::Response))
    }

    pub fn upstream(&self) -> Upstream {
        self.upstream
    }

    // ---- inputs ------------------------------------------------------------------------

    /// The connection asked for is established.
    pub fn handle_connected(&mut self, now: Instant) {
        if self.state != State::Connecting {
            return;
        }
        self.state = State::Opening;
        self.connect_deadline = None;
        let startup = Startup {
            options: vec![("CQL_VERSION", "3.0.0"), ("DRIVER_NAME", "cqlmirror")],
        };
        self.ask(
            Asked::Startup,
            Opcode::STARTUP,
            startup.to_bytes(self.version),
            now,
        );
    }

    /// The socket is readable: reads with `read` (one non-blocking read per call) until it
    /// would block, and handles what arrived.
    pub fn handle_readable(
        &mut self,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
        now: Instant,
    ) {
        let mut chunk = [0u8; READ_CHUNK];
        while self.is_connected() {
            match nonblocking::read(&mut chunk, &mut read) {
                nonblocking::Read::Got(got) => {
                    self.recv.extend_from_slice(&chunk[..got]);
                    self.on_received(now);
                }
                nonblocking::Read::Drained => break,
                nonblocking::Read::Closed(reason) => {
                    self.on_received(now);
                    self.handle_closed(&reason, now);
                }
            }
        }
    }

    /// The socket may accept bytes: writes with `write` (one non-blocking vectored write per
    /// call) until everything queued is written or the socket is full.
    pub fn handle_writable(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        now: Instant,
    ) {
        while self.is_connected() {
            if !self.out.is_empty() {
                self.send.push_back(self.out.split().freeze());
            }
            if self.send.is_empty() {
                break;
            }
            match nonblocking::write(&mut self.send, &mut write) {
                nonblocking::Write::Wrote(_) => {}
                nonblocking::Write::Full => break,
                nonblocking::Write::Closed(reason) => self.handle_closed(&reason, now),
            }
        }
    }

    /// The connection closed, or could not be opened.
    pub fn handle_closed(&mut self, reason: &str, now: Instant) {
        if matches!(self.state, State::Connecting | State::Opening | State::Open) {
            let what = if self.state == State::Connecting {
                "cannot connect"
            } else {
                "connection lost"
            };
            // The runtime lets go of the socket too: a closed socket stays readable, and
            // polling it until the next attempt would spin.
            self.fail(format!("{what}: {reason}"), now);
        }
    }

    /// The timer fired (early or late calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.connect_deadline.is_some_and(|d| d <= now) {
            let timeout = self.proxy.config().connect_timeout;
            return self.fail(format!("cannot connect within {timeout:?}"), now);
        }
        let late_schema = self
            .asked
            .iter()
            .find(|(_, (asked, deadline))| *asked == Asked::Schema && *deadline <= now)
            .map(|(stream, _)| *stream);
        if let Some(stream) = late_schema {
            // Not a failure of the connection: an answer that comes later is ignored.
            self.asked.remove(&stream);
            let timeout = self.proxy.config().request_timeout;
            self.schema_failed(format!("no answer within {timeout:?}"));
        }
        if let Some((asked, _)) = self.asked.values().find(|(_, deadline)| *deadline <= now) {
            let asked = *asked;
            let timeout = self.proxy.config().request_timeout;
            return self.fail(format!("no answer to {asked:?} within {timeout:?}"), now);
        }
        if self.wake_at.is_some_and(|at| at <= now) {
            self.wake_at = None;
            match self.state {
                State::Waiting => self.connect(now),
                // A schema read still in flight does not hold the topology up.
                State::Open if !self.reading => self.read_topology(now),
                _ => {}
            }
        }
        if self.schema_wake().is_some_and(|at| at <= now) {
            self.read_schema(now);
        }
    }

    // ---- outputs -----------------------------------------------------------------------

    #[must_use]
    pub fn poll_action(&mut self) -> Option<ControlAction> {
        self.actions.pop_front()
    }

    /// Whether the runtime has a socket to wait on for readability: established and not
    /// failed since.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Opening | State::Open)
    }

    /// Whether to wait for the socket to become writable.
    #[must_use]
    pub fn wants_write(&self) -> bool {
        self.is_connected() && !(self.out.is_empty() && self.send.is_empty())
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ControlEvent> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let asked = self.asked.values().map(|(_, deadline)| *deadline).min();
        [
            self.wake_at,
            self.connect_deadline,
            asked,
            self.schema_wake(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- the protocol ----------------------------------------------------------------------

    /// Connects to the next candidate: the known nodes of the cluster (local data center
    /// first), then its contact points.
    fn connect(&mut self, now: Instant) {
        let candidates = self.proxy.candidates(self.upstream);
        let Some(endpoint) = candidates
            .get(self.attempt % candidates.len().max(1))
            .cloned()
        else {
            return;
        };
        self.attempt += 1;
        self.state = State::Connecting;
        self.decoder = Self::decoder();
        self.encoder = FrameEncoder::new();
        self.recv.clear();
        self.out.clear();
        self.send.clear();
        self.asked.clear();
        self.reading = false;
        self.schema_due = None;
        self.connect_deadline = Some(now + self.proxy.config().connect_timeout);
        self.endpoint = Some(endpoint.clone());
        self.actions.push_back(ControlAction::Connect(endpoint));
    }

    fn ask(&mut self, asked: Asked, opcode: Opcode, body: Bytes, now: Instant) {
        self.next_stream = if self.next_stream >= 30_000 {
            1
        } else {
            self.next_stream + 1
        };
        let stream = self.next_stream;
        let header = Header {
            version: self.version,
            direction: Direction::Request,
            flags: Flags::empty(),
            stream: StreamId(stream),
            opcode,
            length: 0,
        };
        self.encoder
            .encode(&Envelope::new(header, body), &mut self.out);
        self.asked
            .insert(stream, (asked, now + self.proxy.config().request_timeout));
    }

    /// Handles the whole frames received.
    fn on_received(&mut self, now: Instant) {
        while self.is_connected() {
            match self.decoder.decode(&mut self.recv) {
                Ok(Some(envelope)) => self.on_envelope(envelope, now),
                Ok(None) => return,
                Err(e) if self.is_schema_answer_too_large(&e) => {
                    // The bytes of that answer cannot be skipped, so the connection goes; the
                    // schema is not asked for again, or it would go at every refresh.
                    self.schema_too_large = true;
                    let detail = format!(
                        "the answer to the schema read is too large ({e}); this cluster's schema is not read any more"
                    );
                    return self.fail(detail, now);
                }
                Err(e) => return self.fail(format!("malformed frame: {e}"), now),
            }
        }
    }

    /// Whether a frame was refused for its size and is the answer to the schema read (its
    /// header, which the refusal left in `recv`, names the stream).
    fn is_schema_answer_too_large(&self, e: &DecodeError) -> bool {
        let too_large = matches!(e.kind, DecodeErrorKind::TooLarge { .. });
        let stream = self
            .recv
            .first_chunk::<HEADER_LEN>()
            .and_then(|raw| Header::decode(raw).ok())
            .map(|header| header.stream.0);
        too_large
            && stream.is_some_and(|s| {
                self.asked
                    .get(&s)
                    .is_some_and(|(asked, _)| *asked == Asked::Schema)
            })
    }

    fn on_envelope(&mut self, envelope: Envelope, now: Instant) {
        if envelope.stream().0 < 0 {
            return self.on_event(&envelope, now);
        }
        let Some((asked, _)) = self.asked.remove(&envelope.stream().0) else {
            return;
        };
        let message = envelope.body().clone();
        let opcode = envelope.opcode();
        match (asked, opcode) {
            (Asked::Startup, Opcode::READY) | (Asked::Login, Opcode::AUTH_SUCCESS) => {
                let register = Register {
                    events: vec![
                        EventMessage::TOPOLOGY_CHANGE,
                        EventMessage::STATUS_CHANGE,
                        EventMessage::SCHEMA_CHANGE,
                    ],
                };
                self.ask(
                    Asked::Register,
                    Opcode::REGISTER,
                    register.to_bytes(self.version),
                    now,
                );
            }
            (Asked::Startup, Opcode::AUTHENTICATE) => self.log_in(now),
            (Asked::Login, Opcode::AUTH_CHALLENGE) => {
                self.fail("the cluster asked for a second authentication step, which the control connection's login does not support".into(), now);
            }
            (Asked::Startup, Opcode::ERROR)
                if self.is_version_refusal(&message) && self.version > ProtocolVersion::V3 =>
            {
                // An older cluster: the same node again, one version lower.
                self.version = ProtocolVersion::V3;
                self.attempt = self.attempt.saturating_sub(1);
                self.actions.push_back(ControlAction::Close);
                self.connect(now);
            }
            (Asked::Register, Opcode::READY) => {
                self.state = State::Open;
                self.read_topology(now);
            }
            (Asked::Table(table), Opcode::RESULT | Opcode::ERROR) => {
                self.on_table(table, opcode, message, now)
            }
            (Asked::Schema, opcode) => self.on_schema(opcode, &message),
            (_, Opcode::ERROR) => {
                let text = self.error_text(&message);
                let detail = if asked == Asked::Login {
                    format!(
                        "the cluster refused the login: {text}; give the proxy valid credentials with --{}-username and --{}-password",
                        self.upstream, self.upstream
                    )
                } else {
                    format!("{asked:?} refused: {text}")
                };
                self.fail(detail, now);
            }
            (asked, opcode) => self.fail(format!("unexpected {opcode} answering {asked:?}"), now),
        }
    }

    /// Answers AUTHENTICATE with the proxy's credentials for the cluster, or with a client's
    /// login seen through the proxy.
    fn log_in(&mut self, now: Instant) {
        let token = match &self.proxy.config().cluster(self.upstream).credentials {
            Some(c) => Some(crate::message::sasl_plain_token(
                &c.username,
                c.password.expose(),
            )),
            None => self.proxy.learned_login(self.upstream),
        };
        let Some(token) = token else {
            let u = self.upstream;
            return self.fail(format!("the cluster requires authentication: give the proxy credentials with --{u}-username and --{u}-password (without them it uses the login of the first client that authenticates through the proxy)"), now);
        };
        let body = AuthResponse {
            token: Some(token.expose()),
        }
        .to_bytes(self.version);
        self.state = State::Opening;
        self.ask(Asked::Login, Opcode::AUTH_RESPONSE, body, now);
    }

    fn read_topology(&mut self, now: Instant) {
        self.reading = true;
        self.local = None;
        self.peers = None;
        self.peers_v2 = None;
        for table in [SystemTable::Local, SystemTable::Peers, SystemTable::PeersV2] {
            let body = Query {
                text: &format!("SELECT * FROM {}", table.name()),
                params: QueryParams::new(Consistency::ONE),
            }
            .to_bytes(self.version);
            self.ask(Asked::Table(table), Opcode::QUERY, body, now);
        }
    }

    fn on_table(&mut self, table: SystemTable, opcode: Opcode, message: Bytes, now: Instant) {
        let result = if opcode == Opcode::ERROR {
            if !TableError::is_missing_table(&message, self.version) {
                let text = self.error_text(&message);
                return self.fail(format!("cannot read {}: {text}", table.name()), now);
            }
            Err(TableError { message })
        } else {
            match TableData::from_result(&message, self.version) {
                Ok(data) => Ok(data),
                Err(e) => return self.fail(format!("{}: {e}", table.name()), now),
            }
        };
        match (table, result) {
            (SystemTable::Local, Ok(local)) if !local.rows.is_empty() => self.local = Some(local),
            (SystemTable::Local, Ok(_)) => return self.fail("system.local has no row".into(), now),
            (SystemTable::Local, Err(e)) => {
                let text = self.error_text(&e.message);
                return self.fail(format!("cannot read system.local: {text}"), now);
            }
            (SystemTable::Peers, result) => self.peers = Some(result),
            (SystemTable::PeersV2, result) => self.peers_v2 = Some(result),
        }
        if self.local.is_none() || self.peers.is_none() || self.peers_v2.is_none() {
            return;
        }
        let (Some(local), Some(peers), Some(peers_v2)) =
            (self.local.take(), self.peers.take(), self.peers_v2.take())
        else {
            return;
        };
        self.reading = false;
        let read_from = self
            .endpoint
            .as_ref()
            .and_then(|e| e.host.parse().ok().map(|ip| SocketAddr::new(ip, e.port)));
        let view = ClusterView {
            local,
            peers,
            peers_v2,
            read_from,
        };
        let default_port = self.endpoint.as_ref().map_or(9042, |e| e.port);
        let nodes = view.nodes(default_port).len();
        self.proxy.handle_cluster_view(self.upstream, view);
        self.proxy
            .note_cluster_state(self.upstream, ClusterState::Reachable);
        self.failures = 0;
        self.reported = None;
        self.events.push_back(ControlEvent::Refreshed {
            upstream: self.upstream,
            endpoint: self.endpoint.clone().unwrap_or(Endpoint {
                host: String::new(),
                port: 0,
            }),
            nodes,
            first: !self.refreshed_once,
        });
        self.refreshed_once = true;
        self.wake_at = Some(now + REFRESH);
        // One schema read at a time: a schema change since the one in flight was sent has set
        // `schema_due`, which is acted on when it is done.
        if !self.is_reading_schema() && !self.schema_too_large {
            self.read_schema(now);
        }
    }

    fn is_reading_schema(&self) -> bool {
        self.asked
            .values()
            .any(|(asked, _)| *asked == Asked::Schema)
    }

    /// When a schema change calls for reading the schema, if nothing in flight is to be
    /// waited for first.
    fn schema_wake(&self) -> Option<Instant> {
        let free = self.state == State::Open
            && !self.reading
            && !self.is_reading_schema()
            && !self.schema_too_large;
        self.schema_due.filter(|_| free)
    }

    /// Reads `system_schema.columns` whole: no page size, so the node returns every row in
    /// one answer (see [`MAX_FRAME`]).
    fn read_schema(&mut self, now: Instant) {
        self.schema_due = None;
        let body = Query {
            text: SCHEMA_QUERY,
            params: QueryParams::new(Consistency::ONE),
        }
        .to_bytes(self.version);
        self.ask(Asked::Schema, Opcode::QUERY, body, now);
    }

    fn on_schema(&mut self, opcode: Opcode, message: &[u8]) {
        let read = match opcode {
            Opcode::RESULT => Schema::from_result(message, self.version).map_err(|e| e.to_string()),
            Opcode::ERROR => Err(format!("refused: {}", self.error_text(message))),
            other => Err(format!("unexpected {other} answering the read")),
        };
        match read {
            Ok(schema) => {
                let tables = schema.len();
                self.proxy.note_schema(self.upstream, schema);
                self.schema_reported = None;
                self.events.push_back(ControlEvent::SchemaRead {
                    upstream: self.upstream,
                    tables,
                    first: !self.schema_read_once,
                });
                self.schema_read_once = true;
            }
            Err(detail) => self.schema_failed(detail),
        }
    }

    /// A schema read failed: reported, and otherwise left to the next refresh.
    fn schema_failed(&mut self, detail: String) {
        let endpoint = self
            .endpoint
            .as_ref()
            .map_or(String::new(), |e| format!(" ({e})"));
        let detail = format!("{detail}{endpoint}");
        let first = self.schema_reported.as_ref() != Some(&detail);
        if first {
            self.schema_reported = Some(detail.clone());
        }
        self.events.push_back(ControlEvent::SchemaFailed {
            upstream: self.upstream,
            detail,
            first,
        });
    }

    fn on_event(&mut self, envelope: &Envelope, now: Instant) {
        let Ok(event) = EventMessage::decode(envelope.body(), self.version) else {
            return;
        };
        if let EventMessage::SchemaChange(_) = &event {
            // The schema alone is read again; the topology did not change. The earliest due
            // time is kept, so that a long burst of changes still gets a read every
            // EVENT_DELAY or so.
            let soon = now + EVENT_DELAY;
            if self.state == State::Open && self.schema_due.is_none_or(|at| at > soon) {
                self.schema_due = Some(soon);
            }
            return;
        }
        if let EventMessage::StatusChange { change, address } = &event {
            let up = *change == EventMessage::UP;
            self.proxy
                .handle_node_status(self.upstream, *address, up, now);
            self.events.push_back(ControlEvent::NodeStatus {
                upstream: self.upstream,
                address: *address,
                up,
            });
        }
        if self.state == State::Open && !self.reading {
            let soon = now + EVENT_DELAY;
            if self.wake_at.is_none_or(|at| at > soon) {
                self.wake_at = Some(soon);
            }
        }
    }

    fn is_version_refusal(&self, message: &[u8]) -> bool {
        ErrorMessage::decode(message, self.version).is_ok_and(|e| {
            e.code == ErrorCode::PROTOCOL_ERROR
                && e.message.to_ascii_lowercase().contains("protocol version")
        })
    }

    fn error_text(&self, message: &[u8]) -> String {
        ErrorMessage::decode(message, self.version).map_or_else(
            |_| "an undecodable error".to_owned(),
            |e| e.message.into_owned(),
        )
    }

    /// The connection failed: close it and try again after a back-off.
    fn fail(&mut self, detail: String, now: Instant) {
        if self.state != State::Waiting {
            self.actions.push_back(ControlAction::Close);
        }
        self.state = State::Waiting;
        self.recv = BytesMut::new();
        self.out.clear();
        self.send.clear();
        self.asked.clear();
        self.reading = false;
        self.schema_due = None;
        self.connect_deadline = None;
        let retry_in = BACKOFF
            .0
            .saturating_mul(1 << self.failures.min(6))
            .min(BACKOFF.1);
        self.failures += 1;
        self.wake_at = Some(now + retry_in);
        let endpoint = self
            .endpoint
            .as_ref()
            .map_or(String::new(), |e| format!(" ({e})"));
        let detail = format!("{detail}{endpoint}");
        let first = self.reported.as_ref().is_none_or(|(last, at)| {
            *last != detail || now.saturating_duration_since(*at) >= crate::proxy::REPORT_INTERVAL
        });
        if first {
            self.reported = Some((detail.clone(), now));
        }
        self.proxy
            .note_cluster_state(self.upstream, ClusterState::Unreachable(detail.clone()));
        self.events.push_back(ControlEvent::Failed {
            upstream: self.upstream,
            detail,
            retry_in,
            first,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::tests::schema_result;
    use crate::topology::view::tests::two_node_results;

    fn start() -> (ControlConnection, Arc<Proxy>, Instant) {
        let (proxy, now) = crate::proxy::tests::proxy();
        let control = ControlConnection::new(Arc::clone(&proxy), Upstream::Source, now);
        (control, proxy, now)
    }

    /// Everything the connection writes, decoded as requests: (stream, opcode).
    fn sent(control: &mut ControlConnection, now: Instant) -> Vec<(i16, Opcode)> {
        sent_bodies(control, now)
            .into_iter()
            .map(|(stream, opcode, _)| (stream, opcode))
            .collect()
    }

    /// Everything the connection writes, decoded as requests: (stream, opcode, body).
    fn sent_bodies(control: &mut ControlConnection, now: Instant) -> Vec<(i16, Opcode, Bytes)> {
        let mut wire = BytesMut::new();
        control.handle_writable(
            |bufs| {
                // A socket that takes a few bytes at a time.
                let first = bufs.first().map_or(&[][..], |b| &b[..b.len().min(7)]);
                wire.extend_from_slice(first);
                Ok(first.len())
            },
            now,
        );
        assert!(!control.wants_write(), "everything was written");
        let mut decoder =
            FrameDecoder::new(EnvelopeDecoder::new(MAX_FRAME).expecting(Direction::Request));
        let mut out = Vec::new();
        while let Some(envelope) = decoder.decode(&mut wire).expect("well-formed requests") {
            out.push((
                envelope.stream().0,
                envelope.opcode(),
                envelope.body().clone(),
            ));
        }
        assert!(wire.is_empty());
        out
    }

    /// Answers `stream` with `opcode` and `body`, in two reads.
    fn answer(
        control: &mut ControlConnection,
        stream: i16,
        opcode: Opcode,
        body: Bytes,
        now: Instant,
    ) {
        let header = Header {
            version: ProtocolVersion::V4,
            direction: Direction::Response,
            flags: Flags::empty(),
            stream: StreamId(stream),
            opcode,
            length: 0,
        };
        let mut wire = BytesMut::new();
        FrameEncoder::new().encode(&Envelope::new(header, body), &mut wire);
        let mut reads = [wire.split_to(5), wire].into_iter();
        control.handle_readable(
            |buf| match reads.next() {
                Some(part) => {
                    buf[..part.len()].copy_from_slice(&part);
                    Ok(part.len())
                }
                None => Err(io::ErrorKind::WouldBlock.into()),
            },
            now,
        );
    }

    #[test]
    fn the_same_failure_again_is_not_news() {
        let (mut control, _proxy, mut now) = start();
        let mut firsts = Vec::new();
        for _ in 0..5 {
            assert!(matches!(
                control.poll_action(),
                Some(ControlAction::Connect(_))
            ));
            control.handle_closed("connection refused", now);
            while control.poll_action().is_some() {}
            while let Some(event) = control.poll_event() {
                if let ControlEvent::Failed { first, .. } = event {
                    firsts.push(first);
                }
            }
            now = control.poll_timeout().expect("a retry is scheduled");
            control.handle_timeout(now);
        }
        assert_eq!(firsts, vec![true, false, false, false, false]);
        // Another reason is news.
        assert!(matches!(
            control.poll_action(),
            Some(ControlAction::Connect(_))
        ));
        control.handle_closed("TLS: its certificate has expired", now);
        assert!(matches!(
            control.poll_event(),
            Some(ControlEvent::Failed { first: true, .. })
        ));
    }

    #[test]
    fn logs_in_reads_the_topology_and_lets_go_of_a_closed_socket() {
        let (mut control, proxy, now) = start();
        assert_eq!(
            control.poll_action(),
            Some(ControlAction::Connect(Endpoint {
                host: "s".into(),
                port: 9042
            }))
        );
        control.handle_connected(now);
        let [(startup, Opcode::STARTUP)] = sent(&mut control, now)[..] else {
            panic!("a STARTUP first");
        };
        answer(&mut control, startup, Opcode::READY, Bytes::new(), now);
        let [(register, Opcode::REGISTER)] = sent(&mut control, now)[..] else {
            panic!("then a REGISTER");
        };
        answer(&mut control, register, Opcode::READY, Bytes::new(), now);
        let reads = sent(&mut control, now);
        assert_eq!(
            reads.len(),
            3,
            "system.local, system.peers and system.peers_v2"
        );
        assert!(proxy.view(Upstream::Source).is_none());
        for ((stream, opcode), body) in reads.into_iter().zip(two_node_results()) {
            assert_eq!(opcode, Opcode::QUERY);
            answer(&mut control, stream, Opcode::RESULT, body, now);
        }
        let view = proxy.view(Upstream::Source).expect("the view was read");
        assert_eq!(view.nodes(9042).len(), 2);
        assert!(matches!(
            control.poll_event(),
            Some(ControlEvent::Refreshed { .. })
        ));

        // The node closes the connection: the runtime is told to let go of the socket (a
        // closed socket stays readable) and the connection tries again after a back-off.
        control.handle_readable(|_| Ok(0), now);
        assert!(!control.is_connected());
        assert_eq!(control.poll_action(), Some(ControlAction::Close));
        assert!(matches!(
            control.poll_event(),
            Some(ControlEvent::Failed { .. })
        ));
        let retry = control.poll_timeout().expect("a retry is scheduled");
        control.handle_timeout(retry);
        assert!(matches!(
            control.poll_action(),
            Some(ControlAction::Connect(_))
        ));
    }

    /// Connects, logs in, registers and answers the topology reads; returns the stream of the
    /// schema read that follows, checking that it is one.
    fn open(control: &mut ControlConnection, now: Instant) -> i16 {
        assert!(matches!(
            control.poll_action(),
            Some(ControlAction::Connect(_))
        ));
        control.handle_connected(now);
        let [(startup, Opcode::STARTUP)] = sent(control, now)[..] else {
            panic!("a STARTUP first");
        };
        answer(control, startup, Opcode::READY, Bytes::new(), now);
        let [(register, Opcode::REGISTER, ref body)] = sent_bodies(control, now)[..] else {
            panic!("then a REGISTER");
        };
        let events = Register::decode(body, ProtocolVersion::V4).unwrap().events;
        assert_eq!(
            events,
            ["TOPOLOGY_CHANGE", "STATUS_CHANGE", "SCHEMA_CHANGE"]
        );
        answer(control, register, Opcode::READY, Bytes::new(), now);
        answer_topology(control, now)
    }

    /// Answers the topology reads just sent; returns the stream of the schema read that
    /// follows them.
    fn answer_topology(control: &mut ControlConnection, now: Instant) -> i16 {
        let reads = sent_bodies(control, now);
        assert_eq!(reads.len(), 3, "the topology tables, and nothing else yet");
        for ((stream, _, body), result) in reads.into_iter().zip(two_node_results()) {
            assert!(query_text(&body).contains("FROM system."));
            answer(control, stream, Opcode::RESULT, result, now);
        }
        schema_read(control, now)
    }

    /// The stream of the one request just sent, checking that it reads the schema.
    fn schema_read(control: &mut ControlConnection, now: Instant) -> i16 {
        let [(stream, Opcode::QUERY, ref body)] = sent_bodies(control, now)[..] else {
            panic!("one QUERY, reading the schema");
        };
        assert_eq!(query_text(body), SCHEMA_QUERY);
        stream
    }

    /// The text of a QUERY, after checking that it is sent as the topology reads are: at
    /// consistency ONE, unpaged.
    fn query_text(body: &[u8]) -> String {
        let query = Query::decode(body, ProtocolVersion::V4).unwrap();
        assert_eq!(query.params.consistency, Consistency::ONE);
        assert_eq!(query.params.page_size, None, "no paging");
        assert_eq!(query.params.paging_state, None);
        query.text.to_owned()
    }

    fn schema_change(control: &mut ControlConnection, table: &str, now: Instant) {
        let event = EventMessage::SchemaChange(crate::message::SchemaChange {
            change: crate::message::SchemaChange::CREATED,
            target: crate::message::SchemaTarget::Table {
                keyspace: "shop",
                name: table,
            },
        });
        answer(
            control,
            -1,
            Opcode::EVENT,
            event.to_bytes(ProtocolVersion::V4),
            now,
        );
    }

    fn drain_events(control: &mut ControlConnection) -> Vec<ControlEvent> {
        std::iter::from_fn(|| control.poll_event()).collect()
    }

    fn partition_key(proxy: &Proxy, upstream: Upstream, table: &str) -> Option<Vec<String>> {
        proxy
            .table_key(upstream, "shop", table)
            .map(|k| k.partition.clone())
    }

    #[test]
    fn reads_the_schema_after_the_topology_and_learns_each_tables_key() {
        let (mut control, proxy, now) = start();
        let stream = open(&mut control, now);
        assert!(proxy.view(Upstream::Source).is_some(), "the topology first");
        assert_eq!(proxy.table_key(Upstream::Source, "shop", "orders"), None);
        let result = schema_result(&[
            ("shop", "orders", "total", "regular", -1),
            ("shop", "orders", "day", "clustering", 1),
            ("shop", "orders", "region", "partition_key", 1),
            ("shop", "orders", "customer", "partition_key", 0),
            ("shop", "orders", "placed", "clustering", 0),
            ("shop", "users", "id", "partition_key", 0),
        ]);
        answer(&mut control, stream, Opcode::RESULT, result, now);
        let key = proxy
            .table_key(Upstream::Source, "shop", "orders")
            .expect("the key was read");
        assert_eq!(key.partition, ["customer", "region"]);
        assert_eq!(key.clustering, ["placed", "day"]);
        // The target's schema is not known yet: the source's stands in for it.
        assert_eq!(
            proxy.table_key(Upstream::Target, "shop", "orders"),
            Some(key)
        );
        assert!(matches!(
            drain_events(&mut control)[..],
            [
                ControlEvent::Refreshed { first: true, .. },
                ControlEvent::SchemaRead {
                    tables: 2,
                    first: true,
                    ..
                }
            ]
        ));

        // Every refresh reads the topology, then the schema.
        let refresh = control.poll_timeout().unwrap();
        assert_eq!(refresh, now + REFRESH);
        control.handle_timeout(refresh);
        let stream = answer_topology(&mut control, refresh);
        let result = schema_result(&[("shop", "users", "id", "partition_key", 0)]);
        answer(&mut control, stream, Opcode::RESULT, result, refresh);
        assert_eq!(partition_key(&proxy, Upstream::Source, "orders"), None);
        assert!(matches!(
            drain_events(&mut control)[..],
            [
                ControlEvent::Refreshed { first: false, .. },
                ControlEvent::SchemaRead {
                    tables: 1,
                    first: false,
                    ..
                }
            ]
        ));
    }

    #[test]
    fn a_schema_change_event_leads_to_a_schema_read_after_a_delay() {
        let (mut control, proxy, now) = start();
        let stream = open(&mut control, now);
        let result = schema_result(&[("shop", "users", "id", "partition_key", 0)]);
        answer(&mut control, stream, Opcode::RESULT, result, now);

        let t = now + Duration::from_secs(5);
        schema_change(&mut control, "orders", t);
        assert!(sent(&mut control, t).is_empty(), "not at once");
        let due = control.poll_timeout().unwrap();
        assert_eq!(due, t + EVENT_DELAY);
        // More changes in the burst do not push the read back.
        schema_change(&mut control, "orders", t + Duration::from_millis(500));
        assert_eq!(control.poll_timeout(), Some(due));
        control.handle_timeout(due - Duration::from_millis(1));
        assert!(sent(&mut control, due).is_empty(), "not before the delay");
        control.handle_timeout(due);
        // The schema alone: no topology read.
        let stream = schema_read(&mut control, due);
        let result = schema_result(&[
            ("shop", "users", "id", "partition_key", 0),
            ("shop", "orders", "customer", "partition_key", 0),
        ]);
        answer(&mut control, stream, Opcode::RESULT, result, due);
        assert_eq!(
            partition_key(&proxy, Upstream::Source, "orders"),
            Some(vec!["customer".to_owned()])
        );
        // The next wake-up is the regular refresh.
        assert_eq!(control.poll_timeout(), Some(now + REFRESH));
    }

    #[test]
    fn a_schema_change_during_a_schema_read_is_read_after_it() {
        let (mut control, proxy, now) = start();
        let first = open(&mut control, now);
        // The change may or may not be in the answer to the read in flight.
        schema_change(&mut control, "orders", now);
        let due = now + EVENT_DELAY;
        control.handle_timeout(due);
        assert!(
            sent(&mut control, due).is_empty(),
            "one schema read at a time"
        );
        let result = schema_result(&[("shop", "users", "id", "partition_key", 0)]);
        answer(&mut control, first, Opcode::RESULT, result, due);
        let late = due + Duration::from_millis(10);
        assert_eq!(control.poll_timeout(), Some(due), "due already");
        control.handle_timeout(late);
        let second = schema_read(&mut control, late);
        let result = schema_result(&[("shop", "orders", "customer", "partition_key", 0)]);
        answer(&mut control, second, Opcode::RESULT, result, late);
        assert!(partition_key(&proxy, Upstream::Source, "orders").is_some());
        assert_eq!(control.poll_timeout(), Some(now + REFRESH));
    }

    #[test]
    fn a_refused_schema_read_leaves_the_connection_healthy() {
        let (mut control, proxy, now) = start();
        let stream = open(&mut control, now);
        let refused = |text: &'static str| {
            ErrorMessage::new(ErrorCode::UNAUTHORIZED, text).to_bytes(ProtocolVersion::V4)
        };
        answer(
            &mut control,
            stream,
            Opcode::ERROR,
            refused("no access"),
            now,
        );
        assert!(control.is_connected());
        assert_eq!(control.poll_action(), None, "no Close");
        assert_eq!(proxy.readiness().clusters[0], ClusterState::Reachable);
        let events = drain_events(&mut control);
        let [
            ControlEvent::Refreshed { .. },
            ControlEvent::SchemaFailed {
                ref detail,
                first: true,
                ..
            },
        ] = events[..]
        else {
            panic!("{events:?}");
        };
        assert!(detail.contains("no access"), "{detail}");
        assert_eq!(proxy.table_key(Upstream::Source, "shop", "users"), None);

        // Tried again at the next refresh; the same failure is not news.
        let refresh = control.poll_timeout().unwrap();
        assert_eq!(refresh, now + REFRESH);
        control.handle_timeout(refresh);
        let stream = answer_topology(&mut control, refresh);
        answer(
            &mut control,
            stream,
            Opcode::ERROR,
            refused("no access"),
            refresh,
        );
        assert!(matches!(
            drain_events(&mut control)[..],
            [
                ControlEvent::Refreshed { .. },
                ControlEvent::SchemaFailed { first: false, .. }
            ]
        ));
        assert!(control.is_connected());
    }

    #[test]
    fn a_schema_read_without_an_answer_is_given_up_not_the_connection() {
        let (mut control, proxy, now) = start();
        let stream = open(&mut control, now);
        let deadline = control.poll_timeout().unwrap();
        assert_eq!(deadline, now + proxy.config().request_timeout);
        control.handle_timeout(deadline);
        assert!(control.is_connected());
        assert_eq!(control.poll_action(), None, "no Close");
        assert!(matches!(
            drain_events(&mut control)[..],
            [
                ControlEvent::Refreshed { .. },
                ControlEvent::SchemaFailed { first: true, .. }
            ]
        ));
        // An answer after the deadline is ignored; the next refresh reads again.
        let result = schema_result(&[("shop", "users", "id", "partition_key", 0)]);
        answer(&mut control, stream, Opcode::RESULT, result, deadline);
        assert!(drain_events(&mut control).is_empty());
        assert_eq!(proxy.table_key(Upstream::Source, "shop", "users"), None);
        assert_eq!(control.poll_timeout(), Some(now + REFRESH));
    }

    #[test]
    fn a_topology_read_is_not_held_up_by_a_schema_read_in_flight() {
        let (mut control, proxy, now) = start();
        let schema = open(&mut control, now);
        let event = EventMessage::StatusChange {
            change: EventMessage::UP,
            address: "10.0.0.2:9042".parse().unwrap(),
        };
        answer(
            &mut control,
            -1,
            Opcode::EVENT,
            event.to_bytes(ProtocolVersion::V4),
            now,
        );
        let soon = now + EVENT_DELAY;
        assert_eq!(control.poll_timeout(), Some(soon));
        control.handle_timeout(soon);
        let reads = sent_bodies(&mut control, soon);
        assert_eq!(reads.len(), 3, "the topology is read again");
        for ((stream, _, _), result) in reads.into_iter().zip(two_node_results()) {
            answer(&mut control, stream, Opcode::RESULT, result, soon);
        }
        assert!(
            sent(&mut control, soon).is_empty(),
            "no second schema read while one is in flight"
        );
        let result = schema_result(&[("shop", "users", "id", "partition_key", 0)]);
        answer(&mut control, schema, Opcode::RESULT, result, soon);
        assert!(partition_key(&proxy, Upstream::Source, "users").is_some());
        assert_eq!(control.poll_timeout(), Some(soon + REFRESH));
    }

    #[test]
    fn a_schema_too_large_to_read_is_not_asked_for_again() {
        let (mut control, proxy, now) = start();
        let stream = open(&mut control, now);
        // Only the header of the answer: its length alone refuses it.
        let header = Header {
            version: ProtocolVersion::V4,
            direction: Direction::Response,
            flags: Flags::empty(),
            stream: StreamId(stream),
            opcode: Opcode::RESULT,
            length: MAX_FRAME as u32,
        };
        let mut reads = [header.encode()].into_iter();
        control.handle_readable(
            |buf| match reads.next() {
                Some(part) => {
                    buf[..part.len()].copy_from_slice(&part);
                    Ok(part.len())
                }
                None => Err(io::ErrorKind::WouldBlock.into()),
            },
            now,
        );
        assert_eq!(control.poll_action(), Some(ControlAction::Close));
        let events = drain_events(&mut control);
        let [
            ControlEvent::Refreshed { .. },
            ControlEvent::Failed { ref detail, .. },
        ] = events[..]
        else {
            panic!("{events:?}");
        };
        assert!(detail.contains("schema read is too large"), "{detail}");

        // The next connection reads the topology, and not the schema.
        let retry = control.poll_timeout().unwrap();
        control.handle_timeout(retry);
        assert!(matches!(
            control.poll_action(),
            Some(ControlAction::Connect(_))
        ));
        control.handle_connected(retry);
        let [(startup, Opcode::STARTUP)] = sent(&mut control, retry)[..] else {
            panic!("a STARTUP");
        };
        answer(&mut control, startup, Opcode::READY, Bytes::new(), retry);
        let [(register, Opcode::REGISTER)] = sent(&mut control, retry)[..] else {
            panic!("a REGISTER");
        };
        answer(&mut control, register, Opcode::READY, Bytes::new(), retry);
        let reads = sent(&mut control, retry);
        assert_eq!(reads.len(), 3);
        for ((stream, _), result) in reads.into_iter().zip(two_node_results()) {
            answer(&mut control, stream, Opcode::RESULT, result, retry);
        }
        assert!(sent(&mut control, retry).is_empty(), "no schema read");
        assert!(control.is_connected());
        assert_eq!(
            proxy.readiness().clusters[0],
            ClusterState::Reachable,
            "healthy again"
        );
        schema_change(&mut control, "orders", retry);
        assert_eq!(control.poll_timeout(), Some(retry + REFRESH));
    }
}
