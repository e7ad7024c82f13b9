//! One plain CQL connection for replay: blocking std TCP, one request at a time, the core's
//! message encoders and decoders.
//!
//! Protocol v5 when the node speaks it (segments after STARTUP, as the core frames them): its
//! `now_in_seconds` lets a replayed TTL count from the time of the original write, not from
//! the replay. v4 otherwise (TTLs then count from the replay). A record's values are the same
//! bytes in v3, v4 and v5; its keyspace is set with `USE`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cqlmirror_core::config::Credentials;
use cqlmirror_core::frame::{
    Direction, Envelope, EnvelopeDecoder, Flags, Header, Opcode, ProtocolVersion, SegmentFormat,
    SegmentReader, SegmentWriter, StreamId,
};
use cqlmirror_core::journal::{Cause, Outcome, Record};
use cqlmirror_core::message::{
    AuthResponse, Body, ErrorCode, ErrorMessage, Query, QueryParams, Startup, sasl_plain_token,
};
use cqlmirror_core::statement::identifier;
use cqlmirror_core::wire::Consistency;

/// The versions replay speaks, preferred first.
const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V5, ProtocolVersion::V4];
/// The largest answer accepted (replay's answers are a few bytes).
const MAX_FRAME: usize = 16 << 20;

/// Why a request did not apply.
#[derive(Debug)]
pub enum ApplyError {
    /// The cluster answered with an ERROR about the write itself (Invalid, a missing table,
    /// ...): this record failed, the connection is fine.
    Refused(String),
    /// The cluster cannot take writes for now (Unavailable, Overloaded, bootstrapping): the
    /// record is fine and must be applied later, never passed.
    Busy(String),
    /// The cluster answered that the write may or may not have applied (a write timeout or
    /// failure, a server error): applying it again is safe only for a plain write.
    MayHaveApplied(String),
    /// The connection failed or timed out: replay cannot go on on it.
    Connection(String),
}

impl ApplyError {
    /// The error for an ERROR answer of `code`, described as `text`.
    fn of_answer(code: ErrorCode, text: String) -> Self {
        match code {
            ErrorCode::UNAVAILABLE | ErrorCode::OVERLOADED | ErrorCode::IS_BOOTSTRAPPING => {
                Self::Busy(text)
            }
            code => match Outcome::of(&Cause::Error {
                code,
                message: String::new(),
            }) {
                Outcome::Unknown => Self::MayHaveApplied(text),
                Outcome::NotApplied => Self::Refused(text),
            },
        }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) | Self::Busy(e) | Self::MayHaveApplied(e) | Self::Connection(e) => {
                f.write_str(e)
            }
        }
    }
}

/// A connection to one node, ready for queries.
pub struct Client {
    stream: TcpStream,
    version: ProtocolVersion,
    decoder: EnvelopeDecoder,
    /// v5 after STARTUP: envelopes travel in segments.
    segments: Option<(SegmentWriter, SegmentReader)>,
    buf: BytesMut,
    /// The keyspace of the last `USE`.
    keyspace: Option<String>,
    address: SocketAddr,
}

impl Client {
    /// Connects, starts up (OPTIONS, STARTUP; v5, else v4) and logs in with `credentials`
    /// when the node asks (PasswordAuthenticator). `timeout` bounds the connect and each
    /// answer.
    pub fn connect(
        address: SocketAddr,
        credentials: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut refused = String::new();
        for version in VERSIONS {
            match Self::connect_with(address, credentials, timeout, version)? {
                Ok(client) => return Ok(client),
                Err(why) => refused = why,
            }
        }
        Err(format!("{address}: STARTUP refused: {refused}"))
    }

    /// `Ok(Err(why))` when the node refuses `version`.
    fn connect_with(
        address: SocketAddr,
        credentials: Option<&Credentials>,
        timeout: Duration,
        version: ProtocolVersion,
    ) -> Result<Result<Self, String>, String> {
        let stream = TcpStream::connect_timeout(&address, timeout)
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("{address}: {e}"))?;
        let mut client = Self {
            stream,
            version,
            decoder: EnvelopeDecoder::new(MAX_FRAME).expecting(Direction::Response),
            segments: None,
            buf: BytesMut::new(),
            keyspace: None,
            address,
        };
        let handshake = |e: ApplyError| format!("{address}: handshake: {e}");
        let answer = client.call(Opcode::OPTIONS, &[]).map_err(handshake)?;
        if answer.opcode() != Opcode::SUPPORTED {
            return Ok(Err(client.describe(&answer)));
        }
        let startup = Startup {
            options: vec![("CQL_VERSION", "3.0.0")],
        }
        .to_bytes(version);
        let answer = client.call(Opcode::STARTUP, &startup).map_err(handshake)?;
        if version >= ProtocolVersion::V5 && answer.opcode() != Opcode::ERROR {
            // Everything after READY or AUTHENTICATE goes in segments.
            let reader = SegmentReader::new(
                SegmentFormat::Uncompressed,
                EnvelopeDecoder::new(MAX_FRAME).expecting(Direction::Response),
            );
            client.segments = Some((SegmentWriter::new(SegmentFormat::Uncompressed), reader));
        }
        match answer.opcode() {
            Opcode::READY => Ok(Ok(client)),
            Opcode::AUTHENTICATE => {
                let Some(credentials) = credentials else {
                    return Err(format!(
                        "{address} asks for credentials: give --target-username and --target-password-file"
                    ));
                };
                let token = sasl_plain_token(&credentials.username, credentials.password.expose());
                let response = AuthResponse {
                    token: Some(token.expose()),
                }
                .to_bytes(version);
                let answer = client
                    .call(Opcode::AUTH_RESPONSE, &response)
                    .map_err(handshake)?;
                match answer.opcode() {
                    Opcode::AUTH_SUCCESS => Ok(Ok(client)),
                    Opcode::ERROR => Err(format!(
                        "{address}: login refused: {} (check --target-username and the password)",
                        client.describe(&answer)
                    )),
                    other => Err(format!(
                        "{address}: the authenticator asks for more than a password ({other}): only PasswordAuthenticator is supported"
                    )),
                }
            }
            _ => Ok(Err(client.describe(&answer))),
        }
    }

    /// The protocol version of the connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Applies `record` (its keyspace first, if it is not the connection's).
    pub fn apply(&mut self, record: &Record) -> Result<(), ApplyError> {
        if record.keyspace.is_some() && record.keyspace != self.keyspace {
            let keyspace = record.keyspace.clone().unwrap_or_default();
            let text = format!("USE {}", identifier::cql(&keyspace));
            let body = Query {
                text: &text,
                params: QueryParams::new(Consistency::ONE),
            }
            .to_bytes(self.version);
            let answer = self.call(Opcode::QUERY, &body)?;
            self.expect(&answer, Opcode::RESULT)
                .map_err(|e| ApplyError::Refused(format!("USE {keyspace}: {e}")))?;
            self.keyspace = Some(keyspace);
        }
        let (opcode, body) = match now_in_seconds(record) {
            Some(now) if self.version >= ProtocolVersion::V5 && record.now_in_seconds.is_none() => {
                let mut at_the_time = record.clone();
                at_the_time.now_in_seconds = Some(now);
                at_the_time.request(self.version)
            }
            _ => record.request(self.version),
        };
        let answer = self.call(opcode, &body)?;
        if answer.opcode() == Opcode::ERROR {
            if let Ok(error) = ErrorMessage::decode(answer.body(), self.version) {
                return Err(ApplyError::of_answer(error.code, self.describe(&answer)));
            }
        }
        self.expect(&answer, Opcode::RESULT)
            .map_err(ApplyError::Refused)
    }

    /// Sends one request on stream 0 and waits for its answer (events are skipped).
    fn call(&mut self, opcode: Opcode, body: &[u8]) -> Result<Envelope, ApplyError> {
        let lost = |e: std::io::Error| {
            ApplyError::Connection(format!("the connection to {} failed: {e}", self.address))
        };
        let header = Header {
            version: self.version,
            direction: Direction::Request,
            flags: Flags::empty(),
            stream: StreamId(0),
            opcode,
            length: 0,
        };
        let mut out = BytesMut::new();
        let envelope = Envelope::new(header, Bytes::copy_from_slice(body));
        match &mut self.segments {
            Some((writer, _)) => writer.write(&envelope, &mut out),
            None => envelope.encode(&mut out),
        }
        self.stream.write_all(&out).map_err(lost)?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let decoded = match &mut self.segments {
                Some((_, reader)) => reader.decode(&mut self.buf),
                None => self.decoder.decode(&mut self.buf),
            };
            match decoded {
                Ok(Some(envelope)) if envelope.stream() == StreamId(0) => return Ok(envelope),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    return Err(ApplyError::Connection(format!(
                        "{} sent something that is not CQL: {e}",
                        self.address
                    )));
                }
            }
            let n = self.stream.read(&mut chunk).map_err(lost)?;
            if n == 0 {
                return Err(ApplyError::Connection(format!(
                    "{} closed the connection",
                    self.address
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The second a record's write happened at, which its TTLs count from: its write timestamp
/// when that is a time near the journaling (a client's own timestamps may be anything), else
/// when it was journaled.
fn now_in_seconds(record: &Record) -> Option<i32> {
    const DAY_MICROS: i64 = 86_400 * 1_000_000;
    let micros = record
        .timestamp
        .filter(|t| (record.wall_micros - t).abs() < DAY_MICROS)
        .unwrap_or(record.wall_micros);
    i32::try_from(micros.div_euclid(1_000_000)).ok()
}

impl Client {
    /// `Ok` for an answer of `opcode`; an ERROR's code and message, or what came instead.
    fn expect(&self, answer: &Envelope, opcode: Opcode) -> Result<(), String> {
        if answer.opcode() == opcode {
            Ok(())
        } else {
            Err(self.describe(answer))
        }
    }

    fn describe(&self, answer: &Envelope) -> String {
        if answer.opcode() != Opcode::ERROR {
            return format!("unexpected {} answer", answer.opcode());
        }
        match ErrorMessage::decode(answer.body(), self.version) {
            Ok(e) => format!(
                "{} (0x{:04x}): {}",
                e.code.name().unwrap_or("error"),
                e.code.0,
                e.message
            ),
            Err(e) => format!("an ERROR that does not decode: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqlmirror_core::config::Upstream;
    use cqlmirror_core::journal::{Cause, Outcome, Statement, Values, Write, WriteKind};

    fn record(wall_micros: i64, timestamp: Option<i64>) -> Record {
        Record {
            wall_micros,
            cluster: Upstream::Target,
            version: ProtocolVersion::V4,
            keyspace: None,
            write: Write::Single(Statement {
                prepared: false,
                text: "INSERT INTO ks.t (k) VALUES (1) USING TTL 60".into(),
                values: Values::None,
            }),
            consistency: Consistency::ONE,
            serial_consistency: None,
            timestamp,
            now_in_seconds: None,
            kind: WriteKind::Plain,
            outcome: Outcome::NotApplied,
            cause: Cause::NotConnected,
            tables: Vec::new(),
        }
    }

    #[test]
    fn error_answers_are_sorted_by_what_replay_may_do_next() {
        let of = |code| ApplyError::of_answer(code, String::new());
        for code in [
            ErrorCode::UNAVAILABLE,
            ErrorCode::OVERLOADED,
            ErrorCode::IS_BOOTSTRAPPING,
        ] {
            assert!(matches!(of(code), ApplyError::Busy(_)), "{code:?}");
        }
        for code in [
            ErrorCode::WRITE_TIMEOUT,
            ErrorCode::WRITE_FAILURE,
            ErrorCode::SERVER_ERROR,
        ] {
            assert!(
                matches!(of(code), ApplyError::MayHaveApplied(_)),
                "{code:?}"
            );
        }
        for code in [
            ErrorCode::INVALID,
            ErrorCode::SYNTAX_ERROR,
            ErrorCode::UNAUTHORIZED,
        ] {
            assert!(matches!(of(code), ApplyError::Refused(_)), "{code:?}");
        }
    }

    #[test]
    fn ttls_count_from_the_write() {
        // The proxy's timestamp, taken when the write arrived (journaled up to a timeout
        // later).
        let r = record(1_700_000_012_000_000, Some(1_700_000_000_500_000));
        assert_eq!(now_in_seconds(&r), Some(1_700_000_000));
        // A client timestamp that is no time at all: when it was journaled.
        let r = record(1_700_000_012_000_000, Some(42));
        assert_eq!(now_in_seconds(&r), Some(1_700_000_012));
        let r = record(1_700_000_012_000_000, None);
        assert_eq!(now_in_seconds(&r), Some(1_700_000_012));
    }
}
