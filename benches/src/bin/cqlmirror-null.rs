//! `cqlmirror-null`: a minimal CQL server that answers every request at once with a canned
//! result, so that a benchmark measures what sits in front of it, not a database.
//!
//! It speaks protocol v3, v4 and v5 (segments, lz4 or not) and the v3/v4 body compressions,
//! and answers:
//! - OPTIONS with SUPPORTED (CQL_VERSION, COMPRESSION, PROTOCOL_VERSIONS), STARTUP and
//!   REGISTER with READY, AUTH_RESPONSE with AUTH_SUCCESS;
//! - PREPARE with a PREPARED result whose id is derived from the statement text, so that any
//!   connection (and any process) gives the same id for the same text, and whose first byte
//!   says what an EXECUTE of it gets; every bind marker is declared as a `blob`;
//! - QUERY and EXECUTE by the statement: a SELECT of a user table gets one small row `(k
//!   bigint, v blob)` (`--rows`, `--value-size`), `system.local` one plausible row,
//!   `system.peers`/`peers_v2` no rows with their columns, other system tables no rows, `USE`
//!   a SET_KEYSPACE, everything else (writes, DDL) VOID; BATCH gets VOID.
//!
//! Every request is decoded with the core's codec, so a body that a proxy mangled gets an
//! ERROR instead of a silent VOID. One thread per connection with a blocking socket: each
//! read is answered in full with one write, which keeps the backend's cost per request far
//! below the proxy's. With `--tls-cert`/`--tls-key` it speaks TLS (rustls), as clusters that
//! require it do.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use cqlmirror_benches::{Inbox, MAX_FRAME, envelope};
use cqlmirror_core::frame::{
    Compression, Direction, Envelope, EnvelopeDecoder, FrameDecoder, FrameEncoder, Opcode, Prefix,
    ProtocolVersion, SegmentFormat, peek_refusal,
};
use cqlmirror_core::message::{
    AuthSuccess, Batch, Body, ColumnSpec, ColumnType, Columns, ErrorMessage, Execute, Prepare,
    Prepared, PreparedMetadata, Query, Ready, ResultMessage, RowsMetadata, RowsWriter, Startup,
    Supported, TableSpec,
};
use cqlmirror_core::statement::{Statement, StatementKind};
use cqlmirror_runtime::tls::{ClientTls, ClientTlsOptions};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// A minimal CQL server answering every request at once with a canned result.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, max_term_width = 100)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9042")]
    listen: SocketAddr,

    /// Rows in the answer to a SELECT of a user table.
    #[arg(long, value_name = "N", default_value_t = 1)]
    rows: usize,

    /// Bytes of the `v` cell of each row.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    value_size: usize,

    /// Speak TLS with this certificate chain (PEM), for the proxy's TLS to the clusters.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// The keyspace and table named in canned metadata.
const KEYSPACE: &str = "cqlmirror_bench";
const TABLE: &str = "kv";

/// What a statement gets, also the first byte of the prepared ids this server hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Canned {
    Void = 1,
    Rows = 2,
    Local = 3,
    Peers = 4,
    PeersV2 = 5,
    NoRows = 6,
}

impl Canned {
    const ALL: [Self; 6] = [
        Self::Void,
        Self::Rows,
        Self::Local,
        Self::Peers,
        Self::PeersV2,
        Self::NoRows,
    ];

    fn of_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u8 == tag)
    }

    /// What `text` gets. `USE` is answered apart (SET_KEYSPACE).
    fn of_statement(text: &str) -> Self {
        if Statement::classify(text).kind != StatementKind::Select {
            return Self::Void;
        }
        let lower = text.to_ascii_lowercase();
        let table = lower
            .split_whitespace()
            .skip_while(|word| *word != "from")
            .nth(1)
            .unwrap_or("")
            .trim_end_matches(';')
            .replace('"', "");
        match table.as_str() {
            "system.local" => Self::Local,
            "system.peers" => Self::Peers,
            "system.peers_v2" => Self::PeersV2,
            t if t.starts_with("system") => Self::NoRows,
            _ => Self::Rows,
        }
    }
}

/// Column lists of the canned results.
fn columns(canned: Canned) -> Vec<(&'static str, ColumnType<'static>)> {
    use ColumnType::{Bigint, Blob, Inet, Int, Uuid, Varchar};
    let tokens = ColumnType::Set(Box::new(Varchar));
    match canned {
        Canned::Void | Canned::NoRows => vec![],
        Canned::Rows => vec![("k", Bigint), ("v", Blob)],
        Canned::Local => vec![
            ("key", Varchar),
            ("bootstrapped", Varchar),
            ("broadcast_address", Inet),
            ("cluster_name", Varchar),
            ("cql_version", Varchar),
            ("data_center", Varchar),
            ("host_id", Uuid),
            ("listen_address", Inet),
            ("native_protocol_version", Varchar),
            ("partitioner", Varchar),
            ("rack", Varchar),
            ("release_version", Varchar),
            ("rpc_address", Inet),
            ("rpc_port", Int),
            ("schema_version", Uuid),
            ("tokens", tokens),
        ],
        Canned::Peers => vec![
            ("peer", Inet),
            ("data_center", Varchar),
            ("host_id", Uuid),
            ("preferred_ip", Inet),
            ("rack", Varchar),
            ("release_version", Varchar),
            ("rpc_address", Inet),
            ("schema_version", Uuid),
            ("tokens", tokens),
        ],
        Canned::PeersV2 => vec![
            ("peer", Inet),
            ("peer_port", Int),
            ("data_center", Varchar),
            ("host_id", Uuid),
            ("native_address", Inet),
            ("native_port", Int),
            ("preferred_ip", Inet),
            ("preferred_port", Int),
            ("rack", Varchar),
            ("release_version", Varchar),
            ("schema_version", Uuid),
            ("tokens", tokens),
        ],
    }
}

fn table_of(canned: Canned) -> TableSpec<'static> {
    let table = match canned {
        Canned::Local => "local",
        Canned::Peers => "peers",
        Canned::PeersV2 => "peers_v2",
        _ => TABLE,
    };
    let keyspace = match canned {
        Canned::Local | Canned::Peers | Canned::PeersV2 => "system",
        _ => KEYSPACE,
    };
    TableSpec { keyspace, table }
}

/// Result metadata of `canned`: described, or only counted when the client skips it.
fn metadata(canned: Canned, skip: bool) -> RowsMetadata<'static> {
    let cols = columns(canned);
    if skip || canned == Canned::Void {
        return RowsMetadata::new(Columns::Skipped { count: cols.len() });
    }
    RowsMetadata::new(Columns::in_table(table_of(canned), &cols))
}

/// The answers that do not depend on the request, encoded once.
#[derive(Debug)]
struct Answers {
    supported: Bytes,
    void: Bytes,
    /// Indexed by `Canned as usize` and whether the metadata is skipped.
    rows: Vec<[Bytes; 2]>,
}

impl Answers {
    fn new(args: &Args) -> Self {
        let supported = Supported {
            options: vec![
                ("CQL_VERSION", vec!["3.4.7"]),
                ("COMPRESSION", vec!["lz4", "snappy"]),
                ("PROTOCOL_VERSIONS", vec!["3/v3", "4/v4", "5/v5"]),
            ],
        }
        .to_bytes(ProtocolVersion::V4);
        let void = ResultMessage::Void.to_bytes(ProtocolVersion::V4);
        let value = vec![0x5a; args.value_size];
        let ip = args.listen.ip();
        let inet = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let host_id = [0x11u8; 16];
        let schema_version = [0x22u8; 16];
        let port = i32::from(args.listen.port()).to_be_bytes();
        // set<text> {'0'}: element count, then each element as [bytes].
        let tokens = [0, 0, 0, 1, 0, 0, 0, 1, b'0'];
        let mut rows = vec![[Bytes::new(), Bytes::new()]; Canned::ALL.len() + 1];
        for canned in Canned::ALL {
            let build = |skip: bool| -> Bytes {
                let mut writer = RowsWriter::new(&metadata(canned, skip));
                let pushed = match canned {
                    Canned::Rows => (0..args.rows as i64).try_for_each(|k| {
                        let key = k.to_be_bytes();
                        writer.push_row([Some(&key[..]), Some(&value[..])])
                    }),
                    Canned::Local => writer.push_row([
                        Some(&b"local"[..]),
                        Some(b"COMPLETED"),
                        Some(&inet),
                        Some(b"cqlmirror-null"),
                        Some(b"3.4.7"),
                        Some(b"datacenter1"),
                        Some(&host_id),
                        Some(&inet),
                        Some(b"5"),
                        Some(b"org.apache.cassandra.dht.Murmur3Partitioner"),
                        Some(b"rack1"),
                        Some(b"5.0.0"),
                        Some(&inet),
                        Some(&port),
                        Some(&schema_version),
                        Some(&tokens),
                    ]),
                    Canned::Void | Canned::Peers | Canned::PeersV2 | Canned::NoRows => Ok(()),
                };
                if let Err(e) = pushed {
                    panic!("canned {canned:?} rows do not match their columns: {e}");
                }
                writer.finish()
            };
            rows[canned as usize] = [build(false), build(true)];
        }
        Self {
            supported,
            void,
            rows,
        }
    }

    fn result(&self, canned: Canned, skip_metadata: bool) -> Bytes {
        match canned {
            Canned::Void => self.void.clone(),
            _ => self.rows[canned as usize][usize::from(skip_metadata)].clone(),
        }
    }
}

/// A stable 64-bit FNV-1a hash, for prepared ids.
fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The id of a prepared statement: what it gets, then a hash of the text.
fn prepared_id(canned: Canned, text: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = canned as u8;
    id[1..9].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325, text.as_bytes()).to_be_bytes());
    id[9..].copy_from_slice(&fnv(0x8422_2325_cbf2_9ce4, text.as_bytes()).to_be_bytes()[..7]);
    id
}

/// Bind markers (`?` and `:name`) outside string literals, each declared as a blob.
fn marker_count(text: &str) -> usize {
    let mut quoted = false;
    let mut count = 0;
    let mut prev = ' ';
    for c in text.chars() {
        match c {
            '\'' => quoted = !quoted,
            '?' if !quoted => count += 1,
            c if !quoted && prev == ':' && (c.is_ascii_alphabetic() || c == '_') => count += 1,
            _ => {}
        }
        prev = c;
    }
    count
}

fn prepared_body(text: &str, version: ProtocolVersion) -> Bytes {
    let canned = Canned::of_statement(text);
    let id = prepared_id(canned, text);
    let names: Vec<String> = (0..marker_count(text)).map(|i| format!("p{i}")).collect();
    let prepared = Prepared {
        id: &id,
        result_metadata_id: Some(&id[..8]),
        metadata: PreparedMetadata {
            pk_indexes: if names.is_empty() { vec![] } else { vec![0] },
            global_table_spec: Some(table_of(canned)),
            columns: names
                .iter()
                .map(|name| ColumnSpec {
                    table: None,
                    name,
                    column_type: ColumnType::Blob,
                })
                .collect(),
        },
        result_metadata: metadata(canned, false),
    };
    ResultMessage::Prepared(prepared).to_bytes(version)
}

/// Per-connection protocol state.
#[derive(Debug, Default)]
struct Conn {
    compression: Option<Compression>,
    /// The handshake of a v5 connection just completed: segments from the next frame on.
    switch_to_segments: Option<SegmentFormat>,
}

fn error_body(message: &ErrorMessage<'_>, version: ProtocolVersion) -> (Opcode, Bytes) {
    (Opcode::ERROR, message.to_bytes(version))
}

/// The answer to one request: its opcode and body.
fn answer(request: &Envelope, conn: &mut Conn, answers: &Answers) -> (Opcode, Bytes) {
    let version = request.version();
    let protocol_error = |why: String| error_body(&ErrorMessage::protocol_error(why), version);
    let plain = match request.decompressed(conn.compression, MAX_FRAME) {
        Ok(plain) => plain,
        Err(e) => return protocol_error(format!("cannot decompress the body: {e}")),
    };
    let body = plain.body();
    let message = match Prefix::parse(plain.header().flags, Direction::Request, body) {
        Ok((_, offset)) => &body[offset..],
        Err(e) => return protocol_error(format!("malformed body prefix: {e}")),
    };
    let opcode = request.opcode();
    let decoded: Result<(Opcode, Bytes), cqlmirror_core::DecodeError> = (|| {
        Ok(match opcode {
            Opcode::OPTIONS => (Opcode::SUPPORTED, answers.supported.clone()),
            Opcode::STARTUP => {
                let startup = Startup::decode(message, version)?;
                conn.compression = startup.compression().and_then(Compression::from_name);
                if version.uses_segments() {
                    conn.switch_to_segments = Some(match conn.compression {
                        Some(Compression::Lz4) => SegmentFormat::Lz4,
                        _ => SegmentFormat::Uncompressed,
                    });
                }
                (Opcode::READY, Ready.to_bytes(version))
            }
            Opcode::REGISTER => (Opcode::READY, Ready.to_bytes(version)),
            Opcode::AUTH_RESPONSE => (
                Opcode::AUTH_SUCCESS,
                AuthSuccess { token: None }.to_bytes(version),
            ),
            Opcode::PREPARE => {
                let prepare = Prepare::decode(message, version)?;
                (Opcode::RESULT, prepared_body(prepare.query, version))
            }
            Opcode::EXECUTE => {
                let execute = Execute::decode(message, version)?;
                let canned = match (execute.id.len(), execute.id.first()) {
                    (16, Some(&tag)) => Canned::of_tag(tag),
                    _ => None,
                };
                match canned {
                    Some(canned) => (
                        Opcode::RESULT,
                        answers.result(canned, execute.params.skip_metadata),
                    ),
                    None => error_body(&ErrorMessage::unprepared(execute.id), version),
                }
            }
            Opcode::QUERY => {
                let query = Query::decode(message, version)?;
                let statement = Statement::classify(query.text);
                match (statement.kind, statement.keyspace) {
                    (StatementKind::Use, Some(keyspace)) => (
                        Opcode::RESULT,
                        ResultMessage::SetKeyspace(&keyspace).to_bytes(version),
                    ),
                    _ => (
                        Opcode::RESULT,
                        answers
                            .result(Canned::of_statement(query.text), query.params.skip_metadata),
                    ),
                }
            }
            Opcode::BATCH => {
                Batch::decode(message, version)?;
                (Opcode::RESULT, answers.void.clone())
            }
            other => {
                return Ok(protocol_error(format!(
                    "cqlmirror-null does not answer {other} requests"
                )));
            }
        })
    })();
    decoded.unwrap_or_else(|e| protocol_error(format!("malformed {opcode} body: {e}")))
}

/// Serves one client, with TLS when `tls` is given, until it closes the connection or
/// breaks the protocol.
fn serve(socket: TcpStream, answers: &Answers, tls: Option<Arc<ServerConfig>>) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let result = match tls {
        None => serve_on(&mut &socket, answers),
        Some(config) => {
            let tls = ServerConnection::new(config).map_err(io::Error::other)?;
            serve_on(&mut StreamOwned::new(tls, &socket), answers)
        }
    };
    if matches!(result, Ok(true)) {
        let _ = socket.shutdown(Shutdown::Both);
    }
    result.map(|_| ())
}

/// The protocol over a byte stream; `Ok(true)` when the client broke it (close at once).
fn serve_on(socket: &mut (impl Read + Write), answers: &Answers) -> io::Result<bool> {
    let mut inbox = Inbox::default();
    let mut decoder =
        FrameDecoder::new(EnvelopeDecoder::new(MAX_FRAME).expecting(Direction::Request));
    let mut encoder = FrameEncoder::new();
    let mut conn = Conn::default();
    let mut replies: Vec<Envelope> = Vec::new();
    let mut out = BytesMut::new();
    loop {
        match inbox.fill(socket) {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut fatal = false;
        loop {
            match decoder.decode(&mut inbox.buf) {
                Ok(Some(request)) => {
                    let (opcode, body) = answer(&request, &mut conn, answers);
                    replies.push(envelope(
                        request.version(),
                        Direction::Response,
                        request.stream().0,
                        opcode,
                        body,
                    ));
                    if let Some(format) = conn.switch_to_segments.take() {
                        // READY is the last plain envelope of a v5 connection.
                        encoder.encode_all(&replies, &mut out);
                        replies.clear();
                        encoder.switch_to_segments(format);
                        decoder.switch_to_segments(format);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let (version, stream) = match peek_refusal(&inbox.buf) {
                        Some(refusal) => (
                            ProtocolVersion::from_number(refusal.version.min(5))
                                .unwrap_or(ProtocolVersion::V4),
                            refusal.stream.0,
                        ),
                        None => (ProtocolVersion::V4, 0),
                    };
                    let error = match e.kind {
                        cqlmirror_core::DecodeErrorKind::UnsupportedVersion { version } => {
                            ErrorMessage::version_refusal(version, &ProtocolVersion::ALL)
                        }
                        _ => ErrorMessage::protocol_error(format!("malformed frame: {e}")),
                    };
                    replies.push(envelope(
                        version,
                        Direction::Response,
                        stream,
                        Opcode::ERROR,
                        error.to_bytes(version),
                    ));
                    fatal = true;
                    break;
                }
            }
        }
        encoder.encode_all(&replies, &mut out);
        replies.clear();
        if !out.is_empty() {
            socket.write_all(&out)?;
            out.clear();
        }
        if fatal {
            socket.flush()?;
            return Ok(true);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cqlmirror-null: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    let answers = Arc::new(Answers::new(&args));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match ClientTls::new(&ClientTlsOptions {
            cert: Some(cert.clone()),
            key: Some(key.clone()),
            ..Default::default()
        }) {
            Ok(tls) => tls.map(|t| t.config()),
            Err(e) => {
                eprintln!("cqlmirror-null: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    eprintln!(
        "cqlmirror-null: listening on {} ({} row(s) of {} bytes per read)",
        args.listen, args.rows, args.value_size
    );
    for socket in listener.incoming() {
        let socket = match socket {
            Ok(socket) => socket,
            Err(e) => {
                eprintln!("cqlmirror-null: accept failed: {e}");
                thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        let (answers, tls) = (Arc::clone(&answers), tls.clone());
        // Small stacks: idle connections are counted in thousands in the memory bench.
        let spawned = thread::Builder::new()
            .name("null-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                if let Err(e) = serve(socket, &answers, tls) {
                    if e.kind() != io::ErrorKind::ConnectionReset {
                        eprintln!("cqlmirror-null: connection ended: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("cqlmirror-null: cannot start a connection thread: {e}");
        }
    }
    ExitCode::SUCCESS
}
