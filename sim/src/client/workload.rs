//! What a simulated client asks for: the mix of requests and how they are encoded.

use bytes::Bytes;

use crate::cql;
use crate::latency::Latency;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::{
    Batch, BatchStatement, BatchType, Body, Execute, Prepare, Query, QueryParams, Statements,
    Values,
};
use cqlmirror_core::wire::{Consistency, Value};

/// Relative weights of the kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub insert: u32,
    pub select: u32,
    pub execute_insert: u32,
    pub execute_select: u32,
    pub batch: u32,
    pub heartbeat: u32,
    pub use_keyspace: u32,
    /// Reads of `system.local` / `system.peers` / `system.peers_v2`, as drivers send them:
    /// the proxy answers them itself, with its own address.
    pub topology: u32,
}

impl Mix {
    /// Writes and reads, plain and prepared, some batches.
    pub const MIXED: Self = Self {
        insert: 30,
        select: 20,
        execute_insert: 20,
        execute_select: 10,
        batch: 10,
        heartbeat: 2,
        use_keyspace: 2,
        topology: 2,
    };

    /// Only plain inserts.
    pub const INSERTS: Self = Self {
        insert: 1,
        select: 0,
        execute_insert: 0,
        execute_select: 0,
        batch: 0,
        heartbeat: 0,
        use_keyspace: 0,
        topology: 0,
    };

    /// Only prepared statements (inserts, reads, batches).
    pub const PREPARED: Self = Self {
        insert: 0,
        select: 0,
        execute_insert: 5,
        execute_select: 2,
        batch: 2,
        heartbeat: 0,
        use_keyspace: 0,
        topology: 0,
    };

    /// Only plain reads.
    pub const SELECTS: Self = Self {
        insert: 0,
        select: 1,
        execute_insert: 0,
        execute_select: 0,
        batch: 0,
        heartbeat: 0,
        use_keyspace: 0,
        topology: 0,
    };

    pub(crate) fn weights(&self) -> [u32; 8] {
        [
            self.insert,
            self.select,
            self.execute_insert,
            self.execute_select,
            self.batch,
            self.heartbeat,
            self.use_keyspace,
            self.topology,
        ]
    }

    /// Whether prepared statements are needed.
    pub fn uses_prepared(&self) -> bool {
        self.execute_insert + self.execute_select + self.batch > 0
    }
}

/// A client's workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Requests to send after the handshake (not counting PREPAREs the client needs).
    pub ops: usize,
    /// Requests in flight at most.
    pub max_in_flight: usize,
    pub mix: Mix,
    /// Keys are drawn from `0..keys`.
    pub keys: i64,
    /// Pause between two requests.
    pub think: Latency,
    /// Padding added to each written value, in bytes.
    pub value_size: usize,
    /// Start with `USE ks` (and wait for it), then name the table without its keyspace.
    pub unqualified: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            ops: 200,
            max_in_flight: 32,
            mix: Mix::MIXED,
            keys: 50,
            think: Latency::millis(0, 2),
            value_size: 0,
            unqualified: false,
        }
    }
}

/// The value written by a write: its id, then padding after `#`.
pub fn value_of(id: &str, padding: usize) -> String {
    if padding == 0 {
        id.to_owned()
    } else {
        let mut v = String::with_capacity(id.len() + 1 + padding);
        v.push_str(id);
        v.push('#');
        v.extend(std::iter::repeat_n('x', padding));
        v
    }
}

pub(crate) fn int_value(key: i64) -> [u8; 4] {
    (key as i32).to_be_bytes()
}

fn params<'a>(values: Option<Values<'a>>, timestamp: Option<i64>) -> QueryParams<'a> {
    QueryParams {
        values,
        timestamp,
        ..QueryParams::new(Consistency::ONE)
    }
}

pub(crate) fn query_body(text: &str, timestamp: Option<i64>, version: ProtocolVersion) -> Bytes {
    Query {
        text,
        params: params(None, timestamp),
    }
    .to_bytes(version)
}

pub(crate) fn prepare_body(text: &str, version: ProtocolVersion) -> Bytes {
    Prepare {
        query: text,
        keyspace: None,
    }
    .to_bytes(version)
}

pub(crate) fn execute_body(
    id: &[u8],
    result_metadata_id: Option<&[u8]>,
    values: &[Value<'_>],
    timestamp: Option<i64>,
    version: ProtocolVersion,
) -> Bytes {
    Execute {
        id,
        result_metadata_id,
        params: params(Some(Values::positional(values)), timestamp),
    }
    .to_bytes(version)
}

/// One batch entry: a text insert or the prepared insert with its values.
#[derive(Debug, Clone)]
pub(crate) enum BatchItem {
    Text(String),
    Prepared {
        id: Bytes,
        key: [u8; 4],
        value: String,
    },
}

pub(crate) fn batch_body(
    items: &[BatchItem],
    timestamp: Option<i64>,
    version: ProtocolVersion,
) -> Bytes {
    let values: Vec<[Value<'_>; 2]> = items
        .iter()
        .map(|item| match item {
            BatchItem::Prepared { key, value, .. } => {
                [Value::Bytes(key), Value::Bytes(value.as_bytes())]
            }
            BatchItem::Text(_) => [Value::Null, Value::Null],
        })
        .collect();
    let statements: Vec<BatchStatement<'_>> = items
        .iter()
        .zip(&values)
        .map(|(item, values)| match item {
            BatchItem::Text(text) => BatchStatement {
                statement: cqlmirror_core::message::Statement::Query(text),
                values: Values::positional(&[]),
            },
            BatchItem::Prepared { id, .. } => BatchStatement {
                statement: cqlmirror_core::message::Statement::Prepared(id),
                values: Values::positional(values),
            },
        })
        .collect();
    Batch {
        batch_type: BatchType::LOGGED,
        statements: Statements::new(&statements),
        consistency: Consistency::ONE,
        serial_consistency: None,
        timestamp,
        keyspace: None,
        now_in_seconds: None,
    }
    .to_bytes(version)
}

/// The statements the client prepares: insert, then read.
pub(crate) fn prepared_texts(unqualified: bool) -> [&'static str; 2] {
    if unqualified {
        [
            cql::INSERT_PREPARED_UNQUALIFIED,
            cql::SELECT_PREPARED_UNQUALIFIED,
        ]
    } else {
        [cql::INSERT_PREPARED, cql::SELECT_PREPARED]
    }
}
