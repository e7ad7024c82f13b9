//! `cqlmirror-load`: a CQL load generator that checks every answer.
//!
//! It opens `--connections` connections, completes the handshake on each (OPTIONS, STARTUP,
//! optionally a PLAIN login; protocol v4 by default, v3 or v5 on request), optionally creates
//! its keyspace and table (`--setup`), PREPAREs an INSERT and a SELECT by key on each
//! connection and then EXECUTEs them, `--reads` percent of them reads, pipelined: up to
//! `--in-flight` stream ids are in flight on each connection at once.
//!
//! - Closed loop (the default): every connection keeps `--in-flight` requests outstanding, at
//!   full speed. Latency is measured from the send.
//! - Open loop (`--rate R`): requests leave on a fixed schedule of R per second in total,
//!   whatever the answers do. Latency is measured from each request's *scheduled* send time,
//!   so a stall delays the schedule's requests and shows in the percentiles instead of being
//!   hidden by sending less (coordinated omission). The generator lowers its own timer slack
//!   to 1 ns so that its sleeps end on time, and reports how late it actually sent.
//!
//! Each connection has a writer thread and a reader thread with blocking sockets; a batch of
//! requests goes out in one write and every whole frame of a read is handled at once. Frames
//! are built and parsed with the core's codec.
//!
//! Every answer is checked: it must arrive on a stream that has a request in flight, once,
//! and be a RESULT of the expected kind (VOID for a write, ROWS with two columns and at most
//! one row for a read). ERROR answers, wrong results, stray or duplicate answers and answers
//! still missing `--drain-timeout` after the last request are counted as errors; a run with
//! errors says so loudly and exits with status 1. Latency percentiles (p50, p90, p99, p99.9,
//! max) come from HDR histograms of the successful answers after the warm-up.

use std::fmt::Write as _;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Parser, value_parser};
use cqlmirror_benches::wire::{self, WireReader, WireWriter};
use cqlmirror_benches::{Inbox, MAX_FRAME, envelope, parse_duration};
use cqlmirror_core::frame::{
    Direction, Envelope, EnvelopeDecoder, FrameDecoder, FrameEncoder, Opcode, Prefix,
    ProtocolVersion, SegmentFormat,
};
use cqlmirror_core::message::{
    AuthResponse, Body, ErrorMessage, Execute, Options, Prepare, Query, QueryParams, ResultKind,
    ResultMessage, Startup, Values, sasl_plain_token,
};
use cqlmirror_core::wire::{Consistency, Value};
use hdrhistogram::Histogram;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// A CQL load generator: pipelined EXECUTEs of prepared statements, every answer checked.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, max_term_width = 100)]
struct Args {
    /// The CQL server or proxy to load, `host:port`.
    #[arg(value_name = "HOST:PORT")]
    address: String,

    /// Connections, each with a writer and a reader thread.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 4,
          value_parser = value_parser!(u64).range(1..=10_000))]
    connections: u64,

    /// Requests in flight per connection at most (distinct stream ids); in closed loop, the
    /// number kept outstanding.
    #[arg(short = 'i', long, value_name = "N", default_value_t = 64,
          value_parser = value_parser!(u64).range(1..=32_768))]
    in_flight: u64,

    /// How long to measure, after the warm-up.
    #[arg(short = 'd', long, value_name = "DURATION", default_value = "10s",
          value_parser = parse_duration)]
    duration: Duration,

    /// How long to send before measuring (with --duration only).
    #[arg(short = 'w', long, value_name = "DURATION", default_value = "1s",
          value_parser = parse_duration)]
    warmup: Duration,

    /// Send exactly N requests, all measured, instead of running for --duration.
    #[arg(short = 'n', long, value_name = "N")]
    requests: Option<u64>,

    /// Open loop: N requests per second in total on a fixed schedule, latency measured from
    /// each request's scheduled time. Without it: closed loop at full speed.
    #[arg(short = 'r', long, value_name = "N")]
    rate: Option<f64>,

    /// Open loop: when the next request is due sooner than this, wait this long and send
    /// every request due by then in one write, as drivers coalesce their writes (gocql waits
    /// 200 µs by default). Each request's latency still counts from its scheduled time, so
    /// the wait shows in every row's latency alike. 0 sends each request on its own, with a
    /// wake-up each: at a few hundred thousand requests per second that costs the generator
    /// a whole core.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration,
          requires = "rate")]
    coalesce: Duration,

    /// Percentage of reads (SELECT by key); the rest are writes (INSERT). 0 and 100 give pure
    /// writes and pure reads.
    #[arg(long, value_name = "PERCENT", default_value_t = 50,
          value_parser = value_parser!(u8).range(0..=100))]
    reads: u8,

    /// Native protocol version: 3, 4 or 5 (v5 uses segment framing).
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = value_parser!(u8).range(3..=5))]
    protocol: u8,

    /// Create the keyspace and table first (CREATE ... IF NOT EXISTS, replication factor 1).
    #[arg(long)]
    setup: bool,

    /// Connect with TLS, checking the server's certificate against these CA certificates (PEM).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,

    /// With --tls-ca: the name the server's certificate must be valid for [default: the host
    /// of HOST:PORT].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,

    /// Keyspace of the table.
    #[arg(long, value_name = "NAME", default_value = "cqlmirror_bench")]
    keyspace: String,

    /// Table: `k bigint PRIMARY KEY, v blob`.
    #[arg(long, value_name = "NAME", default_value = "kv")]
    table: String,

    /// Keys are drawn uniformly from 0..N.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = value_parser!(u64).range(1..))]
    keys: u64,

    /// Bytes of the value of each write.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    value_size: usize,

    /// Consistency level of every request: ANY, ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM,
    /// EACH_QUORUM, LOCAL_ONE.
    #[arg(long, value_name = "LEVEL", default_value = "ONE", value_parser = parse_consistency)]
    consistency: Consistency,

    /// After the last request, how long to wait for outstanding answers before counting them
    /// as missing.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// Log in with this user when the server asks for authentication.
    #[arg(long, value_name = "USER", requires = "password")]
    username: Option<String>,

    /// Password for --username.
    #[arg(
        long,
        value_name = "PASSWORD",
        requires = "username",
        env = "CQLMIRROR_LOAD_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,

    /// Seed of the key and read/write choices.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// A name for this run in the report.
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,

    /// Print the result as one JSON object on standard output (the report goes to standard
    /// error).
    #[arg(long)]
    json: bool,
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::ANY,
        "ONE" => Consistency::ONE,
        "TWO" => Consistency::TWO,
        "THREE" => Consistency::THREE,
        "QUORUM" => Consistency::QUORUM,
        "ALL" => Consistency::ALL,
        "LOCAL_QUORUM" => Consistency::LOCAL_QUORUM,
        "EACH_QUORUM" => Consistency::EACH_QUORUM,
        "LOCAL_ONE" => Consistency::LOCAL_ONE,
        _ => return Err(format!("unknown consistency level '{s}'")),
    })
}

/// How long a handshake or setup request may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a blocked reader or writer looks at the clock and the other side's state.
const POLL: Duration = Duration::from_millis(50);
/// Distinct error messages kept as examples.
const MAX_SAMPLES: usize = 8;

// ---- one request at a time: handshake, setup, PREPARE ------------------------------------

/// The ids an EXECUTE of a prepared statement needs.
#[derive(Debug, Clone)]
struct PreparedIds {
    id: Bytes,
    result_metadata_id: Option<Bytes>,
}

/// TLS to the server, checked against a CA.
struct Tls {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl Tls {
    fn new(ca: &std::path::Path, args: &Args) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        // ring, as the proxy: its deprecation note is about post-quantum key exchange only.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = match &args.tls_server_name {
            Some(name) => name.clone(),
            None => args
                .address
                .rsplit_once(':')
                .map_or(args.address.as_str(), |(host, _)| host)
                .trim_matches(['[', ']'])
                .to_owned(),
        };
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| format!("'{host}' is not a name a certificate can be checked for: give one with --tls-server-name"))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// A connection before the run: one request at a time on stream 0.
#[derive(Debug)]
struct Client {
    reader: WireReader,
    writer: WireWriter,
    version: ProtocolVersion,
    inbox: Inbox,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
}

/// The message of a response: after the tracing id, warnings and custom payload.
fn message_of(envelope: &Envelope) -> Result<Bytes, String> {
    let body = envelope.body();
    Prefix::parse(envelope.header().flags, Direction::Response, body)
        .map(|(_, offset)| body.slice(offset..))
        .map_err(|e| format!("malformed {} body: {e}", envelope.opcode()))
}

/// An ERROR answer in words: its code's name, number and message.
fn describe_error(envelope: &Envelope) -> String {
    let message = match message_of(envelope) {
        Ok(message) => message,
        Err(e) => return e,
    };
    match ErrorMessage::decode(&message, envelope.version()) {
        Ok(e) => format!(
            "{} (0x{:04x}): {}",
            e.code.name().unwrap_or("error"),
            e.code.0,
            e.message
        ),
        Err(e) => format!("malformed ERROR: {e}"),
    }
}

impl Client {
    fn connect(
        address: &str,
        version: ProtocolVersion,
        login: Option<(&str, &str)>,
        tls: Option<&Tls>,
    ) -> Result<Self, String> {
        let addresses: Vec<_> = address
            .to_socket_addrs()
            .map_err(|e| format!("{address}: {e}"))?
            .collect();
        let socket = addresses
            .iter()
            .find_map(|a| TcpStream::connect_timeout(a, SETUP_TIMEOUT).ok())
            .ok_or_else(|| format!("cannot connect to {address}"))?;
        socket
            .set_nodelay(true)
            .and_then(|()| socket.set_read_timeout(Some(SETUP_TIMEOUT)))
            .map_err(|e| format!("{address}: {e}"))?;
        let (reader, writer) = wire::split(
            socket,
            tls.map(|t| (Arc::clone(&t.config), t.server_name.clone())),
        )
        .map_err(|e| format!("{address}: TLS: {e}"))?;
        let mut client = Self {
            reader,
            writer,
            version,
            inbox: Inbox::default(),
            decoder: FrameDecoder::new(
                EnvelopeDecoder::new(MAX_FRAME).expecting(Direction::Response),
            ),
            encoder: FrameEncoder::new(),
        };
        let supported = client.request(Opcode::OPTIONS, Options.to_bytes(version))?;
        if supported.opcode() != Opcode::SUPPORTED {
            return Err(format!("OPTIONS answered with {}", supported.opcode()));
        }
        let startup = Startup {
            options: vec![("CQL_VERSION", "3.0.0"), ("DRIVER_NAME", "cqlmirror-load")],
        };
        let answer = client.request(Opcode::STARTUP, startup.to_bytes(version))?;
        // In v5, READY or AUTHENTICATE is the last plain envelope; segments follow.
        if version.uses_segments() {
            client
                .decoder
                .switch_to_segments(SegmentFormat::Uncompressed);
            client
                .encoder
                .switch_to_segments(SegmentFormat::Uncompressed);
        }
        match answer.opcode() {
            Opcode::READY => {}
            Opcode::AUTHENTICATE => {
                let Some((user, password)) = login else {
                    return Err(
                        "the server asks for authentication: pass --username and --password".into(),
                    );
                };
                let token = sasl_plain_token(user, password);
                let body = AuthResponse {
                    token: Some(token.expose()),
                }
                .to_bytes(version);
                let answer = client.request(Opcode::AUTH_RESPONSE, body)?;
                if answer.opcode() != Opcode::AUTH_SUCCESS {
                    return Err(format!("login answered with {}", answer.opcode()));
                }
            }
            other => return Err(format!("STARTUP answered with {other}")),
        }
        Ok(client)
    }

    /// Sends one request on stream 0 and waits for its answer; an ERROR answer is an `Err`.
    fn request(&mut self, opcode: Opcode, body: Bytes) -> Result<Envelope, String> {
        let request = envelope(self.version, Direction::Request, 0, opcode, body);
        let mut out = BytesMut::new();
        self.encoder.encode(&request, &mut out);
        self.writer
            .write_all(&out)
            .map_err(|e| format!("sending {opcode}: {e}"))?;
        loop {
            match self.decoder.decode(&mut self.inbox.buf) {
                Ok(Some(answer)) if answer.stream().0 == 0 => {
                    if answer.opcode() == Opcode::ERROR {
                        return Err(format!("{opcode} failed: {}", describe_error(&answer)));
                    }
                    return Ok(answer);
                }
                Ok(Some(_)) => continue, // an event
                Ok(None) => {}
                Err(e) => return Err(format!("malformed answer to {opcode}: {e}")),
            }
            match self.inbox.fill(&mut self.reader) {
                Ok(0) => return Err(format!("the server closed the connection after {opcode}")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("waiting for the answer to {opcode}: {e}")),
            }
        }
    }

    fn query(&mut self, text: &str) -> Result<(), String> {
        let body = Query {
            text,
            params: QueryParams::new(Consistency::ONE),
        }
        .to_bytes(self.version);
        let answer = self.request(Opcode::QUERY, body)?;
        if answer.opcode() != Opcode::RESULT {
            return Err(format!("'{text}' answered with {}", answer.opcode()));
        }
        Ok(())
    }

    fn prepare(&mut self, text: &str) -> Result<PreparedIds, String> {
        let body = Prepare {
            query: text,
            keyspace: None,
        }
        .to_bytes(self.version);
        let answer = self
            .request(Opcode::PREPARE, body)
            .map_err(|e| format!("{e} (statement: {text}); --setup creates the table"))?;
        let message = message_of(&answer)?;
        match ResultMessage::decode(&message, self.version) {
            Ok(ResultMessage::Prepared(p)) => Ok(PreparedIds {
                id: Bytes::copy_from_slice(p.id),
                result_metadata_id: p.result_metadata_id.map(Bytes::copy_from_slice),
            }),
            Ok(other) => Err(format!("PREPARE answered with a {:?} result", other.kind())),
            Err(e) => Err(format!("malformed PREPARED result: {e}")),
        }
    }
}

// ---- the run ------------------------------------------------------------------------------

/// What every connection's threads share, fixed before the run starts.
#[derive(Debug)]
struct Plan {
    version: ProtocolVersion,
    consistency: Consistency,
    reads: u8,
    keys: u64,
    value: Bytes,
    in_flight: usize,
    /// Sending starts here, on every connection.
    start: Instant,
    /// Answers to requests scheduled from here on are measured.
    measure_from: Instant,
    /// No request is scheduled from here on (duration runs).
    end: Option<Instant>,
    /// Open loop: the time between two requests of one connection.
    interval: Option<Duration>,
    /// Open loop: the shortest sleep (--coalesce).
    coalesce: Duration,
    drain_timeout: Duration,
    seed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    busy: bool,
    read: bool,
    scheduled: Instant,
    sent: Instant,
}

/// The stream ids of one connection, shared by its writer and reader.
#[derive(Debug)]
struct Flight {
    slots: Vec<Slot>,
    free: Vec<i16>,
    in_flight: usize,
    writer_waiting: bool,
    writer_done: bool,
    /// Why the connection failed, if it did.
    broken: Option<String>,
}

#[derive(Debug)]
struct Line {
    flight: Mutex<Flight>,
    freed: Condvar,
}

impl Line {
    fn new(in_flight: usize, now: Instant) -> Self {
        let idle = Slot {
            busy: false,
            read: false,
            scheduled: now,
            sent: now,
        };
        Self {
            flight: Mutex::new(Flight {
                slots: vec![idle; in_flight],
                // Popped from the end: lowest ids first.
                free: (0..in_flight as i16).rev().collect(),
                in_flight: 0,
                writer_waiting: false,
                writer_done: false,
                broken: None,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// xorshift64*: keys and read/write choices, reproducible from --seed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// What one connection's writer needs beyond the plan.
#[derive(Debug)]
struct Sender {
    index: u64,
    insert: PreparedIds,
    select: PreparedIds,
    /// Requests to send (with --requests).
    limit: Option<u64>,
    /// Open loop: this connection's first scheduled time, staggered across connections.
    offset: Duration,
}

/// Sends requests until the run ends; returns how many it sent.
fn writer(mut socket: WireWriter, line: &Line, plan: &Plan, sender: &Sender) -> u64 {
    let mut rng = Rng::new(plan.seed ^ (sender.index << 32));
    let mut encoder = FrameEncoder::new();
    if plan.version.uses_segments() {
        encoder.switch_to_segments(SegmentFormat::Uncompressed);
    }
    let mut scratch = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut batch: Vec<(i16, bool)> = Vec::with_capacity(plan.in_flight);
    let mut frames: Vec<Envelope> = Vec::with_capacity(plan.in_flight);
    let mut sent = 0u64;
    let mut next = plan.start + sender.offset;
    let limit = sender.limit.unwrap_or(u64::MAX);
    'run: while sent < limit {
        // How many requests are due now.
        let mut due = limit - sent;
        let now = Instant::now();
        match plan.interval {
            None => {
                if plan.end.is_some_and(|end| now >= end) {
                    break;
                }
            }
            Some(interval) => {
                if plan.end.is_some_and(|end| next >= end) {
                    break;
                }
                if next > now {
                    thread::sleep((next - now).max(plan.coalesce));
                    continue;
                }
                let behind = (now - next).as_nanos() / interval.as_nanos().max(1);
                due = due.min(u64::try_from(behind).unwrap_or(u64::MAX).saturating_add(1));
                if let Some(end) = plan.end {
                    let before_end = (end - next).as_nanos().div_ceil(interval.as_nanos().max(1));
                    due = due.min(u64::try_from(before_end).unwrap_or(u64::MAX));
                }
            }
        }
        let mut flight = line.lock();
        while flight.free.is_empty() && flight.broken.is_none() {
            flight.writer_waiting = true;
            flight = line
                .freed
                .wait_timeout(flight, POLL)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
            flight.writer_waiting = false;
            if plan.interval.is_none() && plan.end.is_some_and(|end| Instant::now() >= end) {
                break 'run;
            }
        }
        if flight.broken.is_some() {
            break;
        }
        let take = flight
            .free
            .len()
            .min(usize::try_from(due).unwrap_or(usize::MAX));
        let sent_at = Instant::now();
        for i in 0..take {
            let Some(stream) = flight.free.pop() else {
                break;
            };
            let read = rng.below(100) < u64::from(plan.reads);
            let scheduled = match plan.interval {
                None => sent_at,
                Some(interval) => next + interval * i as u32,
            };
            flight.slots[stream as usize] = Slot {
                busy: true,
                read,
                scheduled,
                sent: sent_at,
            };
            batch.push((stream, read));
        }
        flight.in_flight += batch.len();
        drop(flight);
        if let Some(interval) = plan.interval {
            next += interval * batch.len() as u32;
        }
        sent += batch.len() as u64;
        for (stream, read) in batch.drain(..) {
            let key = (rng.below(plan.keys) as i64).to_be_bytes();
            let write_values = [Value::Bytes(&key), Value::Bytes(&plan.value)];
            let read_values = [Value::Bytes(&key)];
            let (ids, values) = if read {
                (&sender.select, &read_values[..])
            } else {
                (&sender.insert, &write_values[..])
            };
            Execute {
                id: &ids.id,
                result_metadata_id: ids.result_metadata_id.as_deref(),
                params: QueryParams {
                    values: Some(Values::positional(values)),
                    skip_metadata: read,
                    ..QueryParams::new(plan.consistency)
                },
            }
            .encode(plan.version, &mut scratch);
            let body = scratch.split().freeze();
            frames.push(envelope(
                plan.version,
                Direction::Request,
                stream,
                Opcode::EXECUTE,
                body,
            ));
        }
        encoder.encode_all(&frames, &mut out);
        frames.clear();
        if let Err(e) = socket.write_all(&out) {
            let mut flight = line.lock();
            flight.broken.get_or_insert(format!("sending failed: {e}"));
            break;
        }
        out.clear();
    }
    line.lock().writer_done = true;
    sent
}

/// Why an answer is not the expected one.
enum Problem {
    /// An ERROR answer.
    Error(String),
    /// Anything else that is not the expected RESULT.
    Wrong(String),
}

fn verify(answer: &Envelope, read: bool, version: ProtocolVersion) -> Result<(), Problem> {
    if answer.version() != version {
        return Err(Problem::Wrong(format!(
            "answer in protocol {} on a {version} connection",
            answer.version()
        )));
    }
    match answer.opcode() {
        Opcode::RESULT => {}
        Opcode::ERROR => return Err(Problem::Error(describe_error(answer))),
        other => return Err(Problem::Wrong(format!("{other} instead of RESULT"))),
    }
    let message = message_of(answer).map_err(Problem::Wrong)?;
    let kind = ResultKind::peek(&message).map_err(|e| Problem::Wrong(e.to_string()))?;
    if !read {
        return match kind {
            ResultKind::VOID => Ok(()),
            other => Err(Problem::Wrong(format!(
                "write answered with a {other:?} result"
            ))),
        };
    }
    match ResultMessage::decode(&message, version) {
        Ok(ResultMessage::Rows(rows)) => {
            if rows.column_count() != 2 {
                return Err(Problem::Wrong(format!(
                    "read answered with {} columns, not 2",
                    rows.column_count()
                )));
            }
            if rows.row_count() > 1 {
                return Err(Problem::Wrong(format!(
                    "read by key answered with {} rows",
                    rows.row_count()
                )));
            }
            rows.validate()
                .map_err(|e| Problem::Wrong(format!("malformed rows: {e}")))
        }
        Ok(other) => Err(Problem::Wrong(format!(
            "read answered with a {:?} result",
            other.kind()
        ))),
        Err(e) => Err(Problem::Wrong(format!("malformed result: {e}"))),
    }
}

/// What a reader counted.
#[derive(Debug)]
struct Tally {
    /// From the scheduled send time to the answer (successful answers after the warm-up).
    latency: Histogram<u64>,
    /// From the actual send to the answer.
    service: Histogram<u64>,
    /// From the scheduled to the actual send: the generator's own delay.
    lag: Histogram<u64>,
    ok: u64,
    /// Successful answers to requests scheduled after the warm-up: the latency samples.
    measured: u64,
    /// Successful answers received inside the measured window: the throughput.
    in_window: u64,
    error_answers: u64,
    wrong: u64,
    stray: u64,
    missing: u64,
    samples: Vec<(String, u64)>,
    first_answer: Option<Instant>,
    last_answer: Option<Instant>,
    broken: Option<String>,
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds from 1 ns to 10 minutes, three significant digits.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds are valid constants")
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            service: histogram(),
            lag: histogram(),
            ok: 0,
            measured: 0,
            in_window: 0,
            error_answers: 0,
            wrong: 0,
            stray: 0,
            missing: 0,
            samples: Vec::new(),
            first_answer: None,
            last_answer: None,
            broken: None,
        }
    }

    fn errors(&self) -> u64 {
        self.error_answers + self.wrong + self.stray + self.missing
    }

    fn sample(&mut self, text: String) {
        self.samples_of(text, 1);
    }

    /// Counts `n` errors described by `text`; past [`MAX_SAMPLES`] distinct texts, new ones
    /// are only counted in the totals.
    fn samples_of(&mut self, text: String, n: u64) {
        if let Some(entry) = self.samples.iter_mut().find(|(t, _)| *t == text) {
            entry.1 += n;
        } else if self.samples.len() < MAX_SAMPLES {
            self.samples.push((text, n));
        }
    }

    fn merge(&mut self, other: Self) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        let _ = self.lag.add(&other.lag);
        self.ok += other.ok;
        self.measured += other.measured;
        self.in_window += other.in_window;
        self.error_answers += other.error_answers;
        self.wrong += other.wrong;
        self.stray += other.stray;
        self.missing += other.missing;
        for (text, n) in other.samples {
            self.samples_of(text, n);
        }
        self.first_answer = match (self.first_answer, other.first_answer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_answer = self.last_answer.max(other.last_answer);
        if self.broken.is_none() {
            self.broken = other.broken;
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Reads and checks answers until every request is answered or given up on.
fn reader(mut socket: WireReader, line: &Line, plan: &Plan) -> Tally {
    let mut tally = Tally::new();
    if let Err(e) = socket.set_read_timeout(Some(POLL)) {
        tally.broken = Some(format!("cannot set a read timeout: {e}"));
    }
    let mut decoder =
        FrameDecoder::new(EnvelopeDecoder::new(MAX_FRAME).expecting(Direction::Response));
    if plan.version.uses_segments() {
        decoder.switch_to_segments(SegmentFormat::Uncompressed);
    }
    let mut inbox = Inbox::default();
    let mut answers: Vec<Envelope> = Vec::new();
    let mut drain_deadline: Option<Instant> = None;
    while tally.broken.is_none() {
        match inbox.fill(&mut socket) {
            Ok(0) => tally.broken = Some("the server closed the connection".into()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => tally.broken = Some(format!("receiving failed: {e}")),
        }
        let now = Instant::now();
        loop {
            match decoder.decode(&mut inbox.buf) {
                Ok(Some(answer)) => answers.push(answer),
                Ok(None) => break,
                Err(e) => {
                    tally.broken = Some(format!("malformed frame from the server: {e}"));
                    break;
                }
            }
        }
        let mut flight = line.lock();
        for answer in answers.drain(..) {
            let stream = answer.stream().0;
            if stream < 0 {
                continue; // a server event
            }
            let slot = match flight.slots.get_mut(stream as usize) {
                Some(slot) if slot.busy => slot,
                _ => {
                    tally.stray += 1;
                    tally.sample(format!(
                        "an answer on stream {stream}, which has no request in flight (duplicate or stray)"
                    ));
                    continue;
                }
            };
            slot.busy = false;
            let Slot {
                read,
                scheduled,
                sent,
                ..
            } = *slot;
            flight.free.push(stream);
            flight.in_flight -= 1;
            tally.first_answer.get_or_insert(now);
            tally.last_answer = Some(now);
            match verify(&answer, read, plan.version) {
                Ok(()) => {
                    tally.ok += 1;
                    if now >= plan.measure_from && plan.end.is_none_or(|end| now < end) {
                        tally.in_window += 1;
                    }
                    if scheduled >= plan.measure_from {
                        tally.measured += 1;
                        tally
                            .latency
                            .saturating_record(nanos(now - scheduled).max(1));
                        tally.service.saturating_record(nanos(now - sent).max(1));
                        tally.lag.saturating_record(nanos(sent - scheduled).max(1));
                    }
                }
                Err(Problem::Error(text)) => {
                    tally.error_answers += 1;
                    tally.sample(format!("ERROR answer: {text}"));
                }
                Err(Problem::Wrong(text)) => {
                    tally.wrong += 1;
                    tally.sample(format!("wrong answer: {text}"));
                }
            }
        }
        if let Some(why) = &tally.broken {
            flight.broken.get_or_insert(why.clone());
        }
        if flight.writer_waiting {
            line.freed.notify_one();
        }
        if flight.writer_done || flight.broken.is_some() {
            if flight.in_flight == 0 {
                break;
            }
            let deadline = *drain_deadline.get_or_insert(now + plan.drain_timeout);
            if flight.broken.is_some() || now >= deadline {
                tally.missing += flight.in_flight as u64;
                tally.sample(format!(
                    "{} answer(s) missing {}",
                    flight.in_flight,
                    match &flight.broken {
                        Some(why) => format!("when the connection failed ({why})"),
                        None => format!("{:?} after the last request", plan.drain_timeout),
                    }
                ));
                flight.in_flight = 0;
                break;
            }
        }
    }
    socket.shutdown();
    tally
}

// ---- reporting ----------------------------------------------------------------------------

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn human(ns: u64) -> String {
    if ns < 10_000_000 {
        format!("{:.1} µs", micros(ns))
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

const PERCENTILES: [(&str, f64); 4] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_percentiles(h: &Histogram<u64>) -> String {
    let mut out = String::from("{");
    for (name, q) in PERCENTILES {
        let _ = write!(out, "\"{name}\":{:.1},", micros(h.value_at_percentile(q)));
    }
    let _ = write!(
        out,
        "\"max\":{:.1},\"mean\":{:.1}}}",
        micros(h.max()),
        h.mean() / 1000.0
    );
    out
}

/// The outcome of a run.
#[derive(Debug)]
struct Report<'a> {
    args: &'a Args,
    tally: Tally,
    sent: u64,
    /// The measured window, for the throughput.
    window: Duration,
    slack: bool,
}

impl Report<'_> {
    /// Successful answers received per second of the measured window.
    fn throughput(&self) -> f64 {
        self.tally.in_window as f64 / self.window.as_secs_f64().max(1e-9)
    }

    fn mode(&self) -> String {
        match self.args.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => "closed loop".into(),
        }
    }

    fn text(&self) -> String {
        let a = self.args;
        let t = &self.tally;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "cqlmirror-load {}{}: protocol v{}, {} connection(s) x {} in flight, {}, {}% reads, {}",
            a.address,
            a.label
                .as_ref()
                .map_or(String::new(), |l| format!(" ({l})")),
            a.protocol,
            a.connections,
            a.in_flight,
            self.mode(),
            a.reads,
            match a.requests {
                Some(n) => format!("{n} requests"),
                None => format!("{:?} after {:?} of warm-up", a.duration, a.warmup),
            }
        );
        let _ = writeln!(
            out,
            "  sent {}, answered {} ({} measured) in {:.2} s: {:.0} req/s",
            self.sent,
            t.ok + t.error_answers + t.wrong,
            t.measured,
            self.window.as_secs_f64(),
            self.throughput()
        );
        let line = |name: &str, h: &Histogram<u64>| {
            let mut s = format!("  {name:<9}");
            for (p, q) in PERCENTILES {
                let _ = write!(s, " {p} {}", human(h.value_at_percentile(q)));
            }
            let _ = write!(s, "  max {}", human(h.max()));
            s
        };
        if t.measured > 0 {
            let _ = writeln!(
                out,
                "{}{}",
                line("latency", &t.latency),
                if a.rate.is_some() {
                    "  (from the scheduled send time)"
                } else {
                    ""
                }
            );
            if a.rate.is_some() {
                let _ = writeln!(out, "{}", line("service", &t.service));
                let _ = writeln!(
                    out,
                    "  send lag  p50 {}  p99 {}  max {} (how late the generator sent{})",
                    human(t.lag.value_at_percentile(50.0)),
                    human(t.lag.value_at_percentile(99.0)),
                    human(t.lag.max()),
                    if self.slack {
                        ""
                    } else {
                        "; its timer slack could not be lowered"
                    }
                );
                if let Some(rate) = a.rate {
                    if self.throughput() < 0.95 * rate {
                        let _ = writeln!(
                            out,
                            "  NOTE: {:.0} req/s achieved of {rate:.0} scheduled: the target (or this generator) is saturated",
                            self.throughput()
                        );
                    }
                }
            }
        }
        if t.errors() == 0 {
            let _ = writeln!(out, "  errors    none (every answer checked)");
        } else {
            let bar = "!".repeat(78);
            let _ = writeln!(out, "{bar}");
            let _ = writeln!(
                out,
                "!! {} ERRORS: this run did not measure a working system",
                t.errors()
            );
            let _ = writeln!(
                out,
                "!! ERROR answers {}, wrong results {}, stray or duplicate answers {}, missing answers {}",
                t.error_answers, t.wrong, t.stray, t.missing
            );
            for (text, n) in &t.samples {
                let _ = writeln!(out, "!!   {n} x {text}");
            }
            let _ = writeln!(out, "{bar}");
        }
        out
    }

    fn json(&self) -> String {
        let a = self.args;
        let t = &self.tally;
        let samples: Vec<String> = t
            .samples
            .iter()
            .map(|(text, n)| format!("{{\"count\":{n},\"text\":{}}}", json_string(text)))
            .collect();
        format!(
            concat!(
                "{{\"address\":{},\"label\":{},\"protocol\":{},\"connections\":{},",
                "\"in_flight\":{},\"mode\":\"{}\",\"rate\":{},\"reads_percent\":{},",
                "\"window_s\":{:.3},\"sent\":{},\"answered\":{},\"measured\":{},",
                "\"throughput\":{:.1},\"latency_us\":{},\"service_us\":{},\"send_lag_us\":{},",
                "\"errors\":{{\"total\":{},\"error_answers\":{},\"wrong\":{},\"stray\":{},",
                "\"missing\":{},\"samples\":[{}]}}}}"
            ),
            json_string(&a.address),
            a.label.as_deref().map_or("null".into(), json_string),
            a.protocol,
            a.connections,
            a.in_flight,
            if a.rate.is_some() { "open" } else { "closed" },
            a.rate.map_or("null".into(), |r| format!("{r:.1}")),
            a.reads,
            self.window.as_secs_f64(),
            self.sent,
            t.ok + t.error_answers + t.wrong,
            t.measured,
            self.throughput(),
            json_percentiles(&t.latency),
            json_percentiles(&t.service),
            json_percentiles(&t.lag),
            t.errors(),
            t.error_answers,
            t.wrong,
            t.stray,
            t.missing,
            samples.join(",")
        )
    }
}

// ---- main ---------------------------------------------------------------------------------

fn run(args: &Args) -> Result<Report<'_>, String> {
    let version = ProtocolVersion::from_number(args.protocol)
        .ok_or_else(|| format!("protocol v{} is not supported", args.protocol))?;
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!(
                "--rate {rate}: give a positive number of requests per second"
            ));
        }
    }
    // Sleeps of the open loop end within microseconds instead of the default 50 µs slack;
    // threads inherit the setting from the main thread.
    let slack = std::fs::write("/proc/self/timerslack_ns", "1").is_ok();
    let login = args.username.as_deref().zip(args.password.as_deref());
    let ks = &args.keyspace;
    let table = &args.table;
    let insert = format!("INSERT INTO {ks}.{table} (k, v) VALUES (?, ?)");
    let select = format!("SELECT k, v FROM {ks}.{table} WHERE k = ?");
    let tls = args
        .tls_ca
        .as_deref()
        .map(|ca| Tls::new(ca, args))
        .transpose()?;
    let mut clients = Vec::new();
    for index in 0..args.connections {
        let mut client = Client::connect(&args.address, version, login, tls.as_ref())
            .map_err(|e| format!("connection {}: {e}", index + 1))?;
        if index == 0 && args.setup {
            client.query(&format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
            ))?;
            client.query(&format!(
                "CREATE TABLE IF NOT EXISTS {ks}.{table} (k bigint PRIMARY KEY, v blob)"
            ))?;
        }
        let insert = client.prepare(&insert)?;
        let select = client.prepare(&select)?;
        clients.push((client, insert, select));
    }

    let in_flight = args.in_flight as usize;
    // Every thread is started before the clock starts.
    let start = Instant::now()
        + Duration::from_millis(50)
        + Duration::from_micros(100) * args.connections as u32;
    let (measure_from, end) = match args.requests {
        Some(_) => (start, None),
        None => (
            start + args.warmup,
            Some(start + args.warmup + args.duration),
        ),
    };
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let plan = Arc::new(Plan {
        version,
        consistency: args.consistency,
        reads: args.reads,
        keys: args.keys,
        value: Bytes::from(vec![0xa5; args.value_size]),
        in_flight,
        start,
        measure_from,
        end,
        interval,
        coalesce: args.coalesce,
        drain_timeout: args.drain_timeout,
        seed: args.seed,
    });

    let mut handles = Vec::new();
    for (index, (client, insert, select)) in clients.into_iter().enumerate() {
        let index = index as u64;
        let limit = args
            .requests
            .map(|n| n / args.connections + u64::from(index < n % args.connections));
        let sender = Sender {
            index,
            insert,
            select,
            limit,
            offset: interval.map_or(Duration::ZERO, |i| {
                i.mul_f64(index as f64 / args.connections as f64)
            }),
        };
        let (read_half, socket) = (client.reader, client.writer);
        let line = Arc::new(Line::new(in_flight, start));
        let (line2, plan2) = (Arc::clone(&line), Arc::clone(&plan));
        let reading = thread::Builder::new()
            .name(format!("read-{index}"))
            .spawn(move || reader(read_half, &line2, &plan2))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let plan2 = Arc::clone(&plan);
        let writing = thread::Builder::new()
            .name(format!("write-{index}"))
            .spawn(move || writer(socket, &line, &plan2, &sender))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push((writing, reading));
    }
    let mut tally = Tally::new();
    let mut sent = 0;
    for (writing, reading) in handles {
        sent += writing
            .join()
            .map_err(|_| "a writer thread panicked".to_string())?;
        tally.merge(
            reading
                .join()
                .map_err(|_| "a reader thread panicked".to_string())?,
        );
    }
    let window = match end {
        Some(end) => end - measure_from,
        None => tally
            .last_answer
            .map_or(Duration::ZERO, |last| last.saturating_duration_since(start)),
    };
    Ok(Report {
        args,
        tally,
        sent,
        window,
        slack,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let report = match run(&args) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cqlmirror-load: {e}");
            return ExitCode::from(2);
        }
    };
    let text = report.text();
    if args.json {
        eprint!("{text}");
        println!("{}", report.json());
    } else {
        print!("{text}");
    }
    if report.tally.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
