//! Shared helpers of the benchmarks: the criterion benches of the core (`benches/`) and the
//! end-to-end load bench, whose three programs live in `src/bin/`:
//!
//! - `cqlmirror-load`: the load generator (pipelined EXECUTEs of prepared statements over
//!   blocking sockets, closed or open loop, HDR latency percentiles, every answer checked);
//! - `cqlmirror-null`: a null CQL backend that answers every request at once with a canned
//!   result, so that a benchmark measures what sits in front of it;
//! - `cqlmirror-relay`: the raw TCP relay baseline on smol, the runtime of `proxy-smol`.
//!
//! `scripts/bench` runs them against each other, the proxies and the test bed's clusters.

pub mod wire;

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use cqlmirror_core::frame::{
    Direction, Envelope, Flags, Header, Opcode, ProtocolVersion, StreamId,
};

/// Largest frame the bench programs accept (the proxy's default limit).
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes asked of a socket per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds: the proxy's own parser,
/// so that the bench programs read durations exactly as the proxy does.
pub use cqlmirror_runtime::cli::parse_duration;

/// An envelope of `opcode` on `stream`, without flags.
pub fn envelope(
    version: ProtocolVersion,
    direction: Direction,
    stream: i16,
    opcode: Opcode,
    body: Bytes,
) -> Envelope {
    Envelope::new(
        Header {
            version,
            direction,
            flags: Flags::empty(),
            stream: StreamId(stream),
            opcode,
            length: 0,
        },
        body,
    )
}

/// A socket's receive buffer: bytes are read into a fixed chunk and appended to a `BytesMut`
/// that the core's frame decoders split whole frames off.
#[derive(Debug)]
pub struct Inbox {
    pub buf: BytesMut,
    chunk: Box<[u8]>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_CHUNK),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }
}

impl Inbox {
    /// One `read` from `from`, appended to the buffer; `Ok(0)` is the end of the stream.
    pub fn fill(&mut self, from: &mut impl Read) -> io::Result<usize> {
        let n = from.read(&mut self.chunk)?;
        self.buf.extend_from_slice(&self.chunk[..n]);
        Ok(n)
    }
}
