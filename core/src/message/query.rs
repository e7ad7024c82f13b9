//! QUERY: a CQL statement as text, with its parameters.
//!
//! The proxy reads the text to classify the statement (read or write, topology tables) and the
//! parameters to route it; a write without a default timestamp gets one (see
//! [`super::ensure_default_timestamp`]).

use std::fmt;

use bytes::BytesMut;

use crate::error::DecodeError;
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::Body;
use crate::message::params::{Layout, QueryParams};
use crate::wire::{self, Reader};

/// A QUERY request: `<query: [long string]><query_parameters>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// The statement text.
    pub text: &'a str,
    pub params: QueryParams<'a>,
}

impl fmt::Debug for Query<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("text", &StatementText(self.text))
            .field("params", &self.params)
            .finish()
    }
}

/// Statement text as `Debug` shows it: verbatim, unless it may carry a password (`CREATE
/// ROLE ... WITH PASSWORD = '...'` and the like), which must not reach the logs.
pub(crate) struct StatementText<'a>(pub &'a str);

impl fmt::Debug for StatementText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suspicious = self
            .0
            .as_bytes()
            .windows(8)
            .any(|w| w.eq_ignore_ascii_case(b"password"));
        if suspicious {
            write!(
                f,
                "<{} bytes of statement text mentioning a password, redacted>",
                self.0.len()
            )
        } else {
            fmt::Debug::fmt(self.0, f)
        }
    }
}

impl<'a> Query<'a> {
    /// Only the statement text, for classifying a request without walking its values.
    pub fn peek_text(body: &'a [u8]) -> Result<&'a str, DecodeError> {
        Reader::new(body).long_string()
    }

    pub(crate) fn decode_with_layout(
        body: &'a [u8],
        version: ProtocolVersion,
    ) -> Result<(Self, Layout), DecodeError> {
        let mut r = Reader::new(body);
        let text = r.long_string()?;
        let (params, layout) = QueryParams::decode(&mut r, version)?;
        r.finish()?;
        Ok((Self { text, params }, layout))
    }
}

impl<'a> Body<'a> for Query<'a> {
    const OPCODE: Opcode = Opcode::QUERY;

    fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError> {
        Self::decode_with_layout(body, version).map(|(q, _)| q)
    }

    fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        wire::put_long_string(out, self.text);
        self.params.encode(version, out);
    }
}
