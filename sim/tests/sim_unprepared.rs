//! UNPREPARED: on the target only, the proxy prepares the statement there again and retries
//! on the target alone, so the source executes the request once and the client never hears
//! of it; on the source, the client gets the source's UNPREPARED and prepares again, as a
//! driver does. Prepared ids differ between the clusters throughout.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::config::{Upstream, WaitPolicy};
use cqlmirror_core::frame::{Opcode, ProtocolVersion};
use cqlmirror_core::message::ErrorCode;
use cqlmirror_sim::{
    ClientSpec, ClusterEvent, Fault, FaultRule, Latency, Match, Mix, Scenario, Workload,
};
use sim_common::{expect, run, seeds};

fn scenario(seed: u64, wait: WaitPolicy, version: ProtocolVersion) -> Scenario {
    let mut s = Scenario::new(seed);
    s.config.wait = wait;
    s.config.request_timeout = Duration::from_secs(3);
    let mut c = ClientSpec::new(version);
    c.workload = Workload {
        ops: 300,
        max_in_flight: 20,
        mix: Mix::PREPARED,
        keys: 30,
        think: Latency::millis(0, 3),
        value_size: 0,
        unqualified: false,
    };
    s.clients = vec![c];
    s
}

fn each_case(mut body: impl FnMut(String, Scenario)) {
    for seed in seeds(0..4) {
        for wait in [WaitPolicy::Both, WaitPolicy::Primary] {
            for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
                body(format!("{wait:?} {version}"), scenario(seed, wait, version));
            }
        }
    }
}

fn unprepared_answers(world: &cqlmirror_sim::World) -> usize {
    world.slots()[0]
        .client
        .ops()
        .iter()
        .filter(|o| o.answer.as_ref().and_then(|a| a.error_code()) == Some(ErrorCode::UNPREPARED.0))
        .count()
}

/// Forgets the prepared statements named by the `every`-th EXECUTE or BATCH, once per
/// window of `every` requests: the requests in flight then fail too (the statement is gone
/// for everyone), and the repair has time to succeed before the next eviction.
fn evictions(every: u64, first: u64) -> Vec<FaultRule> {
    (0..40)
        .map(|i| {
            let n = first + i * every;
            FaultRule::new(
                Match {
                    opcodes: vec![Opcode::EXECUTE, Opcode::BATCH],
                    ..Match::all()
                }
                .nth(n, n + 1),
                Fault::Unprepared,
            )
        })
        .collect()
}

#[test]
fn target_forgets_statements() {
    each_case(|name, mut s| {
        let name = format!("target unprepared, {name}");
        let seed = s.seed;
        s.target.faults = evictions(60, 5 + seed * 3);
        // Half the runs name the table without its keyspace, after USE: the statement must be
        // prepared again in the right keyspace.
        s.clients[0].workload.unqualified = seed % 2 == 1;
        let (world, v) = run(&name, s);
        expect(
            v.summary.target_repairs > 0,
            &name,
            seed,
            "the proxy repaired the target",
            &v,
        );
        expect(
            unprepared_answers(&world) == 0,
            &name,
            seed,
            "the client never saw UNPREPARED",
            &v,
        );
        expect(
            v.summary.source_writes == v.summary.target_writes && v.summary.missed_reported == 0,
            &name,
            seed,
            "every write reached the target once",
            &v,
        );
    });
}

/// Evictions at random, often enough that a retry meets one too: the proxy tries once, and
/// whatever the target then lacks must be counted as missed (the model checks the count).
#[test]
fn target_forgets_statements_often() {
    each_case(|name, mut s| {
        let name = format!("target unprepared often, {name}");
        let seed = s.seed;
        s.target.faults = vec![FaultRule::new(
            Match {
                opcodes: vec![Opcode::EXECUTE, Opcode::BATCH],
                ..Match::all()
            }
            .with_chance(80_000),
            Fault::Unprepared,
        )];
        let (world, v) = run(&name, s);
        expect(
            v.summary.target_repairs > 0,
            &name,
            seed,
            "the proxy repaired the target",
            &v,
        );
        expect(
            unprepared_answers(&world) == 0,
            &name,
            seed,
            "the client never saw UNPREPARED",
            &v,
        );
    });
}

#[test]
fn target_restarts() {
    each_case(|name, mut s| {
        let name = format!("target restart, {name}");
        let seed = s.seed;
        s.target.events = (1..4)
            .map(|i| {
                (
                    Duration::from_millis(i * (60 + seed * 10)),
                    ClusterEvent::ForgetPrepared,
                )
            })
            .collect();
        let (world, v) = run(&name, s);
        expect(
            v.summary.target_repairs > 0,
            &name,
            seed,
            "the proxy repaired the target",
            &v,
        );
        expect(
            unprepared_answers(&world) == 0,
            &name,
            seed,
            "the client never saw UNPREPARED",
            &v,
        );
        expect(
            v.summary.missed_reported == 0,
            &name,
            seed,
            "nothing missed",
            &v,
        );
    });
}

#[test]
fn source_forgets_statements() {
    each_case(|name, mut s| {
        let name = format!("source unprepared, {name}");
        let seed = s.seed;
        s.source.faults = vec![FaultRule::new(
            Match {
                opcodes: vec![Opcode::EXECUTE, Opcode::BATCH],
                ..Match::all()
            }
            .with_chance(50_000),
            Fault::Unprepared,
        )];
        let (world, v) = run(&name, s);
        // The proxy prepares the statement on the source again and retries there only: the
        // client sees UNPREPARED only when the retry hit the fault too, and only then can a
        // write be on the target alone.
        let repaired = world
            .cluster(Upstream::Source)
            .log()
            .iter()
            .filter(|r| r.slot == 0 && r.error_code() == Some(ErrorCode::UNPREPARED.0))
            .count();
        let seen = unprepared_answers(&world);
        expect(
            repaired > 0 && seen < repaired,
            &name,
            seed,
            format!("the source's {repaired} UNPREPARED were repaired (the client saw {seen})"),
            &v,
        );
        expect(
            // Counted in writes: a batch carries several.
            v.summary.target_only_writes == 0 || seen > 0,
            &name,
            seed,
            "a write lands on the target alone only when the source's retry failed too",
            &v,
        );
    });
}

#[test]
fn both_forget_statements() {
    each_case(|name, mut s| {
        let name = format!("both unprepared, {name}");
        let seed = s.seed;
        let rule = FaultRule::new(
            Match {
                opcodes: vec![Opcode::EXECUTE, Opcode::BATCH],
                ..Match::all()
            }
            .with_chance(50_000),
            Fault::Unprepared,
        );
        s.source.faults = vec![rule.clone()];
        s.target.faults = vec![rule];
        s.target.events = vec![(Duration::from_millis(100), ClusterEvent::ForgetPrepared)];
        let _ = run(&name, s);
        let _ = seed;
    });
}
