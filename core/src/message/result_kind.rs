//! The kind of a RESULT (void, rows, keyspace, prepared, schema change), read before the rest
//! of its body: what both the RESULT decoder and the rows writer need.

use std::fmt;

use crate::error::DecodeError;
use crate::wire::Reader;

/// The `<kind>` of a RESULT.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResultKind(pub i32);

impl ResultKind {
    pub const VOID: Self = Self(0x0001);
    pub const ROWS: Self = Self(0x0002);
    pub const SET_KEYSPACE: Self = Self(0x0003);
    pub const PREPARED: Self = Self(0x0004);
    pub const SCHEMA_CHANGE: Self = Self(0x0005);

    /// The kind of a RESULT body, without decoding the rest.
    pub fn peek(body: &[u8]) -> Result<Self, DecodeError> {
        Reader::new(body).i32().map(Self)
    }
}

impl fmt::Debug for ResultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::VOID => f.write_str("Void"),
            Self::ROWS => f.write_str("Rows"),
            Self::SET_KEYSPACE => f.write_str("SetKeyspace"),
            Self::PREPARED => f.write_str("Prepared"),
            Self::SCHEMA_CHANGE => f.write_str("SchemaChange"),
            Self(other) => write!(f, "ResultKind(0x{other:04x})"),
        }
    }
}
