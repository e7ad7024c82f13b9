//! The per-connection state of a session: framing, queued bytes and, for the clusters, the
//! connection's progress and its in-flight stream ids.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::config::{Endpoint, Upstream};
use crate::frame::{
    Direction, Envelope, EnvelopeDecoder, FrameDecoder, FrameEncoder, Framing, HEADER_LEN, Header,
    SegmentFormat,
};
use crate::session::outbox::Outbox;
use crate::session::request::RequestId;
use crate::session::streams::StreamTable;
use crate::session::{Action, FailureKind, Peer};

/// Writes one envelope to an outbox in the connection's framing: plain envelopes are queued as
/// header plus the shared body (no copy of large bodies); segments are encoded in place.
/// The body is `head` then `body` (`head` usually empty, see [`Outgoing`](super::request::Outgoing)),
/// and `header` carries their joint length.
fn write_envelope(
    encoder: &mut FrameEncoder,
    outbox: &mut Outbox,
    header: Header,
    head: &[u8],
    body: &Bytes,
) {
    match encoder.framing() {
        Framing::Envelopes => {
            let mut raw = [0u8; HEADER_LEN];
            header.write(&mut raw);
            outbox.push_frame(raw, head, body);
        }
        Framing::Segments(_) => {
            let buf = outbox.buffer();
            let before = buf.len();
            if head.is_empty() {
                encoder.encode(&Envelope::new(header, body.clone()), buf);
            } else {
                encoder.encode_parts(&header, head, body, buf);
            }
            let added = buf.len() - before;
            outbox.appended(added);
        }
    }
}

fn segment_format(lz4: bool) -> SegmentFormat {
    if lz4 {
        SegmentFormat::Lz4
    } else {
        SegmentFormat::Uncompressed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Open,
    /// A close was requested after what is queued.
    Closing,
    Closed,
}

/// The client's connection.
#[derive(Debug)]
pub(crate) struct ClientLeg {
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    pub(crate) outbox: Outbox,
    state: ClientState,
}

impl ClientLeg {
    pub(crate) fn new(max_frame: usize) -> Self {
        Self {
            decoder: FrameDecoder::new(
                EnvelopeDecoder::new(max_frame).expecting(Direction::Request),
            ),
            encoder: FrameEncoder::new(),
            outbox: Outbox::default(),
            state: ClientState::Open,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state == ClientState::Open
    }

    pub(crate) fn closing(&mut self) {
        self.state = ClientState::Closing;
    }

    pub(crate) fn closed(&mut self) {
        self.state = ClientState::Closed;
        self.outbox.clear();
    }

    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Envelope>, crate::DecodeError> {
        self.decoder.decode(buf)
    }

    /// After an unsupported version: the version and stream id to refuse (see
    /// [`FrameDecoder::peek_refusal`]).
    pub(crate) fn peek_refusal(&self, buf: &[u8]) -> Option<crate::frame::Refusal> {
        self.decoder.peek_refusal(buf)
    }

    /// Whether a frame the client started is incomplete, `buf` being what is left of the
    /// receive buffer.
    pub(crate) fn has_partial(&self, buf: &[u8]) -> bool {
        !buf.is_empty() || self.decoder.has_partial()
    }

    pub(crate) fn is_segmented(&self) -> bool {
        self.decoder.is_segmented()
    }

    /// Queues a response; dropped if the client is gone.
    pub(crate) fn send(&mut self, header: Header, body: &Bytes) {
        if self.state != ClientState::Closed {
            write_envelope(&mut self.encoder, &mut self.outbox, header, &[], body);
        }
    }

    /// v5: from now on both directions are segments.
    pub(crate) fn switch_to_segments(&mut self, lz4: bool) {
        self.decoder.switch_to_segments(segment_format(lz4));
        self.encoder.switch_to_segments(segment_format(lz4));
    }

    pub(crate) fn is_plain(&self) -> bool {
        self.encoder.framing() == Framing::Envelopes
    }
}

/// What an in-flight stream id of a cluster connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The cluster's part of a client request.
    Request(RequestId),
    /// A PREPARE the proxy sends to repair an UNPREPARED answer to this request.
    Reprepare(RequestId),
    /// The proxy's own login (its credentials for that cluster, `--target-username`) during
    /// this STARTUP request.
    Login(RequestId),
    /// The session's own read of a topology table (see `topology.rs`).
    Topology(crate::topology::SystemTable),
    /// A read of the nodes' schema versions after this schema change (see `agreement.rs`).
    Agreement(RequestId, crate::session::agreement::VersionRead),
    /// A step of the session's own handshake on a connection it opened again (see
    /// `reconnect.rs`).
    Rejoin(crate::session::reconnect::Step),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub(crate) purpose: Purpose,
    pub(crate) deadline: Instant,
    /// Answered by a timeout already; the id stays taken until the late answer arrives.
    pub(crate) timed_out: bool,
}

/// How far the connection to a cluster got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Connecting,
    Open,
    Failed(FailureKind),
    /// Closed by the session.
    Shut,
}

/// Where the protocol handshake with a cluster stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// No STARTUP yet.
    Idle,
    /// STARTUP sent.
    Starting,
    /// The cluster wants the client's credentials (relayed AUTH_RESPONSE).
    AwaitingClientAuth,
    /// The proxy sent its own credentials.
    LoggingIn,
    Ready,
}

/// A cluster connection.
#[derive(Debug)]
pub(crate) struct UpstreamLeg {
    pub(crate) which: Upstream,
    pub(crate) link: Link,
    pub(crate) handshake: Handshake,
    decoder: FrameDecoder,
    encoder: FrameEncoder,
    pub(crate) outbox: Outbox,
    pub(crate) streams: StreamTable<InFlight>,
    /// Ids whose requests timed out and are still unanswered.
    pub(crate) timed_out: usize,
    /// The node the connection goes to.
    pub(crate) endpoint: Option<crate::config::Endpoint>,
    /// A connection the session opened again after the previous one failed: until its own
    /// handshake is done, requests do not wait for it (they are missed, see `reconnect.rs`).
    pub(crate) rejoining: bool,
}

impl UpstreamLeg {
    pub(crate) fn new(which: Upstream, max_frame: usize) -> Self {
        Self {
            which,
            link: Link::Connecting,
            handshake: Handshake::Idle,
            decoder: FrameDecoder::new(
                EnvelopeDecoder::new(max_frame).expecting(Direction::Response),
            ),
            encoder: FrameEncoder::new(),
            outbox: Outbox::default(),
            streams: StreamTable::default(),
            timed_out: 0,
            endpoint: None,
            rejoining: false,
        }
    }

    /// A new connection to the same cluster, replacing one that failed: fresh framing (v5
    /// switches to segments again after its handshake), no queued bytes, no stream ids.
    pub(crate) fn rejoin(which: Upstream, max_frame: usize, endpoint: Endpoint) -> Self {
        let mut leg = Self::new(which, max_frame);
        leg.endpoint = Some(endpoint);
        leg.rejoining = true;
        leg.handshake = Handshake::Starting;
        leg
    }

    /// Whether the connection failed (not closed by the session): one to open again.
    pub(crate) fn is_failed(&self) -> bool {
        matches!(self.link, Link::Failed(_))
    }

    pub(crate) fn connected(&mut self) {
        if self.link == Link::Connecting {
            self.link = Link::Open;
        }
    }

    /// Whether requests can be queued to it (bytes wait while it connects).
    pub(crate) fn is_usable(&self) -> bool {
        matches!(self.link, Link::Connecting | Link::Open)
    }

    /// Whether the handshake with it completed and it is still there.
    pub(crate) fn is_ready(&self) -> bool {
        self.is_usable() && self.handshake == Handshake::Ready
    }

    /// Requests in flight that have not timed out.
    pub(crate) fn live_in_flight(&self) -> usize {
        self.streams.len().saturating_sub(self.timed_out)
    }

    pub(crate) fn is_readable(&self) -> bool {
        self.link == Link::Open
    }

    /// The failure a request meets on this connection when it is not usable.
    pub(crate) fn failure(&self) -> FailureKind {
        match self.link {
            Link::Failed(kind) => kind,
            Link::Shut => FailureKind::Closed,
            // Its handshake is the session's own, after a failure: the request meets that.
            Link::Connecting | Link::Open if self.rejoining => FailureKind::Closed,
            Link::Connecting | Link::Open => FailureKind::Refused,
        }
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        match self.link {
            Link::Open => self.outbox.pop(),
            _ => None,
        }
    }

    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Envelope>, crate::DecodeError> {
        self.decoder.decode(buf)
    }

    /// Queues a request whose body is `head` then `body` (`header` has their joint length).
    pub(crate) fn send(&mut self, header: Header, head: &[u8], body: &Bytes) {
        write_envelope(&mut self.encoder, &mut self.outbox, header, head, body);
    }

    pub(crate) fn switch_to_segments(&mut self, lz4: bool) {
        if self.encoder.framing() == Framing::Envelopes {
            self.decoder.switch_to_segments(segment_format(lz4));
            self.encoder.switch_to_segments(segment_format(lz4));
        }
    }

    /// Marks the connection failed and hands back everything that was in flight on it.
    pub(crate) fn fail(&mut self, kind: FailureKind) -> Vec<InFlight> {
        if matches!(self.link, Link::Connecting | Link::Open) {
            self.link = Link::Failed(kind);
        }
        self.outbox.clear();
        self.timed_out = 0;
        self.streams.drain().map(|(_, f)| f).collect()
    }

    /// Closes a connection the session no longer needs; the action to give the driver, if
    /// the connection is still there.
    pub(crate) fn shut(&mut self) -> Option<Action> {
        let was = self.link;
        self.link = Link::Shut;
        match was {
            Link::Connecting | Link::Open => Some(Action::Close(Peer::of(self.which))),
            Link::Failed(_) | Link::Shut => None,
        }
    }
}
