//! Framing: envelopes (v3, v4, v5), v5 segments, checksums and body compression.
//!
//! Decoders take the driver's `BytesMut` receive buffer, split whole units off with
//! `split_to(..).freeze()` and leave partial tails in place, so forwarding never copies a body.

pub mod header;

pub use header::{
    Direction, Flags, HEADER_LEN, Header, Opcode, ProtocolVersion, Refusal, StreamId, peek_refusal,
    rewrite_stream,
};
