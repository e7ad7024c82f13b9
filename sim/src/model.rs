//! The reference model: what the clients must have seen and which writes each cluster must
//! have received, checked against what happened in a [`World`].
//!
//! Each request has a primary: the cluster that was the proxy's primary when the proxy read
//! the request (the source, unless the scenario switches it); the other is its secondary.
//!
//! What the client must see:
//! - every request answered exactly once, on its stream, unless the proxy closed the
//!   connection because the primary failed (or the client went away, or the proxy shut down
//!   before reading the request);
//! - the primary's answer (same opcode, same message bytes), never the secondary's;
//! - an error made by the proxy only when the primary failed: a timeout error only when the
//!   primary's answer did not reach the proxy within the request timeout, OVERLOADED only
//!   after all 32768 source stream ids were in flight;
//! - with `WaitPolicy::Both`, an answer no earlier than the secondary's, when the secondary
//!   answered in time.
//!
//! Which writes each cluster must have:
//! - the primary: each write at most once, and exactly once when the client was told it
//!   succeeded; no cluster receives a request twice;
//! - the secondary: each write at most once; a write the primary applied and the secondary
//!   did not is counted by the proxy as missed (`Event::MissedWrite` and
//!   `Stats::missed_writes`), and a write the secondary applied and answered in time is not;
//! - both clusters: the same default timestamp for the same write (the client's own when it
//!   set one); equal tables when they applied the same writes.
//!
//! And the run must end cleanly: sessions finish once their client is gone, every backend
//! connection is closed, and the clusters saw no protocol misbehaviour (reused stream ids,
//! undecodable frames). A proxy that shuts down closes every client connection once the
//! requests it read are answered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::client::{ClientOp, OpKind, carries_tag};
use crate::cluster::{AnswerState, Cell, Received, Store};
use crate::host::{Host, PeerState};
use crate::world::World;
use cqlmirror_core::config::{Upstream, WaitPolicy};
use cqlmirror_core::failure::FailureKind;
use cqlmirror_core::frame::Opcode;
use cqlmirror_core::message::ErrorCode;
use cqlmirror_core::session::{Event, Peer};

/// Counts that describe a run, for reports and for scenario-specific assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub ops: usize,
    pub answered: usize,
    pub unanswered: usize,
    /// Answers that were the source's ERROR.
    pub source_errors: usize,
    pub proxy_timeouts: usize,
    pub overloaded: usize,
    /// Writes (ids) applied on each cluster.
    pub source_writes: usize,
    pub target_writes: usize,
    /// Missed writes the proxy reported, and the model's bounds for them.
    pub missed_reported: u64,
    pub missed_required: u64,
    pub missed_ambiguous: u64,
    /// Requests the target answered UNPREPARED that the proxy then repaired.
    pub target_repairs: usize,
    /// Requests the proxy answered UNPREPARED itself (a prepared id it did not know).
    pub proxy_unprepared: usize,
    /// The slowest answer a client got.
    pub max_latency: Duration,
    /// Writes that reached the source without a default timestamp.
    pub unstamped_writes: usize,
    /// Writes the target applied and the source did not (the source failed them).
    pub target_only_writes: usize,
}

/// The outcome of checking a run.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub summary: Summary,
}

impl Summary {
    /// Adds the counts of `other` (the slowest answer is the slower of the two).
    fn add(&mut self, other: &Summary) {
        self.ops += other.ops;
        self.answered += other.answered;
        self.unanswered += other.unanswered;
        self.source_errors += other.source_errors;
        self.proxy_timeouts += other.proxy_timeouts;
        self.overloaded += other.overloaded;
        self.source_writes += other.source_writes;
        self.target_writes += other.target_writes;
        self.missed_reported += other.missed_reported;
        self.missed_required += other.missed_required;
        self.missed_ambiguous += other.missed_ambiguous;
        self.target_repairs += other.target_repairs;
        self.proxy_unprepared += other.proxy_unprepared;
        self.max_latency = self.max_latency.max(other.max_latency);
        self.unstamped_writes += other.unstamped_writes;
        self.target_only_writes += other.target_only_writes;
    }
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations, numbered, at most `max` of them.
    pub fn report(&self, max: usize) -> String {
        let mut s = String::new();
        for (i, v) in self.violations.iter().take(max).enumerate() {
            let _ = writeln!(s, "{:>3}. {v}", i + 1);
        }
        if self.violations.len() > max {
            let _ = writeln!(s, "... and {} more", self.violations.len() - max);
        }
        let _ = write!(s, "{:?}", self.summary);
        s
    }
}

/// The requests each cluster received, by session and tag.
struct Index<'w> {
    by_tag: [BTreeMap<usize, BTreeMap<&'w str, Vec<&'w Received>>>; 2],
    /// Applied records carrying each write id, per cluster.
    applied: [BTreeMap<&'w str, Vec<&'w Received>>; 2],
}

impl<'w> Index<'w> {
    fn new(world: &'w World) -> Self {
        let mut by_tag: [BTreeMap<usize, BTreeMap<&str, Vec<&Received>>>; 2] = Default::default();
        let mut applied: [BTreeMap<&str, Vec<&Received>>; 2] = Default::default();
        for which in Upstream::BOTH {
            for r in world.cluster(which).log() {
                if let Some(tag) = &r.tag {
                    by_tag[which.index()]
                        .entry(r.slot)
                        .or_default()
                        .entry(tag.as_str())
                        .or_default()
                        .push(r);
                }
                if r.applied {
                    for w in &r.writes {
                        applied[which.index()]
                            .entry(w.id.as_str())
                            .or_default()
                            .push(r);
                    }
                }
            }
        }
        Self { by_tag, applied }
    }

    fn tagged(&self, which: Upstream, slot: usize, tag: &str) -> &[&'w Received] {
        self.by_tag[which.index()]
            .get(&slot)
            .and_then(|m| m.get(tag))
            .map_or(&[], Vec::as_slice)
    }

    fn applied(&self, which: Upstream, id: &str) -> &[&'w Received] {
        self.applied[which.index()]
            .get(id)
            .map_or(&[], Vec::as_slice)
    }
}

/// Why the proxy may have closed a client connection, other than a shutdown: a failure of a
/// primary's connection (or of the other with `--dest-close`), or the idle timeout.
fn closing_reason(world: &World, host: &Host, dest_close: bool) -> Option<String> {
    let primaries = world.scenario().primaries();
    for &primary in &primaries {
        if let Some(at) = host.lost_at(primary) {
            return Some(format!("{primary} (primary) connection lost at {at:?}"));
        }
    }
    for (at, event) in host.events() {
        match event {
            Event::Failure {
                upstream, detail, ..
            } if (primaries.contains(upstream) || dest_close) && !detail.contains(" request: ") => {
                return Some(format!("{upstream} failure at {at:?}: {detail}"));
            }
            Event::ClientError { detail, .. } => {
                return Some(format!("client error at {at:?}: {detail}"));
            }
            _ => {}
        }
    }
    if dest_close {
        for which in Upstream::BOTH {
            if let Some(at) = host.lost_at(which) {
                return Some(format!(
                    "{which} connection lost at {at:?} with --dest-close"
                ));
            }
        }
    }
    None
}

/// Whether a primary failed in any way for this session (a request or the connection).
fn primary_trouble(world: &World, host: &Host) -> bool {
    world.scenario().primaries().into_iter().any(|primary| {
        host.lost_at(primary).is_some()
            || host
                .events()
                .iter()
                .any(|(_, e)| matches!(e, Event::Failure { upstream, .. } if *upstream == primary))
    })
}

/// Checks a finished run against the model.
pub fn check(world: &World) -> Verdict {
    let mut v = Verdict::default();
    let index = Index::new(world);
    let config = &world.scenario().config;
    let timeout = config.request_timeout;
    let mut missed_events_total = 0u64;
    // The proxy forgets prepared statements when its cache is smaller than the statements the
    // clients prepare: it then cannot stamp their writes, map their ids on the target, or
    // tell their reads from writes.
    let statements: BTreeSet<&str> = world
        .slots()
        .iter()
        .flat_map(|s| s.client.ops())
        .filter_map(|op| match &op.kind {
            OpKind::Prepare(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let forgetful = config.prepared_cache_size < statements.len();

    for which in Upstream::BOTH {
        for problem in world.cluster(which).violations() {
            v.violations.push(problem.clone());
        }
    }

    // With --wait true the client's answer waits for the target at most --wait-timeout
    // after the source's; once one such wait ran out, the proxy (all its sessions: the flag is
    // proxy-wide) treats the target as stalled and answers without waiting until the target
    // answers again. The model tolerates early answers from the first moment a wait may have
    // run out, in any session.
    let wait_timeout = config.wait_timeout.min(timeout);
    let stall_from = world
        .slots()
        .iter()
        .enumerate()
        .flat_map(|(slot_index, slot)| slot.client.ops().iter().map(move |op| (slot_index, op)))
        .filter_map(|(slot_index, op)| {
            let (primary, _) = world.scenario().primary_at(op.consumed_at?);
            let s = index
                .tagged(primary, slot_index, &op.tag)
                .first()?
                .delivered()?;
            let t = index
                .tagged(primary.other(), slot_index, &op.tag)
                .last()
                .and_then(|t| t.delivered());
            let expiry = s + wait_timeout;
            t.is_none_or(|t| t > expiry).then_some(expiry)
        })
        // Requests the clusters cannot name (untagged ones) show in the proxy's own report
        // of the stall.
        .chain(
            world
                .slots()
                .iter()
                .filter_map(|slot| slot.host.as_ref())
                .flat_map(|host| host.events())
                .filter(|(_, e)| {
                    matches!(e, Event::Failure { detail, .. } if detail.contains("--wait-timeout"))
                })
                .map(|(at, _)| *at),
        )
        .min();

    for (slot_index, slot) in world.slots().iter().enumerate() {
        let client = &slot.client;
        let spec = client.spec();
        v.violations.extend(client.violations().iter().cloned());
        let Some(host) = &slot.host else {
            continue;
        };
        // During the handshake a primary request that times out also ends the connection.
        let reason = closing_reason(world, host, config.dest_close).or_else(|| {
            (client.ready_at().is_none() && primary_trouble(world, host))
                .then(|| "the primary failed during the handshake".to_owned())
        });
        match (client.handshake_error(), spec.expect_handshake_failure) {
            // The proxy's own error (a timeout) while the primary was failing.
            (Some(e), false) if e.contains("cqlmirror:") && primary_trouble(world, host) => {}
            (Some(e), false) => v
                .violations
                .push(format!("client {slot_index}: handshake failed: {e}")),
            (None, true) if client.ready_at().is_some() => v.violations.push(format!(
                "client {slot_index}: the handshake succeeded but was expected to fail"
            )),
            _ => {}
        }
        let closed = client.closed();
        let aborted = spec
            .abort_at
            .is_some_and(|at| closed.is_some_and(|(c, _)| c >= at));
        let shutdown = world.scenario().shutdown_at;
        if let Some((at, true)) = closed {
            let shut_down = shutdown.is_some_and(|t| t <= at);
            if reason.is_none() && !spec.expect_handshake_failure && !shut_down {
                v.violations.push(format!(
                    "client {slot_index}: the proxy closed the connection at {at:?} without a primary failure"
                ));
            }
        }
        for (at, event) in host.events() {
            if let Event::ClientError { detail, .. } = event {
                if !spec.expect_handshake_failure {
                    v.violations.push(format!(
                        "client {slot_index}: the proxy saw a client error at {at:?}: {detail}"
                    ));
                }
            }
            if let Event::Failure {
                upstream,
                kind,
                detail,
                ..
            } = event
            {
                let spec = match upstream {
                    Upstream::Source => &world.scenario().source,
                    Upstream::Target => &world.scenario().target,
                };
                // Timeouts can come from the network and from backpressure; a prepared id the
                // proxy forgot (a tiny cache) can make the target answer UNPREPARED.
                let explained = matches!(kind, FailureKind::Timeout | FailureKind::Overloaded)
                    || (forgetful && detail.contains("UNPREPARED"));
                if !spec.has_faults() && !explained {
                    v.violations.push(format!(
                        "client {slot_index}: {upstream} failure ({kind}: {detail}) at {at:?} with no fault injected there"
                    ));
                }
            }
        }

        let mut missed_required = 0u64;
        let mut missed_ambiguous = 0u64;
        for op in client.ops() {
            v.summary.ops += 1;
            // Reads wait for the secondary only in the compare read mode (they never reach it
            // in the primary mode, and shadow reads are not waited for); writes as configured.
            let read = matches!(
                op.kind,
                crate::client::OpKind::Select(_) | crate::client::OpKind::ExecuteSelect(_)
            );
            let wait = Wait {
                policy: match (read, config.read_mode) {
                    (false, _) => config.wait,
                    (true, cqlmirror_core::routing::ReadMode::Compare) => WaitPolicy::Both,
                    (true, _) => WaitPolicy::Primary,
                },
                timeout: wait_timeout,
                request_timeout: timeout,
                primary_faults: world.scenario().primaries().iter().any(|p| match p {
                    Upstream::Source => world.scenario().source.has_faults(),
                    Upstream::Target => world.scenario().target.has_faults(),
                }),
                stall_from,
            };
            // The primary when the proxy read the request; at the very instant of a switch,
            // either.
            let (primary, tie) = op.consumed_at.map_or((Upstream::Source, None), |at| {
                world.scenario().primary_at(at)
            });
            let mut answer_check = Verdict::default();
            check_answer(
                &mut answer_check,
                &index,
                host,
                op,
                slot_index,
                wait,
                primary,
            );
            if let (false, Some(other)) = (answer_check.violations.is_empty(), tie) {
                let mut second = Verdict::default();
                check_answer(&mut second, &index, host, op, slot_index, wait, other);
                if second.violations.is_empty() {
                    answer_check = second;
                }
            }
            v.violations.append(&mut answer_check.violations);
            v.summary.add(&answer_check.summary);
            // Prepared statements the proxy forgot (a cache smaller than the two statements the
            // clients use) are executed without a timestamp: the proxy cannot tell whether
            // they are conditional.
            let may_lack_timestamp =
                forgetful && matches!(op.kind, OpKind::ExecuteInsert | OpKind::Batch);
            check_writes(&mut v, &index, op, slot_index, may_lack_timestamp, primary);
            match missed_class(&index, op, slot_index, timeout, forgetful, primary) {
                Missed::Required if tie.is_some() => missed_ambiguous += 1,
                Missed::Required => missed_required += 1,
                Missed::Ambiguous => missed_ambiguous += 1,
                Missed::No => {}
            }
            if op.answer.is_none() {
                v.summary.unanswered += 1;
                // After a shutdown the proxy answers what it read and reads nothing more.
                let by_proxy = closed.is_some_and(|(_, by_proxy)| by_proxy);
                let unread_at_shutdown = shutdown.is_some() && op.consumed_at.is_none();
                let excused = aborted || (by_proxy && (reason.is_some() || unread_at_shutdown));
                if !excused {
                    v.violations.push(format!(
                        "client {slot_index}: {} ({:?} on stream {}, sent at {:?}) was never answered",
                        op.tag, op.kind, op.stream, op.sent_at
                    ));
                }
            }
            v.summary.target_repairs += index
                .tagged(Upstream::Target, slot_index, &op.tag)
                .iter()
                .filter(|r| r.error_code() == Some(ErrorCode::UNPREPARED.0))
                .count()
                .min(1);
        }
        let missed_events = host
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, Event::MissedWrite { .. }))
            .count() as u64;
        missed_events_total += missed_events;
        v.summary.missed_required += missed_required;
        v.summary.missed_ambiguous += missed_ambiguous;
        if missed_events < missed_required || missed_events > missed_required + missed_ambiguous {
            v.violations.push(format!(
                "client {slot_index}: the proxy reported {missed_events} missed writes; the model expects {missed_required} to {}",
                missed_required + missed_ambiguous
            ));
        }

        check_events(&mut v, world, slot_index);
        if host.idle_writes() > 0 {
            v.violations.push(format!(
                "client {slot_index}: the driver wanted to write {} times with room and nothing to write (a runtime would spin on writability)",
                host.idle_writes()
            ));
        }

        // Clean ends.
        if closed.is_some() && world.now() < world.scenario().time_limit {
            if host.finished_at().is_none() {
                v.violations.push(format!(
                    "client {slot_index}: the session did not finish after its client left ({} requests in flight)",
                    host.session().in_flight()
                ));
            } else {
                for peer in [Peer::Source, Peer::Target] {
                    let state = host.state(peer);
                    if !matches!(state, PeerState::Closed | PeerState::Idle) {
                        v.violations.push(format!(
                            "client {slot_index}: the finished session left its {peer} connection {state:?}"
                        ));
                    }
                }
                if host.session().poll_timeout().is_some() {
                    v.violations.push(format!(
                        "client {slot_index}: a finished session still has a timer"
                    ));
                }
            }
            for which in Upstream::BOTH {
                if world
                    .cluster(which)
                    .open_connections()
                    .any(|s| s == slot_index)
                {
                    v.violations.push(format!(
                        "client {slot_index}: the {which} cluster still has the session's connection open"
                    ));
                }
            }
        }
    }

    let reported: u64 = world
        .proxy()
        .stats()
        .missed_writes
        .iter()
        .map(|m| m.load(Ordering::Relaxed))
        .sum();
    v.summary.missed_reported = reported;
    if reported != missed_events_total {
        v.violations.push(format!(
            "Stats::missed_writes adds up to {reported} but {missed_events_total} MissedWrite events were emitted"
        ));
    }
    v.summary.source_writes = index.applied[0].len();
    v.summary.target_writes = index.applied[1].len();
    v.summary.target_only_writes = index.applied[1]
        .keys()
        .filter(|id| !index.applied[0].contains_key(*id))
        .count();
    check_tables(&mut v, world, &index);
    v
}

/// What `--wait` and `--request-timeout` let the proxy do, for [`check_answer`].
#[derive(Debug, Clone, Copy)]
struct Wait {
    policy: WaitPolicy,
    /// `--wait-timeout`, capped by the request timeout.
    timeout: Duration,
    /// The first moment a wait for the secondary may have run out.
    stall_from: Option<Duration>,
    /// `--request-timeout`.
    request_timeout: Duration,
    /// Whether the primary cluster may fail requests (faults injected).
    primary_faults: bool,
}

fn check_answer(
    v: &mut Verdict,
    index: &Index<'_>,
    host: &Host,
    op: &ClientOp,
    slot: usize,
    wait: Wait,
    primary: Upstream,
) {
    let timeout = wait.request_timeout;
    let secondary = primary.other();
    let src = index.tagged(primary, slot, &op.tag);
    let tgt = index.tagged(secondary, slot, &op.tag);
    let who = format!(
        "client {slot}: {} ({:?}, stream {})",
        op.tag, op.kind, op.stream
    );
    // Each cluster gets a request once, or twice when its first answer was UNPREPARED and
    // the proxy prepared the statement there and retried (on that cluster only).
    if src.len() > 2 || (src.len() == 2 && src[0].error_code() != Some(ErrorCode::UNPREPARED.0)) {
        v.violations.push(format!(
            "{who}: the {primary} (primary) received it {} times (more than once only after UNPREPARED)",
            src.len()
        ));
    }
    if tgt.len() > 2 || (tgt.len() == 2 && tgt[0].error_code() != Some(ErrorCode::UNPREPARED.0)) {
        v.violations.push(format!(
            "{who}: the {secondary} (secondary) received it {} times (more than once only after UNPREPARED)",
            tgt.len()
        ));
    }
    let Some(answer) = &op.answer else {
        return;
    };
    v.summary.answered += 1;
    let latency = answer.at.saturating_sub(op.sent_at);
    v.summary.max_latency = v.summary.max_latency.max(latency);
    let Some(consumed) = op.consumed_at else {
        v.violations
            .push(format!("{who}: answered before the proxy read all of it"));
        return;
    };
    let deadline = consumed + timeout;
    if let OpKind::Topology(_) = op.kind {
        // The proxy answers these itself: no cluster ever gets one (the client checks the
        // addresses in the answer), and its error is due only when it could not read the
        // primary's topology.
        if !src.is_empty() || !tgt.is_empty() {
            v.violations.push(format!(
                "{who}: a read of a topology table reached a cluster ({} times the {primary}, {} times the {secondary})",
                src.len(),
                tgt.len()
            ));
        }
        let text = answer.error_text().unwrap_or_default();
        if answer.opcode == Opcode::ERROR
            && !(text.contains("cannot answer a read of the cluster's topology")
                && wait.primary_faults)
        {
            v.violations.push(format!(
                "{who}: a read of a topology table answered with an error: {text}"
            ));
        }
        return;
    }
    if answer.is_proxy_error() {
        let text = answer.error_text().unwrap_or_default();
        match answer.error_code() {
            Some(c) if c == ErrorCode::OVERLOADED.0 => {
                v.summary.overloaded += 1;
                match host.source_exhausted_at() {
                    Some(at) if at <= answer.at => {}
                    _ => v.violations.push(format!(
                        "{who}: OVERLOADED at {:?} but the source's 32768 stream ids were never all in flight",
                        answer.at
                    )),
                }
                if !src.is_empty() || !tgt.is_empty() {
                    v.violations
                        .push(format!("{who}: answered OVERLOADED yet sent to a cluster"));
                }
            }
            // A prepared id the proxy does not know: it answers UNPREPARED itself, before
            // anything reaches a cluster, so that the driver prepares again through it.
            Some(c) if c == ErrorCode::UNPREPARED.0 => {
                v.summary.proxy_unprepared += 1;
                if !src.is_empty() || !tgt.is_empty() {
                    v.violations.push(format!(
                        "{who}: the proxy answered UNPREPARED itself yet sent the request to a cluster"
                    ));
                }
            }
            Some(c) if c == ErrorCode::SERVER_ERROR.0 && text.contains("did not answer within") => {
                v.summary.proxy_timeouts += 1;
                // After an UNPREPARED the proxy prepares the statement again and retries: the
                // timeout may be that of the retry (or of its PREPARE, which the clusters'
                // logs cannot name).
                let final_answer = src
                    .last()
                    .filter(|r| r.error_code() != Some(ErrorCode::UNPREPARED.0));
                if let Some(d) = final_answer.and_then(|r| r.delivered()) {
                    if d < deadline {
                        v.violations.push(format!(
                            "{who}: timeout error although the {primary}'s (primary) answer arrived at {d:?}, before the deadline {deadline:?}"
                        ));
                    }
                }
                if answer.at < deadline {
                    v.violations.push(format!(
                        "{who}: timeout error at {:?}, before the deadline {deadline:?}",
                        answer.at
                    ));
                }
            }
            // The primary's connection failed under the request: the client hears it, then
            // the connection closes.
            Some(c)
                if c == ErrorCode::SERVER_ERROR.0
                    && text.contains("This proxy closes the connection") =>
            {
                let failed_by = |p: Upstream| {
                    host.lost_at(p).is_some_and(|at| at <= answer.at)
                        || host.events().iter().any(|(at, e)| {
                            *at <= answer.at
                                && matches!(e, Event::Failure { upstream, .. } if *upstream == p)
                        })
                };
                let named = Upstream::BOTH
                    .into_iter()
                    .find(|u| text.contains(&format!("the {u} cluster")));
                if !named.is_some_and(failed_by) {
                    v.violations.push(format!(
                        "{who}: told a cluster failed at {:?}, but it had not by then: {text}",
                        answer.at
                    ));
                }
            }
            _ => v
                .violations
                .push(format!("{who}: unexpected error from the proxy: {text}")),
        }
        return;
    }
    if op.kind == OpKind::Heartbeat {
        if answer.opcode != Opcode::SUPPORTED {
            v.violations
                .push(format!("{who}: heartbeat answered with {}", answer.opcode));
        }
        return;
    }
    if !carries_tag(op) {
        let expected = if op.kind == OpKind::Register {
            Opcode::READY
        } else {
            Opcode::RESULT
        };
        if answer.opcode != expected && answer.opcode != Opcode::ERROR {
            v.violations
                .push(format!("{who}: answered with {}", answer.opcode));
        }
        return;
    }
    // After a repair, the primary's last answer is the one the client gets.
    let Some(source) = src.last() else {
        v.violations.push(format!(
            "{who}: answered {} but the {primary} (primary) never received it",
            answer.opcode
        ));
        return;
    };
    match &source.answer {
        AnswerState::Sent {
            opcode,
            message,
            delivered,
            ..
        } => {
            if *opcode != answer.opcode || *message != answer.message {
                let from_target = tgt.iter().any(|t| {
                    matches!(&t.answer, AnswerState::Sent { opcode, message, .. }
                        if *opcode == answer.opcode && *message == answer.message)
                });
                v.violations.push(format!(
                    "{who}: the client got {} ({} bytes){} where the {primary} (primary) answered {} ({} bytes)",
                    answer.opcode,
                    answer.message.len(),
                    if from_target {
                        ", the secondary's answer,"
                    } else {
                        ""
                    },
                    opcode,
                    message.len()
                ));
            } else if *opcode == Opcode::ERROR {
                v.summary.source_errors += 1;
            }
            match delivered {
                Some(d) if *d < deadline => {}
                Some(d) => v.violations.push(format!(
                    "{who}: relayed the primary's answer that arrived at {d:?}, after the deadline {deadline:?}"
                )),
                None => v.violations.push(format!(
                    "{who}: relayed an answer the proxy never read"
                )),
            }
        }
        other => v.violations.push(format!(
            "{who}: the client got {} but the primary's answer is {other:?}",
            answer.opcode
        )),
    }
    if wait.policy == WaitPolicy::Both {
        let waited_enough = src
            .first()
            .and_then(|r| r.delivered())
            .is_some_and(|s| answer.at >= s + wait.timeout);
        let stalled = wait.stall_from.is_some_and(|x| x <= answer.at);
        if let Some(d) = tgt.last().and_then(|t| t.delivered()) {
            if d < deadline && answer.at < d && !waited_enough && !stalled {
                v.violations.push(format!(
                    "{who}: with --wait true the client was answered at {:?}, before the secondary's answer arrived at {d:?}",
                    answer.at
                ));
            }
        }
    }
}

fn check_writes(
    v: &mut Verdict,
    index: &Index<'_>,
    op: &ClientOp,
    slot: usize,
    may_lack_timestamp: bool,
    primary: Upstream,
) {
    let told_success = op
        .answer
        .as_ref()
        .is_some_and(|a| a.opcode == Opcode::RESULT);
    for (id, _key) in &op.writes {
        let who = format!("client {slot}: write {id} of {}", op.tag);
        let on_source = index.applied(primary, id);
        let on_target = index.applied(primary.other(), id);
        if on_source.len() > 1 {
            v.violations.push(format!(
                "{who}: applied {} times on the {primary} (primary)",
                on_source.len()
            ));
        }
        if on_target.len() > 1 {
            v.violations.push(format!(
                "{who}: applied {} times on the {} (secondary)",
                on_target.len(),
                primary.other()
            ));
        }
        if told_success && on_source.len() != 1 {
            v.violations.push(format!(
                "{who}: the client was told it succeeded but the {primary} (primary) applied it {} times",
                on_source.len()
            ));
        }
        let stamp = |r: &Received| {
            r.writes
                .iter()
                .find(|w| w.id == *id)
                .and_then(|w| w.timestamp)
        };
        if let Some(s) = on_source.first() {
            if stamp(s).is_none() {
                v.summary.unstamped_writes += 1;
                if may_lack_timestamp {
                    continue;
                }
            }
            match (stamp(s), op.client_timestamp) {
                (None, _) => v.violations.push(format!(
                    "{who}: reached the {primary} (primary) without a default timestamp"
                )),
                (Some(got), Some(own)) if got != own => v
                    .violations
                    .push(format!("{who}: the client's timestamp {own} became {got}")),
                _ => {}
            }
            if let Some(t) = on_target.first() {
                if stamp(s) != stamp(t) {
                    v.violations.push(format!(
                        "{who}: timestamps differ: {primary} (primary) {:?}, other {:?}",
                        stamp(s),
                        stamp(t)
                    ));
                }
            }
        }
    }
}

/// What [`writes_after_reconnection`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconnected {
    /// Times a session's secondary connection came back.
    pub reconnections: usize,
    /// Writes the client was told succeeded that were read after a reconnection, with the
    /// secondary's connection up from then until their timeout ran out: each must be on the
    /// secondary.
    pub checked: usize,
    pub violations: Vec<String>,
}

/// A secondary connection that came back gets the writes again: every write the client was
/// told succeeded, read by the proxy after the session's secondary connection was back
/// (`Event::SecondaryReconnect`) and while it stayed up (no failure of it reported until
/// `settle` after the write was read: give more than the secondary's latency, so that a write
/// in flight when the connection failed again is not counted), is applied on the secondary
/// exactly once. Meant for runs whose secondary fails only by losing its connections (no
/// per-request faults): a write it refused or lost while connected would break the rule for
/// other reasons.
pub fn writes_after_reconnection(world: &World, settle: Duration) -> Reconnected {
    let index = Index::new(world);
    let mut out = Reconnected::default();
    for (slot_index, slot) in world.slots().iter().enumerate() {
        let Some(host) = &slot.host else { continue };
        for op in slot.client.ops() {
            let (Some(consumed), true) = (op.consumed_at, op.kind.proxy_write()) else {
                continue;
            };
            if op
                .answer
                .as_ref()
                .is_none_or(|a| a.opcode != Opcode::RESULT)
            {
                continue;
            }
            let (primary, None) = world.scenario().primary_at(consumed) else {
                continue;
            };
            let secondary = primary.other();
            let back = host
                .events()
                .iter()
                .filter(|(at, e)| {
                    *at <= consumed
                        && matches!(e, Event::SecondaryReconnect {
                            upstream,
                            result: cqlmirror_core::session::reconnect::Reconnect::Reconnected { .. },
                            ..
                        } if *upstream == secondary)
                })
                .map(|(at, _)| *at)
                .max();
            let Some(back) = back else { continue };
            let lost = host.events().iter().any(|(at, e)| {
                *at >= back
                    && *at <= consumed + settle
                    // The connection failed; an ERROR answer is no excuse.
                    && matches!(e, Event::Failure { upstream, kind, .. }
                        if *upstream == secondary && *kind != FailureKind::Error)
            });
            if lost {
                continue;
            }
            out.checked += 1;
            for (id, _) in &op.writes {
                let applied = index.applied(secondary, id).len();
                if applied != 1 {
                    out.violations.push(format!(
                        "client {slot_index}: write {id} of {} (read at {consumed:?}, the {secondary} connection back since {back:?}) was applied {applied} times on the {secondary}",
                        op.tag
                    ));
                }
            }
        }
        out.reconnections += host
            .events()
            .iter()
            .filter(|(_, e)| {
                matches!(
                    e,
                    Event::SecondaryReconnect {
                        result: cqlmirror_core::session::reconnect::Reconnect::Reconnected { .. },
                        ..
                    }
                )
            })
            .count();
    }
    out
}

enum Missed {
    /// The proxy must count it.
    Required,
    /// It may or may not (the target applied it but its answer was late or lost).
    Ambiguous,
    No,
}

/// How the proxy must count a request as a missed write. `forgetful`: the proxy's prepared
/// cache is too small for the clients' statements, so an EXECUTE of a read may be taken for a
/// write (the proxy no longer knows the statement) and counted when the target cannot run it.
fn missed_class(
    index: &Index<'_>,
    op: &ClientOp,
    slot: usize,
    timeout: Duration,
    forgetful: bool,
    primary: Upstream,
) -> Missed {
    if forgetful && matches!(op.kind, OpKind::ExecuteSelect(_)) {
        return Missed::Ambiguous;
    }
    if !op.kind.proxy_write() {
        return Missed::No;
    }
    if !carries_tag(op) {
        return Missed::Ambiguous;
    }
    let Some(consumed) = op.consumed_at else {
        return Missed::No;
    };
    let deadline = consumed + timeout;
    let src = index.tagged(primary, slot, &op.tag);
    let source_ok = src
        .last()
        .is_some_and(|r| r.succeeded() && r.delivered().is_some_and(|d| d < deadline));
    if !source_ok {
        return Missed::No;
    }
    let tgt = index.tagged(primary.other(), slot, &op.tag);
    let target_ok_in_time = tgt
        .last()
        .is_some_and(|r| r.succeeded() && r.delivered().is_some_and(|d| d < deadline));
    if target_ok_in_time {
        return Missed::No;
    }
    if tgt.iter().any(|r| r.applied || r.succeeded()) {
        Missed::Ambiguous
    } else {
        Missed::Required
    }
}

/// EVENTs: a client gets the primary's, each once, and never the secondary's; an EVENT the
/// proxy read well before the client finished reaches it (in runs without a switch of
/// primary; with switches, an EVENT of any cluster that was primary is accepted).
fn check_events(v: &mut Verdict, world: &World, slot: usize) {
    let client = &world.slots()[slot].client;
    let pushes = |which: Upstream| {
        world
            .cluster(which)
            .pushes()
            .iter()
            .filter(move |p| p.slot == slot)
    };
    let mut seen = BTreeSet::new();
    for (at, message) in client.events() {
        if !seen.insert(message.clone()) {
            v.violations
                .push(format!("client {slot}: the same EVENT twice (at {at:?})"));
        }
        let primaries = world.scenario().primaries();
        if primaries
            .iter()
            .any(|&which| pushes(which).any(|p| p.message == *message))
        {
            continue;
        }
        let from_target = Upstream::BOTH
            .iter()
            .any(|&which| pushes(which).any(|p| p.message == *message));
        v.violations.push(format!(
            "client {slot}: an EVENT at {at:?} {}",
            if from_target {
                "that only the secondary pushed"
            } else {
                "that no cluster pushed"
            }
        ));
    }
    let (Some(done), None, true) = (
        client.done_at(),
        client.spec().read_pause,
        world.scenario().primary_switches.is_empty(),
    ) else {
        return;
    };
    let settled = done.saturating_sub(Duration::from_millis(100));
    for p in pushes(Upstream::Source) {
        if p.delivered.is_some_and(|d| d < settled) && !seen.contains(&p.message) {
            v.violations.push(format!(
                "client {slot}: the source's EVENT pushed at {:?} never reached the client",
                p.at
            ));
        }
    }
}

/// When both clusters applied the same writes, their tables must be equal.
fn check_tables(v: &mut Verdict, world: &World, index: &Index<'_>) {
    let source: BTreeSet<&str> = index.applied[0].keys().copied().collect();
    let target: BTreeSet<&str> = index.applied[1].keys().copied().collect();
    // A write without a timestamp gets each coordinator's own time: no agreement to expect.
    let unstamped = index
        .applied
        .iter()
        .flat_map(|m| m.values())
        .flatten()
        .any(|r| r.writes.iter().any(|w| w.timestamp.is_none()));
    if source != target || unstamped {
        return;
    }
    let differing = table_differences(
        world.cluster(Upstream::Source).store(),
        world.cluster(Upstream::Target).store(),
    );
    if !differing.is_empty() {
        let keys: Vec<i64> = differing.iter().map(|d| d.key).take(5).collect();
        v.violations.push(format!(
            "both clusters applied the same {} writes but their tables differ (keys {keys:?})",
            source.len()
        ));
    }
}

/// A key whose cell differs between the source's table and the target's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDifference {
    pub key: i64,
    pub source: Option<Cell>,
    pub target: Option<Cell>,
}

impl std::fmt::Display for TableDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cell = |c: &Option<Cell>| match c {
            Some(c) => format!("{:?} at {}", c.value, c.timestamp),
            None => "nothing".to_owned(),
        };
        write!(
            f,
            "key {}: source has {}, target has {}",
            self.key,
            cell(&self.source),
            cell(&self.target)
        )
    }
}

/// Every key whose value or write time differs between the two tables, by key.
pub fn table_differences(source: &Store, target: &Store) -> Vec<TableDifference> {
    let (a, b) = (source.table(), target.table());
    let keys: BTreeSet<i64> = a.keys().chain(b.keys()).copied().collect();
    keys.into_iter()
        .filter(|k| a.get(k) != b.get(k))
        .map(|key| TableDifference {
            key,
            source: a.get(&key).cloned(),
            target: b.get(&key).cloned(),
        })
        .collect()
}
