//! The handshake: OPTIONS, STARTUP and authentication, with the client on one side and two
//! clusters on the other.
//!
//! STARTUP goes to both clusters and the client hears READY (or the source's AUTHENTICATE)
//! once both are settled, or once the source is and the target let `--wait-timeout` pass: a
//! silent target must not keep clients from connecting (drivers give a connection about 5 s).
//! The target's handshake then goes on in the background and requests for it wait until it
//! is done (see `order.rs`). The client's credentials go to the source; the target gets the
//! proxy's own (`--target-username`) when configured, else the client's. A target that fails
//! its handshake never fails the client: it is marked failed and writes to it are counted as
//! missed. A protocol version that either cluster refuses is refused to the client in the
//! words drivers parse to step down.

use std::time::Instant;

use crate::config::Upstream;
use crate::frame::{Compression, Envelope, Flags, Opcode, ProtocolVersion};
use crate::message::{AuthResponse, Body, ErrorCode, ErrorMessage, Startup, sasl_plain_token};
use crate::routing::{RequestClass, route};
use crate::session::intake::Outgoing;
use crate::session::leg::{Handshake, Purpose};
use crate::session::request::{Kind, Outcome, Request, RequestId};
use crate::session::supported;
use crate::session::{Event, FailureKind, Phase, Session};

impl Session {
    pub(super) fn start_options(&mut self, envelope: Envelope, now: Instant) {
        let class = if self.phase == Phase::Ready {
            RequestClass::Heartbeat
        } else {
            RequestClass::Handshake
        };
        self.start_handshake_request(envelope, Kind::Options, class, now);
    }

    pub(super) fn start_startup(&mut self, envelope: Envelope, now: Instant) {
        let version = envelope.version();
        let compression = match Startup::decode(envelope.body(), version) {
            Ok(startup) => match startup.compression() {
                None => None,
                Some(name) => match Compression::from_name(name) {
                    Some(Compression::Snappy) if version >= ProtocolVersion::V5 => {
                        let why = "snappy compression is not available in protocol v5; use lz4"
                            .to_owned();
                        return self.fatal_client_error(envelope.stream(), why, now);
                    }
                    Some(c) => Some(c),
                    None => {
                        let why = format!(
                            "unsupported compression '{name}'; the proxy supports lz4 and snappy"
                        );
                        return self.fatal_client_error(envelope.stream(), why, now);
                    }
                },
            },
            Err(e) => {
                return self.fatal_client_error(
                    envelope.stream(),
                    format!("malformed STARTUP: {e}"),
                    now,
                );
            }
        };
        self.version = Some(version);
        self.compression = compression;
        self.phase = Phase::Starting;
        for leg in &mut self.upstreams {
            leg.handshake = Handshake::Starting;
        }
        self.start_handshake_request(envelope, Kind::Startup, RequestClass::Handshake, now);
    }

    pub(super) fn start_auth_response(&mut self, envelope: Envelope, now: Instant) {
        // The target sees the client's credentials only when it asked for them and the proxy
        // has none of its own for it.
        let relay_to_target = self.upstreams[Upstream::Target.index()].handshake
            == Handshake::AwaitingClientAuth
            && self.upstreams[Upstream::Target.index()].is_usable();
        let out = Outgoing {
            flags: envelope.header().flags,
            body: envelope.body().clone(),
        };
        let route = route(RequestClass::Handshake, self.read_mode, self.primary);
        let (seen, serial) = (self.order.answered, self.next_serial());
        let request = Request::new(
            envelope.header(),
            Kind::AuthResponse,
            route,
            false,
            false,
            seen,
            serial,
            now,
        );
        let target = relay_to_target.then(|| out.clone());
        self.launch(request, [Some(out), target], bytes::Bytes::new(), now);
    }

    fn start_handshake_request(
        &mut self,
        envelope: Envelope,
        kind: Kind,
        class: RequestClass,
        now: Instant,
    ) {
        let out = Outgoing {
            flags: envelope.header().flags,
            body: envelope.body().clone(),
        };
        let route = route(class, self.read_mode, self.primary);
        let (seen, serial) = (self.order.answered, self.next_serial());
        let request = Request::new(
            envelope.header(),
            kind,
            route,
            false,
            false,
            seen,
            serial,
            now,
        );
        self.launch(
            request,
            [Some(out.clone()), Some(out)],
            bytes::Bytes::new(),
            now,
        );
    }

    /// A cluster answered STARTUP.
    pub(super) fn startup_answer(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        envelope: Envelope,
        now: Instant,
    ) {
        let version = envelope.version();
        match envelope.opcode() {
            Opcode::READY => {
                self.upstreams[upstream.index()].handshake = Handshake::Ready;
                self.leg_done(id, upstream, Outcome::Answer(envelope), now);
                return self.release_held(now);
            }
            Opcode::AUTHENTICATE => {
                let credentials = self.proxy.config().cluster(upstream).credentials.clone();
                match credentials {
                    Some(credentials) => {
                        self.upstreams[upstream.index()].handshake = Handshake::LoggingIn;
                        let token =
                            sasl_plain_token(&credentials.username, credentials.password.expose());
                        let body = AuthResponse {
                            token: Some(token.expose()),
                        }
                        .to_bytes(version);
                        let out = Outgoing {
                            flags: Flags::empty(),
                            body,
                        };
                        match self.send_request(
                            upstream,
                            Purpose::Login(id),
                            Opcode::AUTH_RESPONSE,
                            version,
                            &out,
                            now,
                        ) {
                            Ok(()) => return, // the leg waits for the login's outcome
                            Err(kind) => {
                                return self.leg_done(id, upstream, Outcome::Failed(kind), now);
                            }
                        }
                    }
                    None if self.phase == Phase::Ready => {
                        // The client finished its handshake before this cluster asked for
                        // credentials: there are none left to relay.
                        self.leg_done(id, upstream, Outcome::Answer(envelope), now);
                        let detail = format!(
                            "the {upstream} cluster requires authentication but the client's handshake is over; give the proxy its own credentials with --{upstream}-username and --{upstream}-password"
                        );
                        return self.upstream_failed(
                            upstream,
                            FailureKind::Refused,
                            detail,
                            true,
                            now,
                        );
                    }
                    None => {
                        self.upstreams[upstream.index()].handshake = Handshake::AwaitingClientAuth
                    }
                }
            }
            _ => {
                if self.is_version_refusal(&envelope) {
                    self.proxy.learn_refused_version(upstream, version);
                }
            }
        }
        self.leg_done(id, upstream, Outcome::Answer(envelope), now);
    }

    /// A cluster answered the proxy's own login.
    pub(super) fn on_login(&mut self, id: RequestId, envelope: Envelope, now: Instant) {
        let upstream = Upstream::Target;
        match envelope.opcode() {
            Opcode::AUTH_SUCCESS => {
                self.upstreams[upstream.index()].handshake = Handshake::Ready;
                self.leg_done(id, upstream, Outcome::Answer(envelope), now);
                self.release_held(now);
            }
            opcode => {
                let user = self
                    .proxy
                    .config()
                    .cluster(upstream)
                    .credentials
                    .as_ref()
                    .map_or(String::new(), |c| c.username.clone());
                let detail = if opcode == Opcode::AUTH_CHALLENGE {
                    format!(
                        "the {upstream} cluster asked for a second authentication step, which --{upstream}-username logins do not support"
                    )
                } else {
                    let why = self
                        .version
                        .map_or_else(String::new, |v| self.error_text(&envelope, v));
                    format!(
                        "the {upstream} cluster refused the login of --{upstream}-username {user}: {why}"
                    )
                };
                // Fail the connection first, so that the failure reported is this one and not
                // the vaguer one the end of the handshake would report.
                self.upstream_failed(upstream, FailureKind::Refused, detail, true, now);
                self.leg_done(id, upstream, Outcome::Failed(FailureKind::Refused), now);
            }
        }
    }

    /// A cluster answered a relayed AUTH_RESPONSE: either cluster (the source always, the
    /// target when it got the client's credentials) is ready once it says AUTH_SUCCESS.
    pub(super) fn auth_answer(&mut self, upstream: Upstream, envelope: &Envelope, now: Instant) {
        if envelope.opcode() == Opcode::AUTH_SUCCESS {
            self.upstreams[upstream.index()].handshake = Handshake::Ready;
            self.release_held(now);
        }
    }

    pub(super) fn answer_options(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            return;
        };
        let (stream, version) = (request.client_stream, request.version);
        let source = request.leg(Upstream::Source).outcome().cloned();
        let target = request.leg(Upstream::Target).outcome().cloned();
        if self.refuse_if_any_refused(&[&source, &target], version, stream, now) {
            return;
        }
        match source {
            Some(Outcome::Answer(envelope)) if envelope.opcode() == Opcode::SUPPORTED => {
                let target_body = match &target {
                    Some(Outcome::Answer(t)) if t.opcode() == Opcode::SUPPORTED => {
                        self.response_message(t).ok()
                    }
                    _ => None,
                };
                let accepted = self.proxy.accepted_versions();
                match self
                    .response_message(&envelope)
                    .and_then(|s| supported::merge(&s, target_body.as_deref(), version, &accepted))
                {
                    Ok(body) => {
                        let header = crate::frame::Header {
                            flags: Flags::empty(),
                            length: body.len() as u32,
                            ..*envelope.header()
                        };
                        self.answer_client(stream, version, &Envelope::new(header, body));
                    }
                    Err(e) => {
                        let detail = format!("malformed SUPPORTED from the source cluster: {e}");
                        self.upstream_failed(
                            Upstream::Source,
                            FailureKind::Protocol,
                            detail,
                            true,
                            now,
                        );
                    }
                }
            }
            _ => self.relay(id, now),
        }
    }

    pub(super) fn answer_startup(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            return;
        };
        let (stream, version) = (request.client_stream, request.version);
        let source = request.leg(Upstream::Source).outcome().cloned();
        let target = request.leg(Upstream::Target).outcome().cloned();
        let target_pending = request.leg(Upstream::Target).is_pending();
        if self.refuse_if_any_refused(&[&source, &target], version, stream, now) {
            return;
        }
        match source {
            Some(Outcome::Answer(envelope)) if envelope.opcode() == Opcode::READY => {
                self.settle_target(&target, target_pending, now);
                self.answer_client(stream, version, &envelope);
                self.become_ready(version);
            }
            Some(Outcome::Answer(envelope)) if envelope.opcode() == Opcode::AUTHENTICATE => {
                self.answer_client(stream, version, &envelope);
                self.phase = Phase::Authenticating;
                if version >= ProtocolVersion::V5 {
                    self.client
                        .switch_to_segments(self.compression == Some(Compression::Lz4));
                }
            }
            Some(Outcome::Answer(envelope)) => {
                // An ERROR from the source (e.g. a bad option): the client hears it and may
                // try again.
                self.phase = Phase::Startup;
                self.answer_client(stream, version, &envelope);
            }
            Some(Outcome::Failed(_)) | None => self.close_client(now),
        }
    }

    pub(super) fn answer_auth(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            return;
        };
        let (stream, version) = (request.client_stream, request.version);
        let source = request.leg(Upstream::Source).outcome().cloned();
        let target = request.leg(Upstream::Target).outcome().cloned();
        let target_pending = request.leg(Upstream::Target).is_pending();
        match source {
            Some(Outcome::Answer(envelope)) if envelope.opcode() == Opcode::AUTH_SUCCESS => {
                self.settle_target(&target, target_pending, now);
                self.answer_client(stream, version, &envelope);
                self.become_ready(version);
            }
            Some(Outcome::Answer(envelope)) => self.answer_client(stream, version, &envelope),
            Some(Outcome::Failed(_)) | None => self.close_client(now),
        }
    }

    /// The client is about to be told it is ready: a target that is not ready by now is
    /// failed, with the reason an operator needs.
    fn settle_target(&mut self, answer: &Option<Outcome>, pending: bool, now: Instant) {
        let target = Upstream::Target;
        let leg = &self.upstreams[target.index()];
        if !leg.is_usable() || leg.handshake == Handshake::Ready {
            return;
        }
        // Still answering its handshake after the grace: it goes on in the background and
        // requests for it wait (see `order.rs`).
        let in_progress = matches!(leg.handshake, Handshake::Starting | Handshake::LoggingIn);
        if pending || (answer.is_none() && in_progress) {
            return;
        }
        let detail = match (leg.handshake, answer) {
            (Handshake::AwaitingClientAuth, Some(Outcome::Answer(e))) if e.opcode() == Opcode::ERROR => format!(
                "the target cluster refused the client's credentials ({}); give the proxy its own with --target-username and --target-password",
                self.version.map_or_else(String::new, |v| self.error_text(e, v))
            ),
            (Handshake::AwaitingClientAuth, _) => "the target cluster requires authentication but the client sent no credentials for it; give the proxy its own with --target-username and --target-password".to_owned(),
            (_, Some(Outcome::Answer(e))) if e.opcode() == Opcode::ERROR => format!(
                "the target cluster refused STARTUP: {}",
                self.version.map_or_else(String::new, |v| self.error_text(e, v))
            ),
            _ => "the target cluster did not complete the handshake".to_owned(),
        };
        self.upstream_failed(target, FailureKind::Refused, detail, true, now);
    }

    fn become_ready(&mut self, version: ProtocolVersion) {
        self.phase = Phase::Ready;
        if version >= ProtocolVersion::V5 && self.client_framing_plain() {
            self.client
                .switch_to_segments(self.compression == Some(Compression::Lz4));
        }
        self.events.push_back(Event::Ready {
            version,
            compression: self.compression,
            target_ready: self.upstreams[Upstream::Target.index()].is_ready(),
        });
    }

    /// Whether the client connection still uses plain envelopes (v5 switches once).
    fn client_framing_plain(&self) -> bool {
        self.client.is_plain()
    }

    /// If either cluster refused the protocol version, refuses it to the client (and remembers
    /// it for later clients). True when it did.
    fn refuse_if_any_refused(
        &mut self,
        outcomes: &[&Option<Outcome>],
        version: ProtocolVersion,
        stream: crate::frame::StreamId,
        now: Instant,
    ) -> bool {
        let refused = outcomes.iter().any(|o| match o {
            Some(Outcome::Answer(e)) => self.is_version_refusal(e),
            _ => false,
        });
        if refused {
            for (upstream, outcome) in Upstream::BOTH.iter().zip(outcomes) {
                if let Some(Outcome::Answer(e)) = outcome {
                    if self.is_version_refusal(e) {
                        self.proxy.learn_refused_version(*upstream, version);
                    }
                }
            }
            self.refuse_version(version.number(), stream, now);
        }
        refused
    }

    /// A PROTOCOL_ERROR about the protocol version, as Cassandra words it.
    fn is_version_refusal(&self, envelope: &Envelope) -> bool {
        if envelope.opcode() != Opcode::ERROR {
            return false;
        }
        let Ok(message) = self.response_message(envelope) else {
            return false;
        };
        match ErrorMessage::decode(&message, envelope.version()) {
            Ok(e) => {
                e.code == ErrorCode::PROTOCOL_ERROR
                    && e.message.to_ascii_lowercase().contains("protocol version")
            }
            Err(_) => false,
        }
    }

    fn error_text(&self, envelope: &Envelope, version: ProtocolVersion) -> String {
        self.response_message(envelope)
            .ok()
            .and_then(|m| {
                ErrorMessage::decode(&m, version)
                    .ok()
                    .map(|e| e.message.into_owned())
            })
            .unwrap_or_else(|| "no message".to_owned())
    }
}
