//! Errors found while decoding bytes from the wire.
//!
//! Wire problems are values, never panics: every decoder returns a [`DecodeError`] that says
//! what was wrong and at which byte, so that the session can answer with a protocol ERROR,
//! report it and close the connection.

use std::fmt;

/// A malformed or unacceptable piece of wire data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset of the problem, counted from the start of the unit being decoded: the
    /// frame or segment for framing errors, the message body for message errors.
    pub offset: usize,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

/// The kinds of [`DecodeError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The data ended `needed` bytes into a field that has only `available` bytes left.
    Truncated { needed: usize, available: usize },
    /// A length field holds a negative value other than the protocol's null markers.
    NegativeLength(i64),
    /// A `[string]` or `[long string]` is not UTF-8.
    InvalidUtf8,
    /// The protocol version byte names a version this codec does not speak.
    UnsupportedVersion { version: u8 },
    /// A frame was sent with the response bit where a request was expected, or the reverse.
    UnexpectedDirection,
    /// The opcode is not one of the protocol's.
    UnknownOpcode(u8),
    /// A frame or segment is larger than the configured or protocol limit.
    TooLarge { length: u64, max: u64 },
    /// A v5 segment header's CRC24 does not match.
    HeaderChecksum { expected: u32, actual: u32 },
    /// A v5 segment payload's CRC32 does not match.
    PayloadChecksum { expected: u32, actual: u32 },
    /// A compressed body or segment could not be decompressed.
    Decompression(&'static str),
    /// The frame says it is compressed but no compression was negotiated.
    CompressionNotNegotiated,
    /// A field holds a value outside its domain (e.g. an unknown result kind).
    InvalidValue { field: &'static str, value: i64 },
    /// A name outside the protocol's set (e.g. an event type in REGISTER).
    UnknownName { field: &'static str, name: String },
    /// A type description nests deeper than the codec accepts.
    TooDeep { max: usize },
    /// Bytes are left after the end of a message that must fill its body.
    TrailingBytes { count: usize },
}

impl DecodeError {
    /// Shorthand for building an error.
    pub const fn new(offset: usize, kind: DecodeErrorKind) -> Self {
        Self { offset, kind }
    }

    /// The same error with its offset moved by `base` bytes, for errors found inside a unit
    /// that itself starts `base` bytes into a larger one.
    pub const fn shifted(mut self, base: usize) -> Self {
        self.offset += base;
        self
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeErrorKind::*;
        write!(f, "at byte {}: ", self.offset)?;
        match &self.kind {
            Truncated { needed, available } => {
                write!(f, "truncated: needed {needed} bytes, only {available} left")
            }
            NegativeLength(n) => write!(f, "negative length {n}"),
            InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            UnsupportedVersion { version } => {
                write!(f, "unsupported protocol version 0x{version:02x}")
            }
            UnexpectedDirection => write!(f, "frame direction bit is wrong for this side"),
            UnknownOpcode(op) => write!(f, "unknown opcode 0x{op:02x}"),
            TooLarge { length, max } => write!(f, "length {length} exceeds the maximum {max}"),
            HeaderChecksum { expected, actual } => write!(
                f,
                "segment header CRC24 mismatch: expected 0x{expected:06x}, got 0x{actual:06x}"
            ),
            PayloadChecksum { expected, actual } => write!(
                f,
                "segment payload CRC32 mismatch: expected 0x{expected:08x}, got 0x{actual:08x}"
            ),
            Decompression(why) => write!(f, "decompression failed: {why}"),
            CompressionNotNegotiated => {
                write!(f, "compressed frame but no compression was negotiated")
            }
            InvalidValue { field, value } => write!(f, "invalid {field}: {value}"),
            UnknownName { field, name } => write!(f, "unknown {field} {name:?}"),
            TooDeep { max } => write!(f, "type nests deeper than {max} levels"),
            TrailingBytes { count } => write!(f, "{count} unexpected bytes after the message"),
        }
    }
}

impl std::error::Error for DecodeError {}
