//! Drives one [`Session`] exactly as a runtime driver does, over simulated connections.
//!
//! After every `handle_*` call it drains the session in the documented order: actions, then
//! transmits for each peer (pulled only while that peer's connection has room, so a peer
//! that does not read holds its bytes in the session's queue, where they count for
//! backpressure), then events, then the timer. It reads from a peer only while
//! [`Session::wants_read`] says so, and at most `max_read` bytes per read.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::config::{Endpoint, Upstream};
use crate::session::{Action, Event, Peer, Session};
use crate::sim::pipe::{Link, Pipe, Read, SendQueue};

/// How far a connection of the session got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Not asked for yet (upstreams before the session's first drain).
    Idle,
    Connecting,
    Open,
    /// The session asked to close it after what is queued.
    Closing,
    Closed,
}

/// The connections of one session: to its client, and to each cluster once connected.
#[derive(Debug)]
pub struct SessionLinks {
    /// `up` carries the client's bytes to the proxy.
    pub client: Link,
    /// `up` carries the proxy's bytes to the cluster.
    pub upstreams: [Option<Link>; 2],
}

fn slot(peer: Peer) -> usize {
    match peer {
        Peer::Client => 0,
        Peer::Source => 1,
        Peer::Target => 2,
    }
}

/// A session and the driver-side state of its three connections.
#[derive(Debug)]
pub struct Host {
    session: Session,
    base: Instant,
    max_read: usize,
    recv: [BytesMut; 3],
    pending: [SendQueue; 3],
    state: [PeerState; 3],
    timer: Option<Instant>,
    connects: Vec<(Upstream, Endpoint)>,
    events: Vec<(Duration, Event)>,
    /// The first time all 32768 source stream ids were in flight.
    source_exhausted_at: Option<Duration>,
    /// The most bytes the session held queued for each peer (client, source, target).
    max_queued: [usize; 3],
    /// When each upstream connection was lost or could not be opened (not closed by the
    /// session).
    lost_at: [Option<Duration>; 2],
    finished_at: Option<Duration>,
}

impl Host {
    /// Wraps a session that was just created; drain it with [`Host::start`].
    pub fn new(session: Session, base: Instant, max_read: usize) -> Self {
        Self {
            session,
            base,
            max_read: max_read.max(1),
            recv: Default::default(),
            pending: Default::default(),
            state: [PeerState::Open, PeerState::Idle, PeerState::Idle],
            timer: None,
            connects: Vec::new(),
            events: Vec::new(),
            source_exhausted_at: None,
            max_queued: [0; 3],
            lost_at: [None; 2],
            finished_at: None,
        }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn state(&self, peer: Peer) -> PeerState {
        self.state[slot(peer)]
    }

    /// Events with the time they were polled.
    pub fn events(&self) -> &[(Duration, Event)] {
        &self.events
    }

    pub fn source_exhausted_at(&self) -> Option<Duration> {
        self.source_exhausted_at
    }

    /// The most bytes queued in the session for `peer` at any drain.
    pub fn max_queued(&self, peer: Peer) -> usize {
        self.max_queued[slot(peer)]
    }

    /// When the connection to `upstream` was lost or refused, if it was.
    pub fn lost_at(&self, upstream: Upstream) -> Option<Duration> {
        self.lost_at[upstream.index()]
    }

    /// When the session said it was finished.
    pub fn finished_at(&self) -> Option<Duration> {
        self.finished_at
    }

    /// The session's timer, as run time.
    pub fn next_timeout(&self) -> Option<Duration> {
        self.timer.map(|t| t.saturating_duration_since(self.base))
    }

    /// Connections the session asked for since the last call.
    pub fn take_connects(&mut self) -> Vec<(Upstream, Endpoint)> {
        std::mem::take(&mut self.connects)
    }

    fn instant(&self, now: Duration) -> Instant {
        self.base + now
    }

    /// The first drain, right after the session was created.
    pub fn start(&mut self, links: &mut SessionLinks, now: Duration) {
        self.drain(links, now);
    }

    /// The connection to `upstream` was established (the link is in `links`).
    pub fn connected(&mut self, upstream: Upstream, links: &mut SessionLinks, now: Duration) {
        let i = slot(Peer::of(upstream));
        if self.state[i] != PeerState::Connecting {
            return;
        }
        self.state[i] = PeerState::Open;
        self.session.handle_connected(upstream, self.instant(now));
        self.drain(links, now);
    }

    /// The connection to `upstream` could not be established.
    pub fn connect_failed(&mut self, upstream: Upstream, links: &mut SessionLinks, now: Duration) {
        let i = slot(Peer::of(upstream));
        if self.state[i] != PeerState::Connecting {
            return;
        }
        self.state[i] = PeerState::Closed;
        self.lost_at[upstream.index()].get_or_insert(now);
        self.session
            .handle_closed(Peer::of(upstream), "connection refused", self.instant(now));
        self.drain(links, now);
    }

    /// Whether a connect still pending for `upstream` is wanted.
    pub fn wants_connection(&self, upstream: Upstream) -> bool {
        self.state[slot(Peer::of(upstream))] == PeerState::Connecting
    }

    /// Fires the session's timer if it is due.
    pub fn on_time(&mut self, links: &mut SessionLinks, now: Duration) -> bool {
        match self.timer {
            Some(t) if t <= self.instant(now) => {
                self.session.handle_timeout(self.instant(now));
                self.drain(links, now);
                true
            }
            _ => false,
        }
    }

    /// Reads, writes and notices closed connections until nothing moves; true if anything
    /// happened.
    pub fn pump(&mut self, links: &mut SessionLinks, now: Duration) -> bool {
        let mut any = false;
        loop {
            let mut progress = false;
            for peer in Peer::ALL {
                progress |= self.read_peer(peer, links, now);
            }
            for peer in Peer::ALL {
                progress |= self.flush(peer, links, now);
            }
            if !progress {
                break;
            }
            any = true;
        }
        any
    }

    fn inbound(peer: Peer, links: &mut SessionLinks) -> Option<&mut Pipe> {
        match peer.upstream() {
            None => Some(&mut links.client.up),
            Some(u) => links.upstreams[u.index()].as_mut().map(|l| &mut l.down),
        }
    }

    fn outbound(peer: Peer, links: &mut SessionLinks) -> Option<&mut Pipe> {
        match peer.upstream() {
            None => Some(&mut links.client.down),
            Some(u) => links.upstreams[u.index()].as_mut().map(|l| &mut l.up),
        }
    }

    fn read_peer(&mut self, peer: Peer, links: &mut SessionLinks, now: Duration) -> bool {
        let i = slot(peer);
        if !matches!(self.state[i], PeerState::Open | PeerState::Closing) {
            return false;
        }
        let Some(pipe) = Self::inbound(peer, links) else {
            return false;
        };
        // A reset is reported even to a reader that is not reading, as a socket error is.
        let reset = pipe.take_reset();
        if reset {
            self.lost(peer, "connection reset by peer", links, now);
            return true;
        }
        if self.state[i] != PeerState::Open || !self.session.wants_read(peer) {
            return false;
        }
        let Some(pipe) = Self::inbound(peer, links) else {
            return false;
        };
        match pipe.read(self.max_read, now) {
            Read::Data(bytes) => {
                self.recv[i].extend_from_slice(&bytes);
                let at = self.instant(now);
                match peer.upstream() {
                    None => {
                        self.session.handle_client_bytes(&mut self.recv[i], at);
                        if self.source_exhausted_at.is_none()
                            && self.session.upstream_in_flight(Upstream::Source) > i16::MAX as usize
                        {
                            self.source_exhausted_at = Some(now);
                        }
                    }
                    Some(u) => self.session.handle_upstream_bytes(u, &mut self.recv[i], at),
                }
                self.drain(links, now);
                true
            }
            Read::Eof => {
                self.lost(peer, "closed by the peer", links, now);
                true
            }
            Read::Reset => {
                self.lost(peer, "connection reset by peer", links, now);
                true
            }
            Read::WouldBlock => false,
        }
    }

    /// The peer's connection ended without the session asking.
    fn lost(&mut self, peer: Peer, reason: &str, links: &mut SessionLinks, now: Duration) {
        let i = slot(peer);
        if self.state[i] == PeerState::Closed {
            return;
        }
        self.state[i] = PeerState::Closed;
        self.pending[i].clear();
        self.recv[i].clear();
        if let Some(u) = peer.upstream() {
            self.lost_at[u.index()].get_or_insert(now);
        }
        // Close our side of the socket too.
        if let Some(pipe) = Self::outbound(peer, links) {
            pipe.finish(now);
        }
        self.session.handle_closed(peer, reason, self.instant(now));
        self.drain(links, now);
    }

    /// Writes what the peer's connection takes, pulling from the session only when the
    /// driver-side buffer is empty; closes after the last byte when the session asked.
    fn flush(&mut self, peer: Peer, links: &mut SessionLinks, now: Duration) -> bool {
        let i = slot(peer);
        if !matches!(self.state[i], PeerState::Open | PeerState::Closing) {
            return false;
        }
        let Some(pipe) = Self::outbound(peer, links) else {
            return false;
        };
        let mut progress = false;
        let mut drained = false;
        loop {
            progress |= self.pending[i].flush(pipe, now);
            if !self.pending[i].is_empty() || pipe.room() == 0 {
                break;
            }
            match self.session.poll_transmit(peer) {
                Some(bytes) => {
                    self.pending[i].push(bytes);
                    progress = true;
                }
                None => {
                    drained = true;
                    break;
                }
            }
        }
        if self.state[i] == PeerState::Closing && drained {
            pipe.finish(now);
            self.state[i] = PeerState::Closed;
            progress = true;
        }
        progress
    }

    /// The drain after every input: actions, transmits, events, timer.
    fn drain(&mut self, links: &mut SessionLinks, now: Duration) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect { upstream, endpoint } => {
                    self.state[slot(Peer::of(upstream))] = PeerState::Connecting;
                    self.connects.push((upstream, endpoint));
                }
                Action::Close(peer) => {
                    let i = slot(peer);
                    self.state[i] = match self.state[i] {
                        PeerState::Open => PeerState::Closing,
                        PeerState::Idle | PeerState::Connecting => PeerState::Closed,
                        other => other,
                    };
                }
            }
        }
        for peer in Peer::ALL {
            self.flush(peer, links, now);
        }
        for peer in Peer::ALL {
            let q = self.session.queued(peer);
            let m = &mut self.max_queued[slot(peer)];
            *m = (*m).max(q);
        }
        while let Some(event) = self.session.poll_event() {
            self.events.push((now, event));
        }
        self.timer = self.session.poll_timeout();
        if self.session.is_finished() && self.finished_at.is_none() {
            self.finished_at = Some(now);
        }
    }
}
