//! One direction of a simulated TCP connection: bytes written at one end arrive at the other,
//! in order, after a seeded latency, cut into pieces the way a network may cut them.
//!
//! A pipe holds at most `capacity` bytes between the writer and the reader (in flight plus
//! delivered but unread), like a socket's send and receive buffers together: a writer that
//! finds no room must keep its bytes, which is how backpressure reaches it. A writer can end
//! the stream after its data ([`Pipe::finish`], a FIN) or break it at once ([`Pipe::reset`]).
//!
//! Markers let the harness learn when the reader consumed a given byte offset: a request's
//! last byte read by the proxy is the moment the proxy saw the request.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::latency::Latency;
use crate::rng::SimRng;

/// How a pipe cuts the bytes of one write into deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// Each write arrives in one piece.
    Whole,
    /// One byte at a time.
    Bytes1,
    /// Pieces of 1 to `max` bytes.
    Random { max: usize },
    /// Each write is cut one of the three ways above, chosen at random.
    Mixed { max: usize },
}

/// How a pipe behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeSpec {
    pub latency: Latency,
    pub chunking: Chunking,
    /// Bytes between the writer and the reader at most.
    pub capacity: usize,
}

impl Default for PipeSpec {
    fn default() -> Self {
        Self {
            latency: Latency::millis(0, 2),
            chunking: Chunking::Whole,
            capacity: 256 * 1024,
        }
    }
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    Data(Bytes),
    /// Nothing to read now.
    WouldBlock,
    /// The writer finished and everything was read.
    Eof,
    /// The connection was reset.
    Reset,
}

#[derive(Debug)]
struct Piece {
    at: Duration,
    bytes: Bytes,
    fin: bool,
}

/// One direction of a connection.
#[derive(Debug)]
pub struct Pipe {
    spec: PipeSpec,
    rng: SimRng,
    flight: VecDeque<Piece>,
    inbox: BytesMut,
    last_at: Duration,
    /// Bytes accepted from the writer.
    written: u64,
    /// Bytes taken by the reader.
    consumed: u64,
    fin_written: bool,
    fin_delivered: bool,
    /// When the reader learns of a reset.
    reset_at: Option<Duration>,
    reset_visible: bool,
    reset_taken: bool,
    markers: VecDeque<(u64, u64)>,
    reached: Vec<(u64, Duration)>,
}

impl Pipe {
    pub fn new(spec: PipeSpec, rng: SimRng) -> Self {
        Self {
            spec,
            rng,
            flight: VecDeque::new(),
            inbox: BytesMut::new(),
            last_at: Duration::ZERO,
            written: 0,
            consumed: 0,
            fin_written: false,
            fin_delivered: false,
            reset_at: None,
            reset_visible: false,
            reset_taken: false,
            markers: VecDeque::new(),
            reached: Vec::new(),
        }
    }

    /// Bytes the writer may write now.
    pub fn room(&self) -> usize {
        if self.fin_written || self.reset_at.is_some() {
            return 0;
        }
        let held = self.written - self.consumed;
        self.spec.capacity.saturating_sub(held as usize)
    }

    /// Whether the writer may still write (no FIN, no reset).
    pub fn is_writable(&self) -> bool {
        !self.fin_written && self.reset_at.is_none()
    }

    pub fn is_reset(&self) -> bool {
        self.reset_at.is_some()
    }

    /// Bytes between writer and reader now.
    pub fn held(&self) -> usize {
        (self.written - self.consumed) as usize
    }

    /// Bytes taken by the reader so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Writes as much of `bytes` as there is room for; returns how many bytes were taken.
    pub fn write(&mut self, bytes: &Bytes, now: Duration) -> usize {
        let n = bytes.len().min(self.room());
        if n == 0 {
            return 0;
        }
        let mut rest = bytes.slice(..n);
        let chunking = match self.spec.chunking {
            Chunking::Mixed { max } => match self.rng.below(3) {
                0 => Chunking::Whole,
                1 => Chunking::Bytes1,
                _ => Chunking::Random { max },
            },
            other => other,
        };
        while !rest.is_empty() {
            let take = match chunking {
                Chunking::Whole | Chunking::Mixed { .. } => rest.len(),
                Chunking::Bytes1 => 1,
                Chunking::Random { max } => self.rng.between(1, max.max(1) as u64) as usize,
            }
            .min(rest.len());
            let piece = rest.split_to(take);
            let at = self.arrival(now);
            self.flight.push_back(Piece {
                at,
                bytes: piece,
                fin: false,
            });
        }
        self.written += n as u64;
        n
    }

    /// Ends the stream after the bytes written so far.
    pub fn finish(&mut self, now: Duration) {
        if self.fin_written || self.reset_at.is_some() {
            return;
        }
        self.fin_written = true;
        let at = self.arrival(now);
        self.flight.push_back(Piece {
            at,
            bytes: Bytes::new(),
            fin: true,
        });
    }

    /// Breaks the stream: everything in flight or unread is lost, and the reader learns of it
    /// after the latency.
    pub fn reset(&mut self, now: Duration) {
        if self.reset_at.is_some() {
            return;
        }
        let at = now + self.spec.latency.sample(&mut self.rng);
        self.reset_at = Some(at);
        self.flight.clear();
        self.inbox.clear();
        self.markers.clear();
    }

    fn arrival(&mut self, now: Duration) -> Duration {
        let at = (now + self.spec.latency.sample(&mut self.rng)).max(self.last_at);
        self.last_at = at;
        at
    }

    /// When the next piece (or the news of a reset) reaches the reader.
    pub fn next_arrival(&self) -> Option<Duration> {
        match self.reset_at {
            Some(at) if !self.reset_visible => Some(at),
            Some(_) => None,
            None => self.flight.front().map(|p| p.at),
        }
    }

    /// Delivers the next piece if it is due; true if something was delivered.
    pub fn deliver_one(&mut self, now: Duration) -> bool {
        if let Some(at) = self.reset_at {
            if at <= now && !self.reset_visible {
                self.reset_visible = true;
                return true;
            }
            return false;
        }
        match self.flight.front() {
            Some(p) if p.at <= now => {}
            _ => return false,
        }
        let Some(piece) = self.flight.pop_front() else {
            return false;
        };
        if piece.fin {
            self.fin_delivered = true;
        } else {
            self.inbox.extend_from_slice(&piece.bytes);
        }
        true
    }

    /// Whether a read would return something other than [`Read::WouldBlock`].
    pub fn readable(&self) -> bool {
        match self.reset_at {
            Some(_) => self.reset_visible && !self.reset_taken,
            None => !self.inbox.is_empty() || self.fin_delivered,
        }
    }

    /// True once when the reader learns that the connection was reset: readers that are not
    /// reading (backpressure) still learn of it, as a socket reports an error.
    pub fn take_reset(&mut self) -> bool {
        if self.reset_visible && !self.reset_taken {
            self.reset_taken = true;
            return true;
        }
        false
    }

    /// Reads up to `max` delivered bytes.
    pub fn read(&mut self, max: usize, now: Duration) -> Read {
        if self.reset_at.is_some() {
            return if self.take_reset() {
                Read::Reset
            } else {
                Read::WouldBlock
            };
        }
        if !self.inbox.is_empty() {
            let n = self.inbox.len().min(max.max(1));
            let data = self.inbox.split_to(n).freeze();
            self.consumed += n as u64;
            while let Some(&(offset, id)) = self.markers.front() {
                if offset > self.consumed {
                    break;
                }
                self.markers.pop_front();
                self.reached.push((id, now));
            }
            return Read::Data(data);
        }
        if self.fin_delivered {
            Read::Eof
        } else {
            Read::WouldBlock
        }
    }

    /// Asks to be told (see [`Pipe::take_reached`]) when the reader has consumed the stream up
    /// to `offset`. Offsets must be given in increasing order.
    pub fn mark(&mut self, offset: u64, id: u64, now: Duration) {
        if self.reset_at.is_some() {
            return;
        }
        if offset <= self.consumed {
            self.reached.push((id, now));
        } else {
            self.markers.push_back((offset, id));
        }
    }

    /// Markers reached since the last call, with the time the reader consumed them.
    pub fn take_reached(&mut self) -> Vec<(u64, Duration)> {
        std::mem::take(&mut self.reached)
    }
}

/// The bytes a writer has queued for a pipe and not yet written: what a program keeps in its
/// own buffers while the socket is full. Offsets count from the start of the stream.
#[derive(Debug, Default)]
pub struct SendQueue {
    pending: VecDeque<Bytes>,
    pending_len: usize,
    total: u64,
}

impl SendQueue {
    /// Queues bytes; returns the stream offset just after them.
    pub fn push(&mut self, bytes: Bytes) -> u64 {
        self.total += bytes.len() as u64;
        self.pending_len += bytes.len();
        if !bytes.is_empty() {
            self.pending.push_back(bytes);
        }
        self.total
    }

    /// Bytes queued and not yet written.
    pub fn len(&self) -> usize {
        self.pending_len
    }

    pub fn is_empty(&self) -> bool {
        self.pending_len == 0
    }

    /// The stream offset after everything queued so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Writes what the pipe takes; true if anything was written.
    pub fn flush(&mut self, pipe: &mut Pipe, now: Duration) -> bool {
        let mut progress = false;
        while let Some(front) = self.pending.front_mut() {
            let n = pipe.write(front, now);
            if n == 0 {
                break;
            }
            progress = true;
            self.pending_len -= n;
            if n == front.len() {
                self.pending.pop_front();
            } else {
                let _ = front.split_to(n);
                break;
            }
        }
        progress
    }

    /// Drops everything queued (the connection is gone).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.pending_len = 0;
    }
}

/// A connection: two pipes.
#[derive(Debug)]
pub struct Link {
    /// From the side that opened the connection (the client, or the proxy to a cluster).
    pub up: Pipe,
    /// Towards the side that opened it.
    pub down: Pipe,
}

impl Link {
    pub fn new(up: PipeSpec, down: PipeSpec, rng: &mut SimRng) -> Self {
        Self {
            up: Pipe::new(up, rng.fork()),
            down: Pipe::new(down, rng.fork()),
        }
    }

    /// Breaks both directions.
    pub fn reset(&mut self, now: Duration) {
        self.up.reset(now);
        self.down.reset(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe(chunking: Chunking, capacity: usize) -> Pipe {
        Pipe::new(
            PipeSpec {
                latency: Latency::millis(1, 5),
                chunking,
                capacity,
            },
            SimRng::new(3),
        )
    }

    fn drain(p: &mut Pipe) -> (Vec<u8>, usize, bool) {
        let mut got = Vec::new();
        let mut reads = 0;
        let mut t = Duration::ZERO;
        let mut eof = false;
        while let Some(at) = p.next_arrival() {
            t = t.max(at);
            assert!(p.deliver_one(t));
            match p.read(usize::MAX, t) {
                Read::Data(b) => {
                    got.extend_from_slice(&b);
                    reads += 1;
                }
                Read::Eof => eof = true,
                other => panic!("{other:?}"),
            }
        }
        (got, reads, eof)
    }

    #[test]
    fn order_kept_whatever_the_cutting() {
        let data = Bytes::from((0..=255u8).collect::<Vec<_>>());
        for (chunking, pieces) in [
            (Chunking::Whole, Some(1)),
            (Chunking::Bytes1, Some(256)),
            (Chunking::Random { max: 17 }, None),
        ] {
            let mut p = pipe(chunking, 1 << 20);
            assert_eq!(p.write(&data, Duration::ZERO), 256);
            p.finish(Duration::ZERO);
            let (got, reads, eof) = drain(&mut p);
            assert_eq!(got, data.to_vec());
            assert!(eof);
            if let Some(n) = pieces {
                assert_eq!(reads, n);
            }
        }
    }

    #[test]
    fn capacity_and_markers() {
        let mut p = pipe(Chunking::Whole, 10);
        let mut q = SendQueue::default();
        let end = q.push(Bytes::from_static(b"0123456789abcdef"));
        p.mark(end, 7, Duration::ZERO);
        assert!(q.flush(&mut p, Duration::ZERO));
        assert_eq!(q.len(), 6);
        assert_eq!(p.room(), 0);
        let at = p.next_arrival().unwrap();
        p.deliver_one(at);
        assert_eq!(p.read(4, at), Read::Data(Bytes::from_static(b"0123")));
        assert!(p.take_reached().is_empty());
        assert_eq!(p.room(), 4);
        q.flush(&mut p, at);
        while let Some(t) = p.next_arrival() {
            p.deliver_one(t);
        }
        let _ = p.read(100, at + Duration::from_secs(1));
        assert!(p.take_reached().is_empty());
        q.flush(&mut p, at);
        while let Some(t) = p.next_arrival() {
            p.deliver_one(t);
        }
        let _ = p.read(100, Duration::from_secs(9));
        assert_eq!(p.take_reached(), vec![(7, Duration::from_secs(9))]);
    }

    #[test]
    fn reset_is_reported_once() {
        let mut p = pipe(Chunking::Whole, 100);
        p.write(&Bytes::from_static(b"lost"), Duration::ZERO);
        p.reset(Duration::ZERO);
        let at = p.next_arrival().unwrap();
        assert!(p.deliver_one(at));
        assert_eq!(p.read(10, at), Read::Reset);
        assert_eq!(p.read(10, at), Read::WouldBlock);
        assert_eq!(p.next_arrival(), None);
        assert_eq!(p.room(), 0);
    }
}
