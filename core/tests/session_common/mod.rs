//! Envelopes on the wire for the tests that drive one session by hand.

#![allow(dead_code, clippy::unwrap_used)]

pub mod bench;

use bytes::{Bytes, BytesMut};
use cqlmirror_core::frame::{
    Direction, Envelope, EnvelopeDecoder, Flags, Header, Opcode, ProtocolVersion, StreamId,
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
