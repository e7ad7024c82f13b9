//! The two checksums of v5 segments: CRC24 over the segment header and CRC32 over the payload.
//!
//! Both follow Cassandra's implementation rather than the letter of the spec: the CRC32 is the
//! IEEE CRC-32 of the payload *preceded by* the four bytes `fa 2d 55 ca`, which the spec does
//! not mention. Instead of feeding those bytes for every segment, the hasher starts from the
//! state they leave behind ([`CRC32_SEED`]); the result is identical.

use crc::{Algorithm, Crc};

/// Cassandra's CRC24: polynomial 0x1974F0B, initial value 0x875060, most significant bit
/// first, no final xor. `crc` wants the polynomial without its x^24 term.
const CRC24_ALGORITHM: Algorithm<u32> = Algorithm {
    width: 24,
    poly: 0x0097_4F0B,
    init: 0x0087_5060,
    refin: false,
    refout: false,
    xorout: 0x0000_0000,
    // CRC24 of the ASCII bytes "123456789", the catalogue's conventional check value.
    check: 0x004B_3F02,
    residue: 0x0000_0000,
};

/// Segment headers are 3 or 5 bytes, so a 256-entry table (1 KiB, built at compile time) is
/// plenty.
const CRC24: Crc<u32> = Crc::<u32>::new(&CRC24_ALGORITHM);

/// The CRC32 state after Cassandra's four-byte preamble `fa 2d 55 ca`: also the CRC32 of an
/// empty payload.
pub const CRC32_SEED: u32 = 0x4477_7ED3;

/// The CRC24 of a segment header's length bytes (3 uncompressed, 5 with lz4), as the low 24
/// bits of the result.
pub fn crc24(bytes: &[u8]) -> u32 {
    CRC24.checksum(bytes)
}

/// The CRC32 of a whole segment payload.
pub fn crc32(payload: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(payload);
    crc.finish()
}

/// An incremental segment-payload CRC32, for payloads written or received in pieces.
#[derive(Debug, Clone)]
pub struct Crc32(crc32fast::Hasher);

impl Crc32 {
    pub fn new() -> Self {
        Self(crc32fast::Hasher::new_with_initial(CRC32_SEED))
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> u32 {
        self.0.finalize()
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc24_check_value() {
        assert_eq!(crc24(b"123456789"), CRC24_ALGORITHM.check);
    }

    #[test]
    fn crc24_of_options_segment_header() {
        // protocol.md: OPTIONS in one self-contained segment is
        // `090002 a4c8c1 050000000500000000 1086284d`.
        assert_eq!(
            crc24(&[0x09, 0x00, 0x02]).to_le_bytes()[..3],
            [0xa4, 0xc8, 0xc1]
        );
    }

    #[test]
    fn crc32_of_options_payload() {
        let payload = [0x05, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(crc32(&payload).to_le_bytes(), [0x10, 0x86, 0x28, 0x4d]);
    }

    #[test]
    fn crc32_of_empty_payload() {
        assert_eq!(crc32(&[]), 0x4477_7ED3);
    }

    #[test]
    fn seed_is_the_preamble_state() {
        // What Cassandra does: feed the four bytes, then the payload.
        let mut plain = crc32fast::Hasher::new();
        plain.update(&[0xfa, 0x2d, 0x55, 0xca]);
        assert_eq!(plain.clone().finalize(), CRC32_SEED);
        plain.update(b"some payload");
        assert_eq!(plain.finalize(), crc32(b"some payload"));
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut crc = Crc32::new();
        for piece in data.chunks(77) {
            crc.update(piece);
        }
        assert_eq!(crc.finish(), crc32(&data));
    }
}
