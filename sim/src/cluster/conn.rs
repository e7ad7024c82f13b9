//! One backend connection as a simulated cluster sees it: framing, handshake progress, the
//! stream ids in flight and the answers waiting for their time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::pipe::SendQueue;
use cqlmirror_core::frame::{
    Compression, Direction, Envelope, EnvelopeDecoder, FrameDecoder, FrameEncoder, Header, Opcode,
    ProtocolVersion, SegmentFormat, StreamId,
};

/// An answer waiting for its time.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) stream: i16,
    pub(crate) version: ProtocolVersion,
    pub(crate) opcode: Opcode,
    pub(crate) message: Bytes,
    /// Index of the request in the cluster's log.
    pub(crate) record: usize,
    /// A v5 READY or AUTHENTICATE: segments from here on.
    pub(crate) ends_handshake: bool,
    /// Compress the body (v3/v4 with compression negotiated).
    pub(crate) compress: bool,
    /// A `USE`: the connection's keyspace changes when it completes, as in Cassandra, which
    /// runs a connection's requests concurrently (a request right behind it may not see it).
    pub(crate) use_keyspace: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ClusterConn {
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    pub(crate) recv: BytesMut,
    pub(crate) out: SendQueue,
    pub(crate) compression: Option<Compression>,
    /// The version STARTUP fixed.
    pub(crate) version: Option<ProtocolVersion>,
    pub(crate) ready: bool,
    pub(crate) keyspace: Option<String>,
    pub(crate) in_flight: BTreeSet<i16>,
    pub(crate) pending: BTreeMap<(Duration, u64), Reply>,
    pub(crate) closed: bool,
    /// When the next EVENT is pushed, once the connection REGISTERed.
    pub(crate) next_push: Option<Duration>,
}

impl ClusterConn {
    pub(crate) fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(
                EnvelopeDecoder::new(256 * 1024 * 1024).expecting(Direction::Request),
            ),
            encoder: FrameEncoder::new(),
            recv: BytesMut::new(),
            out: SendQueue::default(),
            compression: None,
            version: None,
            ready: false,
            keyspace: None,
            in_flight: BTreeSet::new(),
            pending: BTreeMap::new(),
            closed: false,
            next_push: None,
        }
    }

    pub(crate) fn decode(&mut self) -> Result<Option<Envelope>, cqlmirror_core::DecodeError> {
        self.decoder.decode(&mut self.recv)
    }

    /// Encodes an answer into the send queue; returns the stream offset after it.
    pub(crate) fn send(&mut self, reply: &Reply) -> u64 {
        let header = Header {
            version: reply.version,
            direction: Direction::Response,
            flags: cqlmirror_core::frame::Flags::empty(),
            stream: StreamId(reply.stream),
            opcode: reply.opcode,
            length: 0,
        };
        let mut envelope = Envelope::new(header, reply.message.clone());
        if let (true, Some(c)) = (reply.compress, self.compression) {
            envelope = envelope.compressed(c);
        }
        let mut buf = BytesMut::new();
        self.encoder.encode(&envelope, &mut buf);
        if reply.ends_handshake {
            let format = if self.compression == Some(Compression::Lz4) {
                SegmentFormat::Lz4
            } else {
                SegmentFormat::Uncompressed
            };
            self.encoder.switch_to_segments(format);
            self.decoder.switch_to_segments(format);
        }
        self.in_flight.remove(&reply.stream);
        self.out.push(buf.freeze())
    }

    /// The time of the next answer or EVENT due.
    pub(crate) fn next_due(&self) -> Option<Duration> {
        let answer = self.pending.keys().next().map(|&(at, _)| at);
        match (answer, self.next_push) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Encodes a pushed EVENT (stream -1); returns the stream offset after it.
    pub(crate) fn push_event(&mut self, version: ProtocolVersion, body: Bytes) -> u64 {
        let header = Header {
            version,
            direction: Direction::Response,
            flags: cqlmirror_core::frame::Flags::empty(),
            stream: StreamId::EVENT,
            opcode: Opcode::EVENT,
            length: 0,
        };
        let mut buf = BytesMut::new();
        self.encoder.encode(&Envelope::new(header, body), &mut buf);
        self.out.push(buf.freeze())
    }
}
