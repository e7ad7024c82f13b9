//! Envelopes on the wire for the tests that drive one session by hand.

#![allow(dead_code, clippy::unwrap_used)]

pub mod bench;

use bytes::{Bytes, BytesMut};
use cqlmirror_core::frame::{
    Direction, Envelope, EnvelopeDecoder, Flags, Header, Opcode, ProtocolVersion, SegmentFormat,
    SegmentReader, SegmentWriter, StreamId,
};

/// One envelope's bytes.
pub fn envelope(
    version: ProtocolVersion,
    direction: Direction,
    stream: i16,
    opcode: Opcode,
    body: Bytes,
) -> BytesMut {
    let header = Header {
        version,
        direction,
        flags: Flags::empty(),
        stream: StreamId(stream),
        opcode,
        length: 0,
    };
    let mut wire = BytesMut::new();
    Envelope::new(header, body).encode(&mut wire);
    wire
}

/// The whole envelopes at the start of `wire`, taken from it (a partial one stays).
pub fn decode_all(wire: &mut BytesMut, direction: Direction) -> Vec<Envelope> {
    let mut decoder = EnvelopeDecoder::new(1 << 24).expecting(direction);
    let mut out = Vec::new();
    while let Ok(Some(envelope)) = decoder.decode(wire) {
        out.push(envelope);
    }
    out
}

/// `envelopes` in one self-contained v5 segment (uncompressed).
pub fn segment(envelopes: &[u8]) -> BytesMut {
    let mut wire = BytesMut::new();
    SegmentWriter::new(SegmentFormat::Uncompressed)
        .write_segment(true, envelopes, &mut wire)
        .unwrap();
    wire
}

/// The whole envelopes in the v5 segments at the start of `wire`, taken from it.
pub fn decode_segments(wire: &mut BytesMut, direction: Direction) -> Vec<Envelope> {
    let mut reader = SegmentReader::new(
        SegmentFormat::Uncompressed,
        EnvelopeDecoder::new(1 << 24).expecting(direction),
    );
    let mut out = Vec::new();
    while let Ok(Some(envelope)) = reader.decode(wire) {
        out.push(envelope);
    }
    out
}
