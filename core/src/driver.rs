//! What every runtime does with a session, written once: receive buffers, partially written
//! bytes, and the order in which the session's outputs are drained.
//!
//! A runtime owns the sockets and waits for readiness; on each wake-up it calls
//! [`Driver::on_readable`] / [`Driver::on_writable`] with closures that perform one
//! non-blocking read or vectored write on the socket, and carries out what
//! [`Driver::poll_connect`], [`Driver::poll_close`] and [`Driver::poll_event`] return. It
//! registers interest in readability only while [`Driver::wants_read`] and in writability only
//! while [`Driver::wants_write`]. The sockets stay in the runtime; no I/O happens here.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::config::{Endpoint, Upstream};
use crate::nonblocking::{self, READ_CHUNK};
use crate::session::{Action, Event, Peer, Session};

thread_local! {
    /// The chunk reads land in (see [`Driver::on_readable`]); taken while in use.
    static SCRATCH: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}

/// Reads per wake-up before yielding to the other peers, so one busy socket cannot starve them.
const READS_PER_WAKE: usize = 8;
/// Bytes pulled from the session ahead of the socket; the rest stays counted in the session's
/// queues, where it drives backpressure.
const SEND_AHEAD: usize = 256 * 1024;

#[derive(Debug, Default)]
struct Connection {
    recv: BytesMut,
    send: VecDeque<Bytes>,
    send_len: usize,
    /// Flush what is queued, then close.
    closing: bool,
    /// Established (upstreams start unconnected; the client starts connected).
    open: bool,
    /// Closed or handed to the runtime for closing.
    gone: bool,
}

/// A session with the buffers of its three connections.
#[derive(Debug)]
pub struct Driver {
    session: Session,
    conns: [Connection; 3],
    connects: VecDeque<(Upstream, Endpoint)>,
    closes: VecDeque<Peer>,
}

impl Driver {
    /// Wraps a session whose client connection was just accepted.
    pub fn new(session: Session) -> Self {
        let mut driver = Self {
            session,
            conns: Default::default(),
            connects: VecDeque::new(),
            closes: VecDeque::new(),
        };
        driver.conns[0].open = true;
        driver.pump();
        driver
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// `peer`'s socket is readable: reads with `read` (one non-blocking read per call,
    /// returning `WouldBlock` when drained) and feeds the session.
    pub fn on_readable(
        &mut self,
        peer: Peer,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
        now: Instant,
    ) {
        // Reads land in a scratch chunk and the receive buffer takes only what arrived: every
        // wake-up ends with a read that finds nothing, and reading straight into the buffer
        // left an empty 16 KiB chunk in it, held by every idle connection. The chunk is the
        // thread's, zeroed once (on the stack it was zeroed at every wake-up).
        let mut chunk = SCRATCH
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0; READ_CHUNK].into_boxed_slice());
        for _ in 0..READS_PER_WAKE {
            if !self.wants_read(peer) {
                break;
            }
            match nonblocking::read(&mut chunk, &mut read) {
                nonblocking::Read::Got(got) => {
                    let buf = &mut self.conns[peer.index()].recv;
                    buf.extend_from_slice(&chunk[..got]);
                    match peer.upstream() {
                        None => self.session.handle_client_bytes(buf, now),
                        Some(upstream) => self.session.handle_upstream_bytes(upstream, buf, now),
                    }
                    // Hold no memory for an idle connection: whole frames were split off.
                    if self.conns[peer.index()].recv.is_empty() {
                        self.conns[peer.index()].recv = BytesMut::new();
                    }
                    self.pump();
                }
                nonblocking::Read::Drained => break,
                nonblocking::Read::Closed(reason) => {
                    self.lost(peer, &reason, now);
                    break;
                }
            }
        }
        let _ = SCRATCH.try_with(|scratch| scratch.set(Some(chunk)));
    }

    /// `peer`'s socket may accept bytes: writes with `write` (one non-blocking vectored write
    /// per call) until everything queued is written or the socket is full.
    pub fn on_writable(
        &mut self,
        peer: Peer,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        now: Instant,
    ) {
        loop {
            self.refill(peer);
            let conn = &mut self.conns[peer.index()];
            if conn.send.is_empty() || conn.gone || !conn.open {
                break;
            }
            match nonblocking::write(&mut conn.send, &mut write) {
                nonblocking::Write::Wrote(written) => conn.send_len -= written,
                nonblocking::Write::Full => break,
                nonblocking::Write::Closed(reason) => {
                    self.lost(peer, &reason, now);
                    break;
                }
            }
        }
        self.pump();
    }

    /// The connection to `upstream` is established.
    pub fn on_connected(&mut self, upstream: Upstream, now: Instant) {
        self.conns[Peer::of(upstream).index()].open = true;
        self.session.handle_connected(upstream, now);
        self.pump();
    }

    /// The connection to `upstream` could not be established.
    pub fn on_connect_failed(&mut self, upstream: Upstream, error: &str, now: Instant) {
        self.lost(Peer::of(upstream), error, now);
    }

    /// The timer armed from [`Driver::poll_timeout`] fired.
    pub fn on_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        self.pump();
    }

    /// The proxy is shutting down (see [`Session::handle_shutdown`]).
    pub fn on_shutdown(&mut self, now: Instant) {
        self.session.handle_shutdown(now);
        self.pump();
    }

    fn lost(&mut self, peer: Peer, reason: &str, now: Instant) {
        let conn = &mut self.conns[peer.index()];
        if conn.gone {
            return;
        }
        conn.gone = true;
        conn.send.clear();
        conn.send_len = 0;
        conn.recv = BytesMut::new();
        self.closes.push_back(peer);
        self.session.handle_closed(peer, reason, now);
        self.pump();
    }

    /// Drains the session's outputs in the documented order.
    fn pump(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect { upstream, endpoint } => {
                    // A connection opened again after the previous one failed (see
                    // `session/reconnect.rs`): the old socket, if still there, is closed
                    // first, and nothing of it (partial frames, unwritten bytes) carries over.
                    let peer = Peer::of(upstream);
                    let conn = &mut self.conns[peer.index()];
                    if conn.open && !conn.gone {
                        self.closes.push_back(peer);
                    }
                    *conn = Connection::default();
                    self.connects.push_back((upstream, endpoint))
                }
                Action::Close(peer) => self.conns[peer.index()].closing = true,
            }
        }
        for peer in Peer::ALL {
            self.refill(peer);
            let conn = &mut self.conns[peer.index()];
            // A connection that never opened has nothing to flush.
            let flushed = conn.send.is_empty() || !conn.open;
            if conn.closing && flushed && !conn.gone {
                conn.gone = true;
                self.closes.push_back(peer);
            }
        }
    }

    /// Pulls bytes from the session into the connection's send queue, up to [`SEND_AHEAD`].
    fn refill(&mut self, peer: Peer) {
        let conn = &mut self.conns[peer.index()];
        if conn.gone || !conn.open {
            return;
        }
        while conn.send_len < SEND_AHEAD {
            let Some(bytes) = self.session.poll_transmit(peer) else {
                break;
            };
            conn.send_len += bytes.len();
            conn.send.push_back(bytes);
        }
    }

    // ---- what the runtime must do ------------------------------------------------------

    /// A backend connection to open; report with [`Driver::on_connected`] or
    /// [`Driver::on_connect_failed`]. Take [`Driver::poll_close`] first: a connection opened
    /// again replaces one whose socket is to be closed.
    pub fn poll_connect(&mut self) -> Option<(Upstream, Endpoint)> {
        self.connects.pop_front()
    }

    /// A socket to close now (everything for it was written) and stop polling.
    pub fn poll_close(&mut self) -> Option<Peer> {
        self.closes.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        // Straight from the session's queue: one move less per event.
        self.session.poll_event()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// Whether to wait for `peer` to become readable.
    pub fn wants_read(&self, peer: Peer) -> bool {
        let conn = &self.conns[peer.index()];
        conn.open && !conn.gone && self.session.wants_read(peer)
    }

    /// Whether to wait for `peer` to become writable.
    pub fn wants_write(&self, peer: Peer) -> bool {
        let conn = &self.conns[peer.index()];
        conn.open && !conn.gone && (!conn.send.is_empty() || self.session.has_transmit(peer))
    }

    /// True when the session ended and every socket was handed back for closing.
    pub fn is_finished(&self) -> bool {
        self.session.is_finished()
            && self.connects.is_empty()
            && self.closes.is_empty()
            && self.conns.iter().all(|c| c.gone || !c.open)
    }
}
