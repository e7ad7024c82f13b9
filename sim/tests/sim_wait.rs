//! `--wait` both ways with a slow target: with `WaitPolicy::Both` the client's answer to a
//! write waits for the target; with `WaitPolicy::Primary` the client is answered at the
//! source's speed and the target completes every write in the background. Reads wait for the
//! target only in the compare read mode: in the primary and shadow modes a slow or silent
//! target costs them nothing.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::config::WaitPolicy;
use cqlmirror_core::frame::Opcode;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::ErrorCode;
use cqlmirror_core::routing::ReadMode;
use cqlmirror_sim::client::OpKind;
use cqlmirror_sim::cluster::{ClusterEvent, Fault, FaultRule, Match};
use cqlmirror_sim::{ClientSpec, Latency, Mix, Scenario, Workload};
use sim_common::{expect, run, seeds};

const SLOW: Duration = Duration::from_millis(300);

fn scenario(seed: u64, wait: WaitPolicy, version: ProtocolVersion) -> Scenario {
    let mut s = Scenario::new(seed);
    s.config.wait = wait;
    s.source.latency = Latency::millis(1, 3);
    s.target.latency = Latency::between(SLOW, SLOW + Duration::from_millis(200));
    let mut c = ClientSpec::new(version);
    c.workload = Workload {
        ops: 300,
        max_in_flight: 50,
        mix: Mix::MIXED,
        keys: 30,
        think: Latency::millis(0, 2),
        value_size: 0,
        unqualified: false,
    };
    s.clients = vec![c];
    s
}

/// Each answered request's latency as the client saw it (reads of the topology tables left
/// out: the proxy answers them itself, without either cluster).
fn latencies(world: &cqlmirror_sim::World) -> Vec<Duration> {
    latencies_of(world, |kind| !matches!(kind, OpKind::Topology(_)))
}

fn latencies_of(world: &cqlmirror_sim::World, which: impl Fn(&OpKind) -> bool) -> Vec<Duration> {
    world.slots()[0]
        .client
        .ops()
        .iter()
        .filter(|op| which(&op.kind))
        .filter_map(|op| op.answer.as_ref().map(|a| a.at - op.sent_at))
        .collect()
}

fn is_read(kind: &OpKind) -> bool {
    matches!(kind, OpKind::Select(_) | OpKind::ExecuteSelect(_))
}

fn is_write(kind: &OpKind) -> bool {
    matches!(kind, OpKind::Insert | OpKind::ExecuteInsert | OpKind::Batch)
}

#[test]
fn wait_true_waits_for_the_slow_target() {
    for seed in seeds(0..6) {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            let name = format!("wait both {version}");
            let (world, v) = run(&name, scenario(seed, WaitPolicy::Both, version));
            let fastest = latencies_of(&world, is_write).into_iter().min().unwrap();
            expect(
                fastest >= SLOW,
                &name,
                seed,
                format!("every write's answer waited for the target (fastest {fastest:?})"),
                &v,
            );
            let slowest_read = latencies_of(&world, is_read).into_iter().max().unwrap();
            expect(
                slowest_read < SLOW / 2,
                &name,
                seed,
                format!("no read waited for the target (slowest {slowest_read:?})"),
                &v,
            );
            expect(
                v.summary.source_writes == v.summary.target_writes
                    && v.summary.missed_reported == 0,
                &name,
                seed,
                "the target has every write",
                &v,
            );
        }
    }
}

#[test]
fn wait_false_answers_at_source_speed() {
    for seed in seeds(10..16) {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            let name = format!("wait primary {version}");
            let (world, v) = run(&name, scenario(seed, WaitPolicy::Primary, version));
            let slowest = latencies(&world).into_iter().max().unwrap();
            expect(
                slowest < SLOW / 2,
                &name,
                seed,
                format!("no answer waited for the target (slowest {slowest:?})"),
                &v,
            );
            expect(
                v.summary.source_writes == v.summary.target_writes
                    && v.summary.missed_reported == 0,
                &name,
                seed,
                "the target completed every write in the background",
                &v,
            );
        }
    }
}

/// With `--wait false` the client hears the source long before the slow target is done, and
/// sends statements that only work after its earlier `USE`: unqualified table names. The
/// proxy keeps `USE` in order on the target, so every write still lands there.
#[test]
fn wait_false_keeps_use_in_order_on_the_target() {
    for seed in seeds(20..26) {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            let name = format!("wait primary, USE and unqualified tables, {version}");
            let mut s = scenario(seed, WaitPolicy::Primary, version);
            s.clients[0].workload.unqualified = true;
            s.clients[0].workload.mix.use_keyspace = 10;
            let (world, v) = run(&name, s);
            let slowest = latencies(&world).into_iter().max().unwrap();
            expect(
                slowest < SLOW / 2,
                &name,
                seed,
                format!("no answer waited for the target (slowest {slowest:?})"),
                &v,
            );
            expect(
                v.summary.source_writes == v.summary.target_writes
                    && v.summary.missed_reported == 0,
                &name,
                seed,
                "the target completed every write, each after its USE",
                &v,
            );
        }
    }
}

/// Reads in the primary and shadow modes are answered at the source's speed whatever the
/// target does: slow, silent (accepts requests, answers none) or failing its requests.
#[test]
fn a_slow_or_failing_target_costs_reads_nothing_in_primary_and_shadow_modes() {
    for seed in seeds(30..34) {
        for mode in [ReadMode::Primary, ReadMode::Shadow] {
            for trouble in ["slow", "silent", "failing"] {
                let name = format!("read mode {mode}, target {trouble}");
                let mut s = scenario(seed, WaitPolicy::Both, ProtocolVersion::V4);
                s.config.read_mode = mode;
                s.config.request_timeout = Duration::from_secs(2);
                match trouble {
                    "silent" => {
                        s.target.events = vec![(Duration::ZERO, ClusterEvent::Silence(true))];
                    }
                    "failing" => {
                        // Errors for simple statements, no answer at all for prepared ones.
                        s.target.faults = vec![
                            FaultRule::new(
                                Match::opcode(Opcode::QUERY),
                                Fault::Error(ErrorCode::SERVER_ERROR),
                            ),
                            FaultRule::new(Match::opcode(Opcode::EXECUTE), Fault::NoAnswer),
                        ];
                    }
                    _ => {}
                }
                let (world, v) = run(&name, s);
                let reads = latencies_of(&world, is_read);
                let slowest = reads.iter().max().copied().unwrap();
                expect(
                    !reads.is_empty() && slowest < SLOW / 2,
                    &name,
                    seed,
                    format!(
                        "no read waited for the target (slowest of {} {slowest:?})",
                        reads.len()
                    ),
                    &v,
                );
            }
        }
    }
}

/// In the compare read mode the client waits for both answers, as the older proxy did.
#[test]
fn compare_mode_reads_wait_for_both_clusters() {
    for seed in seeds(40..43) {
        let name = "read mode compare".to_owned();
        let mut s = scenario(seed, WaitPolicy::Primary, ProtocolVersion::V4);
        s.config.read_mode = ReadMode::Compare;
        // Never given up on: the slow target stays slower than this.
        s.config.wait_timeout = Duration::from_secs(5);
        s.config.request_timeout = Duration::from_secs(10);
        s.clients[0].workload.max_in_flight = 4;
        s.clients[0].workload.ops = 100;
        let (world, v) = run(&name, s);
        let fastest = latencies_of(&world, is_read).into_iter().min().unwrap();
        expect(
            fastest >= SLOW,
            &name,
            seed,
            format!("every read waited for the target (fastest {fastest:?})"),
            &v,
        );
    }
}
