//! Cluster frames: pairing answers with requests, answering the client, and what happens when
//! a cluster fails, times out or asks for a statement to be prepared again.

use std::time::Instant;

use bytes::Bytes;

use crate::config::{Upstream, WaitPolicy};
use crate::error::DecodeError;
use crate::frame::{
    Direction, Envelope, Flags, HEADER_LEN, Header, Opcode, Prefix, ProtocolVersion, StreamId,
};
use crate::message::{
    Body, ErrorCode, ErrorDetails, ErrorMessage, Execute, Prepare, ResultMessage,
};
use crate::prepared::{PreparedStatement, TargetIds};
use crate::session::intake::{Outgoing, join};
use crate::session::leg::Purpose;
use crate::session::request::{Kind, Leg, Outcome, RequestId};
use crate::session::streams::MAX_STREAM;
use crate::session::{Event, FailureKind, Phase, Session};
use crate::statement::Statement;

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
            if envelope.opcode() == Opcode::EVENT && upstream == self.primary {
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
            return; // not ours (or already failed): nothing to pair it with
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
            Purpose::Login(id) => self.on_login(id, envelope, now),
        }
    }

    fn on_answer(&mut self, id: RequestId, upstream: Upstream, envelope: Envelope, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            return;
        };
        match &request.kind {
            Kind::Startup => return self.startup_answer(id, upstream, envelope, now),
            Kind::AuthResponse => self.auth_answer(upstream, &envelope, now),
            Kind::Prepare { .. } => self.prepare_answer(id, upstream, &envelope),
            Kind::Use => self.use_answer(upstream, &envelope),
            Kind::Prepared(repair)
                if !repair.attempted[upstream.index()] && self.is_unprepared(&envelope) =>
            {
                if self.start_repair(id, upstream, &envelope, now) {
                    return;
                }
            }
            Kind::Options | Kind::Plain | Kind::Prepared(_) => {}
        }
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
        let mut finished = None;
        if let Some(request) = self.requests.get_mut(id) {
            if request.route.secondary == Some(upstream) && request.leg(upstream).is_pending() {
                finished = request.answer_seq;
            }
            if let Outcome::Answer(envelope) = &outcome {
                if request.route.primary == upstream && !request.answered {
                    // Held for the client until it may have it: counted as queued for it.
                    request.stored = HEADER_LEN + envelope.body().len();
                    self.stored += request.stored;
                }
            }
            *request.leg_mut(upstream) = Leg::Done(outcome);
        }
        self.progress(id, now);
        if let Some(answer) = finished {
            // What waited for this request on the secondary may go now.
            self.order.finished(answer);
            self.release_held(now);
        }
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
            if self.proxy.mark_stalled(secondary) {
                let wait = self.proxy.config().wait_timeout;
                self.events.push_back(Event::Failure {
                    upstream: secondary,
                    kind: FailureKind::Timeout,
                    detail: format!(
                        "the {secondary} cluster did not answer within --wait-timeout {wait:?}: clients get the {} cluster's answers without waiting for it until it answers again",
                        secondary.other()
                    ),
                    first: true,
                });
            }
        }
        self.progress(id, now);
    }

    /// Answers the client once the wait policy allows, and retires the request once every
    /// cluster is done with it.
    pub(super) fn progress(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            return;
        };
        if !request.answered {
            let handshake = match request.kind {
                Kind::Startup | Kind::AuthResponse => true,
                Kind::Options => self.phase != Phase::Ready,
                _ => false,
            };
            // The handshake always waits for the secondary (a little, below); requests do
            // with `--wait true`.
            let wait =
                !request.impatient && (handshake || self.proxy.config().wait == WaitPolicy::Both);
            let primary_done = !request.leg(request.route.primary).is_pending();
            if primary_done && (request.all_done() || !wait) {
                self.answer(id, now);
            } else if primary_done {
                // The primary answered and the secondary has not: wait for it, but not longer
                // than `--wait-timeout`, and not at all while it is known to stall, so that a
                // silent target delays neither new clients nor answers much.
                let secondary = request.route.secondary.unwrap_or(self.primary.other());
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
            return;
        };
        request.answered = true;
        self.stored -= std::mem::take(&mut request.stored);
        // Number the answer; if the secondary still works on the request, later requests
        // may have to wait for it there (see `order.rs`).
        let answer = self.order.answered;
        self.order.answered += 1;
        request.answer_seq = Some(answer);
        let secondary = request.route.secondary;
        if secondary.is_some_and(|s| request.leg(s).is_pending()) {
            self.order.answered_unfinished(answer, request.barrier);
        }
        let (opcode, write, started) = (request.opcode, request.write, request.started);
        match request.kind {
            Kind::Options => self.answer_options(id, now),
            Kind::Startup => self.answer_startup(id, now),
            Kind::AuthResponse => self.answer_auth(id, now),
            Kind::Plain | Kind::Use | Kind::Prepare { .. } | Kind::Prepared(_) => {
                self.relay(id, now)
            }
        }
        self.proxy
            .stats()
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.events.push_back(Event::Answered {
            opcode,
            write,
            latency: now.saturating_duration_since(started),
        });
    }

    /// Gives the client the primary's answer, or an error saying why there is none.
    pub(super) fn relay(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            return;
        };
        let (stream, version, primary) = (
            request.client_stream,
            request.version,
            request.route.primary,
        );
        match request.leg(primary).outcome().cloned() {
            Some(Outcome::Answer(envelope)) => self.answer_client(stream, version, &envelope),
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
            // The primary is gone: the client reconnects, as it would to a failed node.
            Some(Outcome::Failed(_)) | None => self.close_client(now),
        }
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
        let header = Header {
            version,
            direction: Direction::Response,
            ..*envelope.header()
        };
        self.client.send(header, envelope.body());
    }

    /// Retires a request: counts what failed and what the target missed.
    fn finish(&mut self, id: RequestId, _now: Instant) {
        let Some(request) = self.requests.remove(id) else {
            return;
        };
        let succeeded = |u: Upstream| request.leg(u).outcome().is_some_and(Outcome::is_success);
        for upstream in Upstream::BOTH {
            let other_ok = succeeded(upstream.other());
            match request.leg(upstream) {
                Leg::Done(Outcome::Failed(
                    kind @ (FailureKind::Timeout | FailureKind::Overloaded),
                )) => {
                    let first = self.proxy.record_failure(upstream, *kind);
                    self.events.push_back(Event::Failure {
                        upstream,
                        kind: *kind,
                        detail: format!("{} request: {kind}", request.opcode),
                        first,
                    });
                }
                // Connection-level failures were reported when the connection failed.
                Leg::Done(Outcome::Failed(_)) => self.proxy.count_failed(upstream),
                Leg::Done(Outcome::Answer(envelope))
                    if envelope.opcode() == Opcode::ERROR && other_ok =>
                {
                    let first = self.proxy.record_failure(upstream, FailureKind::Error);
                    let detail = self.describe_error(envelope, request.version);
                    self.events.push_back(Event::Failure {
                        upstream,
                        kind: FailureKind::Error,
                        detail: format!("{} request: {detail}", request.opcode),
                        first,
                    });
                }
                Leg::Unused | Leg::Waiting | Leg::Done(Outcome::Answer(_)) => {}
            }
        }
        let target = Upstream::Target;
        if request.write
            && request.route.includes(target)
            && succeeded(target.other())
            && !succeeded(target)
        {
            self.proxy
                .stats()
                .missed_target_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.events.push_back(Event::MissedWrite {
                opcode: request.opcode,
            });
        }
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
            self.actions
                .push_back(crate::session::Action::Close(crate::session::Peer::of(
                    upstream,
                )));
        }
        let first = self.proxy.record_failure(upstream, kind);
        self.events.push_back(Event::Failure {
            upstream,
            kind,
            detail,
            first,
        });
        if self.holds_for(upstream) {
            self.fail_held(kind, now);
        }
        for f in in_flight.into_iter().filter(|f| !f.timed_out) {
            let (Purpose::Request(id) | Purpose::Reprepare(id) | Purpose::Login(id)) = f.purpose;
            self.leg_done(id, upstream, Outcome::Failed(kind), now);
        }
        if upstream == self.primary || self.proxy.config().dest_close {
            self.close_client(now);
        }
    }

    pub(super) fn upstream_lost(&mut self, upstream: Upstream, reason: &str, now: Instant) {
        let connecting =
            self.upstreams[upstream.index()].link == crate::session::leg::Link::Connecting;
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

    pub(super) fn connect_timed_out(&mut self, upstream: Upstream, now: Instant) {
        if self.upstreams[upstream.index()].link == crate::session::leg::Link::Connecting {
            let timeout = self.proxy.config().connect_timeout;
            let endpoint = self.pick_endpoint(upstream);
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
        let (Purpose::Request(id) | Purpose::Reprepare(id) | Purpose::Login(id)) = purpose;
        // A STARTUP or AUTH_RESPONSE that timed out leaves the cluster's handshake unfinished
        // for good, even while the client's own handshake goes on (it may still have to
        // authenticate with the source, and nothing else would settle this cluster).
        let handshake_request = matches!(purpose, Purpose::Request(id)
            if self.requests.get(id).is_some_and(|r| matches!(r.kind, Kind::Startup | Kind::AuthResponse)));
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

    fn describe_error(&self, envelope: &Envelope, version: ProtocolVersion) -> String {
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

    fn use_answer(&mut self, upstream: Upstream, envelope: &Envelope) {
        let Some(version) = self.version else { return };
        let Ok(message) = self.response_message(envelope) else {
            return;
        };
        if let Ok(ResultMessage::SetKeyspace(keyspace)) = ResultMessage::decode(&message, version) {
            if upstream == Upstream::Source {
                self.keyspace = Some(keyspace.to_owned());
            }
        }
    }

    /// Remembers prepared ids: the source's id keys the proxy-wide map, the target's is what
    /// EXECUTE gets on the target.
    fn prepare_answer(&mut self, id: RequestId, upstream: Upstream, envelope: &Envelope) {
        let Some(version) = self.version else { return };
        let Ok(message) = self.response_message(envelope) else {
            return;
        };
        let Ok(ResultMessage::Prepared(prepared)) = ResultMessage::decode(&message, version) else {
            return;
        };
        let ids = TargetIds {
            id: Bytes::copy_from_slice(prepared.id),
            result_metadata_id: prepared.result_metadata_id.map(Bytes::copy_from_slice),
        };
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        let Kind::Prepare {
            query,
            keyspace,
            source_id,
            target,
        } = &mut request.kind
        else {
            return;
        };
        match upstream {
            Upstream::Source => {
                *source_id = Some(ids.id.clone());
                let entry = PreparedStatement {
                    statement: Statement::classify(query),
                    query: query.clone(),
                    keyspace: keyspace.clone(),
                    target: target.take(),
                };
                self.proxy.prepared().insert(ids.id, entry);
            }
            Upstream::Target => match source_id {
                Some(source_id) => self.proxy.prepared().set_target(source_id, ids),
                None => *target = Some(ids),
            },
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
        let (source_id, query, keyspace) = {
            let cache = self.proxy.prepared();
            // The source names a statement by the id clients use; the target by its own id
            // or, unmapped, by the source's.
            let source_id = match upstream {
                Upstream::Source => None,
                Upstream::Target => cache.source_id_for_target(unknown).cloned(),
            }
            .or_else(|| cache.get(unknown).map(|_| Bytes::copy_from_slice(unknown)));
            let Some(source_id) = source_id else {
                return false;
            };
            let Some(entry) = cache.get(&source_id) else {
                return false;
            };
            (source_id, entry.query.clone(), entry.keyspace.clone())
        };
        let keyspace = if version >= ProtocolVersion::V5 {
            keyspace.as_deref()
        } else {
            None
        };
        let body = Prepare {
            query: &query,
            keyspace,
        }
        .to_bytes(version);
        let out = Outgoing {
            flags: Flags::empty(),
            body,
        };
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
                repair.statement = Some(source_id);
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
            return;
        };
        let Kind::Prepared(repair) = &request.kind else {
            return;
        };
        let (opcode, body, prefix, flags, statement) = (
            request.opcode,
            repair.body.clone(),
            repair.prefix.clone(),
            repair.flags,
            repair.statement.clone(),
        );
        let prepared = self.response_message(&envelope).ok().and_then(|m| {
            match ResultMessage::decode(&m, version) {
                Ok(ResultMessage::Prepared(p)) => Some(TargetIds {
                    id: Bytes::copy_from_slice(p.id),
                    result_metadata_id: p.result_metadata_id.map(Bytes::copy_from_slice),
                }),
                _ => None,
            }
        });
        let (Some(ids), Some(statement)) = (prepared, statement) else {
            // The re-prepare itself failed: that is the cluster's answer.
            return self.leg_done(id, upstream, Outcome::Answer(envelope), now);
        };
        let rebuilt = match upstream {
            // The client's ids are the source's: a source that now gives the statement another
            // id cannot be repaired here; its UNPREPARED-like answer makes the driver prepare
            // again through the proxy.
            Upstream::Source if ids.id != statement => {
                return self.leg_done(id, upstream, Outcome::Answer(envelope), now);
            }
            Upstream::Source => Ok(body),
            Upstream::Target => {
                self.proxy.prepared().set_target(&statement, ids.clone());
                match opcode {
                    Opcode::EXECUTE => Execute::with_ids(
                        &body,
                        version,
                        &ids.id,
                        ids.result_metadata_id.as_deref(),
                    )
                    .map(|s| s.to_bytes()),
                    _ => self
                        .map_batch_ids(&body, version)
                        .map(|m| m.unwrap_or(body)),
                }
            }
        };
        let Ok(message) = rebuilt else {
            return self.leg_done(id, upstream, Outcome::Failed(FailureKind::Protocol), now);
        };
        let out = Outgoing {
            flags,
            body: join(&prefix, &message),
        };
        if let Err(kind) =
            self.send_request(upstream, Purpose::Request(id), opcode, version, &out, now)
        {
            self.leg_done(id, upstream, Outcome::Failed(kind), now);
        }
    }
}
