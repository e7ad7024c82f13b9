//! The 9-byte envelope header shared by protocol v3, v4 and v5.

use std::fmt;

use crate::error::{DecodeError, DecodeErrorKind};

/// Length of an envelope header in v3 and later.
pub const HEADER_LEN: usize = 9;

/// The protocol versions the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    V3,
    V4,
    V5,
}

impl ProtocolVersion {
    /// All supported versions, lowest first.
    pub const ALL: [Self; 3] = [Self::V3, Self::V4, Self::V5];

    /// `v3`, `v4` or `v5`, for metrics labels.
    pub const fn label(self) -> &'static str {
        match self {
            Self::V3 => "v3",
            Self::V4 => "v4",
            Self::V5 => "v5",
        }
    }

    /// The version number as on the wire (without the response bit).
    pub const fn number(self) -> u8 {
        match self {
            Self::V3 => 3,
            Self::V4 => 4,
            Self::V5 => 5,
        }
    }

    /// The version for a wire number, if supported. Beta and DSE versions (0x40 and up) are not.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            3 => Some(Self::V3),
            4 => Some(Self::V4),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    /// Whether bodies after the handshake travel in v5 segments.
    pub const fn uses_segments(self) -> bool {
        matches!(self, Self::V5)
    }

    /// Query flags are a 4-byte `[int]` from v5 on, one byte before.
    pub const fn wide_query_flags(self) -> bool {
        matches!(self, Self::V5)
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.number())
    }
}

/// Which way a frame travels: the top bit of the version byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Request,
    Response,
}

bitflags::bitflags! {
    /// Header flags. Bits the protocol does not define are kept as they came, so that what
    /// the proxy forwards is what it received.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Flags: u8 {
        const COMPRESSION = 0x01;
        const TRACING = 0x02;
        const CUSTOM_PAYLOAD = 0x04;
        const WARNING = 0x08;
        const USE_BETA = 0x10;
    }
}

/// A stream id: pairs a response with its request. Servers push events on -1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub i16);

impl StreamId {
    /// The stream of server-pushed EVENT frames.
    pub const EVENT: Self = Self(-1);
}

/// A message type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opcode(pub u8);

impl Opcode {
    pub const ERROR: Self = Self(0x00);
    pub const STARTUP: Self = Self(0x01);
    pub const READY: Self = Self(0x02);
    pub const AUTHENTICATE: Self = Self(0x03);
    pub const OPTIONS: Self = Self(0x05);
    pub const SUPPORTED: Self = Self(0x06);
    pub const QUERY: Self = Self(0x07);
    pub const RESULT: Self = Self(0x08);
    pub const PREPARE: Self = Self(0x09);
    pub const EXECUTE: Self = Self(0x0A);
    pub const REGISTER: Self = Self(0x0B);
    pub const EVENT: Self = Self(0x0C);
    pub const BATCH: Self = Self(0x0D);
    pub const AUTH_CHALLENGE: Self = Self(0x0E);
    pub const AUTH_RESPONSE: Self = Self(0x0F);
    pub const AUTH_SUCCESS: Self = Self(0x10);

    /// The protocol's name of the opcode, or `None` for an unknown one.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "ERROR",
            0x01 => "STARTUP",
            0x02 => "READY",
            0x03 => "AUTHENTICATE",
            0x05 => "OPTIONS",
            0x06 => "SUPPORTED",
            0x07 => "QUERY",
            0x08 => "RESULT",
            0x09 => "PREPARE",
            0x0A => "EXECUTE",
            0x0B => "REGISTER",
            0x0C => "EVENT",
            0x0D => "BATCH",
            0x0E => "AUTH_CHALLENGE",
            0x0F => "AUTH_RESPONSE",
            0x10 => "AUTH_SUCCESS",
            _ => return None,
        })
    }

    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Opcode(0x{:02x})", self.0),
        }
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A decoded envelope header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub version: ProtocolVersion,
    pub direction: Direction,
    pub flags: Flags,
    pub stream: StreamId,
    pub opcode: Opcode,
    /// Length of the body that follows the header.
    pub length: u32,
}

impl Header {
    /// Decodes a header. Unsupported versions are an error that still carries what a refusal
    /// needs; see [`peek_refusal`].
    pub fn decode(raw: &[u8; HEADER_LEN]) -> Result<Self, DecodeError> {
        let version = ProtocolVersion::from_number(raw[0] & 0x7f).ok_or(DecodeError::new(
            0,
            DecodeErrorKind::UnsupportedVersion {
                version: raw[0] & 0x7f,
            },
        ))?;
        let direction = if raw[0] & 0x80 == 0 {
            Direction::Request
        } else {
            Direction::Response
        };
        let opcode = Opcode(raw[4]);
        if !opcode.is_known() {
            return Err(DecodeError::new(4, DecodeErrorKind::UnknownOpcode(raw[4])));
        }
        Ok(Self {
            version,
            direction,
            flags: Flags::from_bits_retain(raw[1]),
            stream: StreamId(i16::from_be_bytes([raw[2], raw[3]])),
            opcode,
            length: u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]),
        })
    }

    /// The header's wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        self.write(&mut out);
        out
    }

    /// Writes the header into the first 9 bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`HEADER_LEN`]: callers pass a buffer they sized.
    pub fn write(&self, out: &mut [u8]) {
        let dir = match self.direction {
            Direction::Request => 0,
            Direction::Response => 0x80,
        };
        out[0] = self.version.number() | dir;
        out[1] = self.flags.bits();
        out[2..4].copy_from_slice(&self.stream.0.to_be_bytes());
        out[4] = self.opcode.0;
        out[5..9].copy_from_slice(&self.length.to_be_bytes());
    }
}

/// Rewrites the stream id of an encoded envelope in place, leaving everything else untouched.
/// Does nothing if `frame` is shorter than a header.
pub fn rewrite_stream(frame: &mut [u8], stream: StreamId) {
    if frame.len() >= HEADER_LEN {
        frame[2..4].copy_from_slice(&stream.0.to_be_bytes());
    }
}

/// What the proxy needs to refuse a frame of an unsupported version: the raw version byte and
/// the stream id the client used, read the way that version lays its header out (v1 and v2 use
/// a one-byte stream id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub version: u8,
    pub stream: StreamId,
}

/// Reads the version and stream of whatever frame starts `buf`, if enough bytes are there.
pub fn peek_refusal(buf: &[u8]) -> Option<Refusal> {
    let version = *buf.first()? & 0x7f;
    let stream = if version <= 2 {
        StreamId(i16::from(*buf.get(2)? as i8))
    } else {
        StreamId(i16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]))
    };
    Some(Refusal { version, stream })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version() -> impl Strategy<Value = ProtocolVersion> {
        prop::sample::select(ProtocolVersion::ALL.to_vec())
    }

    fn opcode() -> impl Strategy<Value = Opcode> {
        (0u8..=0x10).prop_filter_map("known", |b| Some(Opcode(b)).filter(|o| o.is_known()))
    }

    proptest! {
        #[test]
        fn header_round_trip(
            version in version(),
            response in any::<bool>(),
            flags in any::<u8>(),
            stream in any::<i16>(),
            opcode in opcode(),
            length in any::<u32>(),
        ) {
            let header = Header {
                version,
                direction: if response { Direction::Response } else { Direction::Request },
                flags: Flags::from_bits_retain(flags),
                stream: StreamId(stream),
                opcode,
                length,
            };
            prop_assert_eq!(Header::decode(&header.encode()).unwrap(), header);
        }
    }

    #[test]
    fn unsupported_versions_are_errors() {
        for v in [1u8, 2, 6, 0x41, 0x42] {
            let raw = [v, 0, 0, 1, 5, 0, 0, 0, 0];
            assert_eq!(
                Header::decode(&raw).unwrap_err().kind,
                DecodeErrorKind::UnsupportedVersion { version: v }
            );
        }
    }

    #[test]
    fn refusal_reads_stream_per_version() {
        assert_eq!(
            peek_refusal(&[0x42, 0, 0x01, 0x02, 5]),
            Some(Refusal {
                version: 0x42,
                stream: StreamId(0x0102)
            })
        );
        assert_eq!(
            peek_refusal(&[0x02, 0, 0xfe, 5]),
            Some(Refusal {
                version: 2,
                stream: StreamId(-2)
            })
        );
        assert_eq!(peek_refusal(&[0x05, 0]), None);
    }

    #[test]
    fn rewrite_touches_only_the_stream() {
        let header = Header {
            version: ProtocolVersion::V4,
            direction: Direction::Request,
            flags: Flags::TRACING,
            stream: StreamId(7),
            opcode: Opcode::QUERY,
            length: 3,
        };
        let mut frame = header.encode().to_vec();
        frame.extend_from_slice(b"abc");
        rewrite_stream(&mut frame, StreamId(-300));
        let back = Header::decode(frame[..9].try_into().unwrap()).unwrap();
        assert_eq!(
            back,
            Header {
                stream: StreamId(-300),
                ..header
            }
        );
        assert_eq!(&frame[9..], b"abc");
    }
}
