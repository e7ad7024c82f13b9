//! Framing: envelopes (v3, v4, v5), v5 segments, checksums and body compression.
//!
//! Decoders take the driver's `BytesMut` receive buffer, split whole units off with
//! `split_to(..).freeze()` and leave partial tails in place, so forwarding never copies a body.
//!
//! - [`header`]: the 9-byte envelope header and its fields.
//! - [`envelope`]: [`Envelope`] (header plus shared body), its zero-copy [`WireEnvelope`] form
//!   and the [`EnvelopeDecoder`] that validates headers as early as the bytes allow.
//! - [`prefix`]: tracing id, warnings and custom payload in front of a message body.
//! - [`compression`]: v3/v4 body compression (lz4 with a big-endian length, raw snappy).
//! - [`checksum`]: the CRC24 and CRC32 of v5 segments, as Cassandra computes them.
//! - [`segment`]: v5 segments, and reading and writing envelopes through them.
//! - [`codec`]: the per-socket [`FrameDecoder`] and [`FrameEncoder`] that switch from plain
//!   envelopes to segments when a v5 handshake completes.

pub mod checksum;
pub mod codec;
pub mod compression;
pub mod envelope;
pub mod header;
pub mod prefix;
pub mod segment;

pub use codec::{FrameDecoder, FrameEncoder, Framing};
pub use compression::Compression;
pub use envelope::{Envelope, EnvelopeDecoder, PROTOCOL_MAX_BODY_LEN, WireEnvelope};
pub use header::{
    Direction, Flags, HEADER_LEN, Header, Opcode, ProtocolVersion, Refusal, StreamId, peek_refusal,
    rewrite_stream,
};
pub use prefix::Prefix;
pub use segment::{
    MAX_PAYLOAD_LEN, PayloadTooLarge, Segment, SegmentDecoder, SegmentFormat, SegmentReader,
    SegmentWriter,
};
