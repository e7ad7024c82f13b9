//! Drives one [`Session`] over simulated connections, in one of two ways:
//!
//! - [`Engine::Session`]: exactly as the run loop in the session's docs says. After every
//!   `handle_*` call it drains the session in the documented order: actions, then transmits
//!   for each peer (pulled only while that peer's connection has room, so a peer that does
//!   not read holds its bytes in the session's queue, where they count for backpressure),
//!   then events, then the timer. It reads from a peer only while [`Session::wants_read`]
//!   says so, and at most `max_read` bytes per read.
//! - [`Engine::Driver`]: through the runtimes' shared plumbing, [`cqlmirror_core::driver::Driver`],
//!   with the simulated connections behind its read and write callbacks (short reads and
//!   writes, `WouldBlock`, resets), as `proxy-smol` and `proxy-tokio` use it.

use std::io::{self, IoSlice};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::pipe::{Link, Pipe, Read, SendQueue};
use cqlmirror_core::config::{Endpoint, Upstream};
use cqlmirror_core::driver::Driver;
use cqlmirror_core::session::{Action, Event, Peer, Session};

/// How the session is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Directly, following the session's documented run loop.
    #[default]
    Session,
    /// Through [`cqlmirror_core::driver::Driver`], as the runtimes do.
    Driver,
}

/// The driving state of the chosen engine.
#[derive(Debug)]
enum Driving {
    Session(Box<Direct>),
    Driver(Box<Driver>),
}

/// The session engine's state: the session, and per peer its receive buffer and the bytes
/// pulled from it and not yet written.
#[derive(Debug)]
struct Direct {
    session: Session,
    recv: [BytesMut; 3],
    pending: [SendQueue; 3],
    timer: Option<Instant>,
}

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

/// A session and the driver-side state of its three connections.
#[derive(Debug)]
pub struct Host {
    driving: Driving,
    base: Instant,
    max_read: usize,
    state: [PeerState; 3],
    connects: Vec<(Upstream, Endpoint)>,
    events: Vec<(Duration, Event)>,
    /// The first time all 32768 source stream ids were in flight.
    source_exhausted_at: Option<Duration>,
    /// The most bytes the session held queued for each peer (client, source, target).
    max_queued: [usize; 3],
    /// The most bytes of cluster answers the session held in its table of requests, when
    /// tracked (it walks the table at every drain).
    max_held_answers: usize,
    /// The most stream ids in flight on each cluster connection at any drain.
    max_upstream_in_flight: [usize; 2],
    track_held_answers: bool,
    /// When each upstream connection was lost or could not be opened (not closed by the
    /// session).
    lost_at: [Option<Duration>; 2],
    finished_at: Option<Duration>,
    /// Times the driver was offered room to write, wrote nothing, and still wanted to write:
    /// a runtime waiting for writability would spin.
    idle_writes: u64,
}

impl Host {
    /// Wraps a session that was just created; drain it with [`Host::start`].
    pub fn new(session: Session, engine: Engine, base: Instant, max_read: usize) -> Self {
        let driving = match engine {
            Engine::Session => Driving::Session(Box::new(Direct {
                session,
                recv: Default::default(),
                pending: Default::default(),
                timer: None,
            })),
            Engine::Driver => Driving::Driver(Box::new(Driver::new(session))),
        };
        Self {
            driving,
            base,
            max_read: max_read.max(1),
            state: [PeerState::Open, PeerState::Idle, PeerState::Idle],
            connects: Vec::new(),
            events: Vec::new(),
            source_exhausted_at: None,
            max_queued: [0; 3],
            max_held_answers: 0,
            max_upstream_in_flight: [0; 2],
            track_held_answers: false,
            lost_at: [None; 2],
            finished_at: None,
            idle_writes: 0,
        }
    }

    pub fn session(&self) -> &Session {
        match &self.driving {
            Driving::Session(direct) => &direct.session,
            Driving::Driver(driver) => driver.session(),
        }
    }

    pub fn state(&self, peer: Peer) -> PeerState {
        self.state[peer.index()]
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
        self.max_queued[peer.index()]
    }

    /// The most stream ids in flight on the connection to `upstream` at any drain.
    pub fn max_upstream_in_flight(&self, upstream: Upstream) -> usize {
        self.max_upstream_in_flight[upstream.index()]
    }

    /// Tracks [`Host::max_held_answers`] from now on.
    pub fn track_held_answers(&mut self) {
        self.track_held_answers = true;
    }

    /// The most bytes of cluster answers the session held at any drain
    /// ([`Session::held_answer_bytes`]), if tracked.
    pub fn max_held_answers(&self) -> usize {
        self.max_held_answers
    }

    /// When the connection to `upstream` was lost or refused, if it was.
    pub fn lost_at(&self, upstream: Upstream) -> Option<Duration> {
        self.lost_at[upstream.index()]
    }

    /// Times the driver engine's driver wanted to write, had room, and wrote nothing.
    pub fn idle_writes(&self) -> u64 {
        self.idle_writes
    }

    /// When the session said it was finished.
    pub fn finished_at(&self) -> Option<Duration> {
        self.finished_at
    }

    /// The session's timer, as run time.
    pub fn next_timeout(&self) -> Option<Duration> {
        let timer = match &self.driving {
            Driving::Session(direct) => direct.timer,
            Driving::Driver(driver) => driver.poll_timeout(),
        };
        timer.map(|t| t.saturating_duration_since(self.base))
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
        self.after_input(links, now);
    }

    /// Whether a connect still pending for `upstream` is wanted.
    pub fn wants_connection(&self, upstream: Upstream) -> bool {
        self.state[Peer::of(upstream).index()] == PeerState::Connecting
    }

    /// The connection to `upstream` was established (the link is in `links`).
    pub fn connected(&mut self, upstream: Upstream, links: &mut SessionLinks, now: Duration) {
        let i = Peer::of(upstream).index();
        if self.state[i] != PeerState::Connecting {
            return;
        }
        self.state[i] = PeerState::Open;
        let at = self.instant(now);
        match &mut self.driving {
            Driving::Session(direct) => direct.session.handle_connected(upstream, at),
            Driving::Driver(driver) => driver.on_connected(upstream, at),
        }
        self.after_input(links, now);
    }

    /// The connection to `upstream` could not be established.
    pub fn connect_failed(&mut self, upstream: Upstream, links: &mut SessionLinks, now: Duration) {
        let i = Peer::of(upstream).index();
        if self.state[i] != PeerState::Connecting {
            return;
        }
        self.state[i] = PeerState::Closed;
        self.lost_at[upstream.index()].get_or_insert(now);
        let at = self.instant(now);
        match &mut self.driving {
            Driving::Session(direct) => {
                direct
                    .session
                    .handle_closed(Peer::of(upstream), "connection refused", at)
            }
            Driving::Driver(driver) => driver.on_connect_failed(upstream, "connection refused", at),
        }
        self.after_input(links, now);
    }

    /// The proxy shuts down: the session takes no new requests and closes after those in
    /// flight.
    pub fn shutdown(&mut self, links: &mut SessionLinks, now: Duration) {
        let at = self.instant(now);
        match &mut self.driving {
            Driving::Session(direct) => direct.session.handle_shutdown(at),
            Driving::Driver(driver) => driver.on_shutdown(at),
        }
        self.after_input(links, now);
    }

    /// Fires the session's timer if it is due.
    pub fn on_time(&mut self, links: &mut SessionLinks, now: Duration) -> bool {
        let at = self.instant(now);
        if self.next_timeout().is_none_or(|t| t > now) {
            return false;
        }
        match &mut self.driving {
            Driving::Session(direct) => direct.session.handle_timeout(at),
            Driving::Driver(driver) => driver.on_timeout(at),
        }
        self.after_input(links, now);
        true
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
                progress |= self.write_peer(peer, links, now);
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

    fn note_exhaustion(&mut self, now: Duration) {
        if self.source_exhausted_at.is_none()
            && self.session().upstream_in_flight(Upstream::Source) > i16::MAX as usize
        {
            self.source_exhausted_at = Some(now);
        }
    }

    fn read_peer(&mut self, peer: Peer, links: &mut SessionLinks, now: Duration) -> bool {
        let i = peer.index();
        if !matches!(self.state[i], PeerState::Open | PeerState::Closing) {
            return false;
        }
        if matches!(self.driving, Driving::Driver(_)) {
            return self.read_peer_driver(peer, links, now);
        }
        let Some(pipe) = Self::inbound(peer, links) else {
            return false;
        };
        // A reset is reported even to a reader that is not reading, as a socket error is.
        if pipe.take_reset() {
            self.lost(peer, "connection reset by peer", links, now);
            return true;
        }
        if self.state[i] != PeerState::Open || !self.session().wants_read(peer) {
            return false;
        }
        let Some(pipe) = Self::inbound(peer, links) else {
            return false;
        };
        match pipe.read(self.max_read, now) {
            Read::Data(bytes) => {
                let at = self.instant(now);
                if let Driving::Session(direct) = &mut self.driving {
                    direct.recv[i].extend_from_slice(&bytes);
                    match peer.upstream() {
                        None => direct.session.handle_client_bytes(&mut direct.recv[i], at),
                        Some(u) => direct
                            .session
                            .handle_upstream_bytes(u, &mut direct.recv[i], at),
                    }
                }
                if peer == Peer::Client {
                    self.note_exhaustion(now);
                }
                self.after_input(links, now);
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

    fn read_peer_driver(&mut self, peer: Peer, links: &mut SessionLinks, now: Duration) -> bool {
        let at = self.instant(now);
        let max_read = self.max_read;
        let Some(pipe) = Self::inbound(peer, links) else {
            return false;
        };
        let Driving::Driver(driver) = &mut self.driving else {
            return false;
        };
        if !driver.wants_read(peer) || !pipe.readable() {
            return false;
        }
        let mut ended = false;
        driver.on_readable(
            peer,
            |buf| match pipe.read(buf.len().min(max_read), now) {
                Read::Data(bytes) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    Ok(n)
                }
                Read::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
                Read::Eof => {
                    ended = true;
                    Ok(0)
                }
                Read::Reset => {
                    ended = true;
                    Err(io::ErrorKind::ConnectionReset.into())
                }
            },
            at,
        );
        if ended {
            if let Some(u) = peer.upstream() {
                self.lost_at[u.index()].get_or_insert(now);
            }
        }
        if peer == Peer::Client {
            self.note_exhaustion(now);
        }
        self.after_input(links, now);
        true
    }

    /// The peer's connection ended without the session asking (session engine).
    fn lost(&mut self, peer: Peer, reason: &str, links: &mut SessionLinks, now: Duration) {
        let i = peer.index();
        if self.state[i] == PeerState::Closed {
            return;
        }
        self.state[i] = PeerState::Closed;
        if let Some(u) = peer.upstream() {
            self.lost_at[u.index()].get_or_insert(now);
        }
        // Close our side of the socket too.
        if let Some(pipe) = Self::outbound(peer, links) {
            pipe.finish(now);
        }
        let at = self.instant(now);
        if let Driving::Session(direct) = &mut self.driving {
            direct.pending[i].clear();
            direct.recv[i].clear();
            direct.session.handle_closed(peer, reason, at);
        }
        self.after_input(links, now);
    }

    /// Writes what the peer's connection takes. Session engine: pulls from the session only
    /// when the driver-side buffer is empty, and closes after the last byte when the session
    /// asked. Driver engine: lets the driver write while the connection has room.
    fn write_peer(&mut self, peer: Peer, links: &mut SessionLinks, now: Duration) -> bool {
        let i = peer.index();
        if !matches!(self.state[i], PeerState::Open | PeerState::Closing) {
            return false;
        }
        let at = self.instant(now);
        let Some(pipe) = Self::outbound(peer, links) else {
            return false;
        };
        match &mut self.driving {
            Driving::Session(direct) => {
                let mut progress = false;
                let mut drained = false;
                loop {
                    progress |= direct.pending[i].flush(pipe, now);
                    if !direct.pending[i].is_empty() || pipe.room() == 0 {
                        break;
                    }
                    match direct.session.poll_transmit(peer) {
                        Some(bytes) => {
                            direct.pending[i].push(bytes);
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
            Driving::Driver(driver) => {
                let broken = !pipe.is_writable();
                if !driver.wants_write(peer) || (pipe.room() == 0 && !broken) {
                    return false;
                }
                let mut written = 0;
                driver.on_writable(
                    peer,
                    |slices: &[IoSlice<'_>]| {
                        if !pipe.is_writable() {
                            return Err(io::ErrorKind::BrokenPipe.into());
                        }
                        let room = pipe.room();
                        if room == 0 {
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        let mut chunk = BytesMut::new();
                        for s in slices {
                            let take = s.len().min(room - chunk.len());
                            chunk.extend_from_slice(&s[..take]);
                            if chunk.len() == room {
                                break;
                            }
                        }
                        let n = pipe.write(&Bytes::from(chunk), now);
                        written += n;
                        Ok(n)
                    },
                    at,
                );
                self.after_input(links, now);
                if written == 0 && !broken && self.driver_wants_write(peer) {
                    self.idle_writes += 1;
                }
                // A driver that wants to write but writes nothing (not even to learn that the
                // connection broke) makes no progress: that would be a runtime spinning on
                // writable readiness, which the model cannot see, so it does not loop here.
                written > 0 || (broken && !self.driver_wants_write(peer))
            }
        }
    }

    fn driver_wants_write(&self, peer: Peer) -> bool {
        match &self.driving {
            Driving::Driver(driver) => driver.wants_write(peer),
            Driving::Session(_) => false,
        }
    }

    /// After any input: the session engine drains in the documented order (actions,
    /// transmits, events, timer); the driver engine collects what the driver asks for
    /// (connects, closes, events). Both note queue sizes and the end of the session.
    fn after_input(&mut self, links: &mut SessionLinks, now: Duration) {
        match &mut self.driving {
            Driving::Session(direct) => {
                while let Some(action) = direct.session.poll_action() {
                    match action {
                        Action::Connect { upstream, endpoint } => {
                            // A connection opened again: nothing of the old one carries over.
                            let i = Peer::of(upstream).index();
                            if matches!(self.state[i], PeerState::Open | PeerState::Closing) {
                                if let Some(pipe) = Self::outbound(Peer::of(upstream), links) {
                                    pipe.finish(now);
                                }
                            }
                            direct.recv[i].clear();
                            direct.pending[i].clear();
                            self.state[i] = PeerState::Connecting;
                            self.connects.push((upstream, endpoint));
                        }
                        Action::Close(peer) => {
                            let i = peer.index();
                            self.state[i] = match self.state[i] {
                                PeerState::Open => PeerState::Closing,
                                PeerState::Idle | PeerState::Connecting => PeerState::Closed,
                                other => other,
                            };
                        }
                        other => panic!("an action the simulation does not know: {other:?}"),
                    }
                }
                for peer in Peer::ALL {
                    self.write_peer(peer, links, now);
                }
                let Driving::Session(direct) = &mut self.driving else {
                    return;
                };
                while let Some(event) = direct.session.poll_event() {
                    self.events.push((now, event));
                }
                direct.timer = direct.session.poll_timeout();
            }
            Driving::Driver(driver) => {
                // Closes first: a connection opened again replaces the one being closed.
                while let Some(peer) = driver.poll_close() {
                    let i = peer.index();
                    if matches!(self.state[i], PeerState::Open | PeerState::Closing) {
                        if let Some(pipe) = Self::outbound(peer, links) {
                            pipe.finish(now);
                        }
                    }
                    self.state[i] = PeerState::Closed;
                }
                while let Some((upstream, endpoint)) = driver.poll_connect() {
                    self.state[Peer::of(upstream).index()] = PeerState::Connecting;
                    self.connects.push((upstream, endpoint));
                }
                while let Some(event) = driver.poll_event() {
                    self.events.push((now, event));
                }
            }
        }
        for peer in Peer::ALL {
            let q = self.session().queued(peer);
            let m = &mut self.max_queued[peer.index()];
            *m = (*m).max(q);
        }
        for upstream in Upstream::BOTH {
            let n = self.session().upstream_in_flight(upstream);
            let m = &mut self.max_upstream_in_flight[upstream.index()];
            *m = (*m).max(n);
        }
        if self.track_held_answers {
            self.max_held_answers = self
                .max_held_answers
                .max(self.session().held_answer_bytes());
        }
        if self.session().is_finished() && self.finished_at.is_none() {
            self.finished_at = Some(now);
        }
    }
}
