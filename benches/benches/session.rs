//! A session's per-request path: a client request in, what each cluster gets out, the
//! clusters' answers in, the client's answer out.
//!
//! One `Proxy` and one `Session` past their handshake, over in-memory buffers, clusters that
//! answer at once (as the session tests' harness does, with nothing recorded). Each iteration
//! is one whole request: QUERY writes (stamped with a default timestamp) and reads, EXECUTE
//! writes of a prepared statement, and BATCHes of three prepared inserts and one text insert,
//! in protocol v4 (plain envelopes) and v5 (segments, where the target gets its own result
//! metadata id in every EXECUTE). The rig's own work (encoding the clusters' answers, decoding
//! what the client gets) is part of every figure: compare cases with each other, or one case
//! before and after a change.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, criterion_group};

use cqlmirror_core::config::{Config, Endpoint, Upstream};
use cqlmirror_core::frame::{
    Direction, Envelope, EnvelopeDecoder, Flags, FrameDecoder, FrameEncoder, Header, Opcode,
    ProtocolVersion, SegmentFormat, StreamId,
};
use cqlmirror_core::message::{
    Batch, BatchStatement, BatchType, Body, Columns, Execute, Prepare, Prepared, PreparedMetadata,
    Query, QueryParams, ResultMessage, RowsMetadata, Startup, Statement, Statements, Values,
};
use cqlmirror_core::proxy::{Proxy, WallClock};
use cqlmirror_core::session::{Action, Peer, Session};
use cqlmirror_core::wire::{Consistency, Value};

const INSERT: &str = "INSERT INTO ks.users (id, name, email) VALUES (?, ?, ?)";

/// One side of a connection: what it decodes and what it encodes.
struct End {
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    /// Bytes received and not decoded yet.
    inbox: BytesMut,
}

impl End {
    fn new(expecting: Direction) -> Self {
        Self {
            decoder: FrameDecoder::new(EnvelopeDecoder::new(1 << 24).expecting(expecting)),
            encoder: FrameEncoder::new(),
            inbox: BytesMut::new(),
        }
    }

    fn segments(&mut self) {
        self.decoder.switch_to_segments(SegmentFormat::Uncompressed);
        self.encoder.switch_to_segments(SegmentFormat::Uncompressed);
    }
}

/// A session, its client and its two clusters.
struct Rig {
    session: Session,
    now: Instant,
    version: ProtocolVersion,
    client: End,
    /// The session's receive buffer for the client.
    client_buf: BytesMut,
    clusters: [End; 2],
    /// The session's receive buffer for each cluster.
    cluster_buf: [BytesMut; 2],
    /// Answers the client got.
    answered: usize,
    rows: Bytes,
    void: Bytes,
}

impl Rig {
    fn new(version: ProtocolVersion) -> Self {
        let now = Instant::now();
        let endpoint = |host: &str| Endpoint {
            host: host.to_owned(),
            port: 9042,
        };
        let config = Config::new(vec![endpoint("source")], vec![endpoint("target")]);
        let clock = WallClock {
            instant: now,
            unix_micros: 1_700_000_000_000_000,
        };
        let proxy = Proxy::new(config, clock, cqlmirror_core::entropy::Seed(1)).unwrap();
        let mut rig = Self {
            session: Session::new(Arc::clone(&proxy), now),
            now,
            version,
            client: End::new(Direction::Response),
            client_buf: BytesMut::new(),
            clusters: [End::new(Direction::Request), End::new(Direction::Request)],
            cluster_buf: Default::default(),
            answered: 0,
            rows: rows_body(version),
            void: ResultMessage::Void.to_bytes(version),
        };
        let startup = Startup {
            options: vec![("CQL_VERSION", "3.0.0")],
        };
        let wire = rig.request(0, Opcode::STARTUP, startup.to_bytes(version));
        rig.exchange(&wire);
        assert_eq!(rig.answered, 1, "READY");
        if version == ProtocolVersion::V5 {
            rig.client.segments();
        }
        rig
    }

    /// A request's bytes as the client sends them.
    fn request(&mut self, stream: i16, opcode: Opcode, body: Bytes) -> Bytes {
        let header = Header {
            version: self.version,
            direction: Direction::Request,
            flags: Flags::empty(),
            stream: StreamId(stream),
            opcode,
            length: 0,
        };
        let mut wire = BytesMut::new();
        self.client
            .encoder
            .encode(&Envelope::new(header, body), &mut wire);
        wire.freeze()
    }

    /// What a cluster answers `request` with.
    fn answer(&self, request: &Envelope) -> (Opcode, Bytes) {
        match request.opcode() {
            Opcode::STARTUP | Opcode::REGISTER => (Opcode::READY, Bytes::new()),
            Opcode::PREPARE => {
                let prepare = Prepare::decode(request.body(), self.version).unwrap();
                let prepared = Prepared {
                    id: prepare.query.as_bytes(),
                    result_metadata_id: (self.version >= ProtocolVersion::V5)
                        .then_some(&b"meta"[..]),
                    metadata: PreparedMetadata {
                        pk_indexes: vec![],
                        global_table_spec: None,
                        columns: vec![],
                    },
                    result_metadata: RowsMetadata::new(Columns::Skipped { count: 0 }),
                };
                let body = ResultMessage::Prepared(prepared).to_bytes(self.version);
                (Opcode::RESULT, body)
            }
            Opcode::QUERY
                if Query::peek_text(request.body())
                    .unwrap()
                    .starts_with("SELECT") =>
            {
                (Opcode::RESULT, self.rows.clone())
            }
            _ => (Opcode::RESULT, self.void.clone()),
        }
    }

    /// Hands `wire` to the session as one client read, then runs everything that can move
    /// until the session is idle again.
    fn exchange(&mut self, wire: &[u8]) {
        self.client_buf.extend_from_slice(wire);
        self.session
            .handle_client_bytes(&mut self.client_buf, self.now);
        loop {
            let mut moved = false;
            while let Some(action) = self.session.poll_action() {
                moved = true;
                if let Action::Connect { upstream, .. } = action {
                    self.session.handle_connected(upstream, self.now);
                }
            }
            for upstream in Upstream::BOTH {
                let i = upstream.index();
                let peer = Peer::of(upstream);
                while let Some(bytes) = self.session.poll_transmit(peer) {
                    self.clusters[i].inbox.extend_from_slice(&bytes);
                }
                let mut answered = false;
                while let Some(request) = {
                    let end = &mut self.clusters[i];
                    end.decoder.decode(&mut end.inbox).unwrap()
                } {
                    let (opcode, body) = self.answer(&request);
                    let header = Header {
                        version: request.version(),
                        direction: Direction::Response,
                        flags: Flags::empty(),
                        stream: request.stream(),
                        opcode,
                        length: 0,
                    };
                    let end = &mut self.clusters[i];
                    end.encoder
                        .encode(&Envelope::new(header, body), &mut self.cluster_buf[i]);
                    if request.opcode() == Opcode::STARTUP
                        && request.version() == ProtocolVersion::V5
                    {
                        end.segments();
                    }
                    answered = true;
                }
                if answered {
                    moved = true;
                    self.session.handle_upstream_bytes(
                        upstream,
                        &mut self.cluster_buf[i],
                        self.now,
                    );
                }
            }
            while let Some(bytes) = self.session.poll_transmit(Peer::Client) {
                moved = true;
                self.client.inbox.extend_from_slice(&bytes);
            }
            while let Some(answer) = self.client.decoder.decode(&mut self.client.inbox).unwrap() {
                black_box(&answer);
                self.answered += 1;
            }
            if !moved {
                break;
            }
        }
        // Time moves on a little between requests, as it does.
        self.now += Duration::from_micros(20);
    }

    /// Runs `wire` (one request) and checks the client got one answer.
    fn run(&mut self, wire: &[u8]) {
        let before = self.answered;
        self.exchange(wire);
        debug_assert_eq!(self.answered, before + 1);
    }

    /// Prepares `text`; its id (the clusters in this rig use the text as id).
    fn prepare(&mut self, text: &str) -> Bytes {
        let body = Prepare {
            query: text,
            keyspace: None,
        }
        .to_bytes(self.version);
        let wire = self.request(1, Opcode::PREPARE, body);
        self.run(&wire);
        Bytes::copy_from_slice(text.as_bytes())
    }
}

/// A RESULT of 10 rows of two columns (id, name), metadata skipped.
fn rows_body(version: ProtocolVersion) -> Bytes {
    let _ = version;
    let mut body = BytesMut::new();
    body.put_i32(2); // Rows
    body.put_i32(0x0004); // no metadata
    body.put_i32(2);
    body.put_i32(10);
    for i in 0..10i32 {
        body.put_i32(4);
        body.put_i32(i);
        let name = format!("user-{i:04}");
        body.put_i32(name.len() as i32);
        body.put_slice(name.as_bytes());
    }
    body.freeze()
}

fn values() -> [Value<'static>; 3] {
    [
        Value::Bytes(&[0, 0, 0, 42]),
        Value::Bytes(b"someone"),
        Value::Bytes(b"someone@example.com"),
    ]
}

/// A rig past its handshake with `INSERT` prepared, and the requests of each case.
fn workload(version: ProtocolVersion) -> (Rig, Vec<(&'static str, Bytes)>) {
    let mut rig = Rig::new(version);
    let id = rig.prepare(INSERT);
    let values = values();
    let mut cases = Vec::new();

    let write = Query {
        text: "INSERT INTO ks.users (id, name) VALUES (42, 'someone')",
        params: QueryParams::new(Consistency::LOCAL_QUORUM),
    };
    cases.push((
        "query_write",
        rig.request(2, Opcode::QUERY, write.to_bytes(version)),
    ));

    let read = Query {
        text: "SELECT id, name FROM ks.users WHERE id = 42",
        params: QueryParams::new(Consistency::LOCAL_QUORUM),
    };
    cases.push((
        "query_read",
        rig.request(3, Opcode::QUERY, read.to_bytes(version)),
    ));

    let execute = Execute {
        id: &id,
        result_metadata_id: Some(b"meta"),
        params: QueryParams {
            values: Some(Values::positional(&values)),
            ..QueryParams::new(Consistency::LOCAL_QUORUM)
        },
    };
    cases.push((
        "execute_write",
        rig.request(4, Opcode::EXECUTE, execute.to_bytes(version)),
    ));

    let entry = BatchStatement {
        statement: Statement::Prepared(&id),
        values: Values::positional(&values),
    };
    let text = BatchStatement {
        statement: Statement::Query("INSERT INTO ks.users (id, name) VALUES (7, 'other')"),
        values: Values::positional(&[]),
    };
    let entries = [entry, entry, entry, text];
    let batch = Batch {
        batch_type: BatchType::LOGGED,
        statements: Statements::new(&entries),
        consistency: Consistency::LOCAL_QUORUM,
        serial_consistency: None,
        timestamp: None,
        keyspace: None,
        now_in_seconds: None,
    };
    cases.push((
        "batch_write",
        rig.request(5, Opcode::BATCH, batch.to_bytes(version)),
    ));
    (rig, cases)
}

fn version_name(version: ProtocolVersion) -> &'static str {
    if version == ProtocolVersion::V5 {
        "v5"
    } else {
        "v4"
    }
}

fn session(c: &mut Criterion) {
    for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
        let mut group = c.benchmark_group(format!("session_{}", version_name(version)));
        let (mut rig, cases) = workload(version);
        for (name, wire) in &cases {
            group.bench_function(*name, |b| b.iter(|| rig.run(wire)));
        }
        group.finish();
    }
}

/// `SESSION_ITERS=n SESSION_CASE=v4/execute_write`: that case run `n` times and nothing
/// else, for counting instructions (e.g. under callgrind, with two values of `n`: the
/// difference is the cost of the requests alone), which a loaded machine does not disturb.
fn counted(iterations: usize, case: &str) {
    for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
        let (mut rig, cases) = workload(version);
        for (name, wire) in &cases {
            if format!("{}/{name}", version_name(version)) == case {
                for _ in 0..iterations {
                    rig.run(wire);
                }
                assert_eq!(rig.answered, 2 + iterations, "every request answered");
            }
        }
    }
}

criterion_group!(benches, session);

fn main() {
    if let Ok(iterations) = std::env::var("SESSION_ITERS") {
        let case = std::env::var("SESSION_CASE").unwrap_or_default();
        counted(iterations.parse().unwrap(), &case);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
