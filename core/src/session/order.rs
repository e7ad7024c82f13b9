//! When a cluster gets a request: at once, or after what it must come after.
//!
//! Two things hold a request back from a cluster while the other may already have it:
//!
//! - **The cluster's handshake is not done.** Clients are let in once the primary is ready
//!   (see `handshake.rs`), so a slow secondary does not keep them from connecting; their
//!   requests wait here until it is ready, within their timeout.
//! - **Causal order, with `--wait false`.** The client hears the primary's answer before the
//!   secondary is done, and may send a request that depends on it. Cassandra runs a
//!   connection's requests concurrently, so without care the secondary could run them out of
//!   order: an INSERT before the CREATE TABLE it needs, two lightweight transactions swapped.
//!   Plain writes need no order: they carry one client-side timestamp on both clusters, so the
//!   last write wins the same way whatever the order. *Barriers* do: schema and access-control
//!   changes, `USE`, `TRUNCATE`, conditional writes, order-sensitive collection writes (list
//!   appends, prepends, removals and elements by index: the cluster places list elements by
//!   its own clock), and statements the proxy does not recognize (an EXECUTE overtaking its PREPARE needs no barrier: the cluster's UNPREPARED is
//!   repaired). A barrier goes to a cluster only after every request the client saw answered
//!   before sending it is done there, and any request sent after a barrier was answered waits
//!   for that barrier.
//!
//! - **The primary's answer, with `--write-order primary-first`.** A write goes to the
//!   secondary only once the primary accepted it, so that a statement the primary refuses
//!   never lands on the secondary alone. Until then the request waits in its own record, not
//!   here; once the primary answered it is sent or held like any request arriving then, under
//!   the causal order above as of its own arrival. A write the primary refused or failed is
//!   never sent to the secondary (and is not missed there: the client was told it failed).
//! - **No free stream id on the secondary.** A request for the secondary waits here for an
//!   answer to free one instead of failing as missed ("out of stream ids"); requests for the
//!   primary still fail at once with OVERLOADED, which the client sees. The lag bound (see
//!   `lag.rs`) keeps this rare.
//!
//! Order is kept per cluster, whatever its role: when the primary changes, requests the new
//! primary still runs as the old secondary come before the requests it now answers first.
//! Without a change of primary nothing is ever unfinished on the primary, so its requests go
//! out at once.
//!
//! Held requests leave in arrival order (per cluster) and their bytes count against
//! `--write-buffer-size` like queued ones, so the queue is bounded. A request held for its
//! secondary has no clock of its own: what it waits for is either the cluster's handshake or
//! a request in flight there, and both have their timeout; its own timeout starts when it is
//! sent. A request held for its primary keeps the deadline it got on arrival, because the
//! client waits for it: when the deadline passes while it is still held, it fails as a
//! timeout. When a cluster fails, every request held for it fails with it.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use crate::config::Upstream;
use crate::failure::FailureKind;
use crate::frame::{Opcode, ProtocolVersion};
use crate::session::Session;
use crate::session::leg::Purpose;
use crate::session::request::{Outcome, Outgoing, RequestId};

/// A request waiting for a cluster.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) id: RequestId,
    pub(crate) opcode: Opcode,
    pub(crate) version: ProtocolVersion,
    pub(crate) out: Outgoing,
    pub(crate) barrier: bool,
    /// How many requests the client had been answered when this one arrived.
    pub(crate) seen: u64,
    /// For a request held for its primary: when the client stops waiting for it.
    pub(crate) deadline: Option<Instant>,
}

/// Requests waiting for one cluster, and the answered requests it has not finished.
#[derive(Debug, Default)]
struct Lane {
    held: VecDeque<Held>,
    held_bytes: usize,
    /// Answer numbers of requests answered to the client but not done on this cluster.
    unfinished: BTreeSet<u64>,
    /// The same, for barriers only.
    unfinished_barriers: BTreeSet<u64>,
}

impl Lane {
    fn blocked(&self, barrier: bool, seen: u64) -> bool {
        let set = if barrier {
            &self.unfinished
        } else {
            &self.unfinished_barriers
        };
        set.first().is_some_and(|&answer| answer < seen)
    }
}

/// Per cluster, the requests waiting for it and what it has not finished.
#[derive(Debug, Default)]
pub(crate) struct Order {
    lanes: [Lane; 2],
    /// Requests answered to the client so far: the sequence number of the next answer.
    pub(crate) answered: u64,
    /// Set while releasing, so that completions during a release do not release again.
    releasing: bool,
}

impl Order {
    /// Whether a request for `upstream` that arrived when the client had been answered
    /// `seen` requests must wait: something is held for it already (arrival order), or
    /// something answered before it arrived is unfinished there.
    pub(crate) fn must_wait(&self, upstream: Upstream, barrier: bool, seen: u64) -> bool {
        let lane = &self.lanes[upstream.index()];
        !lane.held.is_empty() || lane.blocked(barrier, seen)
    }

    /// Bytes of the requests held for `upstream`.
    pub(crate) fn held_bytes(&self, upstream: Upstream) -> usize {
        self.lanes[upstream.index()].held_bytes
    }

    /// The earliest deadline of a request held for its primary.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .flat_map(|lane| lane.held.iter())
            .filter_map(|held| held.deadline)
            .min()
    }

    /// A request was answered to the client while `upstream` still works on it.
    pub(crate) fn answered_unfinished(&mut self, upstream: Upstream, answer: u64, barrier: bool) {
        let lane = &mut self.lanes[upstream.index()];
        lane.unfinished.insert(answer);
        if barrier {
            lane.unfinished_barriers.insert(answer);
        }
    }

    /// `upstream` finished a request that had been answered as number `answer`.
    pub(crate) fn finished(&mut self, upstream: Upstream, answer: u64) {
        let lane = &mut self.lanes[upstream.index()];
        lane.unfinished.remove(&answer);
        lane.unfinished_barriers.remove(&answer);
    }
}

impl Session {
    /// Holds a request for `upstream`.
    pub(super) fn hold(&mut self, upstream: Upstream, held: Held) {
        let lane = &mut self.order.lanes[upstream.index()];
        lane.held_bytes += held.out.len();
        lane.held.push_back(held);
    }

    /// Sends what may go to each cluster now, in arrival order.
    pub(super) fn release_held(&mut self, now: Instant) {
        if self.order.releasing {
            return;
        }
        self.order.releasing = true;
        for upstream in Upstream::BOTH {
            if !self.upstreams[upstream.index()].is_ready() {
                continue;
            }
            loop {
                let lane = &mut self.order.lanes[upstream.index()];
                let Some(front) = lane.held.front() else {
                    break;
                };
                if lane.blocked(front.barrier, front.seen) {
                    break;
                }
                // A request for the secondary waits for a free stream id (an answer frees
                // one); one for the primary fails at once with OVERLOADED below.
                if front.deadline.is_none() && self.upstreams[upstream.index()].streams.is_full() {
                    break;
                }
                let Some(held) = lane.held.pop_front() else {
                    break;
                };
                lane.held_bytes -= held.out.len();
                let purpose = Purpose::Request(held.id);
                let sent = match held.deadline {
                    Some(deadline) if deadline <= now => Err(FailureKind::Timeout),
                    Some(deadline) => self.send_request_until(
                        upstream,
                        purpose,
                        held.opcode,
                        held.version,
                        &held.out,
                        deadline,
                    ),
                    None => self.send_request(
                        upstream,
                        purpose,
                        held.opcode,
                        held.version,
                        &held.out,
                        now,
                    ),
                };
                if let Err(kind) = sent {
                    self.leg_done(held.id, upstream, Outcome::Failed(kind), now);
                }
            }
        }
        self.order.releasing = false;
    }

    /// Fails the requests held for their primary whose deadline passed: their client stops
    /// waiting.
    pub(super) fn expire_held(&mut self, now: Instant) {
        for upstream in Upstream::BOTH {
            let lane = &mut self.order.lanes[upstream.index()];
            if !lane
                .held
                .iter()
                .any(|h| h.deadline.is_some_and(|d| d <= now))
            {
                continue;
            }
            let (expired, kept): (VecDeque<Held>, VecDeque<Held>) = std::mem::take(&mut lane.held)
                .into_iter()
                .partition(|h| h.deadline.is_some_and(|d| d <= now));
            lane.held = kept;
            lane.held_bytes = lane.held.iter().map(|h| h.out.len()).sum();
            for held in expired {
                self.leg_done(
                    held.id,
                    upstream,
                    Outcome::Failed(FailureKind::Timeout),
                    now,
                );
            }
        }
    }

    /// Fails every request held for `upstream`: it failed with `kind`.
    pub(super) fn fail_held(&mut self, upstream: Upstream, kind: FailureKind, now: Instant) {
        let lane = &mut self.order.lanes[upstream.index()];
        lane.held_bytes = 0;
        for held in std::mem::take(&mut lane.held) {
            // Held, never sent: known not applied there.
            if let Some(request) = self.requests.get_mut(held.id) {
                request.unsent[upstream.index()] = true;
            }
            self.leg_done(held.id, upstream, Outcome::Failed(kind), now);
        }
    }
}
