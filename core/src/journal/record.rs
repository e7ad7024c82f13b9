//! One journal record: a write one cluster missed while the other applied it, with everything
//! a later replay needs to apply exactly the same write, and its binary encoding.
//!
//! A record never refers to a prepared statement id: ids are per cluster and die with the
//! cluster's cache, while the journal may be replayed days later. A prepared statement is
//! kept as its text and the values bound to it, so replay prepares it again (or sends it as a
//! QUERY with values) wherever it runs.
//!
//! # Layout (format 1)
//!
//! Big-endian throughout; `string` is an `[int]` length and UTF-8 bytes (never the 2-byte
//! `[string]`, which would cut long texts), `value` is the protocol's `[value]` (length -1
//! null, -2 unset), counts are `[int]`.
//!
//! ```text
//! u8      format (1)
//! i64     wall time, µs since the Unix epoch
//! u8      cluster that missed the write: 0 source, 1 target
//! u8      protocol version number (3, 4, 5)
//! u8      kind: 0 plain, 1 order-sensitive collection write, 2 counter update, 3 LWT
//! u8      outcome on that cluster: 0 not applied, 1 unknown
//! u16     consistency
//! u8      flags: 1 timestamp, 2 serial consistency, 4 keyspace, 8 now-in-seconds
//! [i64 timestamp] [u16 serial consistency] [string keyspace] [i32 now-in-seconds]
//! cause   u8 0 error: i32 code, string message | 1 timeout | 2 connection closed |
//!         3 never connected
//! int     table count, each: u8 has-keyspace, [string keyspace], string table
//! write   u8 0 single: statement | 1 batch: u8 batch type, int count, statements
//! statement: u8 prepared (0/1), string text,
//!            u8 values: 0 none | 1 positional: int n, n × value
//!                                 | 2 named: int n, n × (string name, value)
//! ```
//!
//! Decoding checks every length against the bytes left before it reads or allocates, and
//! fails on trailing bytes: garbage is an error, never a panic or a huge allocation.

use bytes::BufMut;

use crate::config::Upstream;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::ProtocolVersion;
use crate::message::batch::BatchType;
use crate::message::error::ErrorCode;
use crate::statement::tables::TableRef;
use crate::wire::{self, Consistency, Reader, Value};

/// The record layout this code writes; decoding refuses any other.
pub const RECORD_FORMAT: u8 = 1;

/// A write one cluster missed, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the proxy journaled it, µs since the Unix epoch (the proxy's wall clock).
    pub wall_micros: i64,
    /// The cluster that missed the write and that replay applies it to.
    pub cluster: Upstream,
    /// The protocol version the client used: values are encoded for it (v3 has no "unset").
    pub version: ProtocolVersion,
    /// The keyspace the statement runs in when it names none: the connection's, or the one
    /// the statement was prepared in, or the v5 per-query keyspace.
    pub keyspace: Option<String>,
    /// The statement(s) and their values.
    pub write: Write,
    pub consistency: Consistency,
    pub serial_consistency: Option<Consistency>,
    /// The write timestamp both clusters were sent (the proxy's or the client's own), so that a
    /// replayed write loses to anything newer, as it would have. `None` only for LWTs, which
    /// may carry none.
    pub timestamp: Option<i64>,
    /// The v5 `now_in_seconds` the client set, which TTLs and `now()` are computed from.
    pub now_in_seconds: Option<i32>,
    /// Whether the write can be applied again blindly.
    pub kind: WriteKind,
    /// What is known of the write on the cluster that missed it.
    pub outcome: Outcome,
    /// Why it missed it.
    pub cause: Cause,
    /// The tables the write touches, so that the replay report names rows' tables and a
    /// table filter can skip records.
    pub tables: Vec<TableRef>,
}

/// The statement(s) of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A QUERY or an EXECUTE.
    Single(Statement),
    /// A BATCH, its entries in order.
    Batch {
        batch_type: BatchType,
        entries: Vec<Statement>,
    },
}

/// One statement with the values bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Whether the client prepared it (replay may prepare it once and execute it many times);
    /// the text is the prepared statement's either way.
    pub prepared: bool,
    pub text: String,
    pub values: Values,
}

/// The values bound to a statement, as the client sent them (serialized for `version`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Values {
    #[default]
    None,
    Positional(Vec<BoundValue>),
    /// Values by bind marker name (QUERY and EXECUTE with the "names for values" flag).
    Named(Vec<(String, BoundValue)>),
}

/// One bound value: an owned [`wire::Value`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundValue {
    Bytes(Vec<u8>),
    Null,
    Unset,
}

impl From<Value<'_>> for BoundValue {
    fn from(v: Value<'_>) -> Self {
        match v {
            Value::Bytes(b) => Self::Bytes(b.to_vec()),
            Value::Null => Self::Null,
            Value::Unset => Self::Unset,
        }
    }
}

impl BoundValue {
    /// As the wire type, for encoding a request.
    pub fn as_value(&self) -> Value<'_> {
        match self {
            Self::Bytes(b) => Value::Bytes(b),
            Self::Null => Value::Null,
            Self::Unset => Value::Unset,
        }
    }
}

/// Whether a write gives the same result when applied twice, which decides what replay does
/// with it. Ordered from the most to the least forgiving: a batch takes its entries' maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WriteKind {
    /// Idempotent under its timestamp: applying it again changes nothing newer.
    Plain,
    /// A list append, prepend, removal or index write, or a collection change whose kind the
    /// text does not show: the cluster orders list elements by its own clock, so a second
    /// application adds the elements twice.
    OrderSensitive,
    /// A counter update: each application adds again.
    Counter,
    /// A lightweight transaction: its condition was decided against the other cluster's state
    /// at that time and cannot be decided again.
    Lwt,
}

impl WriteKind {
    /// From what [`crate::statement::Statement`] knows of a statement and whether it updates
    /// a counter (which the text alone does not show for `c = c + 1`: a counter batch, or the
    /// column types of a prepared statement, do).
    pub const fn of(conditional: bool, order_sensitive: bool, counter: bool) -> Self {
        if conditional {
            Self::Lwt
        } else if counter {
            Self::Counter
        } else if order_sensitive {
            Self::OrderSensitive
        } else {
            Self::Plain
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::OrderSensitive => "order-sensitive",
            Self::Counter => "counter",
            Self::Lwt => "lwt",
        }
    }

    const ALL: [Self; 4] = [Self::Plain, Self::OrderSensitive, Self::Counter, Self::Lwt];
}

/// What is known of a missed write on the cluster that missed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The cluster refused it: nothing was written.
    NotApplied,
    /// The cluster may have written it, on some replicas or all (a timeout, a connection
    /// lost while waiting, a WRITE_TIMEOUT or WRITE_FAILURE answer).
    Unknown,
}

impl Outcome {
    /// What a cause says about the write. Error answers mean "not applied" except those the
    /// protocol defines as possibly applied: WRITE_TIMEOUT and WRITE_FAILURE (some replicas
    /// may hold it), CAS_WRITE_UNKNOWN, and SERVER_ERROR (the coordinator failed at an unknown
    /// point). Timeouts and lost connections are unknown; a write never sent is not applied.
    pub fn of(cause: &Cause) -> Self {
        match cause {
            Cause::Error { code, .. } => match *code {
                ErrorCode::WRITE_TIMEOUT
                | ErrorCode::WRITE_FAILURE
                | ErrorCode::CAS_WRITE_UNKNOWN
                | ErrorCode::SERVER_ERROR => Self::Unknown,
                _ => Self::NotApplied,
            },
            Cause::Timeout | Cause::Closed => Self::Unknown,
            Cause::NotConnected => Self::NotApplied,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::NotApplied => "not-applied",
            Self::Unknown => "unknown",
        }
    }
}

/// Why the cluster missed the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// It answered with an error.
    Error { code: ErrorCode, message: String },
    /// It did not answer in time.
    Timeout,
    /// Its connection closed while the write was in flight.
    Closed,
    /// It was not connected: the write was never sent.
    NotConnected,
}

/// What replay does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayAction {
    /// Apply it (with its timestamp, so anything newer wins).
    Apply,
    /// Apply it, and list its row for an operator to check the order of the list: Cassandra
    /// places a list element by the time it applies the write, not by the write's timestamp,
    /// so an element replayed now lands after (an append) or before (a prepend) the elements
    /// written since, and an index is resolved against the list as it is now.
    ApplyAndCheckOrder,
    /// Do not apply it; list it in the report for an operator.
    Report,
}

impl ReplayAction {
    /// Whether replay sends the write.
    pub const fn applies(self) -> bool {
        matches!(self, Self::Apply | Self::ApplyAndCheckOrder)
    }
}

impl Record {
    /// Plain writes are always applied again; counter updates and order-sensitive list
    /// writes only when known not applied (an unknown one may be there already: applying it
    /// could count it twice), the latter listed for their order; LWTs never.
    pub fn replay_action(&self) -> ReplayAction {
        match (self.kind, self.outcome) {
            (WriteKind::Plain, _) | (WriteKind::Counter, Outcome::NotApplied) => {
                ReplayAction::Apply
            }
            (WriteKind::OrderSensitive, Outcome::NotApplied) => ReplayAction::ApplyAndCheckOrder,
            (WriteKind::OrderSensitive | WriteKind::Counter, Outcome::Unknown)
            | (WriteKind::Lwt, _) => ReplayAction::Report,
        }
    }

    /// The record's bytes, as [`Record::decode`] reads them.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(RECORD_FORMAT);
        out.put_i64(self.wall_micros);
        out.put_u8(self.cluster.index() as u8);
        out.put_u8(self.version.number());
        out.put_u8(self.kind as u8);
        out.put_u8(match self.outcome {
            Outcome::NotApplied => 0,
            Outcome::Unknown => 1,
        });
        wire::put_consistency(out, self.consistency);
        let flag = |set: bool, bit: u8| if set { bit } else { 0 };
        let flags = flag(self.timestamp.is_some(), FLAG_TIMESTAMP)
            | flag(self.serial_consistency.is_some(), FLAG_SERIAL)
            | flag(self.keyspace.is_some(), FLAG_KEYSPACE)
            | flag(self.now_in_seconds.is_some(), FLAG_NOW);
        out.put_u8(flags);
        if let Some(t) = self.timestamp {
            out.put_i64(t);
        }
        if let Some(c) = self.serial_consistency {
            wire::put_consistency(out, c);
        }
        if let Some(k) = &self.keyspace {
            wire::put_long_string(out, k);
        }
        if let Some(n) = self.now_in_seconds {
            out.put_i32(n);
        }
        match &self.cause {
            Cause::Error { code, message } => {
                out.put_u8(0);
                out.put_i32(code.0);
                wire::put_long_string(out, message);
            }
            Cause::Timeout => out.put_u8(1),
            Cause::Closed => out.put_u8(2),
            Cause::NotConnected => out.put_u8(3),
        }
        wire::put_count(out, self.tables.len());
        for t in &self.tables {
            match &t.keyspace {
                Some(k) => {
                    out.put_u8(1);
                    wire::put_long_string(out, k);
                }
                None => out.put_u8(0),
            }
            wire::put_long_string(out, &t.table);
        }
        match &self.write {
            Write::Single(s) => {
                out.put_u8(0);
                put_statement(out, s);
            }
            Write::Batch {
                batch_type,
                entries,
            } => {
                out.put_u8(1);
                out.put_u8(batch_type.0);
                wire::put_count(out, entries.len());
                for s in entries {
                    put_statement(out, s);
                }
            }
        }
    }

    /// [`Record::encode`] into a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.encode(&mut out);
        out
    }

    /// Decodes a whole record; any other format, a field out of its domain, a length past the
    /// end or a byte left over is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != RECORD_FORMAT {
            return Err(invalid(0, "journal record format", format.into()));
        }
        let wall_micros = r.i64()?;
        let at = r.position();
        let cluster = match r.u8()? {
            0 => Upstream::Source,
            1 => Upstream::Target,
            n => return Err(invalid(at, "journal record cluster", n.into())),
        };
        let at = r.position();
        let number = r.u8()?;
        let version = ProtocolVersion::from_number(number).ok_or_else(|| {
            Reader::error_at(at, DecodeErrorKind::UnsupportedVersion { version: number })
        })?;
        let at = r.position();
        let kind = r.u8()?;
        let kind = *WriteKind::ALL
            .get(usize::from(kind))
            .ok_or_else(|| invalid(at, "journal record kind", kind.into()))?;
        let at = r.position();
        let outcome = match r.u8()? {
            0 => Outcome::NotApplied,
            1 => Outcome::Unknown,
            n => return Err(invalid(at, "journal record outcome", n.into())),
        };
        let consistency = r.consistency()?;
        let at = r.position();
        let flags = r.u8()?;
        if flags & !(FLAG_TIMESTAMP | FLAG_SERIAL | FLAG_KEYSPACE | FLAG_NOW) != 0 {
            return Err(invalid(at, "journal record flags", flags.into()));
        }
        let timestamp = (flags & FLAG_TIMESTAMP != 0).then(|| r.i64()).transpose()?;
        let serial_consistency = (flags & FLAG_SERIAL != 0)
            .then(|| r.consistency())
            .transpose()?;
        let keyspace = (flags & FLAG_KEYSPACE != 0)
            .then(|| r.long_string().map(str::to_owned))
            .transpose()?;
        let now_in_seconds = (flags & FLAG_NOW != 0).then(|| r.i32()).transpose()?;
        let at = r.position();
        let cause = match r.u8()? {
            0 => Cause::Error {
                code: ErrorCode(r.i32()?),
                message: r.long_string()?.to_owned(),
            },
            1 => Cause::Timeout,
            2 => Cause::Closed,
            3 => Cause::NotConnected,
            n => return Err(invalid(at, "journal record cause", n.into())),
        };
        let n = r.count()?;
        // Every entry takes bytes of its own, so pushing one at a time bounds the memory by
        // the input's length whatever the count says.
        let mut tables = Vec::new();
        for _ in 0..n {
            let at = r.position();
            let keyspace = match r.u8()? {
                0 => None,
                1 => Some(r.long_string()?.to_owned()),
                n => return Err(invalid(at, "journal record table keyspace", n.into())),
            };
            let table = r.long_string()?.to_owned();
            tables.push(TableRef { keyspace, table });
        }
        let at = r.position();
        let write = match r.u8()? {
            0 => Write::Single(statement(&mut r)?),
            1 => {
                let batch_type = BatchType(r.u8()?);
                let n = r.count()?;
                let mut entries = Vec::new();
                for _ in 0..n {
                    entries.push(statement(&mut r)?);
                }
                Write::Batch {
                    batch_type,
                    entries,
                }
            }
            n => return Err(invalid(at, "journal record write", n.into())),
        };
        r.finish()?;
        Ok(Self {
            wall_micros,
            cluster,
            version,
            keyspace,
            write,
            consistency,
            serial_consistency,
            timestamp,
            now_in_seconds,
            kind,
            outcome,
            cause,
            tables,
        })
    }
}

const FLAG_TIMESTAMP: u8 = 0x01;
const FLAG_SERIAL: u8 = 0x02;
const FLAG_KEYSPACE: u8 = 0x04;
const FLAG_NOW: u8 = 0x08;

fn invalid(offset: usize, field: &'static str, value: i64) -> DecodeError {
    Reader::error_at(offset, DecodeErrorKind::InvalidValue { field, value })
}

fn put_statement(out: &mut impl BufMut, s: &Statement) {
    out.put_u8(u8::from(s.prepared));
    wire::put_long_string(out, &s.text);
    match &s.values {
        Values::None => out.put_u8(0),
        Values::Positional(values) => {
            out.put_u8(1);
            wire::put_count(out, values.len());
            for v in values {
                wire::put_value(out, v.as_value());
            }
        }
        Values::Named(values) => {
            out.put_u8(2);
            wire::put_count(out, values.len());
            for (name, v) in values {
                wire::put_long_string(out, name);
                wire::put_value(out, v.as_value());
            }
        }
    }
}

fn statement(r: &mut Reader<'_>) -> Result<Statement, DecodeError> {
    let at = r.position();
    let prepared = match r.u8()? {
        0 => false,
        1 => true,
        n => return Err(invalid(at, "journal statement prepared", n.into())),
    };
    let text = r.long_string()?.to_owned();
    let at = r.position();
    let values = match r.u8()? {
        0 => Values::None,
        1 => {
            let n = r.count()?;
            let mut values = Vec::new();
            for _ in 0..n {
                values.push(r.value()?.into());
            }
            Values::Positional(values)
        }
        2 => {
            let n = r.count()?;
            let mut values = Vec::new();
            for _ in 0..n {
                let name = r.long_string()?.to_owned();
                values.push((name, r.value()?.into()));
            }
            Values::Named(values)
        }
        n => return Err(invalid(at, "journal statement values", n.into())),
    };
    Ok(Statement {
        prepared,
        text,
        values,
    })
}
