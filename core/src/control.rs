//! The control connection to one cluster: how the proxy learns the cluster's nodes and keeps
//! what drivers see of the topology current.
//!
//! One per cluster and proxy, as drivers keep one: it logs in (with the proxy's credentials for
//! that cluster, or else with the login of the first client that authenticated there through
//! the proxy), registers for topology and status events, and reads `system.local`,
//! `system.peers` and `system.peers_v2`. The view it reads goes to the [`Proxy`]: sessions
//! answer drivers' reads of those tables from the primary's view, and pick the node of each new
//! backend connection among the nodes of the view that are up, in the local data center. It
//! reads again after every topology or status event and every [`REFRESH`] (which also tells
//! whether its node still answers), and when its node fails it moves to another, backing off.
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
use crate::frame::{
    Direction, Envelope, EnvelopeDecoder, Flags, FrameDecoder, FrameEncoder, Header, Opcode,
    ProtocolVersion, StreamId,
};
use crate::health::ClusterState;
use crate::message::{
    AuthResponse, Body, ErrorCode, ErrorMessage, Event as EventMessage, Query, QueryParams,
    Register, Startup,
};
use crate::nonblocking::{self, READ_CHUNK};
use crate::proxy::Proxy;
use crate::topology::SystemTable;
use crate::topology::view::{ClusterView, TableData, TableError};
use crate::wire::Consistency;

/// How often the topology is read again without an event.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How long after a topology or status event the topology is read again (events come in
/// bursts when nodes restart).
const EVENT_DELAY: Duration = Duration::from_secs(1);
/// Back-off between attempts to connect, doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// The largest frame the control connection accepts (topology tables are small).
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
        if let Some((asked, _)) = self.asked.values().find(|(_, deadline)| *deadline <= now) {
            let asked = *asked;
            let timeout = self.proxy.config().request_timeout;
            return self.fail(format!("no answer to {asked:?} within {timeout:?}"), now);
        }
        if self.wake_at.is_some_and(|at| at <= now) {
            self.wake_at = None;
            match self.state {
                State::Waiting => self.connect(now),
                State::Open if !self.reading && self.asked.is_empty() => {
                    self.read_topology(now);
                }
                _ => {}
            }
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
        [self.wake_at, self.connect_deadline, asked]
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
                Err(e) => return self.fail(format!("malformed frame: {e}"), now),
            }
        }
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
                    events: vec![EventMessage::TOPOLOGY_CHANGE, EventMessage::STATUS_CHANGE],
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
    }

    fn on_event(&mut self, envelope: &Envelope, now: Instant) {
        let Ok(event) = EventMessage::decode(envelope.body(), self.version) else {
            return;
        };
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
    use crate::topology::view::tests::two_node_results;

    fn start() -> (ControlConnection, Arc<Proxy>, Instant) {
        let (proxy, now) = crate::proxy::tests::proxy();
        let control = ControlConnection::new(Arc::clone(&proxy), Upstream::Source, now);
        (control, proxy, now)
    }

    /// Everything the connection writes, decoded as requests: (stream, opcode).
    fn sent(control: &mut ControlConnection, now: Instant) -> Vec<(i16, Opcode)> {
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
            out.push((envelope.stream().0, envelope.opcode()));
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
}
