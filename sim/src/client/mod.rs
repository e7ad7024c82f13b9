//! A simulated client: a driver's behaviour on one connection to the proxy.
//!
//! It performs the handshake (OPTIONS, STARTUP, credentials when asked; v5 switches to
//! segments after READY or AUTHENTICATE), prepares the statements it needs, then sends its
//! workload with random stream ids (any of 0..=32767, many in flight) and checks that each
//! answer arrives on a stream in flight, exactly once. Every request is tagged so that the
//! clusters' logs can be matched to it (see [`record::carries_tag`]), and recorded as a
//! [`ClientOp`] for the reference model.

pub mod record;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::cluster::TAG_KEY;
use crate::cql;
use crate::pipe::{Link, Read, SendQueue};
use crate::rng::SimRng;
use cqlmirror_core::frame::{
    Compression, Direction, Envelope, EnvelopeDecoder, Flags, FrameDecoder, FrameEncoder, Header,
    Opcode, Prefix, ProtocolVersion, SegmentFormat, StreamId,
};
use cqlmirror_core::message::{
    AuthResponse, Body, ColumnType, Columns, ErrorCode, ErrorDetails, ErrorMessage, ResultMessage,
    Startup, sasl_plain_token,
};
use cqlmirror_core::wire::Value;

pub use record::{ClientAnswer, ClientOp, OpKind, carries_tag};
use workload::{BatchItem, int_value, prepared_texts};
pub use workload::{Mix, Workload, value_of};

/// The address the simulated proxy instance is reached at: the only address a client may
/// learn from the topology tables.
pub const PROXY_ADDRESS: ([u8; 4], u16) = ([10, 255, 0, 1], 9042);

/// How a client picks stream ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamChoice {
    /// Any free id, at random.
    Random,
    /// The lowest free id, as most drivers do.
    Lowest,
    /// The highest free id.
    Highest,
}

/// How a simulated client behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub version: ProtocolVersion,
    pub compression: Option<Compression>,
    /// Sent when the proxy asks for authentication.
    pub credentials: Option<(String, String)>,
    /// Send OPTIONS before STARTUP.
    pub send_options: bool,
    pub start_at: Duration,
    pub workload: Workload,
    pub streams: StreamChoice,
    /// Chance (millionths) that a request carries its tag in a custom payload (v4+).
    pub payload_tag_ppm: u32,
    /// Chance (millionths) that a v3/v4 request body is compressed.
    pub compress_ppm: u32,
    /// Chance (millionths) that a write carries the client's own default timestamp.
    pub client_timestamp_ppm: u32,
    /// Do not read answers in this window of run time (a client that stalls).
    pub read_pause: Option<(Duration, Duration)>,
    /// Bytes per read.
    pub max_read: usize,
    /// Close the connection once the workload is done.
    pub close_when_done: bool,
    /// The handshake is expected to fail (e.g. wrong credentials).
    pub expect_handshake_failure: bool,
    /// Reset the connection at this run time (a client that crashes).
    pub abort_at: Option<Duration>,
    /// REGISTER for SCHEMA_CHANGE events right after the handshake.
    pub register: bool,
}

impl ClientSpec {
    pub fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            compression: None,
            credentials: None,
            send_options: true,
            start_at: Duration::ZERO,
            workload: Workload::default(),
            streams: StreamChoice::Random,
            payload_tag_ppm: 300_000,
            compress_ppm: 500_000,
            client_timestamp_ppm: 100_000,
            read_pause: None,
            max_read: 16 * 1024,
            close_when_done: true,
            expect_handshake_failure: false,
            abort_at: None,
            register: false,
        }
    }
}

/// A request about to be sent.
struct NewOp {
    tag: String,
    kind: OpKind,
    opcode: Opcode,
    message: Bytes,
    writes: Vec<(String, i64)>,
    client_timestamp: Option<i64>,
}

/// Marker ids of requests: the harness learns when the proxy read each one.
pub(crate) fn request_marker(client: usize, op: usize) -> u64 {
    (1 << 56) | ((client as u64) << 40) | op as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Options,
    Startup,
    Auth,
    Ready,
    /// The connection is over (closed by either side, or the handshake failed).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    Handshake,
    Op(usize),
}

/// A simulated client.
#[derive(Debug)]
pub struct SimClient {
    index: usize,
    spec: ClientSpec,
    rng: SimRng,
    phase: Phase,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    recv: BytesMut,
    out: SendQueue,
    free: BTreeSet<i16>,
    in_flight: BTreeMap<i16, InFlight>,
    /// The op last answered on each stream, to tell a duplicate answer from a stray one.
    last_answered: BTreeMap<i16, usize>,
    ops: Vec<ClientOp>,
    workload_sent: usize,
    next_send_at: Duration,
    /// Statement text → (id, v5 result metadata id), as the proxy gave them.
    prepared: BTreeMap<String, (Bytes, Option<Bytes>)>,
    preparing: BTreeMap<String, usize>,
    prepare_attempts: BTreeMap<String, u32>,
    handshake_error: Option<String>,
    violations: Vec<String>,
    closed_at: Option<Duration>,
    /// The proxy ended the connection (FIN or reset) before the client did.
    closed_by_proxy: bool,
    fin_sent: bool,
    done_at: Option<Duration>,
    ready_at: Option<Duration>,
    registered: bool,
    use_sent: bool,
    use_failures: u32,
    /// Why the client gave up on its workload (it closes, like a driver dropping a
    /// connection it cannot set up).
    gave_up: Option<String>,
    /// When the first `USE` was answered (workloads that name tables without keyspace).
    use_answered: Option<Duration>,
    /// EVENT messages received, with their time.
    events: Vec<(Duration, Bytes)>,
    epoch_micros: i64,
    /// Request markers to place on the pipe: (stream offset, marker id).
    markers: Vec<(u64, u64)>,
}

impl SimClient {
    pub fn new(index: usize, spec: ClientSpec, rng: SimRng, epoch_micros: i64) -> Self {
        Self {
            index,
            phase: Phase::NotStarted,
            decoder: FrameDecoder::new(
                EnvelopeDecoder::new(256 * 1024 * 1024).expecting(Direction::Response),
            ),
            encoder: FrameEncoder::new(),
            recv: BytesMut::new(),
            out: SendQueue::default(),
            free: (0..=i16::MAX).collect(),
            in_flight: BTreeMap::new(),
            last_answered: BTreeMap::new(),
            ops: Vec::new(),
            workload_sent: 0,
            next_send_at: spec.start_at,
            prepared: BTreeMap::new(),
            preparing: BTreeMap::new(),
            prepare_attempts: BTreeMap::new(),
            handshake_error: None,
            violations: Vec::new(),
            closed_at: None,
            closed_by_proxy: false,
            fin_sent: false,
            done_at: None,
            ready_at: None,
            registered: false,
            use_sent: false,
            use_failures: 0,
            gave_up: None,
            use_answered: None,
            events: Vec::new(),
            epoch_micros,
            markers: Vec::new(),
            spec,
            rng,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn spec(&self) -> &ClientSpec {
        &self.spec
    }

    /// Every request sent after the handshake, in order.
    pub fn ops(&self) -> &[ClientOp] {
        &self.ops
    }

    /// Problems the client saw on its own: answers on streams not in flight, undecodable
    /// bytes.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    pub fn handshake_error(&self) -> Option<&str> {
        self.handshake_error.as_deref()
    }

    /// Why the client gave up on its workload after the handshake, if it did.
    pub fn gave_up(&self) -> Option<&str> {
        self.gave_up.as_deref()
    }

    /// The EVENT messages received (decompressed, no prefix), with their time.
    pub fn events(&self) -> &[(Duration, Bytes)] {
        &self.events
    }

    /// When the handshake completed, if it did.
    pub fn ready_at(&self) -> Option<Duration> {
        self.ready_at
    }

    /// When the connection ended, and whether the proxy ended it.
    pub fn closed(&self) -> Option<(Duration, bool)> {
        self.closed_at.map(|at| (at, self.closed_by_proxy))
    }

    /// When the workload was complete (every request answered).
    pub fn done_at(&self) -> Option<Duration> {
        self.done_at
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the client has nothing more to do.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Closed
    }

    pub(crate) fn request_consumed(&mut self, op: usize, at: Duration) {
        if let Some(op) = self.ops.get_mut(op) {
            op.consumed_at.get_or_insert(at);
        }
    }

    /// When the client next wants to act on its own (start, send, resume reading, abort).
    pub fn next_wakeup(&self, now: Duration) -> Option<Duration> {
        match self.phase {
            Phase::NotStarted => Some(self.spec.start_at),
            Phase::Closed => None,
            _ => {
                let mut times = Vec::with_capacity(3);
                times.extend(self.spec.abort_at);
                // A send due now that did not happen is blocked (waiting for USE, for room):
                // it is not a time to wake up for.
                if self.phase == Phase::Ready && self.wants_to_send() && self.next_send_at > now {
                    times.push(self.next_send_at);
                }
                if let Some((from, until)) = self.spec.read_pause {
                    if now >= from && now < until {
                        times.push(until);
                    } else if now < from {
                        times.push(from);
                    }
                }
                times.into_iter().min()
            }
        }
    }

    fn wants_to_send(&self) -> bool {
        self.workload_sent < self.spec.workload.ops
            && self.in_flight.len() < self.spec.workload.max_in_flight
            && !self.free.is_empty()
            && self.out.len() < 64 * 1024
    }

    fn reading_paused(&self, now: Duration) -> bool {
        self.spec
            .read_pause
            .is_some_and(|(from, until)| now >= from && now < until)
    }

    /// Moves the client on; true if anything happened.
    pub fn pump(&mut self, link: &mut Link, now: Duration) -> bool {
        let mut progress = false;
        if self.phase == Phase::Closed {
            return false;
        }
        if link.down.take_reset() || link.up.is_reset() {
            self.close(now, true);
            return true;
        }
        if self.spec.abort_at.is_some_and(|at| at <= now) {
            link.reset(now);
            self.close(now, false);
            return true;
        }
        if self.phase == Phase::NotStarted {
            if now < self.spec.start_at {
                return false;
            }
            if self.spec.send_options {
                self.phase = Phase::Options;
                self.send_handshake(Opcode::OPTIONS, Bytes::new(), now);
            } else {
                self.send_startup(now);
            }
            progress = true;
        }
        while !self.reading_paused(now) && self.phase != Phase::Closed {
            match link.down.read(self.spec.max_read, now) {
                Read::Data(bytes) => {
                    progress = true;
                    self.recv.extend_from_slice(&bytes);
                    self.read_frames(now);
                }
                Read::Eof => {
                    progress = true;
                    self.close(now, !self.fin_sent);
                    if !self.fin_sent {
                        link.up.finish(now);
                        self.fin_sent = true;
                    }
                }
                Read::Reset => {
                    progress = true;
                    self.close(now, true);
                }
                Read::WouldBlock => break,
            }
        }
        if self.phase == Phase::Ready {
            progress |= self.send_work(now);
        }
        if self.phase != Phase::Closed {
            progress |= self.out.flush(&mut link.up, now);
            for (offset, id) in std::mem::take(&mut self.markers) {
                link.up.mark(offset, id, now);
            }
            let done = self.phase == Phase::Ready
                && self.workload_sent >= self.spec.workload.ops
                && self.in_flight.is_empty();
            if done && self.done_at.is_none() {
                self.done_at = Some(now);
            }
            let give_up = self.handshake_error.is_some() || self.gave_up.is_some();
            if (done && self.spec.close_when_done || give_up)
                && self.out.is_empty()
                && !self.fin_sent
            {
                link.up.finish(now);
                self.fin_sent = true;
                progress = true;
                if give_up {
                    self.close(now, false);
                }
            }
        }
        progress
    }

    fn close(&mut self, now: Duration, by_proxy: bool) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.closed_at = Some(now);
        self.closed_by_proxy = by_proxy;
        self.out.clear();
    }

    // ---- sending ---------------------------------------------------------------------------

    fn pick_stream(&mut self) -> Option<i16> {
        let pick = match self.spec.streams {
            StreamChoice::Random => {
                // The first free id at or after a random one (wrapping around).
                let from = self.rng.below(1 << 15) as i16;
                self.free
                    .range(from..)
                    .next()
                    .or_else(|| self.free.range(..from).next())
                    .copied()
            }
            StreamChoice::Lowest => self.free.first().copied(),
            StreamChoice::Highest => self.free.last().copied(),
        }?;
        self.free.remove(&pick);
        Some(pick)
    }

    fn encode(&mut self, stream: i16, opcode: Opcode, flags: Flags, body: Bytes) -> u64 {
        let header = Header {
            version: self.spec.version,
            direction: Direction::Request,
            flags,
            stream: StreamId(stream),
            opcode,
            length: 0,
        };
        let mut envelope = Envelope::new(header, body);
        if let Some(c) = self.spec.compression {
            if self.spec.version < ProtocolVersion::V5
                && opcode != Opcode::STARTUP
                && opcode != Opcode::OPTIONS
                && self.rng.below(1_000_000) < u64::from(self.spec.compress_ppm)
            {
                envelope = envelope.compressed(c);
            }
        }
        let mut buf = BytesMut::new();
        self.encoder.encode(&envelope, &mut buf);
        self.out.push(buf.freeze())
    }

    fn send_handshake(&mut self, opcode: Opcode, body: Bytes, _now: Duration) {
        let Some(stream) = self.pick_stream() else {
            return;
        };
        self.in_flight.insert(stream, InFlight::Handshake);
        self.encode(stream, opcode, Flags::empty(), body);
    }

    fn send_startup(&mut self, now: Duration) {
        self.phase = Phase::Startup;
        let mut startup = Startup::default();
        startup.set("CQL_VERSION", "3.0.0");
        startup.set("DRIVER_NAME", "cqlmirror simulated client");
        if let Some(c) = self.spec.compression {
            startup.set("COMPRESSION", c.name());
        }
        let body = startup.to_bytes(self.spec.version);
        self.send_handshake(Opcode::STARTUP, body, now);
    }

    /// Sends a request of the workload (or a PREPARE it needs); returns the op index.
    fn send_op(&mut self, request: NewOp, now: Duration) -> Option<usize> {
        let NewOp {
            tag,
            kind,
            opcode,
            message,
            writes,
            client_timestamp,
        } = request;
        let stream = self.pick_stream()?;
        let needs_payload = matches!(
            kind,
            OpKind::ExecuteSelect(_)
                | OpKind::Prepare(_)
                | OpKind::Use
                | OpKind::Heartbeat
                | OpKind::Register
        );
        let payload_tag = self.spec.version >= ProtocolVersion::V4
            && (needs_payload || self.rng.below(1_000_000) < u64::from(self.spec.payload_tag_ppm));
        let (flags, body) = if payload_tag {
            let prefix = Prefix {
                custom_payload: Some(vec![(TAG_KEY, Some(tag.as_bytes()))]),
                ..Prefix::default()
            };
            let mut body = BytesMut::new();
            prefix.encode(Direction::Request, &mut body);
            body.put_slice(&message);
            (Flags::CUSTOM_PAYLOAD, body.freeze())
        } else {
            (Flags::empty(), message)
        };
        let index = self.ops.len();
        self.ops.push(ClientOp {
            tag,
            client: self.index,
            kind,
            opcode,
            stream,
            writes,
            client_timestamp,
            payload_tag,
            sent_at: now,
            consumed_at: None,
            answer: None,
            duplicates: 0,
        });
        self.in_flight.insert(stream, InFlight::Op(index));
        let end = self.encode(stream, opcode, flags, body);
        self.markers.push((end, request_marker(self.index, index)));
        Some(index)
    }

    fn client_timestamp(&mut self, now: Duration) -> Option<i64> {
        (self.rng.below(1_000_000) < u64::from(self.spec.client_timestamp_ppm))
            .then(|| self.epoch_micros + i64::try_from(now.as_micros()).unwrap_or(0) - 7)
    }

    fn prepared_ids(&self, text: &str) -> Option<(Bytes, Option<Bytes>)> {
        self.prepared.get(text).cloned()
    }

    /// Sends what the workload calls for now; true if anything was sent.
    fn send_work(&mut self, now: Duration) -> bool {
        let mut progress = false;
        let workload = self.spec.workload.clone();
        if self.spec.register && !self.registered {
            self.registered = true;
            let tag = format!("c{}_{}", self.index, self.ops.len());
            let body = cqlmirror_core::message::Register {
                events: vec![cqlmirror_core::message::Event::SCHEMA_CHANGE],
            }
            .to_bytes(self.spec.version);
            let op = NewOp {
                tag,
                kind: OpKind::Register,
                opcode: Opcode::REGISTER,
                message: body,
                writes: Vec::new(),
                client_timestamp: None,
            };
            progress |= self.send_op(op, now).is_some();
        }
        if workload.unqualified && self.use_answered.is_none() {
            if self.use_answered.is_none() && !self.use_sent {
                self.use_sent = true;
                let tag = format!("c{}_{}", self.index, self.ops.len());
                let op = NewOp {
                    tag,
                    kind: OpKind::Use,
                    opcode: Opcode::QUERY,
                    message: workload::query_body("USE ks", None, self.spec.version),
                    writes: Vec::new(),
                    client_timestamp: None,
                };
                progress |= self.send_op(op, now).is_some();
            }
            // Nothing else until the keyspace is set.
            return progress;
        }
        if workload.mix.uses_prepared() && self.workload_sent < workload.ops {
            for text in prepared_texts(workload.unqualified) {
                if self.prepared.contains_key(text) || self.preparing.contains_key(text) {
                    continue;
                }
                // Like a driver, give up preparing after a few failures in a row (the workload
                // goes on with plain statements).
                let attempts = self.prepare_attempts.entry(text.to_owned()).or_insert(0);
                if *attempts >= 8 {
                    continue;
                }
                *attempts += 1;
                let tag = format!("c{}_{}", self.index, self.ops.len());
                let body = workload::prepare_body(text, self.spec.version);
                let kind = OpKind::Prepare(text.to_owned());
                if let Some(i) = self.send_op(
                    NewOp {
                        tag,
                        kind,
                        opcode: Opcode::PREPARE,
                        message: body,
                        writes: Vec::new(),
                        client_timestamp: None,
                    },
                    now,
                ) {
                    self.preparing.insert(text.to_owned(), i);
                    progress = true;
                }
            }
        }
        while self.wants_to_send() && now >= self.next_send_at {
            let tag = format!("c{}_{}", self.index, self.ops.len());
            let version = self.spec.version;
            let key = self.rng.below(workload.keys.max(1) as u64) as i64;
            let [insert_text, select_text] = prepared_texts(workload.unqualified);
            let qualified = !workload.unqualified;
            let insert_ids = self.prepared_ids(insert_text);
            let select_ids = self.prepared_ids(select_text);
            let mut choice = self.rng.weighted(&workload.mix.weights());
            if choice == 2 && insert_ids.is_none() {
                choice = 0;
            }
            if choice == 3 && select_ids.is_none() {
                choice = 1;
            }
            let sent = match choice {
                0 => {
                    let value = value_of(&tag, workload.value_size);
                    let ts = self.client_timestamp(now);
                    let body = workload::query_body(
                        &cql::insert_into(qualified, key, &value),
                        ts,
                        version,
                    );
                    let writes = vec![(tag.clone(), key)];
                    self.send_op(
                        NewOp {
                            tag,
                            kind: OpKind::Insert,
                            opcode: Opcode::QUERY,
                            message: body,
                            writes,
                            client_timestamp: ts,
                        },
                        now,
                    )
                }
                1 => {
                    let body = workload::query_body(
                        &cql::select_from(qualified, key, Some(&tag)),
                        None,
                        version,
                    );
                    self.send_op(
                        NewOp {
                            tag,
                            kind: OpKind::Select(key),
                            opcode: Opcode::QUERY,
                            message: body,
                            writes: Vec::new(),
                            client_timestamp: None,
                        },
                        now,
                    )
                }
                2 => {
                    let (id, rmid) = insert_ids.unwrap_or_default();
                    let value = value_of(&tag, workload.value_size);
                    let ts = self.client_timestamp(now);
                    let k = int_value(key);
                    let values = [Value::Bytes(&k), Value::Bytes(value.as_bytes())];
                    let body = workload::execute_body(&id, rmid.as_deref(), &values, ts, version);
                    let writes = vec![(tag.clone(), key)];
                    self.send_op(
                        NewOp {
                            tag,
                            kind: OpKind::ExecuteInsert,
                            opcode: Opcode::EXECUTE,
                            message: body,
                            writes,
                            client_timestamp: ts,
                        },
                        now,
                    )
                }
                3 => {
                    let (id, rmid) = select_ids.unwrap_or_default();
                    let k = int_value(key);
                    let values = [Value::Bytes(&k)];
                    let body = workload::execute_body(&id, rmid.as_deref(), &values, None, version);
                    let kind = OpKind::ExecuteSelect(key);
                    self.send_op(
                        NewOp {
                            tag,
                            kind,
                            opcode: Opcode::EXECUTE,
                            message: body,
                            writes: Vec::new(),
                            client_timestamp: None,
                        },
                        now,
                    )
                }
                4 => {
                    let n = self.rng.between(2, 4) as usize;
                    let mut items = Vec::with_capacity(n);
                    let mut writes = Vec::with_capacity(n);
                    for i in 0..n {
                        let id = format!("{tag}/{i}");
                        let key = self.rng.below(workload.keys.max(1) as u64) as i64;
                        let value = value_of(&id, workload.value_size);
                        let item = match &insert_ids {
                            Some((pid, _)) if self.rng.chance(0.5) => BatchItem::Prepared {
                                id: pid.clone(),
                                key: int_value(key),
                                value,
                            },
                            _ => BatchItem::Text(cql::insert_into(qualified, key, &value)),
                        };
                        items.push(item);
                        writes.push((id, key));
                    }
                    let ts = self.client_timestamp(now);
                    let body = workload::batch_body(&items, ts, version);
                    self.send_op(
                        NewOp {
                            tag,
                            kind: OpKind::Batch,
                            opcode: Opcode::BATCH,
                            message: body,
                            writes,
                            client_timestamp: ts,
                        },
                        now,
                    )
                }
                5 => self.send_op(
                    NewOp {
                        tag,
                        kind: OpKind::Heartbeat,
                        opcode: Opcode::OPTIONS,
                        message: Bytes::new(),
                        writes: Vec::new(),
                        client_timestamp: None,
                    },
                    now,
                ),
                7 => {
                    let n = self.rng.index(record::TOPOLOGY_READS.len());
                    let body = workload::query_body(record::TOPOLOGY_READS[n], None, version);
                    self.send_op(
                        NewOp {
                            tag,
                            kind: OpKind::Topology(n),
                            opcode: Opcode::QUERY,
                            message: body,
                            writes: Vec::new(),
                            client_timestamp: None,
                        },
                        now,
                    )
                }
                _ => {
                    let body = workload::query_body("USE ks", None, version);
                    self.send_op(
                        NewOp {
                            tag,
                            kind: OpKind::Use,
                            opcode: Opcode::QUERY,
                            message: body,
                            writes: Vec::new(),
                            client_timestamp: None,
                        },
                        now,
                    )
                }
            };
            if sent.is_none() {
                break;
            }
            self.workload_sent += 1;
            self.next_send_at = now + workload.think.sample(&mut self.rng);
            progress = true;
        }
        progress
    }

    // ---- receiving -------------------------------------------------------------------------

    fn read_frames(&mut self, now: Duration) {
        while self.phase != Phase::Closed {
            match self.decoder.decode(&mut self.recv) {
                Ok(Some(envelope)) => self.on_frame(&envelope, now),
                Ok(None) => break,
                Err(e) => {
                    self.violations.push(format!(
                        "client {}: undecodable bytes from the proxy at {now:?}: {e}",
                        self.index
                    ));
                    self.handshake_error
                        .get_or_insert_with(|| format!("undecodable bytes: {e}"));
                    break;
                }
            }
        }
    }

    fn message_of(&self, envelope: &Envelope) -> Result<Bytes, String> {
        let plain = envelope
            .decompressed(self.spec.compression, 256 * 1024 * 1024)
            .map_err(|e| e.to_string())?;
        let body = plain.body().clone();
        let (_, at) = Prefix::parse(plain.header().flags, Direction::Response, &body)
            .map_err(|e| e.to_string())?;
        Ok(body.slice(at..))
    }

    fn on_frame(&mut self, envelope: &Envelope, now: Duration) {
        let stream = envelope.stream().0;
        if stream < 0 {
            match self.message_of(envelope) {
                Ok(message) if self.registered && envelope.opcode() == Opcode::EVENT => {
                    self.events.push((now, message));
                }
                _ => self.violations.push(format!(
                    "client {}: unexpected {} on stream {stream}{}",
                    self.index,
                    envelope.opcode(),
                    if self.registered {
                        ""
                    } else {
                        " (no REGISTER was sent)"
                    }
                )),
            }
            return;
        }
        // A refusal of the protocol version comes in a version the proxy speaks.
        if envelope.version() != self.spec.version && envelope.opcode() != Opcode::ERROR {
            self.violations.push(format!(
                "client {}: answer in {} on a {} connection",
                self.index,
                envelope.version(),
                self.spec.version
            ));
        }
        match self.in_flight.remove(&stream) {
            None => {
                match self.last_answered.get(&stream).and_then(|&i| self.ops.get_mut(i)) {
                    Some(op) => {
                        op.duplicates += 1;
                        self.violations.push(format!(
                            "client {}: second answer ({}) on stream {stream} for {} at {now:?}",
                            self.index,
                            envelope.opcode(),
                            op.tag
                        ));
                    }
                    None => self.violations.push(format!(
                        "client {}: answer ({}) on stream {stream}, which is not in flight, at {now:?}",
                        self.index,
                        envelope.opcode()
                    )),
                }
            }
            Some(InFlight::Handshake) => {
                self.free.insert(stream);
                self.on_handshake_answer(envelope, now);
            }
            Some(InFlight::Op(i)) => {
                self.free.insert(stream);
                self.last_answered.insert(stream, i);
                self.on_op_answer(i, envelope, now);
            }
        }
    }

    fn switch_to_segments(&mut self) {
        if self.spec.version >= ProtocolVersion::V5 {
            let format = if self.spec.compression == Some(Compression::Lz4) {
                SegmentFormat::Lz4
            } else {
                SegmentFormat::Uncompressed
            };
            self.decoder.switch_to_segments(format);
            self.encoder.switch_to_segments(format);
        }
    }

    fn error_text(&self, envelope: &Envelope) -> String {
        let version = envelope.version();
        self.message_of(envelope)
            .ok()
            .and_then(|m| {
                ErrorMessage::decode(&m, version)
                    .ok()
                    .map(|e| format!("{} {}", e.code, e.message))
            })
            .unwrap_or_else(|| format!("{}", envelope.opcode()))
    }

    /// A driver must learn no address but the proxy's: every `inet` cell of the answer to a
    /// topology read is [`PROXY_ADDRESS`], and the one instance has no peers.
    fn check_topology_answer(
        &mut self,
        i: usize,
        n: usize,
        opcode: Opcode,
        message: &[u8],
        version: ProtocolVersion,
        now: Duration,
    ) {
        let who = format!(
            "client {}: op {i} ({}) at {now:?}",
            self.index,
            record::TOPOLOGY_READS[n]
        );
        if opcode != Opcode::RESULT {
            // Whether an error was due is for the model to say.
            return;
        }
        let Ok(ResultMessage::Rows(rows)) = ResultMessage::decode(message, version) else {
            return self
                .violations
                .push(format!("{who}: answered with a result that is not rows"));
        };
        let types: Vec<Option<ColumnType<'_>>> = match &rows.metadata.columns {
            Columns::Described { specs, .. } => {
                specs.iter().map(|s| Some(s.column_type.clone())).collect()
            }
            Columns::Skipped { count } => vec![None; *count],
        };
        let mut count = 0;
        for row in rows.iter() {
            let Ok(row) = row else {
                return self.violations.push(format!("{who}: undecodable rows"));
            };
            count += 1;
            for (cell, column_type) in row.cells().zip(&types) {
                if column_type == &Some(ColumnType::Inet) {
                    if let Some(cell) = cell {
                        if cell != PROXY_ADDRESS.0.as_slice() {
                            self.violations.push(format!(
                                "{who}: the answer names the address {cell:?}, not the proxy's {:?}",
                                PROXY_ADDRESS.0
                            ));
                        }
                    }
                }
            }
        }
        let expected = match n {
            // The local rows: one; the peers of a single proxy instance: none; a count: one row.
            0 | 3 | 4 => 1,
            _ => 0,
        };
        if count != expected {
            self.violations
                .push(format!("{who}: {count} rows where {expected} were due"));
        }
    }

    fn on_handshake_answer(&mut self, envelope: &Envelope, now: Duration) {
        let opcode = envelope.opcode();
        match (self.phase, opcode) {
            (Phase::Options, Opcode::SUPPORTED) => self.send_startup(now),
            (Phase::Startup, Opcode::READY) | (Phase::Auth, Opcode::AUTH_SUCCESS) => {
                if opcode == Opcode::READY {
                    self.switch_to_segments();
                }
                self.phase = Phase::Ready;
                self.ready_at = Some(now);
                self.next_send_at = now;
            }
            (Phase::Startup, Opcode::AUTHENTICATE) => {
                self.switch_to_segments();
                match self.spec.credentials.clone() {
                    Some((user, password)) => {
                        self.phase = Phase::Auth;
                        let token = sasl_plain_token(&user, &password);
                        let body = AuthResponse {
                            token: Some(token.expose()),
                        }
                        .to_bytes(self.spec.version);
                        self.send_handshake(Opcode::AUTH_RESPONSE, body, now);
                    }
                    None => {
                        self.handshake_error =
                            Some("the proxy asked for credentials and the client has none".into());
                    }
                }
            }
            _ => {
                let text = self.error_text(envelope);
                self.handshake_error = Some(format!(
                    "handshake failed in {:?} with {opcode}: {text}",
                    self.phase
                ));
            }
        }
    }

    fn on_op_answer(&mut self, i: usize, envelope: &Envelope, now: Duration) {
        let version = envelope.version();
        let opcode = envelope.opcode();
        let message = match self.message_of(envelope) {
            Ok(m) => m,
            Err(e) => {
                self.violations.push(format!(
                    "client {}: unreadable answer to op {i} at {now:?}: {e}",
                    self.index
                ));
                envelope.body().clone()
            }
        };
        let Some(op) = self.ops.get_mut(i) else {
            return;
        };
        op.answer = Some(ClientAnswer {
            at: now,
            opcode,
            message: message.clone(),
        });
        let kind = op.kind.clone();
        if let OpKind::Topology(n) = kind {
            self.check_topology_answer(i, n, opcode, &message, version, now);
        }
        if kind == OpKind::Use && self.use_sent && self.use_answered.is_none() {
            if opcode == Opcode::RESULT {
                self.use_answered = Some(now);
            } else if self.use_failures < 5 {
                // As a driver setting up its keyspace: try again, a few times.
                self.use_failures += 1;
                self.use_sent = false;
            } else {
                self.gave_up = Some(format!("USE failed {} times", self.use_failures + 1));
            }
        }
        match kind {
            OpKind::Prepare(text) => {
                self.preparing.remove(&text);
                if opcode == Opcode::RESULT {
                    if let Ok(ResultMessage::Prepared(p)) = ResultMessage::decode(&message, version)
                    {
                        let id = Bytes::copy_from_slice(p.id);
                        let rmid = p.result_metadata_id.map(Bytes::copy_from_slice);
                        self.prepare_attempts.remove(&text);
                        self.prepared.insert(text, (id, rmid));
                    }
                }
            }
            OpKind::ExecuteInsert | OpKind::ExecuteSelect(_) | OpKind::Batch
                if opcode == Opcode::ERROR =>
            {
                if let Ok(e) = ErrorMessage::decode(&message, version) {
                    if e.code == ErrorCode::UNPREPARED {
                        if let ErrorDetails::Unprepared { id } = e.details {
                            // As a driver does: prepare it again before using it.
                            self.prepared.retain(|_, (known, _)| known.as_ref() != id);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
