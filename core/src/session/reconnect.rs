//! The secondary's connection comes back after it failed.
//!
//! Drivers keep their connections for hours, so a secondary whose connection failed (the node
//! closed it or restarted, a protocol failure, a connect that was refused) would otherwise miss
//! every later write of that client connection. Once the session is ready, a failed secondary
//! is connected again in the background:
//!
//! - after a backoff: [`FIRST_DELAY`] doubled per failed attempt up to [`MAX_DELAY`], each
//!   delay drawn between half and all of that from the proxy's seeded generator, so that many
//!   sessions that lost the same node do not come back in one burst;
//! - to a node [`Proxy::pick_node`](crate::proxy::Proxy::pick_node) chooses (it skips nodes
//!   known down);
//! - with the session's own handshake: the client's STARTUP (its protocol version and
//!   compression; v5 switches to segments after it again), then the proxy's credentials for
//!   that cluster or else the client's that cluster accepted before (SASL PLAIN, kept in the
//!   session's memory only, never logged), then `USE` of the session's keyspace.
//!
//! Until that handshake is done, writes are missed as while the connection is down: counted per
//! table (`Event::MissedWrite`), never held, so the client is neither slowed nor blocked by a
//! cluster that comes back slowly; the handshake's steps have `--request-timeout` each and the
//! connect `--connect-timeout`. Prepared statements are not prepared again up front: a node
//! that forgot them answers UNPREPARED and the request is repaired on that cluster (see
//! `answer.rs`).
//!
//! Only a secondary reconnects: without its primary a client connection ends, and the driver
//! opens a new one. A session that shuts down does not reconnect.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Upstream;
use crate::failure::FailureKind;
use crate::frame::{Envelope, Flags, Opcode};
use crate::message::{AuthResponse, Body, Query, QueryParams, Secret, sasl_plain_token};
use crate::session::leg::{Handshake, Purpose, UpstreamLeg};
use crate::session::request::Outgoing;
use crate::session::{Event, Phase, Session, Timer};
use crate::statement::identifier;
use crate::wire::Consistency;

/// The backoff before the first attempt (drawn between half of it and all of it).
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The backoff never grows past this (drawn between half of it and all of it).
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The delay before attempt `attempt` (0 for the first): the backoff for that attempt, doubled
/// per failed attempt and capped, with its upper half drawn from `random`.
pub fn backoff(attempt: u32, random: u64) -> Duration {
    let cap = MAX_DELAY.as_nanos() as u64;
    let base = (FIRST_DELAY.as_nanos() as u64)
        .saturating_mul(1u64 << attempt.min(32))
        .min(cap);
    let half = base / 2;
    Duration::from_nanos(half + random % (base - half + 1))
}

/// A step of the session's own handshake on a connection it opened again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Startup,
    Login,
    Keyspace,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::Startup => "STARTUP",
            Self::Login => "login",
            Self::Keyspace => "USE of the session's keyspace",
        }
    }
}

/// How an attempt to connect the secondary again ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Connected and logged in again, `down` after the connection failed, at attempt
    /// `attempts`; `missed` writes were missed meanwhile.
    Reconnected {
        down: Duration,
        attempts: u32,
        missed: u64,
    },
    /// Attempt `attempt` failed (the failure itself is its own event); the next is in
    /// `retry_in`.
    Failed { attempt: u32, retry_in: Duration },
}

/// Since when a secondary's connection is down, and what it cost.
#[derive(Debug, Clone, Copy)]
struct Outage {
    since: Instant,
    /// Attempts made so far.
    attempts: u32,
    /// Writes missed since the connection failed.
    missed: u64,
}

/// What the session keeps to log in again, and the outages of its cluster connections.
#[derive(Default)]
pub(crate) struct Rejoin {
    /// The client's STARTUP message: its version and options (compression) are the session's.
    startup: Option<Bytes>,
    /// Per cluster, the SASL token of the client's login it accepted.
    logins: [Option<Secret>; 2],
    outages: [Option<Outage>; 2],
}

impl std::fmt::Debug for Rejoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The logins are secrets: only whether there are any.
        f.debug_struct("Rejoin")
            .field("startup", &self.startup.as_ref().map(Bytes::len))
            .field("logins", &self.logins.each_ref().map(|l| l.is_some()))
            .field("outages", &self.outages)
            .finish()
    }
}

impl Session {
    /// The client's STARTUP, for logging in again later (copied: it is a slice of a read
    /// buffer).
    pub(super) fn remember_startup(&mut self, body: &Bytes) {
        self.rejoin.startup = Some(Bytes::copy_from_slice(body));
    }

    /// `upstream` accepted the client's login with `token`.
    pub(super) fn remember_login(&mut self, upstream: Upstream, token: Secret) {
        self.rejoin.logins[upstream.index()] = Some(token);
    }

    /// A write `upstream` missed: counted for the report of its outage.
    pub(super) fn note_missed(&mut self, upstream: Upstream) {
        if let Some(outage) = self.rejoin.outages[upstream.index()].as_mut() {
            outage.missed += 1;
        }
    }

    fn may_reconnect(&self, upstream: Upstream) -> bool {
        self.phase == Phase::Ready
            && !self.draining
            && !self.finished
            && self.client.is_open()
            && upstream != self.proxy.primary()
            && self.version.is_some()
            && self.rejoin.startup.is_some()
            && self.upstreams[upstream.index()].is_failed()
    }

    /// `upstream`'s connection failed (or could not be opened again): when it is the secondary
    /// of a ready session, the next attempt is scheduled.
    pub(super) fn schedule_reconnect(&mut self, upstream: Upstream, now: Instant) {
        if !self.may_reconnect(upstream) {
            return;
        }
        let outage = self.rejoin.outages[upstream.index()].get_or_insert(Outage {
            since: now,
            attempts: 0,
            missed: 0,
        });
        let attempts = outage.attempts;
        let retry_in = backoff(attempts, self.proxy.random_u64());
        if attempts > 0 {
            self.events.push_back(Event::SecondaryReconnect {
                upstream,
                result: Reconnect::Failed {
                    attempt: attempts,
                    retry_in,
                },
                first: false,
            });
        }
        self.timers
            .retain(|(_, t)| *t != Timer::Reconnect(upstream));
        self.timers
            .insert((now + retry_in, Timer::Reconnect(upstream)));
    }

    /// The backoff passed: opens a new connection and starts its handshake.
    pub(super) fn reconnect(&mut self, upstream: Upstream, now: Instant) {
        let (Some(version), Some(startup)) = (self.version, self.rejoin.startup.clone()) else {
            return;
        };
        if !self.may_reconnect(upstream) {
            return;
        }
        if let Some(outage) = self.rejoin.outages[upstream.index()].as_mut() {
            outage.attempts += 1;
        }
        let endpoint = self.proxy.pick_node(upstream, self.id.0, now);
        let max_frame = self.proxy.config().max_frame_size;
        self.upstreams[upstream.index()] =
            UpstreamLeg::rejoin(upstream, max_frame, endpoint.clone());
        // The connect timer of an earlier connection must not time this one out.
        self.timers.retain(|(_, t)| *t != Timer::Connect(upstream));
        let deadline = now + self.proxy.config().connect_timeout;
        self.timers.insert((deadline, Timer::Connect(upstream)));
        self.actions
            .push_back(crate::session::Action::Connect { upstream, endpoint });
        // Queued until the connection is open.
        let out = Outgoing::new(Flags::empty(), startup);
        self.rejoin_send(upstream, Step::Startup, Opcode::STARTUP, &out, version, now);
    }

    fn rejoin_send(
        &mut self,
        upstream: Upstream,
        step: Step,
        opcode: Opcode,
        out: &Outgoing,
        version: crate::frame::ProtocolVersion,
        now: Instant,
    ) {
        if let Err(kind) =
            self.send_request(upstream, Purpose::Rejoin(step), opcode, version, out, now)
        {
            let detail = format!(
                "could not send the {} of a new connection to the {upstream} cluster: {kind}",
                step.name()
            );
            self.upstream_failed(upstream, kind, detail, true, now);
        }
    }

    /// `upstream` answered a step of the session's own handshake.
    pub(super) fn on_rejoin_answer(
        &mut self,
        upstream: Upstream,
        step: Step,
        envelope: &Envelope,
        now: Instant,
    ) {
        let Some(version) = self.version else {
            return;
        };
        match (step, envelope.opcode()) {
            (Step::Startup, Opcode::READY) | (Step::Login, Opcode::AUTH_SUCCESS) => {
                self.rejoin_keyspace(upstream, now)
            }
            (Step::Keyspace, _) => {
                // An ERROR (the keyspace is gone there) leaves the connection where the
                // client's own USE would have: its requests get that cluster's errors.
                self.rejoined(upstream, now)
            }
            (Step::Startup, Opcode::AUTHENTICATE) => {
                let config = self.proxy.config().cluster(upstream).credentials.clone();
                let token = match config {
                    Some(c) => Some(sasl_plain_token(&c.username, c.password.expose())),
                    None => self.rejoin.logins[upstream.index()].clone(),
                };
                let Some(token) = token else {
                    let detail = format!(
                        "the {upstream} cluster requires authentication on a new connection and the proxy has no credentials for it; give it its own with --{upstream}-username and --{upstream}-password"
                    );
                    return self.upstream_failed(upstream, FailureKind::Refused, detail, true, now);
                };
                self.upstreams[upstream.index()].handshake = Handshake::LoggingIn;
                let out = Outgoing {
                    flags: Flags::empty(),
                    head: bytes::Bytes::new(),
                    body: AuthResponse {
                        token: Some(token.expose()),
                    }
                    .to_bytes(version),
                };
                self.rejoin_send(
                    upstream,
                    Step::Login,
                    Opcode::AUTH_RESPONSE,
                    &out,
                    version,
                    now,
                );
            }
            (_, opcode) => {
                let why = if opcode == Opcode::ERROR {
                    self.error_text(envelope, version)
                } else {
                    format!("unexpected {opcode}")
                };
                let detail = format!(
                    "the {upstream} cluster refused the {} of a new connection: {why}",
                    step.name()
                );
                self.upstream_failed(upstream, FailureKind::Refused, detail, true, now);
            }
        }
    }

    /// Logged in: the session's keyspace, if it has one, then ready.
    fn rejoin_keyspace(&mut self, upstream: Upstream, now: Instant) {
        let (Some(version), Some(keyspace)) = (self.version, self.keyspace.clone()) else {
            return self.rejoined(upstream, now);
        };
        let text = format!("USE {}", identifier::cql(&keyspace));
        let out = Outgoing {
            flags: Flags::empty(),
            head: bytes::Bytes::new(),
            body: Query {
                text: &text,
                params: QueryParams::new(Consistency::ONE),
            }
            .to_bytes(version),
        };
        self.rejoin_send(upstream, Step::Keyspace, Opcode::QUERY, &out, version, now);
    }

    fn rejoined(&mut self, upstream: Upstream, now: Instant) {
        let leg = &mut self.upstreams[upstream.index()];
        leg.handshake = Handshake::Ready;
        leg.rejoining = false;
        if let Some(outage) = self.rejoin.outages[upstream.index()].take() {
            let first = self.proxy.note_reconnected(upstream, now);
            self.events.push_back(Event::SecondaryReconnect {
                upstream,
                result: Reconnect::Reconnected {
                    down: now.saturating_duration_since(outage.since),
                    attempts: outage.attempts,
                    missed: outage.missed,
                },
                first,
            });
        }
        self.release_held(now);
    }

    /// A step of the session's own handshake went unanswered: the connection is given up and
    /// tried again later.
    pub(super) fn rejoin_timed_out(&mut self, upstream: Upstream, step: Step, now: Instant) {
        let timeout = self.request_timeout();
        let detail = format!(
            "the {upstream} cluster did not answer the {} of a new connection within {timeout:?}",
            step.name()
        );
        self.upstream_failed(upstream, FailureKind::Timeout, detail, true, now);
    }

    /// The proxy shuts down: no more attempts.
    pub(super) fn stop_reconnecting(&mut self) {
        self.timers
            .retain(|(_, t)| !matches!(t, Timer::Reconnect(_)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_delay_and_stays_under_the_cap() {
        for attempt in 0..40 {
            let full = FIRST_DELAY
                .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
                .min(MAX_DELAY);
            for random in [0, 1, 12_345, u64::MAX] {
                let delay = backoff(attempt, random);
                assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
            }
        }
        assert_eq!(backoff(0, 0), FIRST_DELAY / 2);
        assert_eq!(backoff(30, 0), MAX_DELAY / 2);
    }
}
