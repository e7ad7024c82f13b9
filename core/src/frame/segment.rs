//! Protocol v5 segments: the checksummed, optionally lz4-compressed containers that carry
//! envelopes once the handshake is over.
//!
//! ```text
//! uncompressed: | 3 bytes LE: payload length (17 bits), self-contained (bit 17) | CRC24 (3 LE) |
//! lz4:          | 5 bytes LE: compressed length (17 bits), uncompressed length (17 bits,
//!               |   0 = stored uncompressed), self-contained (bit 34)         | CRC24 (3 LE) |
//! then:         | payload (at most 131071 bytes)                               | CRC32 (4 LE) |
//! ```
//!
//! The CRC32 covers the payload as sent (compressed, if it is). A self-contained segment holds
//! one or more whole envelopes; an envelope too large for one segment is cut into consecutive
//! non-self-contained segments, the first starting with its header.
//!
//! Three layers, from the wire up:
//! - [`SegmentDecoder`] splits one segment off a receive buffer, checks the CRC24 as soon as the
//!   header is in (before trusting its lengths) and the CRC32 once the segment is whole, and
//!   decompresses. Every length it reads is 17 bits wide, so no allocation can exceed 128 KiB.
//!   An uncompressed payload is a zero-copy slice of the receive buffer.
//! - [`SegmentReader`] turns segments into [`Envelope`]s: envelopes of a self-contained payload
//!   are zero-copy slices of it; a large envelope is gathered from its segments into one buffer
//!   (the only copy on the receive side), with the frame limit checked as soon as its header is
//!   in.
//! - [`SegmentWriter`] packs envelopes into as few self-contained segments as fit and splits a
//!   large one. Writing copies every body once into the output: the payload must be contiguous
//!   behind its header for the CRC32 and for lz4. That copy is inherent to v5; it is also why a
//!   stream id cannot be patched in place as in v3/v4 (the CRC32 covers it).
//!
//! Checksum errors report `expected` as the value carried on the wire and `actual` as the one
//! computed from the received bytes, at the offset of the checksum field within the segment.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::frame::checksum::{crc24, crc32};
use crate::frame::envelope::{Envelope, EnvelopeDecoder};
use crate::frame::header::{HEADER_LEN, Header};

/// The largest payload of one segment: 2^17 - 1 bytes.
pub const MAX_PAYLOAD_LEN: usize = 0x1_FFFF;

const LENGTH_MASK: u64 = 0x1_FFFF;
const TRAILER_LEN: usize = 4;
const UNCOMPRESSED_SELF_CONTAINED: u64 = 1 << 17;
const LZ4_SELF_CONTAINED: u64 = 1 << 34;

/// How segment payloads are encoded on a connection, fixed by the STARTUP `COMPRESSION` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentFormat {
    Uncompressed,
    Lz4,
}

impl SegmentFormat {
    /// Header length: the length fields and their CRC24.
    pub const fn header_len(self) -> usize {
        self.fields_len() + 3
    }

    /// Bytes a segment adds around its payload.
    pub const fn overhead(self) -> usize {
        self.header_len() + TRAILER_LEN
    }

    const fn fields_len(self) -> usize {
        match self {
            Self::Uncompressed => 3,
            Self::Lz4 => 5,
        }
    }

    /// The header for a payload of `wire_len` bytes; `uncompressed_len` is only written in the
    /// lz4 format (0 for a payload stored uncompressed).
    fn encode_header(
        self,
        wire_len: usize,
        uncompressed_len: usize,
        self_contained: bool,
    ) -> ([u8; 8], usize) {
        let mut fields = wire_len as u64 & LENGTH_MASK;
        match self {
            Self::Uncompressed => {
                if self_contained {
                    fields |= UNCOMPRESSED_SELF_CONTAINED;
                }
            }
            Self::Lz4 => {
                fields |= (uncompressed_len as u64 & LENGTH_MASK) << 17;
                if self_contained {
                    fields |= LZ4_SELF_CONTAINED;
                }
            }
        }
        let n = self.fields_len();
        let mut out = [0u8; 8];
        out[..n].copy_from_slice(&fields.to_le_bytes()[..n]);
        let crc = crc24(&out[..n]);
        out[n..n + 3].copy_from_slice(&crc.to_le_bytes()[..3]);
        (out, n + 3)
    }

    /// Reads and checks a segment header once all of it is in `bytes`.
    fn decode_header(self, bytes: &[u8]) -> Result<Option<SegmentHeader>, DecodeError> {
        let n = self.fields_len();
        let Some(raw) = bytes.get(..n + 3) else {
            return Ok(None);
        };
        let (fields_raw, crc_raw) = raw.split_at(n);
        let mut fields = [0u8; 8];
        fields[..n].copy_from_slice(fields_raw);
        let fields = u64::from_le_bytes(fields);
        let mut crc = [0u8; 4];
        crc[..3].copy_from_slice(crc_raw);
        let expected = u32::from_le_bytes(crc);
        let actual = crc24(fields_raw);
        if expected != actual {
            return Err(DecodeError::new(
                n,
                DecodeErrorKind::HeaderChecksum { expected, actual },
            ));
        }
        // Masked to 17 bits: these can never exceed MAX_PAYLOAD_LEN.
        let wire_len = (fields & LENGTH_MASK) as usize;
        Ok(Some(match self {
            Self::Uncompressed => SegmentHeader {
                wire_len,
                uncompressed_len: None,
                self_contained: fields & UNCOMPRESSED_SELF_CONTAINED != 0,
            },
            Self::Lz4 => SegmentHeader {
                wire_len,
                uncompressed_len: match ((fields >> 17) & LENGTH_MASK) as usize {
                    0 => None,
                    n => Some(n),
                },
                self_contained: fields & LZ4_SELF_CONTAINED != 0,
            },
        }))
    }
}

/// What a segment header says.
#[derive(Debug, Clone, Copy)]
struct SegmentHeader {
    /// Payload bytes on the wire.
    wire_len: usize,
    /// `Some` if the payload is lz4-compressed and inflates to that many bytes.
    uncompressed_len: Option<usize>,
    self_contained: bool,
}

/// One decoded segment, its payload decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub self_contained: bool,
    pub payload: Bytes,
}

/// A payload longer than [`MAX_PAYLOAD_LEN`] was given to [`SegmentWriter::write_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTooLarge {
    pub len: usize,
}

impl fmt::Display for PayloadTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment payload of {} bytes exceeds {MAX_PAYLOAD_LEN}",
            self.len
        )
    }
}

impl std::error::Error for PayloadTooLarge {}

/// Splits segments off a receive buffer.
#[derive(Debug, Clone)]
pub struct SegmentDecoder {
    format: SegmentFormat,
}

impl SegmentDecoder {
    pub const fn new(format: SegmentFormat) -> Self {
        Self { format }
    }

    pub const fn format(&self) -> SegmentFormat {
        self.format
    }

    /// Splits the next whole segment off `buf`, or returns `Ok(None)` and leaves `buf` as it is
    /// until the segment is complete. On error nothing is consumed. Error offsets count from
    /// the segment's start.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Segment>, DecodeError> {
        let Some(header) = self.format.decode_header(buf)? else {
            return Ok(None);
        };
        let header_len = self.format.header_len();
        let payload_end = header_len + header.wire_len;
        let Some(segment) = buf.get(..payload_end + TRAILER_LEN) else {
            return Ok(None);
        };
        let (payload, trailer) = segment[header_len..].split_at(header.wire_len);
        let mut expected = [0u8; 4];
        expected.copy_from_slice(trailer);
        let expected = u32::from_le_bytes(expected);
        let actual = crc32(payload);
        if expected != actual {
            return Err(DecodeError::new(
                payload_end,
                DecodeErrorKind::PayloadChecksum { expected, actual },
            ));
        }
        let payload = match header.uncompressed_len {
            None => {
                buf.advance(header_len);
                let payload = buf.split_to(header.wire_len).freeze();
                buf.advance(TRAILER_LEN);
                payload
            }
            Some(len) => {
                let mut out = vec![0u8; len];
                match lz4_flex::block::decompress_into(payload, &mut out) {
                    Ok(n) if n == len => {}
                    Ok(_) => {
                        return Err(DecodeError::new(
                            header_len,
                            DecodeErrorKind::Decompression(
                                "lz4 segment is shorter than its uncompressed length",
                            ),
                        ));
                    }
                    Err(_) => {
                        return Err(DecodeError::new(
                            header_len,
                            DecodeErrorKind::Decompression("invalid lz4 segment payload"),
                        ));
                    }
                }
                buf.advance(payload_end + TRAILER_LEN);
                Bytes::from(out)
            }
        };
        Ok(Some(Segment {
            self_contained: header.self_contained,
            payload,
        }))
    }
}

/// Reads envelopes out of a stream of segments.
///
/// Envelope errors (version, opcode, frame limit, truncation inside a self-contained segment)
/// carry offsets counted from the envelope's start; segment errors from the segment's start.
/// After an error the reader's state is unspecified: the connection is to be closed.
#[derive(Debug, Clone)]
pub struct SegmentReader {
    segments: SegmentDecoder,
    envelopes: EnvelopeDecoder,
    /// The unread rest of the current self-contained payload.
    contained: Bytes,
    /// The part gathered so far of an envelope that spans segments.
    large: Option<BytesMut>,
}

impl SegmentReader {
    /// A reader of segments in `format` whose envelopes `envelopes` validates (frame limit,
    /// direction).
    pub fn new(format: SegmentFormat, envelopes: EnvelopeDecoder) -> Self {
        Self {
            segments: SegmentDecoder::new(format),
            envelopes,
            contained: Bytes::new(),
            large: None,
        }
    }

    pub const fn format(&self) -> SegmentFormat {
        self.segments.format
    }

    /// Whether part of an envelope has been read: bytes of a segment already consumed from the
    /// receive buffer that have not become an envelope yet.
    pub fn has_partial(&self) -> bool {
        !self.contained.is_empty() || self.large.is_some()
    }

    /// The version and stream of the envelope being read, as far as its first bytes are here:
    /// after an unsupported version, what a refusal must echo (the receive buffer holds
    /// segment bytes, not the envelope's).
    pub fn peek_refusal(&self) -> Option<super::Refusal> {
        match &self.large {
            Some(large) => super::peek_refusal(large),
            None => super::peek_refusal(&self.contained),
        }
    }

    /// Returns the next whole envelope, consuming segments from `buf` as needed, or `Ok(None)`
    /// when `buf` holds no further whole segment. A partial segment stays in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Envelope>, DecodeError> {
        loop {
            if let Some(envelope) = self.next_contained()? {
                return Ok(Some(envelope));
            }
            let Some(segment) = self.segments.decode(buf)? else {
                return Ok(None);
            };
            if segment.self_contained {
                if self.large.is_some() {
                    // Bit 17 (uncompressed) or 34 (lz4) of the header: byte 2 or 4.
                    let at = self.segments.format.fields_len() - 1;
                    return Err(DecodeError::new(
                        at,
                        DecodeErrorKind::InvalidValue {
                            field: "self-contained flag inside a large envelope",
                            value: 1,
                        },
                    ));
                }
                self.contained = segment.payload;
            } else if let Some(envelope) = self.gather(&segment.payload)? {
                return Ok(Some(envelope));
            }
        }
    }

    /// The next envelope of the current self-contained payload, which must hold it whole.
    fn next_contained(&mut self) -> Result<Option<Envelope>, DecodeError> {
        if self.contained.is_empty() {
            return Ok(None);
        }
        let available = self.contained.len();
        let Some(header) = self.envelopes.peek(&self.contained)? else {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::Truncated {
                    needed: HEADER_LEN,
                    available,
                },
            ));
        };
        // `peek` checked the length against the frame limit, a usize.
        let body_len = header.length as usize;
        if available - HEADER_LEN < body_len {
            return Err(DecodeError::new(
                HEADER_LEN,
                DecodeErrorKind::Truncated {
                    needed: body_len,
                    available: available - HEADER_LEN,
                },
            ));
        }
        self.contained.advance(HEADER_LEN);
        let body = self.contained.split_to(body_len);
        Ok(Some(Envelope::new(header, body)))
    }

    /// Adds a non-self-contained payload to the large envelope and returns it once whole.
    fn gather(&mut self, payload: &[u8]) -> Result<Option<Envelope>, DecodeError> {
        let large = self.large.get_or_insert_with(BytesMut::new);
        large.extend_from_slice(payload);
        let Some(header) = self.envelopes.peek(large)? else {
            return Ok(None);
        };
        // `peek` bounded this by the frame limit. Memory follows the bytes that actually
        // arrived (a few segments ahead), so that a slow sender announcing a huge envelope
        // holds no more than it sent.
        let total = HEADER_LEN + header.length as usize;
        match large.len().cmp(&total) {
            std::cmp::Ordering::Less => {
                large.reserve((total - large.len()).min(4 * MAX_PAYLOAD_LEN));
                Ok(None)
            }
            std::cmp::Ordering::Greater => Err(DecodeError::new(
                total,
                DecodeErrorKind::TrailingBytes {
                    count: large.len() - total,
                },
            )),
            std::cmp::Ordering::Equal => {
                let mut bytes = self.large.take().unwrap_or_default();
                bytes.advance(HEADER_LEN);
                Ok(Some(Envelope::new(header, bytes.freeze())))
            }
        }
    }
}

/// Writes envelopes as segments.
///
/// Small envelopes are packed into self-contained segments of up to [`MAX_PAYLOAD_LEN`] bytes,
/// in order; an envelope larger than that is cut into non-self-contained segments. With lz4,
/// each payload is compressed unless that does not make it smaller, in which case it is stored
/// with an uncompressed length of 0, as Cassandra does.
#[derive(Debug, Clone)]
pub struct SegmentWriter {
    format: SegmentFormat,
    /// lz4 needs each payload contiguous before compressing it: envelopes are packed here.
    scratch: Vec<u8>,
}

/// The self-contained segment being filled.
#[derive(Debug, Clone, Copy)]
struct OpenSegment {
    /// Where its header goes in the output (uncompressed format).
    start: usize,
    /// Payload bytes so far.
    len: usize,
}

impl SegmentWriter {
    pub const fn new(format: SegmentFormat) -> Self {
        Self {
            format,
            scratch: Vec::new(),
        }
    }

    pub const fn format(&self) -> SegmentFormat {
        self.format
    }

    /// Appends `envelope` as one self-contained segment, or as several non-self-contained ones
    /// if it is larger than a segment.
    pub fn write(&mut self, envelope: &Envelope, out: &mut BytesMut) {
        self.write_all(std::iter::once(envelope), out);
    }

    /// Appends the envelope of `header` (its length already set) and the body `head` then
    /// `tail`, as [`Self::write`] would the envelope with that body: a body rebuilt from a new
    /// head and the shared tail of another is not joined first.
    pub fn write_parts(&mut self, header: &Header, head: &[u8], tail: &[u8], out: &mut BytesMut) {
        let encoded = header.encode();
        if HEADER_LEN + head.len() + tail.len() > MAX_PAYLOAD_LEN {
            // Cut over several segments: rare enough to join the body first.
            let mut body = BytesMut::with_capacity(head.len() + tail.len());
            body.put_slice(head);
            body.put_slice(tail);
            self.write_large(&Envelope::new(*header, body.freeze()), out);
            return;
        }
        self.put_segment(true, &[&encoded, head, tail], out);
    }

    /// Appends `envelopes` in order, packing consecutive small ones into shared segments.
    pub fn write_all<'e>(
        &mut self,
        envelopes: impl IntoIterator<Item = &'e Envelope>,
        out: &mut BytesMut,
    ) {
        let mut open: Option<OpenSegment> = None;
        for envelope in envelopes {
            let len = envelope.encoded_len();
            if len > MAX_PAYLOAD_LEN {
                self.close(open.take(), out);
                self.write_large(envelope, out);
                continue;
            }
            let segment = match open {
                Some(segment) if segment.len + len <= MAX_PAYLOAD_LEN => segment,
                _ => {
                    self.close(open.take(), out);
                    self.open(out)
                }
            };
            match self.format {
                SegmentFormat::Uncompressed => envelope.encode(out),
                SegmentFormat::Lz4 => {
                    self.scratch.extend_from_slice(&envelope.header().encode());
                    self.scratch.extend_from_slice(envelope.body());
                }
            }
            open = Some(OpenSegment {
                len: segment.len + len,
                ..segment
            });
        }
        self.close(open, out);
    }

    /// Appends one segment holding `payload`.
    pub fn write_segment(
        &mut self,
        self_contained: bool,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), PayloadTooLarge> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(PayloadTooLarge { len: payload.len() });
        }
        self.put_segment(self_contained, &[payload], out);
        Ok(())
    }

    fn open(&mut self, out: &mut BytesMut) -> OpenSegment {
        let start = out.len();
        match self.format {
            SegmentFormat::Uncompressed => out.put_bytes(0, self.format.header_len()),
            SegmentFormat::Lz4 => self.scratch.clear(),
        }
        OpenSegment { start, len: 0 }
    }

    fn close(&mut self, open: Option<OpenSegment>, out: &mut BytesMut) {
        let Some(segment) = open else { return };
        match self.format {
            SegmentFormat::Uncompressed => finish_uncompressed(segment.start, true, out),
            SegmentFormat::Lz4 => put_lz4(&self.scratch, true, out),
        }
    }

    /// Cuts an envelope over consecutive non-self-contained segments, the first starting with
    /// the header.
    fn write_large(&mut self, envelope: &Envelope, out: &mut BytesMut) {
        let header = envelope.header().encode();
        let body = envelope.body();
        let (first, rest) = body.split_at(body.len().min(MAX_PAYLOAD_LEN - HEADER_LEN));
        self.put_segment(false, &[&header, first], out);
        for chunk in rest.chunks(MAX_PAYLOAD_LEN) {
            self.put_segment(false, &[chunk], out);
        }
    }

    /// Appends one segment whose payload is `parts` concatenated (at most MAX_PAYLOAD_LEN).
    fn put_segment(&mut self, self_contained: bool, parts: &[&[u8]], out: &mut BytesMut) {
        match self.format {
            SegmentFormat::Uncompressed => {
                let start = out.len();
                let len: usize = parts.iter().map(|p| p.len()).sum();
                out.reserve(self.format.overhead() + len);
                out.put_bytes(0, self.format.header_len());
                for part in parts {
                    out.put_slice(part);
                }
                finish_uncompressed(start, self_contained, out);
            }
            SegmentFormat::Lz4 => match parts {
                [single] => put_lz4(single, self_contained, out),
                _ => {
                    self.scratch.clear();
                    for part in parts {
                        self.scratch.extend_from_slice(part);
                    }
                    put_lz4(&self.scratch, self_contained, out);
                }
            },
        }
    }
}

/// Fills in the header of the uncompressed segment that starts at `start` in `out` (its
/// payload written after a zeroed header) and appends the CRC32.
fn finish_uncompressed(start: usize, self_contained: bool, out: &mut BytesMut) {
    let format = SegmentFormat::Uncompressed;
    let payload_start = start + format.header_len();
    let len = out.len() - payload_start;
    let (header, n) = format.encode_header(len, 0, self_contained);
    out[start..payload_start].copy_from_slice(&header[..n]);
    let crc = crc32(&out[payload_start..]);
    out.put_u32_le(crc);
}

/// Appends an lz4-format segment of `payload` (at most MAX_PAYLOAD_LEN), compressed if that
/// makes it smaller.
fn put_lz4(payload: &[u8], self_contained: bool, out: &mut BytesMut) {
    let format = SegmentFormat::Lz4;
    let start = out.len();
    let payload_start = start + format.header_len();
    let max = lz4_flex::block::get_maximum_output_size(payload.len());
    out.reserve(format.overhead() + max);
    out.resize(payload_start + max, 0);
    let compressed = lz4_flex::block::compress_into(payload, &mut out[payload_start..])
        .ok()
        .filter(|&n| n < payload.len());
    let (wire_len, uncompressed_len) = match compressed {
        Some(n) => {
            out.truncate(payload_start + n);
            (n, payload.len())
        }
        None => {
            out.truncate(payload_start);
            out.put_slice(payload);
            (payload.len(), 0)
        }
    };
    let (header, n) = format.encode_header(wire_len, uncompressed_len, self_contained);
    out[start..payload_start].copy_from_slice(&header[..n]);
    let crc = crc32(&out[payload_start..]);
    out.put_u32_le(crc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::header::{Direction, Flags, Opcode, ProtocolVersion, StreamId};
    use proptest::prelude::*;

    const FORMATS: [SegmentFormat; 2] = [SegmentFormat::Uncompressed, SegmentFormat::Lz4];

    fn envelope(stream: i16, body: Vec<u8>) -> Envelope {
        Envelope::new(
            Header {
                version: ProtocolVersion::V5,
                direction: Direction::Request,
                flags: Flags::empty(),
                stream: StreamId(stream),
                opcode: Opcode::QUERY,
                length: 0,
            },
            Bytes::from(body),
        )
    }

    fn options() -> Envelope {
        Envelope::new(
            Header {
                version: ProtocolVersion::V5,
                direction: Direction::Request,
                flags: Flags::empty(),
                stream: StreamId(0),
                opcode: Opcode::OPTIONS,
                length: 0,
            },
            Bytes::new(),
        )
    }

    fn reader(format: SegmentFormat) -> SegmentReader {
        SegmentReader::new(format, EnvelopeDecoder::new(16 << 20))
    }

    fn decode_all(reader: &mut SegmentReader, buf: &mut BytesMut) -> Vec<Envelope> {
        let mut out = Vec::new();
        while let Some(env) = reader.decode(buf).unwrap() {
            out.push(env);
        }
        out
    }

    const OPTIONS_SEGMENT: [u8; 19] = [
        0x09, 0x00, 0x02, 0xa4, 0xc8, 0xc1, 0x05, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00,
        0x10, 0x86, 0x28, 0x4d,
    ];

    #[test]
    fn options_test_vector_encodes() {
        let mut out = BytesMut::new();
        SegmentWriter::new(SegmentFormat::Uncompressed).write(&options(), &mut out);
        assert_eq!(&out[..], &OPTIONS_SEGMENT);
    }

    #[test]
    fn options_test_vector_decodes() {
        let mut buf = BytesMut::from(&OPTIONS_SEGMENT[..]);
        let segment = SegmentDecoder::new(SegmentFormat::Uncompressed)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert!(segment.self_contained);
        assert_eq!(&segment.payload[..], &OPTIONS_SEGMENT[6..15]);
        let mut buf = BytesMut::from(&OPTIONS_SEGMENT[..]);
        assert_eq!(
            decode_all(&mut reader(SegmentFormat::Uncompressed), &mut buf),
            vec![options()]
        );
    }

    #[test]
    fn incompressible_lz4_payload_is_stored() {
        let mut out = BytesMut::new();
        SegmentWriter::new(SegmentFormat::Lz4).write(&options(), &mut out);
        // 9 bytes would grow under lz4: stored, uncompressed length 0.
        let fields = u64::from_le_bytes([out[0], out[1], out[2], out[3], out[4], 0, 0, 0]);
        assert_eq!(fields & LENGTH_MASK, 9);
        assert_eq!((fields >> 17) & LENGTH_MASK, 0);
        assert_ne!(fields & LZ4_SELF_CONTAINED, 0);
        assert_eq!(&out[8..17], &OPTIONS_SEGMENT[6..15]);
        assert_eq!(out.len(), 8 + 9 + 4);
    }

    #[test]
    fn compressible_lz4_payload_is_compressed() {
        let env = envelope(1, vec![b'a'; 5000]);
        let mut out = BytesMut::new();
        SegmentWriter::new(SegmentFormat::Lz4).write(&env, &mut out);
        let fields = u64::from_le_bytes([out[0], out[1], out[2], out[3], out[4], 0, 0, 0]);
        assert_eq!(((fields >> 17) & LENGTH_MASK) as usize, 5009);
        assert!(((fields & LENGTH_MASK) as usize) < 200);
        assert_eq!(
            decode_all(&mut reader(SegmentFormat::Lz4), &mut out),
            vec![env]
        );
    }

    #[test]
    fn bad_header_crc() {
        for format in FORMATS {
            let mut out = BytesMut::new();
            SegmentWriter::new(format).write(&options(), &mut out);
            let n = format.fields_len();
            out[n] ^= 0x01;
            let mut dec = SegmentDecoder::new(format);
            // Only the header needs to be there.
            let mut header_only = BytesMut::from(&out[..format.header_len()]);
            let err = dec.decode(&mut header_only).unwrap_err();
            assert_eq!(err.offset, n);
            let DecodeErrorKind::HeaderChecksum { expected, actual } = err.kind else {
                panic!("{err:?}")
            };
            assert_eq!(expected ^ 0x01, actual);
            assert_eq!(header_only.len(), format.header_len(), "nothing consumed");
        }
    }

    #[test]
    fn bad_payload_crc() {
        for format in FORMATS {
            let mut out = BytesMut::new();
            SegmentWriter::new(format).write(&options(), &mut out);
            let last = out.len() - 1;
            out[last] ^= 0x80;
            let len = out.len();
            let err = SegmentDecoder::new(format).decode(&mut out).unwrap_err();
            assert_eq!(err.offset, format.header_len() + 9);
            assert!(matches!(err.kind, DecodeErrorKind::PayloadChecksum { .. }));
            assert_eq!(out.len(), len);
        }
    }

    #[test]
    fn corrupt_payload_fails_the_crc() {
        let mut out = BytesMut::new();
        SegmentWriter::new(SegmentFormat::Uncompressed).write(&options(), &mut out);
        out[8] ^= 0xff;
        let err = SegmentDecoder::new(SegmentFormat::Uncompressed)
            .decode(&mut out)
            .unwrap_err();
        let DecodeErrorKind::PayloadChecksum { expected, actual } = err.kind else {
            panic!("{err:?}")
        };
        assert_eq!(expected, 0x4d28_8610);
        assert_ne!(actual, expected);
    }

    /// A well-formed lz4 segment (right CRCs) whose compressed payload is cut short.
    #[test]
    fn truncated_lz4_payload() {
        let data: Vec<u8> = (0..2000u32).map(|i| (i % 7) as u8).collect();
        let full = lz4_flex::block::compress(&data);
        let cut = &full[..full.len() - 2];
        let (header, n) = SegmentFormat::Lz4.encode_header(cut.len(), data.len(), true);
        let mut buf = BytesMut::from(&header[..n]);
        buf.put_slice(cut);
        buf.put_u32_le(crc32(cut));
        let err = SegmentDecoder::new(SegmentFormat::Lz4)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(err.offset, 8);
        assert!(
            matches!(err.kind, DecodeErrorKind::Decompression(_)),
            "{err:?}"
        );
    }

    #[test]
    fn lz4_shorter_than_announced() {
        let data = vec![3u8; 1000];
        let compressed = lz4_flex::block::compress(&data);
        let (header, n) = SegmentFormat::Lz4.encode_header(compressed.len(), 1001, true);
        let mut buf = BytesMut::from(&header[..n]);
        buf.put_slice(&compressed);
        buf.put_u32_le(crc32(&compressed));
        let err = SegmentDecoder::new(SegmentFormat::Lz4)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(err.offset, 8);
        assert!(matches!(err.kind, DecodeErrorKind::Decompression(_)));
    }

    #[test]
    fn envelope_cut_short_in_self_contained_segment() {
        // A payload holding a header that announces 10 body bytes, followed by only 4.
        let mut payload = envelope(1, vec![0; 10]).header().encode().to_vec();
        payload.extend_from_slice(&[1, 2, 3, 4]);
        let mut buf = BytesMut::new();
        let mut writer = SegmentWriter::new(SegmentFormat::Uncompressed);
        writer.write_segment(true, &payload, &mut buf).unwrap();
        let err = reader(SegmentFormat::Uncompressed)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(
                9,
                DecodeErrorKind::Truncated {
                    needed: 10,
                    available: 4
                }
            )
        );
        // Less than a header.
        let mut buf = BytesMut::new();
        writer.write_segment(true, &payload[..5], &mut buf).unwrap();
        let err = reader(SegmentFormat::Uncompressed)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(
                0,
                DecodeErrorKind::Truncated {
                    needed: 9,
                    available: 5
                }
            )
        );
    }

    #[test]
    fn unsupported_version_inside_a_segment() {
        let mut buf = BytesMut::new();
        SegmentWriter::new(SegmentFormat::Uncompressed)
            .write_segment(true, &[0x02, 0, 1, 5, 0, 0, 0, 0], &mut buf)
            .unwrap();
        let err = reader(SegmentFormat::Uncompressed)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(0, DecodeErrorKind::UnsupportedVersion { version: 2 })
        );
    }

    #[test]
    fn large_envelope_over_the_limit_fails_with_its_first_segment() {
        let env = envelope(7, vec![1; 400_000]);
        let mut buf = BytesMut::new();
        SegmentWriter::new(SegmentFormat::Uncompressed).write(&env, &mut buf);
        let first_segment_len = SegmentFormat::Uncompressed.overhead() + MAX_PAYLOAD_LEN;
        let mut first = buf.split_to(first_segment_len);
        let mut reader =
            SegmentReader::new(SegmentFormat::Uncompressed, EnvelopeDecoder::new(300_000));
        let err = reader.decode(&mut first).unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(
                5,
                DecodeErrorKind::TooLarge {
                    length: 400_009,
                    max: 300_000
                }
            )
        );
    }

    #[test]
    fn self_contained_segment_inside_a_large_envelope() {
        let mut buf = BytesMut::new();
        let mut writer = SegmentWriter::new(SegmentFormat::Uncompressed);
        let env = envelope(7, vec![1; 200_000]);
        let mut encoded = BytesMut::new();
        env.encode(&mut encoded);
        writer
            .write_segment(false, &encoded[..MAX_PAYLOAD_LEN], &mut buf)
            .unwrap();
        writer.write(&options(), &mut buf);
        let err = reader(SegmentFormat::Uncompressed)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(matches!(err.kind, DecodeErrorKind::InvalidValue { .. }));
    }

    #[test]
    fn large_envelope_with_trailing_bytes() {
        let env = envelope(7, vec![1; 200_000]);
        let mut encoded = BytesMut::new();
        env.encode(&mut encoded);
        encoded.put_slice(b"junk");
        let mut buf = BytesMut::new();
        let mut writer = SegmentWriter::new(SegmentFormat::Uncompressed);
        for chunk in encoded.chunks(MAX_PAYLOAD_LEN) {
            writer.write_segment(false, chunk, &mut buf).unwrap();
        }
        let err = reader(SegmentFormat::Uncompressed)
            .decode(&mut buf)
            .unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(200_009, DecodeErrorKind::TrailingBytes { count: 4 })
        );
    }

    #[test]
    fn header_of_a_large_envelope_may_span_segments() {
        let env = envelope(7, vec![9; 20]);
        let mut encoded = BytesMut::new();
        env.encode(&mut encoded);
        let mut buf = BytesMut::new();
        let mut writer = SegmentWriter::new(SegmentFormat::Uncompressed);
        for chunk in encoded.chunks(4) {
            writer.write_segment(false, chunk, &mut buf).unwrap();
        }
        assert_eq!(
            decode_all(&mut reader(SegmentFormat::Uncompressed), &mut buf),
            vec![env]
        );
    }

    #[test]
    fn parts_are_written_as_the_joined_envelope() {
        for format in FORMATS {
            for (head, tail) in [(3, 40), (0, 17), (5, MAX_PAYLOAD_LEN), (2, 0)] {
                let head: Vec<u8> = (0..head).map(|i| i as u8).collect();
                let tail: Vec<u8> = (0..tail).map(|i| (i % 251) as u8).collect();
                let joined = envelope(9, [head.clone(), tail.clone()].concat());
                let mut want = BytesMut::new();
                SegmentWriter::new(format).write(&joined, &mut want);
                let mut got = BytesMut::new();
                SegmentWriter::new(format).write_parts(joined.header(), &head, &tail, &mut got);
                assert_eq!(
                    got,
                    want,
                    "{format:?}, head {}, tail {}",
                    head.len(),
                    tail.len()
                );
            }
        }
    }

    #[test]
    fn write_segment_refuses_oversize_payloads() {
        let mut out = BytesMut::new();
        let err = SegmentWriter::new(SegmentFormat::Uncompressed)
            .write_segment(true, &vec![0; MAX_PAYLOAD_LEN + 1], &mut out)
            .unwrap_err();
        assert_eq!(
            err,
            PayloadTooLarge {
                len: MAX_PAYLOAD_LEN + 1
            }
        );
        assert!(out.is_empty());
    }

    #[test]
    fn packing_fills_segments_to_the_maximum() {
        // 1000 envelopes of 200 bytes: 655 fit in 131071 bytes.
        let envs: Vec<Envelope> = (0..1000).map(|i| envelope(i, vec![i as u8; 191])).collect();
        let mut out = BytesMut::new();
        SegmentWriter::new(SegmentFormat::Uncompressed).write_all(&envs, &mut out);
        let mut dec = SegmentDecoder::new(SegmentFormat::Uncompressed);
        let first = dec.decode(&mut out).unwrap().unwrap();
        assert!(first.self_contained);
        assert_eq!(first.payload.len(), 655 * 200);
        let second = dec.decode(&mut out).unwrap().unwrap();
        assert_eq!(second.payload.len(), 345 * 200);
        assert!(out.is_empty());
    }

    #[test]
    fn exactly_max_payload_is_one_self_contained_segment() {
        let env = envelope(1, vec![5; MAX_PAYLOAD_LEN - HEADER_LEN]);
        for format in FORMATS {
            let mut out = BytesMut::new();
            SegmentWriter::new(format).write(&env, &mut out);
            let segment = SegmentDecoder::new(format)
                .decode(&mut out)
                .unwrap()
                .unwrap();
            assert!(segment.self_contained);
            assert_eq!(segment.payload.len(), MAX_PAYLOAD_LEN);
            assert!(out.is_empty());
        }
    }

    #[test]
    fn envelopes_of_a_self_contained_payload_share_it() {
        let envs = vec![envelope(1, vec![1; 10]), envelope(2, vec![2; 10])];
        let mut buf = BytesMut::new();
        SegmentWriter::new(SegmentFormat::Uncompressed).write_all(&envs, &mut buf);
        let base = buf.as_ptr() as usize;
        let mut reader = reader(SegmentFormat::Uncompressed);
        let a = reader.decode(&mut buf).unwrap().unwrap();
        let b = reader.decode(&mut buf).unwrap().unwrap();
        assert_eq!(a.body().as_ptr() as usize, base + 6 + 9);
        assert_eq!(b.body().as_ptr() as usize, base + 6 + 19 + 9);
    }

    fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..200),
            // Compressible, sometimes larger than a segment.
            1 => (0usize..400_000, any::<u8>()).prop_map(|(n, b)| (0..n).map(|i| b.wrapping_add((i / 64) as u8)).collect()),
            // Incompressible and larger than a segment.
            1 => prop::collection::vec(any::<u8>(), 131_000..140_000),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn segments_round_trip(
            bodies in prop::collection::vec(body_strategy(), 1..12),
            lz4 in any::<bool>(),
        ) {
            let format = if lz4 { SegmentFormat::Lz4 } else { SegmentFormat::Uncompressed };
            let envs: Vec<Envelope> = bodies.into_iter().enumerate()
                .map(|(i, b)| envelope(i as i16, b)).collect();
            let mut out = BytesMut::new();
            let mut writer = SegmentWriter::new(format);
            writer.write_all(&envs, &mut out);
            // Every segment is within the limits.
            let mut check = out.clone();
            let mut dec = SegmentDecoder::new(format);
            while let Some(segment) = dec.decode(&mut check).unwrap() {
                prop_assert!(segment.payload.len() <= MAX_PAYLOAD_LEN);
            }
            prop_assert!(check.is_empty());
            let mut reader = reader(format);
            prop_assert_eq!(decode_all(&mut reader, &mut out), envs);
            prop_assert!(out.is_empty());
            prop_assert!(!reader.has_partial());
        }

        #[test]
        fn raw_segments_round_trip(
            payload in prop::collection::vec(any::<u8>(), 0..2000),
            self_contained in any::<bool>(),
            lz4 in any::<bool>(),
        ) {
            let format = if lz4 { SegmentFormat::Lz4 } else { SegmentFormat::Uncompressed };
            let mut out = BytesMut::new();
            SegmentWriter::new(format).write_segment(self_contained, &payload, &mut out).unwrap();
            let segment = SegmentDecoder::new(format).decode(&mut out).unwrap().unwrap();
            prop_assert_eq!(segment, Segment { self_contained, payload: Bytes::from(payload) });
        }

        #[test]
        fn decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..200), lz4 in any::<bool>()) {
            let format = if lz4 { SegmentFormat::Lz4 } else { SegmentFormat::Uncompressed };
            let mut buf = BytesMut::from(&data[..]);
            let mut reader = reader(format);
            while let Ok(Some(_)) = reader.decode(&mut buf) {}
        }

        /// Valid header CRC, arbitrary payload and trailer: exercises the paths after the
        /// header check, which random bytes almost never reach.
        #[test]
        fn decoder_never_panics_past_the_header(
            payload in prop::collection::vec(any::<u8>(), 0..300),
            uncompressed in 0usize..600,
            self_contained in any::<bool>(),
            fix_crc in any::<bool>(),
        ) {
            let (header, n) = SegmentFormat::Lz4.encode_header(payload.len(), uncompressed, self_contained);
            let mut buf = BytesMut::from(&header[..n]);
            buf.put_slice(&payload);
            buf.put_u32_le(if fix_crc { crc32(&payload) } else { 0 });
            let mut reader = reader(SegmentFormat::Lz4);
            while let Ok(Some(_)) = reader.decode(&mut buf) {}
        }
    }
}
