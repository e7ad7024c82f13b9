//! Body compression of protocol v3 and v4, negotiated by the STARTUP option `COMPRESSION`.
//!
//! Only the body is compressed and the header's compression flag says so, frame by frame.
//! The proxy forwards compressed bodies untouched whenever both sides use the same algorithm;
//! these functions are for the bodies it must read or rewrite.
//!
//! Formats, as Cassandra writes them:
//! - lz4: the uncompressed length as a 4-byte **big-endian** integer, then one raw lz4 block.
//!   (`lz4_flex::compress_prepend_size` writes the length little-endian, so it is not used.)
//! - snappy: one raw snappy block (`snap::raw`), which carries its own length varint; no framing.
//!
//! v5 does not compress envelope bodies: it compresses whole segments (see
//! [`segment`](super::segment)).
//!
//! Decompression reads the announced length first and refuses anything over the caller's
//! maximum before allocating the output, so a 20-byte body cannot claim 4 GiB.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::envelope::Envelope;
use crate::frame::header::{Flags, HEADER_LEN, Header, Opcode, ProtocolVersion};

/// A v3/v4 body compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Lz4,
    Snappy,
}

impl Compression {
    pub const ALL: [Self; 2] = [Self::Lz4, Self::Snappy];

    /// The value of the STARTUP option `COMPRESSION`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Lz4 => "lz4",
            Self::Snappy => "snappy",
        }
    }

    /// The algorithm a STARTUP `COMPRESSION` value names. Cassandra compares case-insensitively,
    /// and so does this.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Compresses `input` into a new body. Returns `None` only if the input is too large for the
    /// format (snappy stops near 3.6 GiB), which no frame the proxy accepts can be.
    pub fn compress(self, input: &[u8]) -> Option<Bytes> {
        match self {
            Self::Lz4 => {
                let length = u32::try_from(input.len()).ok()?;
                let max = lz4_flex::block::get_maximum_output_size(input.len());
                let mut out = BytesMut::zeroed(4 + max);
                out[..4].copy_from_slice(&length.to_be_bytes());
                let n = lz4_flex::block::compress_into(input, &mut out[4..]).ok()?;
                out.truncate(4 + n);
                Some(out.freeze())
            }
            Self::Snappy => {
                let max = snap::raw::max_compress_len(input.len());
                if max == 0 && !input.is_empty() {
                    return None;
                }
                let mut out = BytesMut::zeroed(max.max(1));
                let n = snap::raw::Encoder::new().compress(input, &mut out).ok()?;
                out.truncate(n);
                Some(out.freeze())
            }
        }
    }

    /// Decompresses a body. `max_len` caps the decompressed size and is checked against the
    /// length the body announces before anything is allocated. Error offsets count from the
    /// start of `input`.
    pub fn decompress(self, input: &[u8], max_len: usize) -> Result<Bytes, DecodeError> {
        match self {
            Self::Lz4 => decompress_lz4(input, max_len),
            Self::Snappy => decompress_snappy(input, max_len),
        }
    }
}

fn decompress_lz4(input: &[u8], max_len: usize) -> Result<Bytes, DecodeError> {
    let Some((length, block)) = input.split_first_chunk::<4>() else {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::Truncated {
                needed: 4,
                available: input.len(),
            },
        ));
    };
    let length = u32::from_be_bytes(*length);
    let length = check_len(u64::from(length), max_len)?;
    let mut out = vec![0u8; length];
    match lz4_flex::block::decompress_into(block, &mut out) {
        Ok(n) if n == length => Ok(Bytes::from(out)),
        Ok(_) => Err(DecodeError::new(
            4,
            DecodeErrorKind::Decompression("lz4 block is shorter than its announced length"),
        )),
        Err(_) => Err(DecodeError::new(
            4,
            DecodeErrorKind::Decompression("invalid lz4 block"),
        )),
    }
}

fn decompress_snappy(input: &[u8], max_len: usize) -> Result<Bytes, DecodeError> {
    let length = snap::raw::decompress_len(input).map_err(|_| {
        DecodeError::new(0, DecodeErrorKind::Decompression("invalid snappy length"))
    })?;
    let length = check_len(length as u64, max_len)?;
    let mut out = vec![0u8; length];
    match snap::raw::Decoder::new().decompress(input, &mut out) {
        Ok(n) if n == length => Ok(Bytes::from(out)),
        _ => Err(DecodeError::new(
            0,
            DecodeErrorKind::Decompression("invalid snappy block"),
        )),
    }
}

/// The announced length as a `usize`, if it is within `max`.
fn check_len(length: u64, max: usize) -> Result<usize, DecodeError> {
    match usize::try_from(length) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(DecodeError::new(
            0,
            DecodeErrorKind::TooLarge {
                length,
                max: max as u64,
            },
        )),
    }
}

impl Envelope {
    /// Whether the body is compressed: [`Envelope::decompressed`] would make a new envelope.
    pub fn has_compressed_body(&self) -> bool {
        let header = self.header();
        header.flags.contains(Flags::COMPRESSION) && header.version != ProtocolVersion::V5
    }

    /// The envelope with a plain body: decompressed and the compression flag cleared if it was
    /// set, otherwise a cheap clone. `compression` is what the connection negotiated; a
    /// compressed frame on a connection without compression is an error, as is a body that
    /// decompresses to more than `max_body_len`. Error offsets count from the frame's start.
    ///
    /// v5 envelopes are returned as they are: v5 compresses segments, not bodies.
    pub fn decompressed(
        &self,
        compression: Option<Compression>,
        max_body_len: usize,
    ) -> Result<Envelope, DecodeError> {
        let header = *self.header();
        if !self.has_compressed_body() {
            return Ok(self.clone());
        }
        let Some(compression) = compression else {
            return Err(DecodeError::new(
                1,
                DecodeErrorKind::CompressionNotNegotiated,
            ));
        };
        let body = compression
            .decompress(self.body(), max_body_len)
            .map_err(|e| e.shifted(HEADER_LEN))?;
        Ok(Envelope::new(
            Header {
                flags: header.flags.difference(Flags::COMPRESSION),
                ..header
            },
            body,
        ))
    }

    /// The envelope with its body compressed by `compression` and the compression flag set.
    ///
    /// Returned unchanged (a cheap clone) when compression does not apply: the flag is already
    /// set, the envelope is a STARTUP (which the spec forbids compressing, since it is what
    /// negotiates compression), it is v5, or the body is beyond what the format can hold.
    /// An uncompressed frame is always valid, because the flag is per frame.
    #[must_use]
    pub fn compressed(&self, compression: Compression) -> Envelope {
        let header = *self.header();
        if header.flags.contains(Flags::COMPRESSION)
            || header.opcode == Opcode::STARTUP
            || header.version == ProtocolVersion::V5
        {
            return self.clone();
        }
        match compression.compress(self.body()) {
            Some(body) => Envelope::new(
                Header {
                    flags: header.flags.union(Flags::COMPRESSION),
                    ..header
                },
                body,
            ),
            None => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::header::{Direction, StreamId};
    use proptest::prelude::*;

    fn envelope(flags: Flags, opcode: Opcode, body: &[u8]) -> Envelope {
        Envelope::new(
            Header {
                version: ProtocolVersion::V4,
                direction: Direction::Response,
                flags,
                stream: StreamId(5),
                opcode,
                length: 0,
            },
            Bytes::copy_from_slice(body),
        )
    }

    #[test]
    fn names() {
        assert_eq!(Compression::from_name("lz4"), Some(Compression::Lz4));
        assert_eq!(Compression::from_name("LZ4"), Some(Compression::Lz4));
        assert_eq!(Compression::from_name("snappy"), Some(Compression::Snappy));
        assert_eq!(Compression::from_name("zstd"), None);
        assert_eq!(Compression::Snappy.name(), "snappy");
    }

    #[test]
    fn lz4_length_is_big_endian() {
        let body = vec![7u8; 1000];
        let out = Compression::Lz4.compress(&body).unwrap();
        assert_eq!(&out[..4], &[0, 0, 0x03, 0xe8]);
        assert_eq!(lz4_flex::block::decompress(&out[4..], 1000).unwrap(), body);
    }

    #[test]
    fn empty_bodies_round_trip() {
        for c in Compression::ALL {
            let out = c.compress(&[]).unwrap();
            assert_eq!(c.decompress(&out, 0).unwrap(), Bytes::new(), "{c:?}");
        }
    }

    #[test]
    fn announced_length_is_checked_before_allocating() {
        // lz4 announcing 4 GiB - 1 with a 1-byte block.
        let err = Compression::Lz4
            .decompress(&[0xff, 0xff, 0xff, 0xff, 0x00], 1 << 20)
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(
                0,
                DecodeErrorKind::TooLarge {
                    length: 0xffff_ffff,
                    max: 1 << 20
                }
            )
        );
        // snappy announcing 2^32 - 1 (varint ff ff ff ff 0f).
        let err = Compression::Snappy
            .decompress(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00], 1 << 20)
            .unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::TooLarge { .. }),
            "{err:?}"
        );
        // Exactly the maximum is fine.
        let body = Compression::Lz4.compress(&[1; 100]).unwrap();
        assert!(Compression::Lz4.decompress(&body, 100).is_ok());
        assert!(Compression::Lz4.decompress(&body, 99).is_err());
    }

    #[test]
    fn truncated_lz4_is_an_error() {
        let body = Compression::Lz4
            .compress(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        let err = Compression::Lz4
            .decompress(&body[..body.len() - 3], 1 << 20)
            .unwrap_err();
        assert_eq!(err.offset, 4);
        assert!(matches!(err.kind, DecodeErrorKind::Decompression(_)));
        let err = Compression::Lz4
            .decompress(&body[..2], 1 << 20)
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(
                0,
                DecodeErrorKind::Truncated {
                    needed: 4,
                    available: 2
                }
            )
        );
    }

    #[test]
    fn lz4_shorter_than_announced_is_an_error() {
        let mut body = Compression::Lz4.compress(&[9u8; 64]).unwrap().to_vec();
        body[3] = 65; // announce one byte more than the block holds
        let err = Compression::Lz4.decompress(&body, 1 << 20).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::Decompression(_)));
    }

    #[test]
    fn garbage_snappy_is_an_error() {
        let err = Compression::Snappy
            .decompress(&[0x10, 0xff, 0xff], 1 << 20)
            .unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::Decompression(_)));
        let err = Compression::Snappy.decompress(&[], 1 << 20).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::Decompression(_)));
    }

    #[test]
    fn envelope_helpers_toggle_the_flag() {
        let plain = envelope(Flags::TRACING, Opcode::RESULT, &[3u8; 500]);
        for c in Compression::ALL {
            let packed = plain.compressed(c);
            assert!(packed.header().flags.contains(Flags::COMPRESSION));
            assert!(packed.header().flags.contains(Flags::TRACING));
            assert!(packed.body().len() < 100);
            assert_eq!(packed.header().length as usize, packed.body().len());
            assert_eq!(packed.decompressed(Some(c), 500).unwrap(), plain);
            // Already compressed: unchanged.
            assert_eq!(packed.compressed(c), packed);
            // Offsets of body errors count from the frame start.
            let err = packed.decompressed(Some(c), 499).unwrap_err();
            assert_eq!(err.offset, HEADER_LEN);
        }
        assert_eq!(plain.decompressed(None, 0).unwrap(), plain);
    }

    #[test]
    fn compressed_frame_without_negotiation_is_an_error() {
        let env = envelope(Flags::COMPRESSION, Opcode::RESULT, b"xx");
        assert_eq!(
            env.decompressed(None, 100),
            Err(DecodeError::new(
                1,
                DecodeErrorKind::CompressionNotNegotiated
            ))
        );
    }

    #[test]
    fn startup_is_never_compressed() {
        let env = envelope(Flags::empty(), Opcode::STARTUP, &[0u8; 200]);
        assert_eq!(env.compressed(Compression::Lz4), env);
    }

    proptest! {
        #[test]
        fn bodies_round_trip(body in prop::collection::vec(any::<u8>(), 0..2000), small in 0u8..4) {
            // Mix random and repetitive data so both compressible and incompressible bodies run.
            let body: Vec<u8> = body.iter().map(|b| if small == 0 { *b } else { b % small.max(1) }).collect();
            for c in Compression::ALL {
                let out = c.compress(&body).unwrap();
                prop_assert_eq!(&c.decompress(&out, body.len()).unwrap()[..], &body[..]);
            }
        }

        #[test]
        fn decompression_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
            for c in Compression::ALL {
                let _ = c.decompress(&data, 4096);
            }
        }
    }
}
