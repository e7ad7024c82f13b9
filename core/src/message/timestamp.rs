//! Giving a write one default timestamp, so that both clusters store the same write time.
//!
//! The proxy sends the same request bytes to both clusters. If the client did not set a
//! default timestamp, each coordinator would pick its own clock's time and the clusters would
//! disagree on which of two close writes wins; so the proxy sets flag 0x20 and inserts the
//! timestamp it chose, once, before fanning the request out.

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
    /// The request had no default timestamp: this is the new body, with flag 0x20 and the
    /// timestamp.
    Inserted(Bytes),
    /// The request already had one (this one): its body is to be sent unchanged.
    AlreadySet(i64),
}

/// Makes sure a QUERY, EXECUTE or BATCH body carries a default timestamp, inserting
/// `micros` (microseconds since the epoch; the protocol forbids negative values) if it has
/// none. The body is fully validated first: a malformed request is never rewritten.
///
/// The timestamp goes where the protocol puts it: after the serial consistency and before the
/// v5 keyspace and now_in_seconds.
pub fn ensure_default_timestamp(
    opcode: Opcode,
    body: &[u8],
    version: ProtocolVersion,
    micros: i64,
) -> Result<DefaultTimestamp, DecodeError> {
    let (timestamp, layout) = match opcode {
        Opcode::QUERY => {
            Query::decode_with_layout(body, version).map(|(q, l)| (q.params.timestamp, l))?
        }
        Opcode::EXECUTE => {
            Execute::decode_with_layout(body, version).map(|(e, l)| (e.params.timestamp, l))?
        }
        Opcode::BATCH => Batch::decode_with_layout(body, version).map(|(b, l)| (b.timestamp, l))?,
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
    stamp_decoded(body, version, timestamp, layout, micros)
}

/// [`ensure_default_timestamp`] for a body the caller already decoded: `timestamp` and
/// `layout` are what decoding it gave.
pub(crate) fn stamp_decoded(
    body: &[u8],
    version: ProtocolVersion,
    timestamp: Option<i64>,
    layout: Layout,
    micros: i64,
) -> Result<DefaultTimestamp, DecodeError> {
    if let Some(existing) = timestamp {
        return Ok(DefaultTimestamp::AlreadySet(existing));
    }
    insert(body, version, layout, micros).map(DefaultTimestamp::Inserted)
}

fn insert(
    body: &[u8],
    version: ProtocolVersion,
    layout: Layout,
    micros: i64,
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
    let mut out = BytesMut::with_capacity(body.len() + 8);
    out.put_slice(head);
    flags
        .union(QueryFlags::DEFAULT_TIMESTAMP)
        .write(version, &mut out);
    out.put_slice(middle);
    out.put_i64(micros);
    out.put_slice(tail);
    Ok(out.freeze())
}
