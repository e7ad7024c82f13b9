//! One plain CQL connection for replay: blocking std TCP, one request at a time, the core's
//! message encoders and decoders. Protocol v4 (no v5 segment framing needed): a record's
//! keyspace is set with `USE`, its values are the same bytes in v3, v4 and v5.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cqlmirror_core::config::Credentials;
use cqlmirror_core::frame::{
    Direction, Envelope, EnvelopeDecoder, Flags, Header, Opcode, ProtocolVersion, StreamId,
};
use cqlmirror_core::journal::Record;
use cqlmirror_core::message::{
    AuthResponse, Body, ErrorMessage, Query, QueryParams, Startup, sasl_plain_token,
};
use cqlmirror_core::session::reconnect::cql_identifier;
use cqlmirror_core::wire::Consistency;

/// The version replay speaks.
pub const VERSION: ProtocolVersion = ProtocolVersion::V4;
/// The largest answer accepted (replay's answers are a few bytes).
const MAX_FRAME: usize = 16 << 20;

/// Why a request did not apply.
#[derive(Debug)]
pub enum ApplyError {
    /// The cluster answered with an ERROR: this record failed, the connection is fine.
    Refused(String),
    /// The connection failed or timed out: replay cannot go on on it.
    Connection(String),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) | Self::Connection(e) => f.write_str(e),
        }
    }
}

/// A connection to one node, ready for queries.
pub struct Client {
    stream: TcpStream,
    decoder: EnvelopeDecoder,
    buf: BytesMut,
    /// The keyspace of the last `USE`.
    keyspace: Option<String>,
    address: SocketAddr,
}

impl Client {
    /// Connects, starts up (OPTIONS, STARTUP) and logs in with `credentials` when the node
    /// asks (PasswordAuthenticator). `timeout` bounds the connect and each answer.
    pub fn connect(
        address: SocketAddr,
        credentials: Option<&Credentials>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let stream = TcpStream::connect_timeout(&address, timeout)
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("{address}: {e}"))?;
        let mut client = Self {
            stream,
            decoder: EnvelopeDecoder::new(MAX_FRAME).expecting(Direction::Response),
            buf: BytesMut::new(),
            keyspace: None,
            address,
        };
        let handshake = |e: ApplyError| format!("{address}: handshake: {e}");
        client
            .call(Opcode::OPTIONS, &[])
            .map_err(handshake)
            .and_then(|a| expect(&a, Opcode::SUPPORTED).map_err(|e| format!("{address}: {e}")))?;
        let startup = Startup {
            options: vec![("CQL_VERSION", "3.0.0")],
        }
        .to_bytes(VERSION);
        let answer = client.call(Opcode::STARTUP, &startup).map_err(handshake)?;
        match answer.opcode() {
            Opcode::READY => Ok(client),
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
                .to_bytes(VERSION);
                let answer = client
                    .call(Opcode::AUTH_RESPONSE, &response)
                    .map_err(handshake)?;
                match answer.opcode() {
                    Opcode::AUTH_SUCCESS => Ok(client),
                    Opcode::ERROR => Err(format!(
                        "{address}: login refused: {} (check --target-username and the password)",
                        describe(&answer)
                    )),
                    other => Err(format!(
                        "{address}: the authenticator asks for more than a password ({other}): only PasswordAuthenticator is supported"
                    )),
                }
            }
            _ => Err(format!("{address}: STARTUP refused: {}", describe(&answer))),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Applies `record` (its keyspace first, if it is not the connection's).
    pub fn apply(&mut self, record: &Record) -> Result<(), ApplyError> {
        if record.keyspace.is_some() && record.keyspace != self.keyspace {
            let keyspace = record.keyspace.clone().unwrap_or_default();
            let text = format!("USE {}", cql_identifier(&keyspace));
            let body = Query {
                text: &text,
                params: QueryParams::new(Consistency::ONE),
            }
            .to_bytes(VERSION);
            let answer = self.call(Opcode::QUERY, &body)?;
            expect(&answer, Opcode::RESULT)
                .map_err(|e| ApplyError::Refused(format!("USE {keyspace}: {e}")))?;
            self.keyspace = Some(keyspace);
        }
        let (opcode, body) = record.request(VERSION);
        let answer = self.call(opcode, &body)?;
        expect(&answer, Opcode::RESULT).map_err(ApplyError::Refused)
    }

    /// Sends one request on stream 0 and waits for its answer (events are skipped).
    fn call(&mut self, opcode: Opcode, body: &[u8]) -> Result<Envelope, ApplyError> {
        let lost = |e: std::io::Error| {
            ApplyError::Connection(format!("the connection to {} failed: {e}", self.address))
        };
        let header = Header {
            version: VERSION,
            direction: Direction::Request,
            flags: Flags::empty(),
            stream: StreamId(0),
            opcode,
            length: 0,
        };
        let mut out = BytesMut::new();
        Envelope::new(header, Bytes::copy_from_slice(body)).encode(&mut out);
        self.stream.write_all(&out).map_err(lost)?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.decoder.decode(&mut self.buf) {
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

/// `Ok` for an answer of `opcode`; an ERROR's code and message, or what came instead.
fn expect(answer: &Envelope, opcode: Opcode) -> Result<(), String> {
    if answer.opcode() == opcode {
        Ok(())
    } else {
        Err(describe(answer))
    }
}

fn describe(answer: &Envelope) -> String {
    if answer.opcode() != Opcode::ERROR {
        return format!("unexpected {} answer", answer.opcode());
    }
    match ErrorMessage::decode(answer.body(), VERSION) {
        Ok(e) => format!(
            "{} (0x{:04x}): {}",
            e.code.name().unwrap_or("error"),
            e.code.0,
            e.message
        ),
        Err(e) => format!("an ERROR that does not decode: {e}"),
    }
}
