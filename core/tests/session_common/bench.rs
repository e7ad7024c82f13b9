//! A session driven by hand over in-memory buffers, with clusters that answer everything at
//! once: the harness of the tests of one session's behaviour.
//!
//! It honours the session's backpressure as a runtime does: bytes from a peer are handed over
//! only while [`Session::wants_read`] says so.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cqlmirror_core::config::{Config, Endpoint, Upstream};
use cqlmirror_core::frame::{Direction, Envelope, Opcode, ProtocolVersion};
use cqlmirror_core::message::{
    AuthSuccess, Authenticate, Batch, BatchStatement, BatchType, Body, ColumnSpec, ColumnType,
    Columns, ErrorCode, ErrorMessage, Execute, Prepare, Prepared, PreparedMetadata, Query,
    QueryParams, ResultMessage, RowsMetadata, Startup, Statements, TableSpec, Values,
};
use cqlmirror_core::proxy::{Proxy, WallClock};
use cqlmirror_core::session::{Action, Event, Peer, Session};
use cqlmirror_core::wire::{Consistency, Value};

use super::{decode_all, decode_segments, envelope, segment};

pub const VERSION: ProtocolVersion = ProtocolVersion::V4;
/// What one socket read hands the session at most.
pub const READ: usize = 16 * 1024;

pub fn request(stream: i16, opcode: Opcode, body: Bytes) -> BytesMut {
    envelope(VERSION, Direction::Request, stream, opcode, body)
}

pub fn startup() -> BytesMut {
    let startup = Startup {
        options: vec![("CQL_VERSION", "3.0.0")],
    };
    request(1, Opcode::STARTUP, startup.to_bytes(VERSION))
}

pub fn query(stream: i16, text: &str) -> BytesMut {
    let query = Query {
        text,
        params: QueryParams::new(Consistency::ONE),
    };
    request(stream, Opcode::QUERY, query.to_bytes(VERSION))
}

/// An EXECUTE of `id` with positional `values` (none when empty) at `consistency`.
pub fn execute(stream: i16, id: &[u8], values: &[Value<'_>], consistency: Consistency) -> BytesMut {
    let execute = Execute {
        id,
        result_metadata_id: None,
        params: QueryParams {
            values: (!values.is_empty()).then(|| Values::positional(values)),
            ..QueryParams::new(consistency)
        },
    };
    request(stream, Opcode::EXECUTE, execute.to_bytes(VERSION))
}

/// A BATCH of `entries` at consistency ONE, with no other option.
pub fn batch(stream: i16, batch_type: BatchType, entries: &[BatchStatement<'_>]) -> BytesMut {
    let batch = Batch {
        batch_type,
        statements: Statements::new(entries),
        consistency: Consistency::ONE,
        serial_consistency: None,
        timestamp: None,
        keyspace: None,
        now_in_seconds: None,
    };
    request(stream, Opcode::BATCH, batch.to_bytes(VERSION))
}

/// The names of a statement's bind markers, as a cluster would give them.
fn marker_names(text: &str) -> Vec<String> {
    use cqlmirror_core::statement::lexer::{Lexer, TokenKind};
    Lexer::new(text)
        .enumerate()
        .filter_map(|(i, t)| match t.kind {
            TokenKind::Marker => Some(format!("m{i}")),
            TokenKind::NamedMarker => Some(t.value().into_owned()),
            _ => None,
        })
        .collect()
}

/// One session, a client whose bytes wait in `client_in`, and two clusters that answer every
/// request at once (their answers wait in `cluster_out` until the session reads them).
pub struct Bench {
    pub session: Session,
    pub proxy: std::sync::Arc<Proxy>,
    pub now: Instant,
    pub client_in: BytesMut,
    /// The runtime's receive buffer: read from the socket, not taken by the session yet.
    pub client_buf: BytesMut,
    /// Each cluster connection's receive buffer.
    pub upstream_buf: [BytesMut; 2],
    /// What the client received, when it reads.
    pub client_got: BytesMut,
    pub client_reads: bool,
    /// What one read from the client's socket takes at most ([`READ`] unless a test says).
    pub client_read_size: usize,
    pub cluster_out: [BytesMut; 2],
    /// Whether each cluster's connection is established when asked for.
    pub reachable: [bool; 2],
    /// Clusters whose connections, when asked for, stay connecting (neither established nor
    /// refused) until the test says.
    pub connect_pending: [bool; 2],
    /// Clusters that ask for credentials (AUTHENTICATE to STARTUP, AUTH_SUCCESS to any
    /// AUTH_RESPONSE).
    pub authenticate: [bool; 2],
    /// Clusters that keep the QUERYs they get unanswered (in `unanswered`, until
    /// [`Bench::release`]).
    pub silent: [bool; 2],
    /// The QUERYs a silent cluster has not answered, oldest first.
    pub unanswered: [Vec<Envelope>; 2],
    /// Every request each cluster received, in order.
    pub received: [Vec<Envelope>; 2],
    /// What each cluster answers QUERY, EXECUTE and BATCH with (a Void RESULT when `None`).
    pub answers: [Option<(Opcode, Bytes)>; 2],
    /// Clusters that answer their next EXECUTE with UNPREPARED (they forgot the statement).
    pub unprepared_next: [bool; 2],
    /// Clusters that answer every QUERY with an ERROR of this code.
    pub failing: [Option<ErrorCode>; 2],
    pub closed: Vec<Peer>,
    /// Backend connections the session asked for.
    pub connects: Vec<Upstream>,
    /// QUERYs each cluster received.
    pub queries: [usize; 2],
    pub events: Vec<Event>,
    /// PREPARED answers describe the statement's bind markers (one column each, named as a
    /// named marker or `m<i>`; the first is the partition key), as a cluster does.
    pub describe_markers: bool,
    /// Per cluster: protocol v5 segments are in use (after its READY to a v5 STARTUP).
    pub segmented: [bool; 2],
}

impl Bench {
    pub fn new(configure: impl FnOnce(&mut Config)) -> Self {
        Self::seeded(1, configure)
    }

    /// A session of a proxy whose random values come from `seed`.
    #[allow(clippy::disallowed_methods)]
    pub fn seeded(seed: u64, configure: impl FnOnce(&mut Config)) -> Self {
        let now = Instant::now();
        let endpoint = |host: &str| Endpoint {
            host: host.to_owned(),
            port: 9042,
        };
        let mut config = Config::new(vec![endpoint("source")], vec![endpoint("target")]);
        configure(&mut config);
        let clock = WallClock {
            instant: now,
            unix_micros: 1_700_000_000_000_000,
        };
        let proxy = Proxy::new(config, clock, cqlmirror_core::entropy::Seed(seed)).unwrap();
        Self {
            session: Session::new(std::sync::Arc::clone(&proxy), now),
            proxy,
            now,
            client_in: BytesMut::new(),
            client_buf: BytesMut::new(),
            upstream_buf: Default::default(),
            client_got: BytesMut::new(),
            client_reads: true,
            client_read_size: READ,
            cluster_out: Default::default(),
            reachable: [true, true],
            connect_pending: [false, false],
            authenticate: [false, false],
            silent: [false, false],
            unanswered: Default::default(),
            failing: [None, None],
            received: Default::default(),
            answers: [None, None],
            unprepared_next: [false, false],
            closed: Vec::new(),
            connects: Vec::new(),
            queries: [0, 0],
            events: Vec::new(),
            describe_markers: false,
            segmented: [false, false],
        }
    }

    /// A session past its handshake.
    pub fn ready(configure: impl FnOnce(&mut Config)) -> Self {
        let mut bench = Self::new(configure);
        bench.client_in = startup();
        bench.settle();
        assert_eq!(bench.client_answers(), vec![(1, Opcode::READY)]);
        bench
    }

    /// The connection to `upstream` ends (the node closed it or went away).
    pub fn drop_connection(&mut self, upstream: Upstream) {
        self.cluster_out[upstream.index()].clear();
        self.upstream_buf[upstream.index()].clear();
        self.session
            .handle_closed(Peer::of(upstream), "connection reset by peer", self.now);
        self.settle();
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.settle();
    }

    /// What the client received so far (stream and opcode of each frame), taken.
    pub fn client_answers(&mut self) -> Vec<(i16, Opcode)> {
        decode_all(&mut self.client_got, Direction::Response)
            .iter()
            .map(|e| (e.stream().0, e.opcode()))
            .collect()
    }

    /// The client's frames received so far, taken.
    pub fn client_frames(&mut self) -> Vec<Envelope> {
        decode_all(&mut self.client_got, Direction::Response)
    }

    pub fn answer(request: &Envelope) -> (Opcode, Bytes) {
        Self::answer_describing(request, false)
    }

    /// [`Self::answer`], PREPARED answers describing the bind markers if `describe`.
    pub fn answer_describing(request: &Envelope, describe: bool) -> (Opcode, Bytes) {
        match request.opcode() {
            Opcode::STARTUP | Opcode::REGISTER => (Opcode::READY, Bytes::new()),
            Opcode::OPTIONS => (Opcode::SUPPORTED, Bytes::from_static(&[0, 0])),
            // The statement's id is its text: another text, another id.
            Opcode::PREPARE => {
                let version = request.version();
                let prepare = Prepare::decode(request.body(), version).unwrap();
                let names = if describe {
                    marker_names(prepare.query)
                } else {
                    Vec::new()
                };
                let metadata = PreparedMetadata {
                    pk_indexes: if names.is_empty() { vec![] } else { vec![0] },
                    global_table_spec: Some(TableSpec {
                        keyspace: "ks",
                        table: "t",
                    }),
                    columns: names
                        .iter()
                        .map(|name| ColumnSpec {
                            table: None,
                            name,
                            column_type: ColumnType::Int,
                        })
                        .collect(),
                };
                let prepared = Prepared {
                    id: prepare.query.as_bytes(),
                    result_metadata_id: (version >= ProtocolVersion::V5).then_some(&b"meta"[..]),
                    metadata,
                    result_metadata: RowsMetadata::new(Columns::Skipped { count: 0 }),
                };
                (
                    Opcode::RESULT,
                    ResultMessage::Prepared(prepared).to_bytes(version),
                )
            }
            _ => (
                Opcode::RESULT,
                ResultMessage::Void.to_bytes(request.version()),
            ),
        }
    }

    /// A silent cluster answers its `n` oldest unanswered QUERYs (a Void RESULT each), then
    /// everything that can move does.
    pub fn release(&mut self, upstream: Upstream, n: usize) {
        let pending = &mut self.unanswered[upstream.index()];
        let n = n.min(pending.len());
        for request in pending.drain(..n) {
            let answer = envelope(
                request.version(),
                Direction::Response,
                request.stream().0,
                Opcode::RESULT,
                ResultMessage::Void.to_bytes(request.version()),
            );
            self.cluster_out[upstream.index()].extend_from_slice(&answer);
        }
        self.settle();
    }

    /// Runs everything that can move, as a runtime would, until nothing does.
    pub fn settle(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = false;
            while let Some(action) = self.session.poll_action() {
                moved = true;
                if let Action::Connect { upstream, .. } = action {
                    self.connects.push(upstream);
                }
                if let Action::Connect { upstream, .. } = action {
                    // A new connection: nothing of an earlier one carries over.
                    self.cluster_out[upstream.index()].clear();
                    self.upstream_buf[upstream.index()].clear();
                }
                match action {
                    Action::Connect { upstream, .. } if self.connect_pending[upstream.index()] => {}
                    Action::Connect { upstream, .. } if self.reachable[upstream.index()] => {
                        self.session.handle_connected(upstream, self.now)
                    }
                    Action::Connect { upstream, .. } => self.session.handle_closed(
                        Peer::of(upstream),
                        "connection refused",
                        self.now,
                    ),
                    Action::Close(peer) => self.closed.push(peer),
                    _ => {}
                }
            }
            for upstream in Upstream::BOTH {
                let peer = Peer::of(upstream);
                let mut wire = BytesMut::new();
                while let Some(bytes) = self.session.poll_transmit(peer) {
                    wire.extend_from_slice(&bytes);
                }
                let requests = if self.segmented[upstream.index()] {
                    decode_segments(&mut wire, Direction::Request)
                } else {
                    decode_all(&mut wire, Direction::Request)
                };
                for request in requests {
                    moved = true;
                    self.received[upstream.index()].push(request.clone());
                    if request.opcode() == Opcode::QUERY {
                        self.queries[upstream.index()] += 1;
                    }
                    if self.silent[upstream.index()] && request.opcode() == Opcode::QUERY {
                        self.unanswered[upstream.index()].push(request);
                        continue;
                    }
                    let forgot = request.opcode() == Opcode::EXECUTE
                        && std::mem::take(&mut self.unprepared_next[upstream.index()]);
                    let authenticate = self.authenticate[upstream.index()];
                    let (opcode, body) = match self.failing[upstream.index()] {
                        _ if authenticate && request.opcode() == Opcode::STARTUP => (
                            Opcode::AUTHENTICATE,
                            Authenticate {
                                authenticator: Authenticate::PASSWORD_AUTHENTICATOR,
                            }
                            .to_bytes(request.version()),
                        ),
                        _ if authenticate && request.opcode() == Opcode::AUTH_RESPONSE => (
                            Opcode::AUTH_SUCCESS,
                            AuthSuccess { token: None }.to_bytes(request.version()),
                        ),
                        _ if forgot => {
                            let id = Execute::peek_id(request.body()).unwrap();
                            (
                                Opcode::ERROR,
                                ErrorMessage::unprepared(id).to_bytes(request.version()),
                            )
                        }
                        Some(code) if request.opcode() == Opcode::QUERY => (
                            Opcode::ERROR,
                            ErrorMessage::new(code, "refused by the test").to_bytes(VERSION),
                        ),
                        _ => match (&self.answers[upstream.index()], request.opcode()) {
                            (Some(answer), Opcode::QUERY | Opcode::EXECUTE | Opcode::BATCH) => {
                                answer.clone()
                            }
                            _ => Self::answer_describing(&request, self.describe_markers),
                        },
                    };
                    let mut answer = envelope(
                        request.version(),
                        Direction::Response,
                        request.stream().0,
                        opcode,
                        body,
                    );
                    if self.segmented[upstream.index()] {
                        answer = segment(&answer);
                    } else if request.opcode() == Opcode::STARTUP
                        && request.version() == ProtocolVersion::V5
                    {
                        // READY goes as it is; everything after it in segments.
                        self.segmented[upstream.index()] = true;
                    }
                    self.cluster_out[upstream.index()].extend_from_slice(&answer);
                }
                let out = &mut self.cluster_out[upstream.index()];
                if !out.is_empty() && self.session.wants_read(peer) {
                    moved = true;
                    // One socket read into the receive buffer, which keeps a partial frame.
                    let chunk = out.split_to(out.len().min(READ));
                    let buf = &mut self.upstream_buf[upstream.index()];
                    buf.extend_from_slice(&chunk);
                    self.session.handle_upstream_bytes(upstream, buf, self.now);
                }
            }
            if !self.client_in.is_empty() && self.session.wants_read(Peer::Client) {
                moved = true;
                // One socket read into the receive buffer, which keeps a partial frame.
                let take = self.client_in.len().min(self.client_read_size);
                self.client_buf
                    .extend_from_slice(&self.client_in.split_to(take));
                self.session
                    .handle_client_bytes(&mut self.client_buf, self.now);
            }
            if self.client_reads {
                while let Some(bytes) = self.session.poll_transmit(Peer::Client) {
                    moved = true;
                    self.client_got.extend_from_slice(&bytes);
                }
            }
            while let Some(event) = self.session.poll_event() {
                self.events.push(event);
            }
            if !moved {
                return;
            }
        }
        panic!("the session never settled");
    }
}
