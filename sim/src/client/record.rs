//! What a simulated client sent and what it got back: one [`ClientOp`] per request.

use std::time::Duration;

use bytes::Bytes;

use cqlmirror_core::frame::Opcode;

/// What a request was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// OPTIONS after the handshake (a driver's heartbeat).
    Heartbeat,
    /// PREPARE of this statement text.
    Prepare(String),
    /// QUERY with an INSERT.
    Insert,
    /// QUERY with a SELECT of this key.
    Select(i64),
    /// EXECUTE of the prepared INSERT.
    ExecuteInsert,
    /// EXECUTE of the prepared SELECT of this key.
    ExecuteSelect(i64),
    /// BATCH of inserts (text and prepared).
    Batch,
    /// QUERY `USE ks`.
    Use,
    /// REGISTER for schema changes.
    Register,
    /// QUERY of a topology table: [`TOPOLOGY_READS`]`[n]`.
    Topology(usize),
}

/// The topology reads a client sends, as drivers write them.
pub const TOPOLOGY_READS: [&str; 5] = [
    "SELECT * FROM system.local WHERE key='local'",
    "SELECT peer, data_center, host_id, rack, release_version, rpc_address, tokens FROM system.peers",
    "SELECT * FROM system.peers_v2",
    "SELECT rpc_address AS address, data_center FROM system.local",
    "SELECT count(*) FROM system.peers",
];

impl OpKind {
    /// Whether the proxy treats it as a write (sent to both and counted when the target
    /// misses it).
    pub fn proxy_write(&self) -> bool {
        matches!(
            self,
            Self::Insert | Self::ExecuteInsert | Self::Batch | Self::Use
        )
    }
}

/// The answer a client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAnswer {
    pub at: Duration,
    pub opcode: Opcode,
    /// The message: decompressed, prefixes removed.
    pub message: Bytes,
}

impl ClientAnswer {
    /// The error code, for an ERROR.
    pub fn error_code(&self) -> Option<i32> {
        if self.opcode != Opcode::ERROR {
            return None;
        }
        self.message
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The error text, for an ERROR.
    pub fn error_text(&self) -> Option<String> {
        self.error_code()?;
        let len = self
            .message
            .get(4..6)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))?;
        self.message
            .get(6..6 + usize::from(len))
            .map(|t| String::from_utf8_lossy(t).into_owned())
    }

    /// An error made by the proxy itself (its texts start with `cqlmirror:`).
    pub fn is_proxy_error(&self) -> bool {
        self.error_text()
            .is_some_and(|t| t.starts_with("cqlmirror:"))
    }
}

/// One request of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOp {
    /// Unique in the run: `c<client>_<n>`.
    pub tag: String,
    pub client: usize,
    pub kind: OpKind,
    pub opcode: Opcode,
    pub stream: i16,
    /// Write ids and keys of the writes it carries.
    pub writes: Vec<(String, i64)>,
    /// The default timestamp the client set, if it did.
    pub client_timestamp: Option<i64>,
    /// Whether the tag travels in a custom payload.
    pub payload_tag: bool,
    pub sent_at: Duration,
    /// When the proxy read the request's last byte.
    pub consumed_at: Option<Duration>,
    pub answer: Option<ClientAnswer>,
    /// Answers beyond the first on the same stream while this request was the one in flight.
    pub duplicates: u32,
}

/// Whether the clusters can name the request by its tag: a payload, a written value or a
/// SELECT alias carries it.
pub fn carries_tag(op: &ClientOp) -> bool {
    op.payload_tag || !op.writes.is_empty() || matches!(op.kind, OpKind::Select(_))
}
