//! The handshake: OPTIONS, STARTUP and authentication, with the client on one side and two
//! clusters on the other.
//!
//! STARTUP goes to both clusters and the client hears READY (or the primary's AUTHENTICATE)
//! once both are settled, or once the primary is and the secondary let `--wait-timeout` pass:
//! a silent secondary must not keep clients from connecting (drivers give a connection about
//! 5 s). The secondary's handshake then goes on in the background and requests for it wait
//! until it is done (see `order.rs`). The client's credentials go to the primary; a cluster
//! for which the proxy has credentials of its own (`--target-username`) gets those, and the
//! secondary otherwise gets the client's. A secondary that fails its handshake never fails the
//! client: it is marked failed and writes to it are counted as missed. A protocol version that
//! either cluster refuses is refused to the client in the words drivers parse to step down.
//!
//! The primary of the handshake is the proxy's primary when STARTUP arrives: a switch of
//! primary during a handshake applies to the client's requests, not to its login.

use std::time::Instant;

use bytes::Bytes;

use crate::config::Upstream;
use crate::failure::FailureKind;
use crate::frame::{Compression, Direction, Envelope, Flags, Header, Opcode, ProtocolVersion};
use crate::message::{
    AuthResponse, Body, ErrorCode, ErrorMessage, Secret, Startup, sasl_plain_token,
};
use crate::routing::{RequestClass, Route, route};
use crate::session::leg::{Handshake, Purpose};
use crate::session::request::{Kind, Outcome, Outgoing, Request, RequestId};
use crate::session::supported;
use crate::session::{Event, Phase, Session};

impl Session {
    /// The route of the handshake's requests: fixed by STARTUP, the proxy's primary before.
    fn handshake_route(&self, class: RequestClass) -> Route {
        let primary = self
            .handshake_primary
            .unwrap_or_else(|| self.proxy.primary());
        route(class, self.proxy.read_mode(), primary, || false)
    }

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
        self.remember_startup(envelope.body());
        self.handshake_primary = Some(self.proxy.primary());
        self.phase = Phase::Starting;
        for leg in &mut self.upstreams {
            leg.handshake = Handshake::Starting;
        }
        self.start_handshake_request(envelope, Kind::Startup, RequestClass::Handshake, now);
    }

    pub(super) fn start_auth_response(&mut self, envelope: Envelope, now: Instant) {
        let route = self.handshake_route(RequestClass::Handshake);
        let max = self.proxy.config().max_frame_size;
        let token = envelope
            .decompressed(self.compression, max)
            .ok()
            .and_then(|plain| {
                AuthResponse::decode(plain.body(), plain.version())
                    .ok()
                    .and_then(|a| a.token.map(|t| Secret::new(Bytes::copy_from_slice(t))))
            });
        // The secondary sees the client's credentials only when it asked for them and the
        // proxy has none of its own for it.
        let relay_to_secondary = route.secondary.is_some_and(|secondary| {
            let leg = &self.upstreams[secondary.index()];
            leg.handshake == Handshake::AwaitingClientAuth && leg.is_usable()
        });
        let out = Outgoing::new(envelope.header().flags, envelope.body().clone());
        let (seen, serial) = (self.order.answered, self.next_serial());
        let request = self.requests.boxed(Request::new(
            envelope.header(),
            Kind::AuthResponse { token },
            route,
            false,
            false,
            seen,
            serial,
            now,
        ));
        let mut bodies = [None, None];
        bodies[route.primary.index()] = Some(out.clone());
        if let (true, Some(secondary)) = (relay_to_secondary, route.secondary) {
            bodies[secondary.index()] = Some(out);
        }
        self.launch(request, bodies, bytes::Bytes::new(), now);
    }

    fn start_handshake_request(
        &mut self,
        envelope: Envelope,
        kind: Kind,
        class: RequestClass,
        now: Instant,
    ) {
        let out = Outgoing::new(envelope.header().flags, envelope.body().clone());
        // Heartbeats follow the proxy's primary like every request of a ready connection.
        let route = if class == RequestClass::Heartbeat {
            route(class, self.proxy.read_mode(), self.proxy.primary(), || {
                false
            })
        } else {
            self.handshake_route(class)
        };
        let (seen, serial) = (self.order.answered, self.next_serial());
        let request = self.requests.boxed(Request::new(
            envelope.header(),
            kind,
            route,
            false,
            false,
            seen,
            serial,
            now,
        ));
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
                        let out = Outgoing::new(Flags::empty(), body);
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

    /// `upstream` answered the proxy's own login. Its STARTUP then counts as answered READY:
    /// the client, which did not take part in that login, is ready as far as that cluster is
    /// concerned.
    pub(super) fn on_login(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        envelope: Envelope,
        now: Instant,
    ) {
        match envelope.opcode() {
            Opcode::AUTH_SUCCESS => {
                self.upstreams[upstream.index()].handshake = Handshake::Ready;
                let ready = Envelope::new(
                    Header {
                        version: envelope.version(),
                        direction: Direction::Response,
                        flags: Flags::empty(),
                        stream: envelope.stream(),
                        opcode: Opcode::READY,
                        length: 0,
                    },
                    bytes::Bytes::new(),
                );
                self.leg_done(id, upstream, Outcome::Answer(ready), now);
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

    /// A cluster answered a relayed AUTH_RESPONSE: either cluster (the primary always, the
    /// secondary when it got the client's credentials) is ready once it says AUTH_SUCCESS.
    /// The login is then one the control connection may use there.
    pub(super) fn auth_answer(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        envelope: &Envelope,
        now: Instant,
    ) {
        if envelope.opcode() == Opcode::AUTH_SUCCESS {
            self.upstreams[upstream.index()].handshake = Handshake::Ready;
            if let Some(Kind::AuthResponse { token: Some(token) }) =
                self.requests.get(id).map(|r| &r.kind)
            {
                let token = token.clone();
                self.proxy.learn_login(upstream, token.clone());
                self.remember_login(upstream, token);
            }
            self.release_held(now);
        }
    }

    pub(super) fn answer_options(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            bug!("answering a handshake request that is gone");
            return;
        };
        let (stream, version, route) = (request.client_stream, request.version, request.route);
        let outcomes = Upstream::BOTH.map(|u| request.leg(u).outcome().cloned());
        if self.refuse_if_any_refused(&outcomes, version, stream, now) {
            return;
        }
        let primary = outcomes[route.primary.index()].clone();
        let secondary = route.secondary.and_then(|s| outcomes[s.index()].clone());
        match primary {
            Some(Outcome::Answer(envelope)) if envelope.opcode() == Opcode::SUPPORTED => {
                let secondary_body = match &secondary {
                    Some(Outcome::Answer(t)) if t.opcode() == Opcode::SUPPORTED => {
                        self.response_message(t).ok()
                    }
                    _ => None,
                };
                let accepted = self.proxy.accepted_versions();
                match self.response_message(&envelope).and_then(|s| {
                    supported::merge(&s, secondary_body.as_deref(), version, &accepted)
                }) {
                    Ok(body) => {
                        let header = crate::frame::Header {
                            flags: Flags::empty(),
                            length: body.len() as u32,
                            ..*envelope.header()
                        };
                        self.answer_client(stream, version, &Envelope::new(header, body));
                    }
                    Err(e) => {
                        let primary = route.primary;
                        let detail = format!("malformed SUPPORTED from the {primary} cluster: {e}");
                        self.upstream_failed(primary, FailureKind::Protocol, detail, true, now);
                    }
                }
            }
            _ => self.relay(id, now),
        }
    }

    pub(super) fn answer_startup(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            bug!("answering a handshake request that is gone");
            return;
        };
        let (stream, version, route) = (request.client_stream, request.version, request.route);
        let outcomes = Upstream::BOTH.map(|u| request.leg(u).outcome().cloned());
        let secondary_pending = route.secondary.is_some_and(|s| request.leg(s).is_pending());
        if self.refuse_if_any_refused(&outcomes, version, stream, now) {
            return;
        }
        match outcomes[route.primary.index()].clone() {
            Some(Outcome::Answer(envelope)) if envelope.opcode() == Opcode::READY => {
                self.settle_secondary(route, &outcomes, secondary_pending, now);
                self.answer_client(stream, version, &envelope);
                self.become_ready(route, version, now);
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
                // An ERROR from the primary (e.g. a bad option): the client hears it and may
                // try again.
                self.phase = Phase::Startup;
                self.answer_client(stream, version, &envelope);
            }
            Some(Outcome::Failed(kind)) => {
                self.phase = Phase::Startup;
                self.primary_unavailable(stream, version, route.primary, kind, now)
            }
            Some(Outcome::Digest(_)) | None => self.close_client(now),
        }
    }

    pub(super) fn answer_auth(&mut self, id: RequestId, now: Instant) {
        let Some(request) = self.requests.get(id) else {
            bug!("answering a handshake request that is gone");
            return;
        };
        let (stream, version, route) = (request.client_stream, request.version, request.route);
        let outcomes = Upstream::BOTH.map(|u| request.leg(u).outcome().cloned());
        let secondary_pending = route.secondary.is_some_and(|s| request.leg(s).is_pending());
        match outcomes[route.primary.index()].clone() {
            Some(Outcome::Answer(envelope)) if envelope.opcode() == Opcode::AUTH_SUCCESS => {
                self.settle_secondary(route, &outcomes, secondary_pending, now);
                self.answer_client(stream, version, &envelope);
                self.become_ready(route, version, now);
            }
            Some(Outcome::Answer(envelope)) => self.answer_client(stream, version, &envelope),
            Some(Outcome::Failed(kind)) => {
                self.primary_unavailable(stream, version, route.primary, kind, now)
            }
            Some(Outcome::Digest(_)) | None => self.close_client(now),
        }
    }

    /// The client is about to be told it is ready: a secondary that is not ready by now is
    /// failed, with the reason an operator needs.
    fn settle_secondary(
        &mut self,
        route: Route,
        outcomes: &[Option<Outcome>; 2],
        pending: bool,
        now: Instant,
    ) {
        let Some(secondary) = route.secondary else {
            return;
        };
        let answer = &outcomes[secondary.index()];
        let leg = &self.upstreams[secondary.index()];
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
            (Handshake::AwaitingClientAuth, Some(Outcome::Answer(e)))
                if e.opcode() == Opcode::ERROR =>
            {
                format!(
                    "the {secondary} cluster refused the client's credentials ({}); give the proxy its own with --{secondary}-username and --{secondary}-password",
                    self.version
                        .map_or_else(String::new, |v| self.error_text(e, v))
                )
            }
            (Handshake::AwaitingClientAuth, _) => format!(
                "the {secondary} cluster requires authentication but the client sent no credentials for it; give the proxy its own with --{secondary}-username and --{secondary}-password"
            ),
            (_, Some(Outcome::Answer(e))) if e.opcode() == Opcode::ERROR => format!(
                "the {secondary} cluster refused STARTUP: {}",
                self.version
                    .map_or_else(String::new, |v| self.error_text(e, v))
            ),
            _ => format!("the {secondary} cluster did not complete the handshake"),
        };
        self.upstream_failed(secondary, FailureKind::Refused, detail, true, now);
    }

    fn become_ready(&mut self, route: Route, version: ProtocolVersion, now: Instant) {
        self.phase = Phase::Ready;
        self.handshake_deadline = None;
        if version >= ProtocolVersion::V5 && self.client_framing_plain() {
            self.client
                .switch_to_segments(self.compression == Some(Compression::Lz4));
        }
        let secondary = route.secondary.unwrap_or(route.primary.other());
        self.events.push_back(Event::Ready {
            version,
            compression: self.compression,
            secondary,
            secondary_ready: self.upstreams[secondary.index()].is_ready(),
        });
        // A secondary that failed during the handshake comes back like one that fails later.
        self.schedule_reconnect(secondary, now);
    }

    /// Whether the client connection still uses plain envelopes (v5 switches once).
    fn client_framing_plain(&self) -> bool {
        self.client.is_plain()
    }

    /// If either cluster refused the protocol version, refuses it to the client (and remembers
    /// it for later clients). True when it did.
    /// `outcomes` are by [`Upstream::index`].
    fn refuse_if_any_refused(
        &mut self,
        outcomes: &[Option<Outcome>; 2],
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

    pub(super) fn error_text(&self, envelope: &Envelope, version: ProtocolVersion) -> String {
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
