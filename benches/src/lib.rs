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

use std::io::{self, Read};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cqlmirror_core::frame::{
    Direction, Envelope, Flags, Header, Opcode, ProtocolVersion, StreamId,
};

/// Largest frame the bench programs accept (the proxy's default limit).
pub const MAX_FRAME: usize = 64 << 20;

/// Bytes asked of a socket per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Parses `10s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration: use e.g. 10s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{s}': use ms, s or m"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("'{s}' is not a valid duration"))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
