//! Cluster frames: pairing answers with requests, answering the client, and what happens when
//! a cluster fails, times out or asks for a statement to be prepared again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{Upstream, WaitPolicy};
use crate::error::DecodeError;
use crate::failure::FailureKind;
use crate::frame::{
    Direction, Envelope, Flags, HEADER_LEN, Header, Opcode, Prefix, ProtocolVersion, StreamId,
};
use crate::message::batch::Statement as BatchedStatement;
use crate::message::{
    Batch, Body, ErrorCode, ErrorDetails, ErrorMessage, Execute, Prepare, Query, ResultMessage,
};
use crate::prepared::{ClusterIds, PreparedStatement};
use crate::routing::Mirror;
use crate::session::intake::join;
use crate::session::leg::{Link, Purpose};
use crate::session::request::{Digest, Kind, Leg, Outcome, Outgoing, Request, RequestId};
use crate::session::streams::MAX_STREAM;
use crate::session::{Action, ClusterResult, Event, Peer, Phase, Session};
use crate::statement::Statement;
use crate::statement::tables::{self, TableRef};
use crate::topology::SystemQuery;

/// Unanswered timed-out requests after which a connection is considered dead.
const MAX_TIMED_OUT: usize = 1024;

impl Session {
    pub(super) fn read_upstream(
        &mut self,
        upstream: Upstream,
        buf: &mut bytes::BytesMut,
        now: Instant,
    ) {
        while self.upstreams[upstream.index()].is_readable() {
            match self.upstreams[upstream.index()].decode(buf) {
                Ok(Some(envelope)) => self.on_upstream_envelope(upstream, envelope, now),
                Ok(None) => break,
                Err(e) => {
                    let detail = format!("malformed frame from the {upstream} cluster: {e}");
                    self.upstream_failed(upstream, FailureKind::Protocol, detail, true, now);
                    break;
                }
            }
        }
    }

    fn on_upstream_envelope(&mut self, upstream: Upstream, envelope: Envelope, now: Instant) {
        let stream = envelope.stream();
        if stream.0 < 0 {
            // Server push: the primary's events reach the client; the other's are dropped.
            if envelope.opcode() == Opcode::EVENT && upstream == self.proxy.primary() {
                self.forward_event(&envelope);
            }
            return;
        }
        if envelope.version() == ProtocolVersion::V5
            && matches!(envelope.opcode(), Opcode::READY | Opcode::AUTHENTICATE)
        {
            // The last plain envelope of a v5 handshake: segments from here on.
            let lz4 = self.compression == Some(crate::frame::Compression::Lz4);
            self.upstreams[upstream.index()].switch_to_segments(lz4);
        }
        let leg = &mut self.upstreams[upstream.index()];
        let Some(in_flight) = leg.streams.remove(stream) else {
            return; // a stream id the proxy did not use: nothing to pair it with
        };
        if in_flight.timed_out {
            leg.timed_out = leg.timed_out.saturating_sub(1);
            return;
        }
        if envelope.opcode() != Opcode::ERROR {
            self.proxy.record_success(upstream);
        }
        match in_flight.purpose {
            Purpose::Request(id) => self.on_answer(id, upstream, envelope, now),
            Purpose::Reprepare(id) => self.on_reprepared(id, upstream, envelope, now),
            Purpose::Login(id) => self.on_login(id, upstream, envelope, now),
            Purpose::Topology(table) => self.on_topology_answer(upstream, table, envelope, now),
            Purpose::Agreement(id, read) => self.on_versions(id, upstream, read, envelope, now),
            Purpose::Rejoin(step) => self.on_rejoin_answer(upstream, step, &envelope, now),
        }
    }

    fn on_answer(&mut self, id: RequestId, upstream: Upstream, envelope: Envelope, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            // A stream in flight belongs to a request whose leg on this cluster is pending.
            bug!("an answer from the {upstream} cluster for a request that is gone");
            return;
        };
        match &request.kind {
            Kind::Startup => return self.startup_answer(id, upstream, envelope, now),
            Kind::AuthResponse { .. } => self.auth_answer(id, upstream, &envelope, now),
            Kind::Prepare { .. } => self.prepare_answer(id, upstream, &envelope),
            Kind::Use => self.use_answer(id, upstream, &envelope),
            Kind::Prepared(repair)
                if !repair.attempted[upstream.index()] && self.is_unprepared(&envelope) =>
            {
                if self.start_repair(id, upstream, &envelope, now) {
                    return;
                }
            }
            Kind::Options | Kind::Plain | Kind::Prepared(_) => {}
        }
        let envelope = if self.requests.get(id).is_some_and(|r| r.schema_change) {
            match self.start_agreement(id, upstream, envelope, now) {
                Ok(()) => return,
                Err(envelope) => envelope,
            }
        } else {
            envelope
        };
        self.leg_done(id, upstream, Outcome::Answer(envelope), now);
    }

    /// Records a cluster's outcome for a request and moves the request on.
    pub(super) fn leg_done(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        outcome: Outcome,
        now: Instant,
    ) {
        let Some(request) = self.requests.get(id) else {
            bug!("an outcome from the {upstream} cluster for a request that is gone");
            return;
        };
        // An answer too large to compare cheaply is not compared: holding it (and pairing its
        // rows) would cost several times its size.
        if let (Some(_), Outcome::Answer(envelope)) = (&request.compare, &outcome) {
            if envelope.body().len() > crate::divergence::MAX_COMPARED_BYTES {
                self.proxy.divergences().record_too_large();
                if let Some(request) = self.requests.get_mut(id) {
                    request.compare = None;
                }
            }
        }
        let Some(request) = self.requests.get(id) else {
            return;
        };
        // An answer is kept only while something still needs its body: the primary's until
        // the client has it, and the handshake's, which are merged. The rest is a digest, so
        // that a slow cluster does not make the session hold the other's answers.
        let keep = request.kind.keeps_answers()
            || request.compare.is_some()
            || (upstream == request.route.primary && !request.answered);
        let version = request.version;
        // Read once: the event and the digest both need it.
        let code = match &outcome {
            Outcome::Answer(envelope) => self.error_code(envelope, version),
            Outcome::Digest(_) | Outcome::Failed(_) => None,
        };
        let result = match &outcome {
            Outcome::Failed(kind) => ClusterResult::Failed(*kind),
            Outcome::Answer(_) | Outcome::Digest(_) => {
                code.map_or(ClusterResult::Ok, ClusterResult::Error)
            }
        };
        self.events.push_back(Event::ClusterDone {
            upstream,
            opcode: request.opcode,
            write: request.write,
            latency: now.saturating_duration_since(request.started),
            result,
        });
        let finished = if request.leg(upstream).is_pending() {
            request.answer_seq
        } else {
            bug!("a second outcome from the {upstream} cluster for one request");
            None
        };
        let outcome = match outcome {
            Outcome::Answer(envelope) if !keep => {
                Outcome::Digest(self.digest_of(&envelope, version, code))
            }
            other => other,
        };
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        if upstream == request.route.primary {
            request.primary_done = Some(now);
        }
        if let Outcome::Answer(envelope) = &outcome {
            // Held until the client may have it: counted as queued for the client.
            let bytes = HEADER_LEN + envelope.body().len();
            request.stored += bytes;
            self.stored += bytes;
        }
        let primary = upstream == request.route.primary;
        let accepted = primary && outcome.is_success();
        *request.leg_mut(upstream) = Leg::Done(outcome);
        if primary {
            self.release_deferred(id, accepted, now);
        } else {
            self.lag_remove(id, now);
        }
        self.progress(id, now);
        if let Some(answer) = finished {
            // What waited for this request on this cluster may go now.
            self.order.finished(upstream, answer);
            self.release_held(now);
        }
    }

    /// The primary is done with a write held for it (`--write-order primary-first`): the
    /// secondary gets it if the primary `accepted` it, and never otherwise.
    fn release_deferred(&mut self, id: RequestId, accepted: bool, now: Instant) {
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        let (Some(out), Some(secondary)) = (request.deferred.take(), request.route.secondary)
        else {
            return;
        };
        let leg = if accepted {
            self.dispatch(id, secondary, &out, now)
        } else {
            Leg::Unused
        };
        let pending = leg.is_pending();
        if let Some(request) = self.requests.get_mut(id) {
            *request.leg_mut(secondary) = leg;
        }
        if !pending {
            self.lag_remove(id, now);
        }
    }

    /// What is kept of an answer whose body is no longer needed.
    fn digest(&self, envelope: &Envelope, version: ProtocolVersion) -> Digest {
        let code = self.error_code(envelope, version);
        self.digest_of(envelope, version, code)
    }

    /// [`Self::digest`] of an answer whose error code was read already.
    fn digest_of(
        &self,
        envelope: &Envelope,
        version: ProtocolVersion,
        code: Option<ErrorCode>,
    ) -> Digest {
        let opcode = envelope.opcode();
        let error = opcode == Opcode::ERROR;
        Digest {
            opcode,
            error: error.then(|| self.describe_error(envelope, version)),
            code: code.filter(|_| error),
        }
    }

    /// Reduces the answers a request holds to digests: the client has its answer.
    fn drop_answer_bodies(&mut self, id: RequestId) {
        let Some(request) = self.requests.get(id) else {
            bug!("dropping the answers of a request that is gone");
            return;
        };
        let version = request.version;
        if request.compare.is_some() {
            // Both answers are compared once both are in: kept, but no longer counted as
            // queued for the client.
            if let Some(request) = self.requests.get_mut(id) {
                self.stored -= std::mem::take(&mut request.stored);
            }
            return;
        }
        let digests = Upstream::BOTH.map(|upstream| match request.leg(upstream) {
            Leg::Done(Outcome::Answer(envelope)) => Some(self.digest(envelope, version)),
            _ => None,
        });
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        for (upstream, digest) in Upstream::BOTH.into_iter().zip(digests) {
            if let Some(digest) = digest {
                *request.leg_mut(upstream) = Leg::Done(Outcome::Digest(digest));
            }
        }
        self.stored -= std::mem::take(&mut request.stored);
    }

    /// The client's answer waited `--wait-timeout` for the secondary: it gets the primary's
    /// answer now, and the secondary's part goes on in the background until its own timeout.
    pub(super) fn wait_expired(&mut self, id: RequestId, serial: u64, now: Instant) {
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        if request.serial != serial || request.answered || request.impatient {
            return;
        }
        request.impatient = true;
        if let Some(secondary) = request.route.secondary {
            self.stall(secondary, |wait| {
                format!(
                    "the {secondary} cluster did not answer within --wait-timeout {wait:?}: clients get the {} cluster's answers without waiting for it until it answers again",
                    secondary.other()
                )
            });
        }
        self.progress(id, now);
    }

    /// Answers the client once the wait policy allows, and retires the request once every
    /// cluster is done with it.
    pub(super) fn progress(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            bug!("moving on a request that is gone");
            return;
        };
        if !request.answered {
            let handshake = match request.kind {
                Kind::Startup | Kind::AuthResponse { .. } => true,
                Kind::Options => self.phase != Phase::Ready,
                _ => false,
            };
            // The handshake always waits for the secondary (a little, below), and so do
            // compared reads; shadow reads never do; other requests do with `--wait true`.
            let wait = !request.impatient
                && (handshake
                    || match request.route.mirror {
                        Mirror::Compare => true,
                        Mirror::Shadow => false,
                        Mirror::Apply => self.proxy.wait_policy() == WaitPolicy::Both,
                    });
            let primary = request.leg(request.route.primary);
            let primary_done = !primary.is_pending();
            // A primary that failed has nothing for the secondary's answer to wait with.
            let primary_failed = matches!(primary.outcome(), Some(Outcome::Failed(_)));
            if primary_done && (request.all_done() || !wait || primary_failed) {
                self.answer(id, now);
            } else if primary_done {
                // The primary answered and the secondary has not: wait for it, but not longer
                // than `--wait-timeout`, and not at all while it is known to stall, so that a
                // silent secondary delays neither new clients nor answers much.
                let secondary = request
                    .route
                    .secondary
                    .unwrap_or(request.route.primary.other());
                let serial = request.serial;
                if self.proxy.is_stalled(secondary) {
                    if let Some(request) = self.requests.get_mut(id) {
                        request.impatient = true;
                    }
                    self.answer(id, now);
                } else {
                    // One constant delay: the queue stays in deadline order.
                    let config = self.proxy.config();
                    let deadline = now + config.wait_timeout.min(config.request_timeout);
                    self.waits.push_back((deadline, id, serial));
                }
            }
        }
        if self
            .requests
            .get(id)
            .is_some_and(|r| r.answered && r.all_done())
        {
            self.finish(id, now);
        }
    }

    fn answer(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get_mut(id) else {
            bug!("answering a request that is gone");
            return;
        };
        request.answered = true;
        // Number the answer; if a cluster still works on the request, later requests may have
        // to wait for it there (see `order.rs`).
        let answer = self.order.answered;
        self.order.answered += 1;
        request.answer_seq = Some(answer);
        for upstream in Upstream::BOTH {
            if request.leg(upstream).is_pending() {
                self.order
                    .answered_unfinished(upstream, answer, request.barrier);
            }
        }
        let (opcode, write, started, primary, primary_done) = (
            request.opcode,
            request.write,
            request.started,
            request.route.primary,
            request.primary_done,
        );
        match request.kind {
            Kind::Options => self.answer_options(id, now),
            Kind::Startup => self.answer_startup(id, now),
            Kind::AuthResponse { .. } => self.answer_auth(id, now),
            Kind::Plain | Kind::Use | Kind::Prepare { .. } | Kind::Prepared(_) => {
                self.relay(id, now)
            }
        }
        self.drop_answer_bodies(id);
        self.events.push_back(Event::Answered {
            opcode,
            write,
            latency: now.saturating_duration_since(started),
            added: primary_done.map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
            primary,
        });
    }

    /// Gives the client the primary's answer, or an error saying why there is none.
    pub(super) fn relay(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            bug!("relaying the answer of a request that is gone");
            return;
        };
        let (stream, version, primary) = (
            request.client_stream,
            request.version,
            request.route.primary,
        );
        let generated = match &request.kind {
            Kind::Prepare { generated, .. } => generated.clone(),
            _ => None,
        };
        match request.leg(primary).outcome().cloned() {
            Some(Outcome::Answer(envelope)) => match generated {
                Some(markers) => self.answer_prepared(stream, version, &envelope, &markers),
                None => self.answer_client(stream, version, &envelope),
            },
            Some(Outcome::Failed(FailureKind::Timeout)) => {
                let timeout = self.request_timeout();
                let message =
                    format!("cqlmirror: the {primary} cluster did not answer within {timeout:?}");
                self.error_to_client(stream, version, &ErrorMessage::server_error(message));
            }
            Some(Outcome::Failed(FailureKind::Overloaded)) => {
                let message = format!(
                    "cqlmirror: {} requests are in flight to the {primary} cluster on this connection",
                    MAX_STREAM as usize + 1
                );
                self.error_to_client(stream, version, &ErrorMessage::overloaded(message));
            }
            Some(Outcome::Digest(_)) => {
                bug!("the primary's answer was dropped before the client had it");
                self.close_client(now);
            }
            Some(Outcome::Failed(kind)) => {
                self.primary_unavailable(stream, version, primary, kind, now)
            }
            None => self.close_client(now),
        }
    }

    /// The primary failed under a request (or a handshake): the client hears why in an ERROR
    /// on that stream, then the connection closes and the driver reconnects, as it would
    /// from a failed node. A bare close left drivers reporting a mysterious "connection
    /// closed" and treating the proxy itself as broken.
    pub(super) fn primary_unavailable(
        &mut self,
        stream: StreamId,
        version: ProtocolVersion,
        primary: Upstream,
        kind: FailureKind,
        now: Instant,
    ) {
        let what = match kind {
            FailureKind::Unreachable => format!("the {primary} cluster is unreachable"),
            FailureKind::Closed => format!("the connection to the {primary} cluster was lost"),
            FailureKind::Timeout => format!("the {primary} cluster did not answer in time"),
            FailureKind::Protocol => format!("the {primary} cluster sent invalid protocol data"),
            other => format!("the {primary} cluster failed ({other})"),
        };
        let message = format!(
            "cqlmirror: {what}; the request may not have been applied there. This proxy closes the connection: reconnect, or use another proxy instance"
        );
        self.error_to_client(stream, version, &ErrorMessage::server_error(message));
        self.close_client(now);
    }

    /// Sends `envelope` to the client as the answer on `stream`, body untouched.
    pub(super) fn answer_client(
        &mut self,
        stream: StreamId,
        version: ProtocolVersion,
        envelope: &Envelope,
    ) {
        let header = Header {
            version,
            direction: Direction::Response,
            stream,
            ..*envelope.header()
        };
        self.client.send(header, envelope.body());
    }

    fn forward_event(&mut self, envelope: &Envelope) {
        if self.phase != Phase::Ready {
            return;
        }
        let Some(version) = self.version else { return };
        let Some((flags, body)) = self.event_for_client(envelope) else {
            return;
        };
        let header = Header {
            version,
            direction: Direction::Response,
            flags,
            length: body.len() as u32,
            ..*envelope.header()
        };
        self.client.send(header, &body);
    }

    /// Retires a request: counts what failed and what the secondary missed.
    fn finish(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.remove(id) else {
            bug!("finishing a request that is gone");
            return;
        };
        self.stored -= request.stored;
        if let Some(bytes) = request.lag {
            bug!("a request retired while counted as lagging on the secondary");
            self.lag.forget(bytes);
        }
        let succeeded = |u: Upstream| request.leg(u).outcome().is_some_and(Outcome::is_success);
        for upstream in Upstream::BOTH {
            let other_ok = succeeded(upstream.other());
            match request.leg(upstream) {
                Leg::Done(Outcome::Failed(
                    kind @ (FailureKind::Timeout | FailureKind::Overloaded),
                )) => {
                    let first = self.proxy.record_failure(upstream, *kind, now);
                    self.events.push_back(Event::Failure {
                        upstream,
                        kind: *kind,
                        detail: format!("{} request: {kind}", request.opcode),
                        first,
                    });
                }
                // Connection-level failures were reported when the connection failed.
                Leg::Done(Outcome::Failed(_)) => self.proxy.count_failed(upstream),
                Leg::Done(outcome @ (Outcome::Answer(_) | Outcome::Digest(_)))
                    if !outcome.is_success() && other_ok =>
                {
                    let first = self.proxy.record_failure(upstream, FailureKind::Error, now);
                    let detail = match outcome {
                        Outcome::Answer(envelope) => self.describe_error(envelope, request.version),
                        Outcome::Digest(digest) => digest.error.clone().unwrap_or_default(),
                        Outcome::Failed(_) => String::new(),
                    };
                    self.events.push_back(Event::Failure {
                        upstream,
                        kind: FailureKind::Error,
                        detail: format!("{} request: {detail}", request.opcode),
                        first,
                    });
                }
                Leg::Unused | Leg::Waiting | Leg::Done(_) => {}
            }
        }
        // Both clusters answered, one with an ERROR and the other not: different results.
        let answered = |u: Upstream| {
            matches!(
                request.leg(u),
                Leg::Done(Outcome::Answer(_) | Outcome::Digest(_))
            )
        };
        if request.compare.is_some() {
            self.compare_answers(&request, now);
        } else if Upstream::BOTH.into_iter().all(answered)
            && succeeded(Upstream::Source) != succeeded(Upstream::Target)
        {
            self.events.push_back(Event::OutcomesDiffer {
                opcode: request.opcode,
                write: request.write,
            });
            if request.write {
                self.write_outcomes_differ(&request, now);
            }
        }
        // The client was told the write succeeded (the primary applied it): a secondary that
        // did not apply it missed it.
        if let Some(secondary) = request.route.secondary {
            if request.write && succeeded(request.route.primary) && !succeeded(secondary) {
                self.proxy.count_missed_write(secondary);
                self.note_missed(secondary);
                let tables = self.written_tables(&request);
                self.events.push_back(Event::MissedWrite {
                    upstream: secondary,
                    opcode: request.opcode,
                    tables,
                });
                if self.proxy.config().journal {
                    match self.journal_record(&request, secondary, now) {
                        Ok(Some(record)) => self.events.push_back(Event::Journal(Arc::new(record))),
                        Ok(None) => {}
                        Err(reason) => self.events.push_back(Event::Unjournaled {
                            upstream: secondary,
                            reason,
                        }),
                    }
                }
            }
        }
        self.requests.recycle(request);
    }

    // ---- failures ------------------------------------------------------------------------

    /// A cluster connection failed (lost, unreachable, misbehaving): every request waiting on
    /// it fails on that side. Without the primary the client connection cannot go on.
    pub(super) fn upstream_failed(
        &mut self,
        upstream: Upstream,
        kind: FailureKind,
        detail: String,
        close_socket: bool,
        now: Instant,
    ) {
        let leg = &mut self.upstreams[upstream.index()];
        if !leg.is_usable() {
            return;
        }
        let in_flight = leg.fail(kind);
        if close_socket {
            self.actions.push_back(Action::Close(Peer::of(upstream)));
        }
        let first = self.proxy.record_failure(upstream, kind, now);
        self.events.push_back(Event::Failure {
            upstream,
            kind,
            detail,
            first,
        });
        // The requests on it did not time out themselves (those that did were answered
        // already): the connection failed under them.
        let lost = match kind {
            FailureKind::Timeout => FailureKind::Closed,
            other => other,
        };
        self.fail_held(upstream, lost, now);
        for f in in_flight.into_iter().filter(|f| !f.timed_out) {
            match f.purpose {
                Purpose::Request(id) | Purpose::Reprepare(id) | Purpose::Login(id) => {
                    self.leg_done(id, upstream, Outcome::Failed(lost), now);
                }
                Purpose::Topology(_) => {
                    let reason =
                        format!("the connection to the {upstream} cluster failed ({lost})");
                    self.topology_fetch_failed(upstream, &reason, now);
                }
                Purpose::Agreement(id, _) => self.agreement_failed(id, upstream, now),
                // The connection being opened again failed: tried again below.
                Purpose::Rejoin(_) => {}
            }
        }
        // Without the primary the client connection cannot go on (requests in flight to a
        // former primary fail on their own and end it the same way). Those in flight were
        // answered with an ERROR saying why just now; a client still in its handshake is
        // left open until its next handshake request, which is answered the same way (a
        // bare close tells a driver nothing), or until `--handshake-timeout`.
        let primary = upstream == self.proxy.primary();
        let handshaking = matches!(self.phase, Phase::Startup) && self.requests.is_empty();
        if (primary && !handshaking) || self.proxy.config().dest_close {
            self.close_client(now);
        }
        self.schedule_reconnect(upstream, now);
    }

    pub(super) fn upstream_lost(&mut self, upstream: Upstream, reason: &str, now: Instant) {
        let connecting = self.upstreams[upstream.index()].link == Link::Connecting;
        if connecting {
            self.avoid_node(upstream, now);
        }
        let (kind, detail) = if connecting {
            (
                FailureKind::Unreachable,
                format!("cannot connect to the {upstream} cluster: {reason}"),
            )
        } else {
            (
                FailureKind::Closed,
                format!("lost the connection to the {upstream} cluster: {reason}"),
            )
        };
        self.upstream_failed(upstream, kind, detail, false, now);
    }

    /// The node of this connection to `upstream` could not be reached: new connections avoid
    /// it for a while.
    fn avoid_node(&self, upstream: Upstream, now: Instant) {
        let endpoint = self.upstreams[upstream.index()].endpoint.as_ref();
        if let Some(address) = endpoint.and_then(|e| {
            e.host
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| (ip, e.port))
        }) {
            let address = std::net::SocketAddr::new(address.0, address.1);
            self.proxy.note_unreachable(upstream, address, now);
        }
    }

    pub(super) fn connect_timed_out(&mut self, upstream: Upstream, now: Instant) {
        if self.upstreams[upstream.index()].link == Link::Connecting {
            let timeout = self.proxy.config().connect_timeout;
            self.avoid_node(upstream, now);
            let endpoint = self.upstreams[upstream.index()]
                .endpoint
                .as_ref()
                .map_or_else(|| "its contact point".to_owned(), ToString::to_string);
            let detail = format!(
                "cannot connect to the {upstream} cluster at {endpoint} within {timeout:?}"
            );
            self.upstream_failed(upstream, FailureKind::Unreachable, detail, true, now);
        }
    }

    pub(super) fn stream_timed_out(
        &mut self,
        upstream: Upstream,
        stream: StreamId,
        at: Instant,
        now: Instant,
    ) {
        let leg = &mut self.upstreams[upstream.index()];
        let Some(in_flight) = leg.streams.get_mut(stream) else {
            return;
        };
        if in_flight.deadline != at || in_flight.timed_out {
            return;
        }
        in_flight.timed_out = true;
        let purpose = in_flight.purpose;
        leg.timed_out += 1;
        let dead = leg.timed_out > MAX_TIMED_OUT;
        let id = match purpose {
            Purpose::Request(id) | Purpose::Reprepare(id) | Purpose::Login(id) => id,
            Purpose::Topology(table) => {
                let timeout = self.request_timeout();
                let reason = format!(
                    "the {upstream} cluster did not answer a read of {} within {timeout:?}",
                    table.name()
                );
                return self.topology_fetch_failed(upstream, &reason, now);
            }
            Purpose::Agreement(id, _) => return self.agreement_failed(id, upstream, now),
            Purpose::Rejoin(step) => return self.rejoin_timed_out(upstream, step, now),
        };
        // A STARTUP or AUTH_RESPONSE that timed out leaves the cluster's handshake unfinished
        // for good, even while the client's own handshake goes on (it may still have to
        // authenticate with the primary, and nothing else would settle this cluster).
        let handshake_request = matches!(purpose, Purpose::Request(id)
            if self.requests.get(id).is_some_and(|r| matches!(r.kind, Kind::Startup | Kind::AuthResponse { .. })));
        self.leg_done(id, upstream, Outcome::Failed(FailureKind::Timeout), now);
        if matches!(purpose, Purpose::Login(_)) {
            let detail = format!("the {upstream} cluster did not answer the proxy's login in time");
            self.upstream_failed(upstream, FailureKind::Timeout, detail, true, now);
        } else if (self.phase == Phase::Ready || handshake_request)
            && !self.upstreams[upstream.index()].is_ready()
        {
            // Its handshake went on after the client's and has now timed out: it will never
            // be ready, and what waits for it fails now.
            let timeout = self.request_timeout();
            let detail =
                format!("the {upstream} cluster did not finish its handshake within {timeout:?}");
            self.upstream_failed(upstream, FailureKind::Timeout, detail, true, now);
        } else if dead {
            let detail = format!(
                "more than {MAX_TIMED_OUT} requests to the {upstream} cluster went unanswered"
            );
            self.upstream_failed(upstream, FailureKind::Timeout, detail, true, now);
        }
    }

    // ---- message bodies of answers --------------------------------------------------------

    /// The message of a response: decompressed, tracing id, warnings and custom payload
    /// skipped.
    pub(super) fn response_message(&self, envelope: &Envelope) -> Result<Bytes, DecodeError> {
        let plain = envelope.decompressed(self.compression, self.proxy.config().max_frame_size)?;
        let body = plain.body();
        let (_, offset) = Prefix::parse(plain.header().flags, Direction::Response, body)?;
        Ok(body.slice(offset..))
    }

    fn is_unprepared(&self, envelope: &Envelope) -> bool {
        envelope.opcode() == Opcode::ERROR
            && self
                .response_message(envelope)
                .is_ok_and(|m| m.get(..4) == Some(&ErrorCode::UNPREPARED.0.to_be_bytes()))
    }

    /// The tables a write changes, keyspaces filled in (empty when the statement is unknown,
    /// e.g. a prepared statement evicted from the cache).
    pub(super) fn written_tables(&self, request: &Request) -> Vec<TableRef> {
        let version = request.version;
        match (&request.kind, &request.query) {
            (_, Some(message)) => Query::peek_text(message)
                .map(|text| {
                    tables::written_tables(text)
                        .into_iter()
                        .map(|t| t.in_keyspace(self.keyspace.as_deref()))
                        .collect()
                })
                .unwrap_or_default(),
            (Kind::Prepared(repair), None) => {
                let prepared_tables = |id: &[u8]| -> Vec<TableRef> {
                    let cache = self.proxy.prepared();
                    cache.get(id).map_or_else(Vec::new, |statement| {
                        tables::written_tables(&statement.query)
                            .into_iter()
                            .map(|t| t.in_keyspace(statement.keyspace.as_deref()))
                            .collect()
                    })
                };
                match request.opcode {
                    Opcode::EXECUTE => Execute::peek_id(&repair.body)
                        .map(prepared_tables)
                        .unwrap_or_default(),
                    Opcode::BATCH => {
                        let Ok(batch) = Batch::decode(&repair.body, version) else {
                            return Vec::new();
                        };
                        let mut all: Vec<TableRef> = Vec::new();
                        for statement in batch.statements.iter() {
                            let found = match statement.statement {
                                BatchedStatement::Query(text) => tables::written_tables(text)
                                    .into_iter()
                                    .map(|t| t.in_keyspace(self.keyspace.as_deref()))
                                    .collect(),
                                BatchedStatement::Prepared(id) => prepared_tables(id),
                            };
                            for table in found {
                                if !all.contains(&table) {
                                    all.push(table);
                                }
                            }
                        }
                        all
                    }
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    /// The code of an ERROR answer; `None` for any other answer. An ERROR whose details do
    /// not decode still has its code (the body's first field); one whose body cannot be read
    /// at all gets -1 (no such code: reported as unknown).
    pub(super) fn error_code(
        &self,
        envelope: &Envelope,
        version: ProtocolVersion,
    ) -> Option<ErrorCode> {
        if envelope.opcode() != Opcode::ERROR {
            return None;
        }
        let Ok(message) = self.response_message(envelope) else {
            return Some(ErrorCode(-1));
        };
        Some(match ErrorMessage::decode(&message, version) {
            Ok(e) => e.code,
            Err(_) => match message.get(..4) {
                Some(&[a, b, c, d]) => ErrorCode(i32::from_be_bytes([a, b, c, d])),
                _ => ErrorCode(-1),
            },
        })
    }

    pub(super) fn describe_error(&self, envelope: &Envelope, version: ProtocolVersion) -> String {
        match self.response_message(envelope) {
            Ok(message) => match ErrorMessage::decode(&message, version) {
                Ok(e) => {
                    let name = e.code.name().unwrap_or("error");
                    format!("{name} (0x{:04x}): {}", e.code.0, e.message)
                }
                Err(err) => format!("undecodable ERROR: {err}"),
            },
            Err(err) => format!("undecodable ERROR: {err}"),
        }
    }

    // ---- per-kind side effects ---------------------------------------------------------------

    /// The primary's SET_KEYSPACE is the keyspace prepared statements are prepared in.
    fn use_answer(&mut self, id: RequestId, upstream: Upstream, envelope: &Envelope) {
        let Some(version) = self.version else { return };
        if self
            .requests
            .get(id)
            .is_none_or(|r| r.route.primary != upstream)
        {
            return;
        }
        let Ok(message) = self.response_message(envelope) else {
            return;
        };
        if let Ok(ResultMessage::SetKeyspace(keyspace)) = ResultMessage::decode(&message, version) {
            self.keyspace = Some(keyspace.to_owned());
        }
    }

    /// Remembers prepared ids: the primary's id is the client's and keys the proxy-wide map;
    /// the other cluster's is what it gets in EXECUTE and BATCH.
    fn prepare_answer(&mut self, id: RequestId, upstream: Upstream, envelope: &Envelope) {
        let Some(version) = self.version else { return };
        let Ok(message) = self.response_message(envelope) else {
            return;
        };
        let Ok(ResultMessage::Prepared(prepared)) = ResultMessage::decode(&message, version) else {
            return;
        };
        let ids = ClusterIds {
            id: Bytes::copy_from_slice(prepared.id),
            result_metadata_id: prepared.result_metadata_id.map(Bytes::copy_from_slice),
        };
        let Some(request) = self.requests.get_mut(id) else {
            bug!("a PREPARED answer for a request that is gone");
            return;
        };
        let primary = request.route.primary;
        let Kind::Prepare {
            query,
            keyspace,
            client_id,
            early,
            generated,
        } = &mut request.kind
        else {
            bug!("a PREPARE answer paired with another kind of request");
            return;
        };
        if upstream == primary {
            *client_id = Some(ids.id.clone());
            let mut all = early.take().map_or([None, None], |early| *early);
            all[upstream.index()] = Some(ids.clone());
            let statement = Statement::classify(query);
            let system = SystemQuery::of(&statement, query, keyspace.as_deref());
            let off_target = crate::session::intake::off_target(
                self.proxy.config().filter_tables.as_ref(),
                &statement,
                query,
                keyspace.as_deref(),
            );
            let entry = PreparedStatement {
                statement,
                query: query.clone(),
                keyspace: keyspace.clone(),
                origin: upstream,
                ids: all,
                system,
                // Copied: the answer is a slice of a read buffer, which it would keep alive.
                result: Some(Bytes::copy_from_slice(&message)),
                off_target,
                // Named as the cluster names them, for values bound by name.
                generated: generated.as_deref().map(|markers| {
                    let mut markers = markers.to_vec();
                    crate::message::generated::name_markers(&message, version, &mut markers);
                    std::sync::Arc::from(markers)
                }),
            };
            self.proxy.prepared().insert(ids.id, entry);
        } else {
            match client_id {
                Some(client_id) => self.proxy.prepared().set_ids(client_id, upstream, ids),
                None => early.get_or_insert_with(Box::default)[upstream.index()] = Some(ids),
            }
        }
    }

    /// A cluster does not know a prepared statement: prepare it there and retry the request on
    /// that cluster only, so that the other never executes it twice. False when it cannot be
    /// done (the statement is unknown to the proxy), and the UNPREPARED is that cluster's answer.
    fn start_repair(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        envelope: &Envelope,
        now: Instant,
    ) -> bool {
        let Some(version) = self.version else {
            return false;
        };
        let Ok(message) = self.response_message(envelope) else {
            return false;
        };
        let Ok(error) = ErrorMessage::decode(&message, version) else {
            return false;
        };
        let ErrorDetails::Unprepared { id: unknown } = error.details else {
            return false;
        };
        let (client_id, query, keyspace) = {
            let cache = self.proxy.prepared();
            // A cluster names a statement by its own id or, when the proxy sent the client's
            // id unmapped, by that.
            let client_id = cache
                .client_id_for(upstream, unknown)
                .cloned()
                .or_else(|| cache.get(unknown).map(|_| Bytes::copy_from_slice(unknown)));
            let Some(client_id) = client_id else {
                return false;
            };
            let Some(entry) = cache.get(&client_id) else {
                return false;
            };
            (client_id, entry.query.clone(), entry.keyspace.clone())
        };
        // v5 names the keyspace in the PREPARE; v3 and v4 prepare in the connection's, so a
        // statement prepared in another keyspace is prepared with its tables qualified (the
        // cluster then knows it by another id, which the proxy maps the client's id to).
        let (keyspace, query) = if version >= ProtocolVersion::V5 {
            (keyspace.as_deref(), query)
        } else {
            let query = match keyspace.as_deref() {
                Some(prepared_in) if self.keyspace.as_deref() != Some(prepared_in) => {
                    tables::qualified(&query, prepared_in).unwrap_or(query)
                }
                _ => query,
            };
            (None, query)
        };
        let body = Prepare {
            query: &query,
            keyspace,
        }
        .to_bytes(version);
        let out = Outgoing::new(Flags::empty(), body);
        let purpose = Purpose::Reprepare(id);
        if self
            .send_request(upstream, purpose, Opcode::PREPARE, version, &out, now)
            .is_err()
        {
            return false;
        }
        if let Some(request) = self.requests.get_mut(id) {
            if let Kind::Prepared(repair) = &mut request.kind {
                repair.attempted[upstream.index()] = true;
                let repairing = repair.repairing.get_or_insert_with(Box::default);
                repairing.statement = client_id;
                repairing.unprepared[upstream.index()] = Some(envelope.clone());
            }
        }
        true
    }

    /// A cluster answered a repair's PREPARE: record its id and retry the request there.
    fn on_reprepared(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        envelope: Envelope,
        now: Instant,
    ) {
        let (Some(version), Some(request)) = (self.version, self.requests.get(id)) else {
            bug!("a re-prepare answered for a request that is gone");
            return;
        };
        let Kind::Prepared(repair) = &request.kind else {
            bug!("a re-prepare answered for a request that executes nothing prepared");
            return;
        };
        let (opcode, body, prefix, flags) = (
            request.opcode,
            repair.body.clone(),
            repair.prefix.clone(),
            repair.flags,
        );
        let statement = repair.repairing.as_ref().map(|r| r.statement.clone());
        // When the repair cannot be done, the request's answer is the UNPREPARED it got: the
        // driver prepares the statement again, through the proxy, and retries.
        let unprepared = repair
            .repairing
            .as_ref()
            .and_then(|r| r.unprepared[upstream.index()].clone())
            .unwrap_or_else(|| envelope.clone());
        let prepared = self.response_message(&envelope).ok().and_then(|m| {
            match ResultMessage::decode(&m, version) {
                Ok(ResultMessage::Prepared(p)) => Some(ClusterIds {
                    id: Bytes::copy_from_slice(p.id),
                    result_metadata_id: p.result_metadata_id.map(Bytes::copy_from_slice),
                }),
                _ => None,
            }
        });
        let (Some(ids), Some(statement)) = (prepared, statement) else {
            return self.leg_done(id, upstream, Outcome::Answer(unprepared), now);
        };
        let origin = self.proxy.prepared().get(&statement).map(|p| p.origin);
        let rebuilt = if origin == Some(upstream) && ids.id == statement {
            // The client holds this cluster's ids, and the cluster gave the same again.
            Ok(body)
        } else {
            // Another cluster, or the client's own that now knows the statement by another
            // id (prepared from a qualified text): later requests are mapped to it.
            self.proxy
                .prepared()
                .set_ids(&statement, upstream, ids.clone());
            match opcode {
                Opcode::EXECUTE => {
                    Execute::with_ids(&body, version, &ids.id, ids.result_metadata_id.as_deref())
                        .map(|s| s.to_bytes())
                }
                _ => self
                    .map_batch_ids(&body, version, upstream)
                    .map(|m| m.unwrap_or(body)),
            }
        };
        let Ok(message) = rebuilt else {
            return self.leg_done(id, upstream, Outcome::Failed(FailureKind::Protocol), now);
        };
        let out = Outgoing::new(flags, join(&prefix, &message));
        if let Err(kind) =
            self.send_request(upstream, Purpose::Request(id), opcode, version, &out, now)
        {
            self.leg_done(id, upstream, Outcome::Failed(kind), now);
        }
    }
}
