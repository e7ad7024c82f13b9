//! Client requests in flight: what each cluster answered so far, and what the session must do
//! with the answers.

use std::time::Instant;

use bytes::Bytes;

use crate::config::Upstream;
use crate::failure::FailureKind;
use crate::frame::{Envelope, Flags, Opcode, ProtocolVersion, StreamId};
use crate::prepared::ClusterIds;
use crate::routing::Route;

/// Index of a request in the session's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RequestId(u32);

/// The body and flags one cluster gets.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) flags: Flags,
    /// What goes before `body` (usually nothing): a body rebuilt with a new head is sent as
    /// that head and the shared rest of the original (see [`crate::message::Spliced`]), not
    /// copied into one buffer first.
    pub(crate) head: Bytes,
    pub(crate) body: Bytes,
}

impl Outgoing {
    /// `body` as it is.
    pub(crate) const fn new(flags: Flags, body: Bytes) -> Self {
        Self {
            flags,
            head: Bytes::new(),
            body,
        }
    }

    /// The length of the whole body.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

/// What one cluster did with its part of a request.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// An answer whose body the session still needs: the primary's until the client has it,
    /// and the answers of the handshake, which are merged.
    Answer(Envelope),
    /// What is kept of an answer once its body is no longer needed, so that answers of a
    /// fast cluster are not held in memory while a slow one finishes.
    Digest(Digest),
    Failed(FailureKind),
}

/// An answer without its body: enough to count and report it when the request finishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digest {
    pub(crate) opcode: Opcode,
    /// For an ERROR, its code, name and message for the log.
    pub(crate) error: Option<String>,
    /// For an ERROR, its code (what the journal says of the write's outcome).
    pub(crate) code: Option<crate::message::ErrorCode>,
}

impl Outcome {
    /// An answer that is not an ERROR.
    pub(crate) fn is_success(&self) -> bool {
        match self {
            Self::Answer(e) => e.opcode() != Opcode::ERROR,
            Self::Digest(d) => d.opcode != Opcode::ERROR,
            Self::Failed(_) => false,
        }
    }

    /// Bytes of the answer body held.
    fn held_bytes(&self) -> usize {
        match self {
            Self::Answer(e) => e.body().len(),
            Self::Digest(_) | Self::Failed(_) => 0,
        }
    }
}

/// One cluster's part of a request.
#[derive(Debug, Clone)]
pub(crate) enum Leg {
    /// Not sent to this cluster.
    Unused,
    /// Sent; no outcome yet.
    Waiting,
    Done(Outcome),
}

impl Leg {
    pub(crate) fn is_pending(&self) -> bool {
        matches!(self, Self::Waiting)
    }

    pub(crate) fn outcome(&self) -> Option<&Outcome> {
        match self {
            Self::Done(outcome) => Some(outcome),
            Self::Unused | Self::Waiting => None,
        }
    }
}

/// What the session must do with the answers, beyond relaying the primary's.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// OPTIONS: the client gets what both clusters support.
    Options,
    /// STARTUP: the client is ready when both clusters are.
    Startup,
    /// AUTH_RESPONSE during the handshake, with the client's token (for the control
    /// connections' login when it succeeds; never logged).
    AuthResponse {
        token: Option<crate::message::Secret>,
    },
    /// Relay the primary's answer.
    Plain,
    /// `USE`: each connection's keyspace follows the SET_KEYSPACE its cluster answered.
    Use,
    /// PREPARE: remember the ids both clusters gave.
    Prepare {
        query: String,
        keyspace: Option<String>,
        /// The primary's id, which the client gets, once the primary answered.
        client_id: Option<Bytes>,
        /// A secondary's ids when it answered before the primary, by [`Upstream::index`]
        /// (boxed: rare, and requests stay small).
        early: Option<Box<[Option<ClusterIds>; 2]>>,
        /// The bind markers the proxy put in place of function calls (`query` is the text
        /// with them): taken out of the metadata the client sees.
        generated: Option<std::sync::Arc<[crate::statement::functions::GeneratedMarker]>>,
    },
    /// EXECUTE or BATCH: a cluster's UNPREPARED is repaired by re-preparing there.
    Prepared(Repair),
}

impl Kind {
    /// Whether the answers' bodies are merged or inspected after both clusters answered
    /// (OPTIONS, STARTUP and AUTH_RESPONSE); other answers are reduced to a digest as soon as
    /// the client no longer needs them.
    pub(crate) fn keeps_answers(&self) -> bool {
        matches!(
            self,
            Self::Options | Self::Startup | Self::AuthResponse { .. }
        )
    }
}

impl Repair {
    /// What a repair of the request whose message (with the client's ids) is `body` needs;
    /// the launch fills in the prefix and flags.
    pub(crate) fn new(body: Bytes) -> Self {
        Self {
            body,
            prefix: Bytes::new(),
            flags: Flags::empty(),
            attempted: [false; 2],
            repairing: None,
        }
    }
}

/// What a re-prepare on either cluster needs.
#[derive(Debug, Clone)]
pub(crate) struct Repair {
    /// The message with the client's prepared ids (after any timestamp was added), before a
    /// cluster's own ids were put in; rebuilt for the cluster after re-preparing.
    pub(crate) body: Bytes,
    /// The request's custom payload prefix (usually empty), sent again with the retry.
    pub(crate) prefix: Bytes,
    /// The request's header flags for the retry (tracing, custom payload; the retry's body is
    /// never compressed).
    pub(crate) flags: Flags,
    /// A repair was already tried on that cluster (by [`Upstream::index`]): a second
    /// UNPREPARED is final.
    pub(crate) attempted: [bool; 2],
    /// A repair under way (boxed: rare, and requests stay small).
    pub(crate) repairing: Option<Box<Repairing>>,
}

/// A re-prepare under way.
#[derive(Debug, Clone, Default)]
pub(crate) struct Repairing {
    /// The statement being re-prepared (the client's id for it).
    pub(crate) statement: Bytes,
    /// The UNPREPARED being repaired on each cluster (by [`Upstream::index`]): that cluster's
    /// answer if the repair cannot be done.
    pub(crate) unprepared: [Option<Envelope>; 2],
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) client_stream: StreamId,
    /// The version of the client's frame, which its answer uses.
    pub(crate) version: ProtocolVersion,
    pub(crate) opcode: Opcode,
    pub(crate) kind: Kind,
    /// Changes data or connection state (counted as a missed write if the secondary fails it).
    pub(crate) write: bool,
    /// A schema change: each cluster's part is done once its nodes agree on the schema.
    pub(crate) schema_change: bool,
    pub(crate) route: Route,
    pub(crate) legs: [Leg; 2],
    /// The client got its answer.
    pub(crate) answered: bool,
    pub(crate) started: Instant,
    /// Must not overtake, or be overtaken by, what the client saw answered (see `order.rs`).
    pub(crate) barrier: bool,
    /// How many requests the client had been answered when this one arrived.
    pub(crate) seen: u64,
    /// Its number among the answered requests, once answered.
    pub(crate) answer_seq: Option<u64>,
    /// The client waited `--wait-timeout` for the secondary, or the secondary is known to
    /// stall: answer without waiting for it.
    pub(crate) impatient: bool,
    /// Unique within the session (request ids are reused), to recognize stale wait entries.
    pub(crate) serial: u64,
    /// Bytes of the primary's answer held until the client may have it (counted as queued
    /// for the client, for backpressure).
    pub(crate) stored: usize,
    /// A QUERY write's message (shared, not copied), to name the tables it writes should the
    /// secondary miss it. EXECUTE and BATCH keep theirs in [`Repair::body`].
    pub(crate) query: Option<Bytes>,
    /// When the primary finished its part, for the time the proxy added after it.
    pub(crate) primary_done: Option<Instant>,
    /// A read whose answers are compared (shadowed or compared): both answers are kept until
    /// both clusters are done (boxed: most requests are not compared).
    pub(crate) compare: Option<Box<Compared>>,
    /// The bytes counted in the session's lag while the secondary has not finished this
    /// request (see `lag.rs`).
    pub(crate) lag: Option<usize>,
    /// With `--write-order primary-first`: what the secondary gets once the primary accepted
    /// the write (boxed: requests stay small).
    pub(crate) deferred: Option<Box<Outgoing>>,
    /// Per cluster (by [`Upstream::index`]): the request failed there before it was sent (the
    /// connection was down or in its handshake again), so it is known not applied there.
    pub(crate) unsent: [bool; 2],
    /// With the journal on, a QUERY's or BATCH's keyspace as it was when the request arrived
    /// (a later `USE` changes the session's): the keyspace its record names.
    pub(crate) journal_keyspace: Option<String>,
}

/// What comparing the clusters' answers to a read needs besides the answers.
#[derive(Debug)]
pub(crate) struct Compared {
    /// The table read, keyspace resolved when known.
    pub(crate) table: Option<crate::statement::tables::TableRef>,
    /// The statement orders all rows (ORDER BY).
    pub(crate) ordered: bool,
    /// The statement text, cut short, for the report.
    pub(crate) statement: Option<String>,
    /// The client's prepared id of an EXECUTE: its result metadata describes answers that
    /// come without it.
    pub(crate) prepared: Option<Bytes>,
    /// The shadow read's place in the proxy's budget, given back when the request retires.
    pub(crate) _permit: Option<crate::routing::ShadowPermit>,
}

impl Compared {
    /// Nothing known of the statement: the answers alone are compared.
    pub(crate) const fn unknown() -> Self {
        Self {
            table: None,
            ordered: false,
            statement: None,
            prepared: None,
            _permit: None,
        }
    }
}

impl Request {
    /// A request the client sent with `header`, before it is sent anywhere (see
    /// [`RequestTable::boxed`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        header: &crate::frame::Header,
        kind: Kind,
        route: Route,
        write: bool,
        barrier: bool,
        seen: u64,
        serial: u64,
        now: Instant,
    ) -> Self {
        Self {
            client_stream: header.stream,
            version: header.version,
            opcode: header.opcode,
            kind,
            write,
            schema_change: false,
            route,
            legs: [Leg::Unused, Leg::Unused],
            answered: false,
            started: now,
            barrier,
            seen,
            answer_seq: None,
            impatient: false,
            serial,
            stored: 0,
            query: None,
            primary_done: None,
            compare: None,
            lag: None,
            deferred: None,
            unsent: [false; 2],
            journal_keyspace: None,
        }
    }

    /// Drops what the request owns, keeping its allocation for the next one. Every field that
    /// holds memory (bytes of a frame above all) is reset here, or a spare box would keep it.
    fn empty(&mut self) {
        self.kind = Kind::Plain;
        self.legs = [Leg::Unused, Leg::Unused];
        self.query = None;
        self.compare = None;
        self.deferred = None;
        self.journal_keyspace = None;
    }

    pub(crate) fn leg(&self, upstream: Upstream) -> &Leg {
        &self.legs[upstream.index()]
    }

    pub(crate) fn leg_mut(&mut self, upstream: Upstream) -> &mut Leg {
        &mut self.legs[upstream.index()]
    }

    pub(crate) fn all_done(&self) -> bool {
        self.legs.iter().all(|l| !l.is_pending())
    }

    /// Bytes of answer bodies this request holds.
    pub(crate) fn held_answer_bytes(&self) -> usize {
        self.legs
            .iter()
            .filter_map(Leg::outcome)
            .map(Outcome::held_bytes)
            .sum()
    }
}

/// The session's requests, addressed by [`RequestId`]. Slots are reused; the table is as
/// large as the peak number of requests in flight.
///
/// Requests are boxed: a request is a few hundred bytes and passes from its intake to the
/// table and out again, and every move of the value copied all of it (a tenth of the
/// instructions per request). The boxes of finished requests are kept for the next ones, so a
/// request costs no allocation either (a connection's requests are allocated and freed in
/// bursts, past what the allocator's per-thread cache keeps).
#[derive(Debug, Default)]
pub(crate) struct RequestTable {
    slots: Vec<Option<Box<Request>>>,
    free: Vec<u32>,
    /// Boxes of finished requests, emptied (see [`Request::empty`]): boxed on purpose, each
    /// is handed out whole.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Request>>,
    len: usize,
}

/// Spare boxes kept at most: a connection's peak of requests in flight is usually lower.
const SPARE: usize = 128;

impl RequestTable {
    /// `request` in a box of a finished request, or a new one.
    pub(crate) fn boxed(&mut self, request: Request) -> Box<Request> {
        match self.spare.pop() {
            Some(mut spare) => {
                *spare = request;
                spare
            }
            None => Box::new(request),
        }
    }

    /// Takes back the box of a finished request: what it owns is dropped now, the box kept.
    pub(crate) fn recycle(&mut self, mut request: Box<Request>) {
        if self.spare.len() < SPARE {
            request.empty();
            self.spare.push(request);
        }
    }

    pub(crate) fn insert(&mut self, request: Box<Request>) -> RequestId {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(request);
                RequestId(i)
            }
            None => {
                // Most connections have one request in flight at a time: the first few slots
                // grow one by one (a Vec would jump to four), so an idle connection keeps one.
                if self.slots.len() < 4 {
                    self.slots.reserve_exact(1);
                }
                self.slots.push(Some(request));
                RequestId((self.slots.len() - 1) as u32)
            }
        }
    }

    pub(crate) fn get(&self, id: RequestId) -> Option<&Request> {
        self.slots.get(id.0 as usize).and_then(Option::as_deref)
    }

    pub(crate) fn get_mut(&mut self, id: RequestId) -> Option<&mut Request> {
        self.slots
            .get_mut(id.0 as usize)
            .and_then(Option::as_deref_mut)
    }

    pub(crate) fn remove(&mut self, id: RequestId) -> Option<Box<Request>> {
        let request = self.slots.get_mut(id.0 as usize)?.take()?;
        self.free.push(id.0);
        self.len -= 1;
        Some(request)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the client has the answer of every request in the table.
    pub(crate) fn all_answered(&self) -> bool {
        self.len == 0 || self.slots.iter().flatten().all(|r| r.answered)
    }

    pub(crate) fn held_answer_bytes(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|request| request.held_answer_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::{Kind, Request, RequestTable};
    use crate::config::Upstream;
    use crate::frame::{Direction, Flags, Header, Opcode, ProtocolVersion, StreamId};
    use crate::routing::{Mirror, Route};

    fn request(stream: i16, now: Instant) -> Request {
        let header = Header {
            version: ProtocolVersion::V4,
            direction: Direction::Request,
            flags: Flags::empty(),
            stream: StreamId(stream),
            opcode: Opcode::QUERY,
            length: 0,
        };
        let route = Route {
            primary: Upstream::Source,
            secondary: Some(Upstream::Target),
            mirror: Mirror::Apply,
        };
        Request::new(&header, Kind::Plain, route, true, false, 0, 0, now)
    }

    #[test]
    fn a_finished_request_lets_go_of_what_it_held_and_its_box_serves_the_next() {
        #[allow(clippy::disallowed_methods)] // a test's clock
        let now = Instant::now();
        let mut table = RequestTable::default();
        // Not static: a static `Bytes` is never unique.
        let query = Bytes::copy_from_slice(b"INSERT INTO ks.t (k) VALUES (1)");
        let mut first = table.boxed(request(1, now));
        first.query = Some(query.clone());
        first.journal_keyspace = Some("ks".to_owned());
        let id = table.insert(first);
        assert!(!query.is_unique(), "the request holds the query");
        let done = table.remove(id).expect("inserted");
        let address = std::ptr::from_ref::<Request>(&done);
        table.recycle(done);
        assert!(query.is_unique(), "recycling drops what the request held");
        let second = table.boxed(request(2, now));
        assert_eq!(
            std::ptr::from_ref::<Request>(&second),
            address,
            "the box is reused"
        );
        assert_eq!(second.client_stream, StreamId(2));
        assert!(second.query.is_none() && second.journal_keyspace.is_none());
        assert!(table.is_empty());
    }
}
