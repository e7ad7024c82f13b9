//! The per-connection-side framing state: plain envelopes, or v5 segments after the handshake.
//!
//! A session owns one [`FrameDecoder`] per socket it reads and one [`FrameEncoder`] per socket
//! it writes. Both start in [`Framing::Envelopes`], which v3 and v4 keep for the connection's
//! lifetime. In v5 the OPTIONS/STARTUP exchange and the READY or AUTHENTICATE answer are plain
//! envelopes and every later byte in both directions is segments, so the session calls
//! `switch_to_segments` right after the envelope that ends the handshake: the decoder hands out
//! one envelope per call and leaves later bytes in the buffer, so bytes that arrived together
//! with READY are read as segments, as they must be.
//!
//! Bodies pass through untouched: a v3/v4 body compressed with lz4 or snappy stays compressed
//! (see [`Envelope::decompressed`] for the bodies the proxy must read).
//!
//! Where bytes are copied:
//! - Decoding plain envelopes: never; bodies are slices of the receive buffer.
//! - Decoding segments: uncompressed self-contained payloads are slices too; lz4 payloads are
//!   inflated into a new buffer (inherent), and an envelope spanning segments is gathered into
//!   one buffer (its pieces are interleaved with segment headers and CRCs on the wire).
//! - [`FrameEncoder::encode`] appends to a `BytesMut`, so it copies each body once: for plain
//!   envelopes only because the caller asked for contiguous bytes — to forward without that
//!   copy, send [`Envelope::wire`] (header bytes plus the shared body) instead; for segments
//!   because the payload must be contiguous behind its header for the CRC32 and lz4, and the
//!   CRC32 covers stream ids, so a v5 frame cannot be forwarded by patching it in place.

use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;
use crate::frame::envelope::{Envelope, EnvelopeDecoder};
use crate::frame::header::{HEADER_LEN, Header};
use crate::frame::segment::{SegmentFormat, SegmentReader, SegmentWriter};

/// How frames travel on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Bare envelopes: v3 and v4, and v5 before the handshake completes.
    Envelopes,
    /// v5 segments after the handshake.
    Segments(SegmentFormat),
}

/// Reads envelopes from one socket's receive buffer.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    envelopes: EnvelopeDecoder,
    segments: Option<SegmentReader>,
}

impl FrameDecoder {
    /// A decoder in plain-envelope mode; `envelopes` sets the frame limit and direction check,
    /// which carry over to segment mode.
    pub const fn new(envelopes: EnvelopeDecoder) -> Self {
        Self {
            envelopes,
            segments: None,
        }
    }

    pub fn framing(&self) -> Framing {
        match &self.segments {
            None => Framing::Envelopes,
            Some(reader) => Framing::Segments(reader.format()),
        }
    }

    /// From now on, read v5 segments in `format`. Called once, after the envelope that ends the
    /// handshake; calling it again starts over with the new format.
    pub fn switch_to_segments(&mut self, format: SegmentFormat) {
        self.segments = Some(SegmentReader::new(format, self.envelopes.clone()));
    }

    /// The next whole envelope, or `Ok(None)` until more bytes arrive. A partial frame stays in
    /// `buf`. Any error is fatal for the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Envelope>, DecodeError> {
        match &mut self.segments {
            None => self.envelopes.decode(buf),
            Some(reader) => reader.decode(buf),
        }
    }

    /// After an [`UnsupportedVersion`](crate::DecodeErrorKind::UnsupportedVersion) error: the
    /// version and stream id the offending envelope starts with, read from `buf` (the receive
    /// buffer) in plain framing and from the segment already taken from it otherwise. `None`
    /// when the bytes that hold the stream id have not arrived (plain framing) or cannot
    /// arrive (a segment too short for them).
    pub fn peek_refusal(&self, buf: &[u8]) -> Option<super::Refusal> {
        match &self.segments {
            None => super::peek_refusal(buf),
            Some(reader) => reader.peek_refusal(),
        }
    }

    /// Whether part of an envelope was taken from the receive buffer already (a segment
    /// whose envelope is not whole yet).
    pub fn has_partial(&self) -> bool {
        self.segments
            .as_ref()
            .is_some_and(SegmentReader::has_partial)
    }

    /// Whether envelopes arrive inside segments (v5 after the handshake).
    pub const fn is_segmented(&self) -> bool {
        self.segments.is_some()
    }
}

/// Writes envelopes for one socket.
#[derive(Debug, Clone, Default)]
pub struct FrameEncoder {
    segments: Option<SegmentWriter>,
}

impl FrameEncoder {
    /// An encoder in plain-envelope mode.
    pub const fn new() -> Self {
        Self { segments: None }
    }

    pub fn framing(&self) -> Framing {
        match &self.segments {
            None => Framing::Envelopes,
            Some(writer) => Framing::Segments(writer.format()),
        }
    }

    /// From now on, write v5 segments in `format`.
    pub fn switch_to_segments(&mut self, format: SegmentFormat) {
        self.segments = Some(SegmentWriter::new(format));
    }

    /// Appends one envelope's wire bytes to `out` (a copy of the body; see the module docs).
    pub fn encode(&mut self, envelope: &Envelope, out: &mut BytesMut) {
        match &mut self.segments {
            None => envelope.encode(out),
            Some(writer) => writer.write(envelope, out),
        }
    }

    /// Appends the envelope of `header` (its length already set) whose body is `head` then
    /// `tail`, without joining them first (see [`SegmentWriter::write_parts`]).
    pub fn encode_parts(&mut self, header: &Header, head: &[u8], tail: &[u8], out: &mut BytesMut) {
        match &mut self.segments {
            None => {
                out.reserve(HEADER_LEN + head.len() + tail.len());
                out.put_slice(&header.encode());
                out.put_slice(head);
                out.put_slice(tail);
            }
            Some(writer) => writer.write_parts(header, head, tail, out),
        }
    }

    /// Appends several envelopes in order. In segment mode consecutive small envelopes share
    /// self-contained segments, which saves ten bytes or more per envelope and one CRC pass
    /// each; a session should batch whatever is queued for a socket.
    pub fn encode_all<'e>(
        &mut self,
        envelopes: impl IntoIterator<Item = &'e Envelope>,
        out: &mut BytesMut,
    ) {
        match &mut self.segments {
            None => {
                for envelope in envelopes {
                    envelope.encode(out);
                }
            }
            Some(writer) => writer.write_all(envelopes, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::frame::header::{Direction, Flags, Header, Opcode, ProtocolVersion, StreamId};

    fn envelope(opcode: Opcode, stream: i16, body: &[u8]) -> Envelope {
        Envelope::new(
            Header {
                version: ProtocolVersion::V5,
                direction: Direction::Response,
                flags: Flags::empty(),
                stream: StreamId(stream),
                opcode,
                length: 0,
            },
            Bytes::copy_from_slice(body),
        )
    }

    #[test]
    fn handshake_then_segments_in_one_read() {
        let ready = envelope(Opcode::READY, 0, b"");
        let rows = [
            envelope(Opcode::RESULT, 1, b"rows"),
            envelope(Opcode::RESULT, 2, b"more"),
        ];
        let mut encoder = FrameEncoder::new();
        let mut wire = BytesMut::new();
        encoder.encode(&ready, &mut wire);
        encoder.switch_to_segments(SegmentFormat::Lz4);
        assert_eq!(encoder.framing(), Framing::Segments(SegmentFormat::Lz4));
        encoder.encode_all(&rows, &mut wire);

        // READY and the first segment arrive in the same read.
        let mut decoder =
            FrameDecoder::new(EnvelopeDecoder::new(1 << 20).expecting(Direction::Response));
        assert_eq!(decoder.decode(&mut wire).unwrap(), Some(ready));
        decoder.switch_to_segments(SegmentFormat::Lz4);
        assert_eq!(decoder.decode(&mut wire).unwrap().as_ref(), Some(&rows[0]));
        assert_eq!(decoder.decode(&mut wire).unwrap().as_ref(), Some(&rows[1]));
        assert_eq!(decoder.decode(&mut wire).unwrap(), None);
        assert_eq!(decoder.framing(), Framing::Segments(SegmentFormat::Lz4));
    }

    #[test]
    fn direction_check_carries_over_to_segments() {
        let mut encoder = FrameEncoder::new();
        encoder.switch_to_segments(SegmentFormat::Uncompressed);
        let mut wire = BytesMut::new();
        encoder.encode(&envelope(Opcode::RESULT, 1, b""), &mut wire);
        let mut decoder =
            FrameDecoder::new(EnvelopeDecoder::new(1 << 20).expecting(Direction::Request));
        decoder.switch_to_segments(SegmentFormat::Uncompressed);
        assert_eq!(
            decoder.decode(&mut wire).unwrap_err().kind,
            crate::error::DecodeErrorKind::UnexpectedDirection
        );
    }
}
