//! PREPARE: a statement to prepare, sent by the proxy to both clusters.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::message::query::StatementText;
use crate::wire::{self, Reader};

bitflags::bitflags! {
    /// The v5 `<flags>` of a PREPARE.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PrepareFlags: u32 {
        const KEYSPACE = 0x01;
    }
}

/// A PREPARE request: `<query: [long string]>`, and from v5 `<flags: [int]>[<keyspace>]`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Prepare<'a> {
    pub query: &'a str,
    /// v5 only: the keyspace to prepare in. Not encoded for earlier versions, which have no
    /// field for it.
    pub keyspace: Option<&'a str>,
}

impl fmt::Debug for Prepare<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepare")
            .field("query", &StatementText(self.query))
            .field("keyspace", &self.keyspace)
            .finish()
    }
}

impl<'a> Body<'a> for Prepare<'a> {
    const OPCODE: Opcode = Opcode::PREPARE;

    fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let query = r.long_string()?;
        let mut keyspace = None;
        if version.wide_query_flags() {
            let at = r.position();
            let flags = PrepareFlags::from_bits_retain(r.u32()?);
            if flags.bits() & !PrepareFlags::all().bits() != 0 {
                return Err(Reader::error_at(
                    at,
                    DecodeErrorKind::InvalidValue {
                        field: "prepare flags",
                        value: i64::from(flags.bits()),
                    },
                ));
            }
            if flags.contains(PrepareFlags::KEYSPACE) {
                keyspace = Some(r.string()?);
            }
        }
        r.finish()?;
        Ok(Self { query, keyspace })
    }

    fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_long_string(out, self.query);
        if version.wide_query_flags() {
            match self.keyspace {
                Some(ks) => {
                    out.put_u32(PrepareFlags::KEYSPACE.bits());
                    wire::put_string(out, ks);
                }
                None => out.put_u32(0),
            }
        }
    }
}
