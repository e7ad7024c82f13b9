//! The journal of missed writes, end to end in the simulation: random workloads with the
//! journal on, a healthy source, and a target hit by every kind of fault the simulated
//! cluster has (error answers that mean "not applied" and "maybe applied", requests applied
//! but never answered, requests swallowed, connections reset one at a time or all at once, a
//! target gone silent, connections refused for a while or for good, connects that hang,
//! answers slower than the request timeout). The `Event::Journal` records the sessions emit
//! are then replayed into the target in order, as `replay` does: each record whose
//! `replay_action()` applies, sent as `Record::request` builds it. Afterwards the two
//! tables must be identical, values and write times.
//!
//! The simulated table has no counters or lists. What keeps replay from applying those
//! twice is the record's outcome: replay applies a non-idempotent write only when its record
//! says "not applied". So every such record is checked against what the target really did:
//! none of its writes may be among those the target applied.
//!
//! Leaving one record out of the replay must leave a difference the check reports: that is
//! checked on every seed where the target was behind.
//!
//! Replay one seed with `SIM_SEEDS=<seed> cargo test -p cqlmirror-sim --test sim_journal`.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cqlmirror_core::config::{Upstream, WaitPolicy};
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::journal::{Outcome, Record};
use cqlmirror_core::message::ErrorCode;
use cqlmirror_core::session::Event;
use cqlmirror_sim::cluster::{Store, writes_of_request};
use cqlmirror_sim::model::table_differences;
use cqlmirror_sim::{
    ClientSpec, ClusterEvent, ConnectMode, Fault, FaultRule, Latency, Match, Mix, Scenario, SimRng,
    Workload, World,
};
use sim_common::{run, seeds};

/// The kinds of target fault; each seed draws a few, and the seeds together draw them all.
const FAULTS: usize = 11;

fn ms(rng: &mut SimRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.between(lo, hi))
}

/// Adds fault `kind` to the target of `s`.
fn add_fault(s: &mut Scenario, kind: usize, rng: &mut SimRng) {
    let chance = |rng: &mut SimRng| rng.between(20_000, 150_000) as u32;
    let target = &mut s.target;
    match kind {
        0 => {
            // "Not applied" errors: the write never happened on the target.
            let code = [
                ErrorCode::UNAVAILABLE,
                ErrorCode::OVERLOADED,
                ErrorCode::IS_BOOTSTRAPPING,
            ][rng.index(3)];
            let m = Match::writes().with_chance(chance(rng));
            target.faults.push(FaultRule::new(m, Fault::Error(code)));
        }
        1 => {
            // "Maybe applied" errors (the simulated cluster applies nothing on an error).
            let code = [ErrorCode::WRITE_TIMEOUT, ErrorCode::SERVER_ERROR][rng.index(2)];
            let m = Match::writes().with_chance(chance(rng));
            target.faults.push(FaultRule::new(m, Fault::Error(code)));
        }
        2 => {
            let m = Match::writes().with_chance(chance(rng));
            target.faults.push(FaultRule::new(m, Fault::NoAnswer));
        }
        3 => {
            let m = Match::writes().with_chance(chance(rng));
            target.faults.push(FaultRule::new(m, Fault::Ignore));
        }
        4 => {
            let n = rng.between(3, 60);
            let m = Match::writes().nth(n, n + 1);
            target.faults.push(FaultRule::new(m, Fault::DropConnection));
        }
        5 => {
            let at = ms(rng, 10, 300);
            target.events.push((at, ClusterEvent::DropConnections));
        }
        6 => {
            let at = ms(rng, 20, 400);
            target.events.push((at, ClusterEvent::Silence(true)));
        }
        7 => {
            let at = ms(rng, 0, 200);
            target
                .events
                .push((at, ClusterEvent::RefuseConnections(true)));
            // Connections dropped meanwhile are opened again only once refusing ends.
            target
                .events
                .push((at + ms(rng, 5, 50), ClusterEvent::DropConnections));
            target.events.push((
                at + ms(rng, 100, 600),
                ClusterEvent::RefuseConnections(false),
            ));
        }
        8 => target.connect = ConnectMode::Refuse,
        9 => target.connect = ConnectMode::Hang,
        _ => {
            // Slower than the request timeout.
            let slow = s.config.request_timeout + ms(rng, 10, 500);
            let d = Latency::between(slow, slow + ms(rng, 0, 200));
            let m = Match::writes().with_chance(chance(rng));
            target.faults.push(FaultRule::new(m, Fault::Delay(d)));
        }
    }
}

/// A random workload with the journal on, a healthy source and a faulty target. The source
/// stays primary and healthy: a write the source failed but the target applied is not a
/// missed write, and no journal could bring the source in line.
fn scenario(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed ^ 0x0a11_ed17_0a11_ed17);
    let mut s = Scenario::new(seed);
    s.config.journal = true;
    s.config.wait = if rng.chance(0.5) {
        WaitPolicy::Both
    } else {
        WaitPolicy::Primary
    };
    s.config.request_timeout = ms(&mut rng, 300, 2000);
    s.config.connect_timeout = ms(&mut rng, 100, 1000);
    s.engine = if rng.chance(0.5) {
        cqlmirror_sim::Engine::Session
    } else {
        cqlmirror_sim::Engine::Driver
    };
    s.target.latency = Latency::millis(0, rng.between(1, 20));
    // Every kind once across consecutive seeds, plus up to two more drawn at random.
    let first = (seed as usize) % FAULTS;
    add_fault(&mut s, first, &mut rng);
    // A target that is never reachable (8, 9) would hide every other fault: only ever the
    // seed's own kind.
    const TRANSIENT: [usize; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 10];
    for _ in 0..rng.below(3) {
        let kind = TRANSIENT[rng.index(TRANSIENT.len())];
        add_fault(&mut s, kind, &mut rng);
    }
    let clients = rng.between(1, 3) as usize;
    s.clients = (0..clients)
        .map(|_| {
            let version = ProtocolVersion::ALL[rng.index(ProtocolVersion::ALL.len())];
            let mut c = ClientSpec::new(version);
            c.start_at = ms(&mut rng, 0, 100);
            c.client_timestamp_ppm = rng.below(300_000) as u32;
            c.workload = Workload {
                ops: rng.between(40, 160) as usize,
                max_in_flight: rng.between(1, 32) as usize,
                mix: [Mix::MIXED, Mix::PREPARED, Mix::INSERTS][rng.index(3)],
                keys: rng.between(3, 40) as i64,
                think: Latency::millis(0, rng.between(0, 8)),
                value_size: [0, 0, 100][rng.index(3)],
                unqualified: rng.chance(0.3),
            };
            c
        })
        .collect();
    s
}

/// The journal records the sessions emitted, in the order the runtime appends them (by
/// time, then session), the number of missed writes to tables, and the missed writes that
/// have no record.
fn journal(world: &World) -> (Vec<Arc<Record>>, usize, Vec<String>) {
    let mut records: Vec<(Duration, usize, usize, Arc<Record>)> = Vec::new();
    let mut missed = 0;
    let mut unjournaled = Vec::new();
    for (slot, s) in world.slots().iter().enumerate() {
        let Some(host) = &s.host else { continue };
        for (i, (at, event)) in host.events().iter().enumerate() {
            match event {
                Event::Journal(record) => records.push((*at, slot, i, Arc::clone(record))),
                // A `USE` the target missed changes no table: replay has nothing to apply.
                Event::MissedWrite { tables, .. } if !tables.is_empty() => missed += 1,
                Event::Unjournaled { upstream, reason } => {
                    unjournaled.push(format!("session {slot}: {upstream} {reason:?}"));
                }
                _ => {}
            }
        }
    }
    records.sort_by_key(|(at, slot, i, _)| (*at, *slot, *i));
    (
        records.into_iter().map(|(_, _, _, r)| r).collect(),
        missed,
        unjournaled,
    )
}

/// What replaying a journal did.
#[derive(Debug, Default)]
struct Replayed {
    applied: usize,
    reported: usize,
}

/// Applies each record whose action is `Apply` to `target` (a copy of the table of the
/// cluster that missed them), in order, with the request replay sends; `skip` leaves one out.
fn replay(
    target: &mut Store,
    records: &[Arc<Record>],
    skip: Option<usize>,
    clock: i64,
) -> Result<Replayed, String> {
    let mut done = Replayed::default();
    for (i, record) in records.iter().enumerate() {
        if !record.replay_action().applies() {
            done.reported += 1;
            continue;
        }
        if Some(i) == skip {
            continue;
        }
        // Replay speaks the version the record was made for, with the record's keyspace
        // in use (`USE` first with v3 and v4).
        let (opcode, body) = record.request(record.version);
        target
            .apply_request(
                record.version,
                opcode,
                &body,
                record.keyspace.as_deref(),
                clock,
            )
            .map_err(|e| format!("record {i} ({record:?}) failed: {e}"))?;
        done.applied += 1;
    }
    Ok(done)
}

/// Replays `records` (but `skip`) into a copy of the target's table; `Err` describes what
/// differs from the source's table afterwards.
fn replay_and_compare(
    world: &World,
    records: &[Arc<Record>],
    skip: Option<usize>,
) -> Result<Replayed, String> {
    let source = world.cluster(Upstream::Source).store();
    let mut target = world.cluster(Upstream::Target).store().clone();
    let clock = world.scenario().epoch_micros + world.now().as_micros() as i64;
    let done = replay(&mut target, records, skip, clock)?;
    let after = table_differences(source, &target);
    if after.is_empty() {
        return Ok(done);
    }
    Err(format!(
        "{} keys differ after replaying {} of {} records:\n{}",
        after.len(),
        done.applied,
        records.len(),
        after
            .iter()
            .take(10)
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

/// Runs one seed with the usual model check, then checks its journal: one record per missed
/// write, all for the target and stamped, and the target equal to the source once they are
/// replayed. The world and records, for more checks.
fn check_seed(seed: u64) -> (World, Vec<Arc<Record>>) {
    let (world, verdict) = run("journal", scenario(seed));
    let (records, missed, unjournaled) = journal(&world);
    let replay_hint = format!("seed {seed} (replay with SIM_SEEDS={seed})");
    assert!(
        unjournaled.is_empty(),
        "{replay_hint}: missed writes without a record: {unjournaled:?}"
    );
    assert_eq!(
        records.len(),
        missed,
        "{replay_hint}: one record per missed write"
    );
    for r in &records {
        assert_eq!(r.cluster, Upstream::Target, "{replay_hint}: {r:?}");
        assert!(
            r.timestamp.is_some(),
            "{replay_hint}: unstamped record {r:?}"
        );
    }
    // A record that says "not applied" is one replay may apply even when applying twice
    // would count twice (a counter, a list append): the target must not hold its write.
    let applied: BTreeSet<&str> = world
        .cluster(Upstream::Target)
        .log()
        .iter()
        .filter(|r| r.applied)
        .flat_map(|r| r.writes.iter().map(|w| w.id.as_str()))
        .collect();
    for r in records.iter().filter(|r| r.outcome == Outcome::NotApplied) {
        let (opcode, body) = r.request(r.version);
        let writes = writes_of_request(r.version, opcode, &body, r.keyspace.as_deref())
            .unwrap_or_else(|e| panic!("{replay_hint}: {e}"));
        let held: Vec<&(i64, String)> = writes
            .iter()
            .filter(|(_, id)| applied.contains(id.as_str()))
            .collect();
        assert!(
            held.is_empty(),
            "{replay_hint}: a record says {:?} left the write not applied, but the target applied {held:?}",
            r.cause
        );
    }
    match replay_and_compare(&world, &records, None) {
        // Every missed write here is a plain insert: each is applied, none only reported.
        Ok(done) => assert_eq!(done.reported, 0, "{replay_hint}: {done:?}"),
        Err(e) => panic!("{replay_hint}: {e}\n{:?}", verdict.summary),
    }
    (world, records)
}

#[test]
fn replayed_journal_brings_the_target_in_line() {
    let mut records = 0;
    let mut behind = 0;
    let mut seeds_with_records = 0;
    // Leaving one record out must be seen: for each seed, the first record (from the end)
    // whose absence leaves the tables different shows the comparison can fail.
    let mut left_out_seen = 0;
    let chosen = seeds(0..44);
    let default = chosen == (0..44).collect::<Vec<u64>>();
    for seed in chosen {
        let (world, journal) = check_seed(seed);
        records += journal.len();
        seeds_with_records += usize::from(!journal.is_empty());
        let before = table_differences(
            world.cluster(Upstream::Source).store(),
            world.cluster(Upstream::Target).store(),
        );
        behind += before.len();
        if before.is_empty() {
            continue;
        }
        let skipped = (0..journal.len())
            .rev()
            .find(|&i| replay_and_compare(&world, &journal, Some(i)).is_err());
        left_out_seen += usize::from(skipped.is_some());
    }
    // The faults must have made the target miss writes, or nothing was tested.
    if default {
        assert!(
            seeds_with_records >= 30 && behind > 0,
            "{seeds_with_records} seeds journaled {records} records, {behind} keys behind"
        );
        assert!(
            left_out_seen >= 10,
            "leaving one record out was seen on only {left_out_seen} seeds"
        );
    }
}
