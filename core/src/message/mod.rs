//! Message bodies, decoded only as far as a feature needs and borrowing from the body.
//!
//! Every message type implements [`Body`]: `decode` takes the body as the frame layer hands it
//! over (after any tracing id, warnings or custom payload were split off) and the connection's
//! [`ProtocolVersion`]; `encode` writes it back. Decoded values borrow strings, ids and values
//! from the body; nothing is copied. Bound values ([`Values`]), batch statements
//! ([`Statements`]) and result rows ([`Rows`]) are validated when decoded but only walked when
//! iterated.
//!
//! Errors are [`DecodeError`]s whose offsets count from the start of the body.
//!
//! Strictness: a request must fill its body exactly (a stray byte means the proxy misread
//! it, and it would then forward or rewrite the wrong thing). Responses may carry extra bytes
//! at the end, which the spec tells clients to ignore, with one exception: the content of a
//! Rows result is checked to the byte, because the proxy compares and rewrites rows.
//!
//! Beyond decoding and encoding, a few functions rewrite request bodies for the proxy:
//! [`ensure_default_timestamp`] (QUERY, EXECUTE, BATCH), [`Execute::with_ids`] and
//! [`Batch::map_prepared_ids`] (prepared-id mapping between the two clusters),
//! [`Prepared::with_ids`].
//!
//! [`DecodeError`]: crate::error::DecodeError

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::frame::{Opcode, ProtocolVersion};

pub mod auth;
pub mod batch;
pub mod error;
pub mod event;
pub mod execute;
pub mod generated;
pub mod metadata;
pub mod params;
pub mod prepare;
pub mod query;
pub mod register;
pub mod result;
pub mod result_kind;
pub mod rows;
pub mod startup;
pub mod timestamp;
pub mod types;

pub use auth::{AuthChallenge, AuthResponse, AuthSuccess, Authenticate, Secret, sasl_plain_token};
pub use batch::{Batch, BatchStatement, BatchType, Statement, Statements};
pub use error::{ErrorCode, ErrorDetails, ErrorMessage, Failures};
pub use event::{Event, SchemaChange, SchemaTarget};
pub use execute::{Execute, Spliced};
pub use metadata::{ColumnSpec, Columns, PreparedMetadata, RowsFlags, RowsMetadata, TableSpec};
pub use params::{QueryFlags, QueryParams, Values, ValuesIter};
pub use prepare::{Prepare, PrepareFlags};
pub use query::Query;
pub use register::Register;
pub use result::{Prepared, ResultMessage};
pub use result_kind::ResultKind;
pub use rows::{Cells, Row, RowIter, Rows, RowsWriter, RowsWriterError};
pub use startup::{Options, Ready, Startup, Supported};
pub use timestamp::{DefaultTimestamp, ensure_default_timestamp, now_in_seconds};
pub use types::{ColumnType, MAX_TYPE_DEPTH, UdtType};

/// A message body: decoded from and encoded to the bytes after the envelope header.
pub trait Body<'a>: Sized {
    /// The opcode of the envelope that carries this body.
    const OPCODE: Opcode;

    /// Decodes a body received on a connection that speaks `version`.
    fn decode(body: &'a [u8], version: ProtocolVersion) -> Result<Self, DecodeError>;

    /// Appends the body, laid out for `version`, to `out`.
    fn encode(&self, version: ProtocolVersion, out: &mut BytesMut);

    /// The encoded body as one buffer.
    fn to_bytes(&self, version: ProtocolVersion) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(version, &mut out);
        out.freeze()
    }
}
