//! EXECUTE: runs a prepared statement by id.
//!
//! Prepared ids are usually equal on two Cassandra clusters but need not be: the proxy keeps a
//! map from the source's ids to the target's and sends the target a copy of the request with
//! its own id ([`Execute::with_ids`]).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::message::params::{Layout, QueryParams};
use crate::wire::{self, Reader};

/// An EXECUTE request: `<id: [short bytes]>`, from v5 `<result_metadata_id: [short bytes]>`,
/// then the query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    /// The prepared statement id.
    pub id: &'a [u8],
    /// v5 only: the id of the result metadata the client holds. Always present when decoded
    /// from v5; encoded as empty if `None` in v5, left out before v5.
    pub result_metadata_id: Option<&'a [u8]>,
    pub params: QueryParams<'a>,
}

/// A body rebuilt from a new small head and the untouched tail of the original body, so that
/// the (possibly large) tail is shared, not copied. Write `head` then `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spliced {
    pub head: Bytes,
    pub tail: Bytes,
}

impl Spliced {
    /// A body kept whole: no new head.
    pub const fn whole(body: Bytes) -> Self {
        Self {
            head: Bytes::new(),
            tail: body,
        }
    }

    /// Length of the whole body.
    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the whole body to `out`.
    pub fn write_to(&self, out: &mut impl BufMut) {
        out.put_slice(&self.head);
        out.put_slice(&self.tail);
    }

    /// The body as one contiguous buffer (this copies the tail).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.len());
        self.write_to(&mut out);
        out.freeze()
    }
}

/// EXECUTE requests and PREPARED results carry a result metadata id from v5 on.
pub(crate) fn has_result_metadata_id(version: ProtocolVersion) -> bool {
    version >= ProtocolVersion::V5
}

impl<'a> Execute<'a> {
    /// The prepared id alone, for looking it up without walking the values.
    pub fn peek_id(body: &'a [u8]) -> Result<&'a [u8], DecodeError> {
        Reader::new(body).short_bytes()
    }

    /// The same request with another prepared id and, in v5, another result metadata id
    /// (`None` keeps the original one). Only the ids are re-encoded; the parameters are a
    /// slice of `body` and are not decoded.
    pub fn with_ids(
        body: &Bytes,
        version: ProtocolVersion,
        id: &[u8],
        result_metadata_id: Option<&[u8]>,
    ) -> Result<Spliced, DecodeError> {
        let mut r = Reader::new(body);
        r.short_bytes()?;
        let old_metadata_id = if has_result_metadata_id(version) {
            Some(r.short_bytes()?)
        } else {
            None
        };
        let params_at = r.position();
        let mut head = BytesMut::with_capacity(4 + id.len() + 16);
        wire::put_short_bytes(&mut head, id);
        if let Some(old) = old_metadata_id {
            wire::put_short_bytes(&mut head, result_metadata_id.unwrap_or(old));
        }
        Ok(Spliced {
            head: head.freeze(),
            tail: body.slice(params_at..),
        })
    }

    pub(crate) fn decode_with_layout(
        body: &'a [u8],
        version: ProtocolVersion,
    ) -> Result<(Self, Layout), DecodeError> {
        let mut r = Reader::new(body);
        let id = r.short_bytes()?;
        let result_metadata_id = if has_result_metadata_id(version) {
            Some(r.short_bytes()?)
        } else {
            None
        };
        let (params, layout) = QueryParams::decode(&mut r, version)?;
        r.finish()?;
        Ok((
            Self {
                id,
                result_metadata_id,
                params,
            },
            layout,
        ))
    }
}

impl<'a> Body<'a> for Execute<'a> {
    const OPCODE: Opcode = Opcode::EXECUTE;

    fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        Self::decode_with_layout(body, version).map(|(e, _)| e)
    }

    fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_short_bytes(out, self.id);
        if has_result_metadata_id(version) {
            wire::put_short_bytes(out, self.result_metadata_id.unwrap_or(&[]));
        }
        self.params.encode(version, out);
    }
}
