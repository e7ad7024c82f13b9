//! Giving a write one default timestamp and one "now", so that both clusters store the same
//! write time and the same expiry.
//!
//! The proxy sends the same request bytes to both clusters. If the client did not set a
//! default timestamp, each coordinator would pick its own clock's time and the clusters would
//! disagree on which of two close writes wins; so the proxy sets flag 0x20 and inserts the
//! timestamp it chose, once, before fanning the request out. In v5 it also sets
//! `now_in_seconds` (flag 0x100), the time TTLs count from: without it, a write the secondary
//! applies late (held for a frozen node, or replayed from the journal) would expire later there.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::batch::Batch;
use crate::message::execute::Execute;
use crate::message::params::{Layout, QueryFlags};
use crate::message::query::Query;
use crate::wire::Reader;

/// What [`ensure_default_timestamp`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultTimestamp {
    /// The request lacked a default timestamp, or (v5) a `now_in_seconds`: this is the new
    /// body, with what was missing inserted and flagged.
    Inserted(Bytes),
    /// The request already had both (this timestamp; v3 and v4 have no `now_in_seconds`): its
    /// body is to be sent unchanged.
    AlreadySet(i64),
}

/// The `now_in_seconds` that goes with a write timestamp: the same instant, in whole seconds.
pub fn now_in_seconds(micros: i64) -> i32 {
    i32::try_from(micros.div_euclid(1_000_000)).unwrap_or(i32::MAX)
}

/// Makes sure a QUERY, EXECUTE or BATCH body carries a default timestamp, inserting
/// `micros` (microseconds since the epoch; the protocol forbids negative values) if it has
/// none; in v5 it also inserts `now_in_seconds` from the same instant if the body has none.
/// A client's own timestamp or `now_in_seconds` is kept. The body is fully validated first: a
/// malformed request is never rewritten.
///
/// The timestamp goes where the protocol puts it: after the serial consistency and before the
/// v5 keyspace and now_in_seconds; `now_in_seconds` is the last field of all three bodies.
pub fn ensure_default_timestamp(
    opcode: Opcode,
    body: &[u8],
    version: ProtocolVersion,
    micros: i64,
) -> Result<DefaultTimestamp, DecodeError> {
    let (timestamp, now, layout) = match opcode {
        Opcode::QUERY => Query::decode_with_layout(body, version)
            .map(|(q, l)| (q.params.timestamp, q.params.now_in_seconds, l))?,
        Opcode::EXECUTE => Execute::decode_with_layout(body, version)
            .map(|(e, l)| (e.params.timestamp, e.params.now_in_seconds, l))?,
        Opcode::BATCH => Batch::decode_with_layout(body, version)
            .map(|(b, l)| (b.timestamp, b.now_in_seconds, l))?,
        other => {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::InvalidValue {
                    field: "opcode for a default timestamp",
                    value: i64::from(other.0),
                },
            ));
        }
    };
    stamp_decoded(body, version, timestamp, now, layout, micros)
}

/// [`ensure_default_timestamp`] for a body the caller already decoded: `timestamp`, `now` (its
/// `now_in_seconds`) and `layout` are what decoding it gave.
pub(crate) fn stamp_decoded(
    body: &[u8],
    version: ProtocolVersion,
    timestamp: Option<i64>,
    now: Option<i32>,
    layout: Layout,
    micros: i64,
) -> Result<DefaultTimestamp, DecodeError> {
    let missing_now = version >= ProtocolVersion::V5 && now.is_none();
    match timestamp {
        Some(existing) if !missing_now => Ok(DefaultTimestamp::AlreadySet(existing)),
        _ => insert(
            body,
            version,
            layout,
            timestamp.is_none().then_some(micros),
            missing_now.then(|| now_in_seconds(micros)),
        )
        .map(DefaultTimestamp::Inserted),
    }
}

/// The body with `timestamp` inserted at its place and `now` appended (both flagged).
fn insert(
    body: &[u8],
    version: ProtocolVersion,
    layout: Layout,
    timestamp: Option<i64>,
    now: Option<i32>,
) -> Result<Bytes, DecodeError> {
    let Layout {
        flags_at,
        timestamp_at,
    } = layout;
    let flags_end = flags_at + QueryFlags::width(version);
    let flags = QueryFlags::read(&mut Reader::starting_at(body, flags_at), version)?;
    let (Some(head), Some(middle), Some(tail)) = (
        body.get(..flags_at),
        body.get(flags_end..timestamp_at),
        body.get(timestamp_at..),
    ) else {
        // The layout comes from decoding this very body, so this cannot happen.
        return Err(DecodeError::new(
            flags_at,
            DecodeErrorKind::Truncated {
                needed: timestamp_at,
                available: body.len(),
            },
        ));
    };
    let mut flags = flags;
    if timestamp.is_some() {
        flags = flags.union(QueryFlags::DEFAULT_TIMESTAMP);
    }
    if now.is_some() {
        flags = flags.union(QueryFlags::NOW_IN_SECONDS);
    }
    let mut out = BytesMut::with_capacity(body.len() + 12);
    out.put_slice(head);
    flags.write(version, &mut out);
    out.put_slice(middle);
    if let Some(micros) = timestamp {
        out.put_i64(micros);
    }
    // The decoders refuse trailing bytes, so the body ends where the parameters end.
    out.put_slice(tail);
    if let Some(now) = now {
        out.put_i32(now);
    }
    Ok(out.freeze())
}
