//! When the secondary cluster gets a request: at once, or after what it must come after.
//!
//! Two things hold a request back from the secondary (the target) while the primary already
//! has it:
//!
//! - **The secondary's handshake is not done.** Clients are let in once the primary is ready
//!   (see `handshake.rs`), so a slow target does not keep them from connecting; their requests
//!   wait here until the target is ready, within their timeout.
//! - **Causal order, with `--wait false`.** The client hears the primary's answer before the
//!   secondary is done, and may send a request that depends on it. Cassandra runs a
//!   connection's requests concurrently, so without care the secondary could run them out of
//!   order: an INSERT before the CREATE TABLE it needs, two lightweight transactions swapped.
//!   Plain writes need no order: they carry one client-side timestamp on both clusters, so the
//!   last write wins the same way whatever the order. *Barriers* do: schema and access-control
//!   changes, `USE`, `TRUNCATE`, conditional writes, and statements the proxy does not
//!   recognize (an EXECUTE overtaking its PREPARE needs no barrier: the target's UNPREPARED is
//!   repaired). A barrier goes to the secondary only after every request the client saw
//!   answered before sending it is done there, and any request sent after a barrier was
//!   answered waits for that barrier.
//!
//! Held requests leave in arrival order and their bytes count against `--write-buffer-size`
//! like queued ones, so the queue is bounded. They have no clock of their own: what they wait
//! for is either the secondary's handshake or a request in flight on it, and both have their
//! timeout; a held request's own timeout starts when it is sent. When the secondary fails,
//! every held request fails with it.

use std::collections::VecDeque;
use std::time::Instant;

use crate::config::Upstream;
use crate::frame::{Opcode, ProtocolVersion};
use crate::session::intake::Outgoing;
use crate::session::leg::Purpose;
use crate::session::request::{Outcome, RequestId};
use crate::session::{FailureKind, Session};

/// A request waiting for the secondary.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) id: RequestId,
    pub(crate) opcode: Opcode,
    pub(crate) version: ProtocolVersion,
    pub(crate) out: Outgoing,
    pub(crate) barrier: bool,
    /// How many requests the client had been answered when this one arrived.
    pub(crate) seen: u64,
}

/// Requests waiting for the secondary, and the answered requests it has not finished.
#[derive(Debug, Default)]
pub(crate) struct Order {
    pub(crate) held: VecDeque<Held>,
    pub(crate) held_bytes: usize,
    /// Requests answered to the client so far: the sequence number of the next answer.
    pub(crate) answered: u64,
    /// Answer numbers of requests answered to the client but not done on the secondary.
    unfinished: std::collections::BTreeSet<u64>,
    /// The same, for barriers only.
    unfinished_barriers: std::collections::BTreeSet<u64>,
    /// Set while releasing, so that completions during a release do not release again.
    releasing: bool,
}

impl Order {
    /// Whether a request that arrives now must wait: something is held already (arrival order),
    /// or something answered before it is unfinished on the secondary.
    pub(crate) fn must_wait(&self, barrier: bool) -> bool {
        !self.held.is_empty() || self.blocked(barrier, self.answered)
    }

    fn blocked(&self, barrier: bool, seen: u64) -> bool {
        let set = if barrier {
            &self.unfinished
        } else {
            &self.unfinished_barriers
        };
        set.first().is_some_and(|&answer| answer < seen)
    }

    /// A request was answered to the client while the secondary still works on it.
    pub(crate) fn answered_unfinished(&mut self, answer: u64, barrier: bool) {
        self.unfinished.insert(answer);
        if barrier {
            self.unfinished_barriers.insert(answer);
        }
    }

    /// The secondary finished a request that had been answered as number `answer`.
    pub(crate) fn finished(&mut self, answer: u64) {
        self.unfinished.remove(&answer);
        self.unfinished_barriers.remove(&answer);
    }
}

impl Session {
    /// Holds a request for the secondary.
    pub(super) fn hold(&mut self, held: Held) {
        self.order.held_bytes += held.out.body.len();
        self.order.held.push_back(held);
    }

    /// Sends what may go to the secondary now, in arrival order.
    pub(super) fn release_held(&mut self, now: Instant) {
        let secondary = self.primary.other();
        if self.order.releasing || !self.upstreams[secondary.index()].is_ready() {
            return;
        }
        self.order.releasing = true;
        while let Some(front) = self.order.held.front() {
            if self.order.blocked(front.barrier, front.seen) {
                break;
            }
            let Some(held) = self.order.held.pop_front() else {
                break;
            };
            self.order.held_bytes -= held.out.body.len();
            let sent = self.send_request(
                secondary,
                Purpose::Request(held.id),
                held.opcode,
                held.version,
                &held.out,
                now,
            );
            if let Err(kind) = sent {
                self.leg_done(held.id, secondary, Outcome::Failed(kind), now);
            }
        }
        self.order.releasing = false;
    }

    /// Fails every held request: the secondary failed with `kind`.
    pub(super) fn fail_held(&mut self, kind: FailureKind, now: Instant) {
        let secondary = self.primary.other();
        self.order.held_bytes = 0;
        for held in std::mem::take(&mut self.order.held) {
            self.leg_done(held.id, secondary, Outcome::Failed(kind), now);
        }
    }

    /// Whether requests for `upstream` are held instead of sent.
    pub(super) fn holds_for(&self, upstream: Upstream) -> bool {
        upstream != self.primary
    }
}
