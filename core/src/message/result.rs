//! RESULT: the answer to QUERY, PREPARE, EXECUTE and BATCH.
//!
//! The proxy compares results of the two clusters, rewrites topology rows, and records the
//! prepared ids that each cluster returns for the same statement.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::message::event::SchemaChange;
use crate::message::execute::{Spliced, has_result_metadata_id};
use crate::message::metadata::{PreparedMetadata, RowsMetadata};
use crate::message::result_kind::ResultKind;
use crate::message::rows::Rows;
use crate::wire::{self, Reader};

/// A RESULT response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultMessage<'a> {
    Void,
    Rows(Rows<'a>),
    /// The keyspace a `USE` switched to; the proxy mirrors it on both backend connections.
    SetKeyspace(&'a str),
    Prepared(Prepared<'a>),
    SchemaChange(SchemaChange<'a>),
}

impl ResultMessage<'_> {
    pub fn kind(&self) -> ResultKind {
        match self {
            Self::Void => ResultKind::VOID,
            Self::Rows(_) => ResultKind::ROWS,
            Self::SetKeyspace(_) => ResultKind::SET_KEYSPACE,
            Self::Prepared(_) => ResultKind::PREPARED,
            Self::SchemaChange(_) => ResultKind::SCHEMA_CHANGE,
        }
    }
}

impl<'a> Body<'a> for ResultMessage<'a> {
    const OPCODE: Opcode = Opcode::RESULT;

    fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        Ok(match ResultKind(r.i32()?) {
            ResultKind::VOID => Self::Void,
            ResultKind::ROWS => Self::Rows(Rows::read(&mut r, body, version)?),
            ResultKind::SET_KEYSPACE => Self::SetKeyspace(r.string()?),
            ResultKind::PREPARED => Self::Prepared(Prepared::read(&mut r, version)?),
            ResultKind::SCHEMA_CHANGE => Self::SchemaChange(SchemaChange::read(&mut r)?),
            ResultKind(other) => {
                return Err(Reader::error_at(
                    0,
                    DecodeErrorKind::InvalidValue {
                        field: "result kind",
                        value: i64::from(other),
                    },
                ));
            }
        })
    }

    fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        out.put_i32(self.kind().0);
        match self {
            Self::Void => {}
            Self::Rows(rows) => rows.write(out),
            Self::SetKeyspace(ks) => wire::put_string(out, ks),
            Self::Prepared(p) => p.write(version, out),
            Self::SchemaChange(change) => change.write(out),
        }
    }
}

/// A Prepared result: `<id>`, from v5 `<result_metadata_id>`, then the bind-marker metadata
/// and the result metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared<'a> {
    /// The prepared statement id, to be sent in EXECUTE.
    pub id: &'a [u8],
    /// v5 only: the id of the result metadata. Always present when decoded from v5; encoded as
    /// empty if `None` in v5, left out before v5.
    pub result_metadata_id: Option<&'a [u8]>,
    /// The bind markers.
    pub metadata: PreparedMetadata<'a>,
    /// The columns of the rows an EXECUTE will return.
    pub result_metadata: RowsMetadata<'a>,
}

impl<'a> Prepared<'a> {
    fn read(r: &mut Reader<'a>, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let id = r.short_bytes()?;
        let result_metadata_id = if has_result_metadata_id(version) {
            Some(r.short_bytes()?)
        } else {
            None
        };
        Ok(Self {
            id,
            result_metadata_id,
            metadata: PreparedMetadata::read(r, version)?,
            result_metadata: RowsMetadata::read(r, version)?,
        })
    }

    fn write(&self, version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_short_bytes(out, self.id);
        if has_result_metadata_id(version) {
            wire::put_short_bytes(out, self.result_metadata_id.unwrap_or(&[]));
        }
        self.metadata.write(version, out);
        self.result_metadata.write(out);
    }

    /// A Prepared RESULT body with another id and, in v5, another result metadata id (`None`
    /// keeps the original one), the metadata shared with `body`. Errors if `body` is not a
    /// Prepared result.
    pub fn with_ids(
        body: &Bytes,
        version: ProtocolVersion,
        id: &[u8],
        result_metadata_id: Option<&[u8]>,
    ) -> Result<Spliced, DecodeError> {
        let mut r = Reader::new(body);
        let kind = ResultKind(r.i32()?);
        if kind != ResultKind::PREPARED {
            return Err(Reader::error_at(
                0,
                DecodeErrorKind::InvalidValue {
                    field: "result kind (expected Prepared)",
                    value: i64::from(kind.0),
                },
            ));
        }
        r.short_bytes()?;
        let old_metadata_id = if has_result_metadata_id(version) {
            Some(r.short_bytes()?)
        } else {
            None
        };
        let mut head = BytesMut::with_capacity(8 + id.len() + 16);
        head.put_i32(ResultKind::PREPARED.0);
        wire::put_short_bytes(&mut head, id);
        if let Some(old) = old_metadata_id {
            wire::put_short_bytes(&mut head, result_metadata_id.unwrap_or(old));
        }
        Ok(Spliced {
            head: head.freeze(),
            tail: body.slice(r.position()..),
        })
    }
}
