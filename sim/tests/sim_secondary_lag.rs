//! A client at saturation in front of a secondary slower than the primary, with
//! `--wait false`: the lag bound slows the client down to the secondary's pace, so nothing is
//! missed and the secondary's connection holds at most about the bound; and
//! `--write-order primary-first`: writes the primary refuses never land on the secondary.

#![allow(clippy::unwrap_used)]

mod sim_common;

use cqlmirror_core::config::{Upstream, WaitPolicy, WriteOrder};
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::ErrorCode;
use cqlmirror_core::session::Event;
use cqlmirror_sim::{ClientSpec, Fault, FaultRule, Latency, Match, Mix, Scenario, Workload};
use sim_common::{expect, run, seeds};

const BOUND: usize = 64;
const OPS: usize = 3000;
/// What one read of the client's socket brings in at most, and the smallest request then.
const READ: usize = 4 * 1024;
const VALUE: usize = 100;

fn saturated(seed: u64, bound: usize) -> Scenario {
    let mut s = Scenario::new(seed);
    s.config.wait = WaitPolicy::Primary;
    s.config.max_secondary_lag = bound;
    s.proxy_max_read = READ;
    s.source.latency = Latency::millis(0, 1);
    s.target.latency = Latency::millis(20, 60);
    let mut c = ClientSpec::new(ProtocolVersion::V4);
    c.workload = Workload {
        ops: OPS,
        max_in_flight: 1000,
        mix: Mix::INSERTS,
        keys: 200,
        think: Latency::ZERO,
        value_size: VALUE,
        unqualified: false,
    };
    s.clients = vec![c];
    s
}

#[test]
fn a_slow_secondary_slows_the_client_and_misses_nothing() {
    for seed in seeds(0..3) {
        let name = "slow secondary at saturation, --wait false";
        let (world, v) = run(name, saturated(seed, BOUND));
        let host = world.slots()[0].host.as_ref().unwrap();
        let peak = host.max_upstream_in_flight(Upstream::Target);
        let pauses = host
            .events()
            .iter()
            .filter(|(_, e)| matches!(e, Event::SecondaryLag { .. }))
            .count();
        let s = &v.summary;
        expect(s.unanswered == 0, name, seed, "all answered", &v);
        expect(s.missed_reported == 0, name, seed, "no missed write", &v);
        expect(
            s.source_writes == OPS && s.target_writes == OPS,
            name,
            seed,
            "every write on both clusters",
            &v,
        );
        // The requests of one read of the client's socket may pass the bound.
        expect(
            peak <= BOUND + READ / VALUE,
            name,
            seed,
            format!("the target had up to {peak} requests in flight (bound {BOUND})"),
            &v,
        );
        expect(pauses > 0, name, seed, "the client was paused", &v);
    }
}

/// Without the bound the same run piles its requests up on the target: the bound above is
/// what kept it small.
#[test]
fn without_the_bound_the_secondary_falls_far_behind() {
    for seed in seeds(0..2) {
        let name = "slow secondary at saturation, no bound";
        let (world, v) = run(name, saturated(seed, 0));
        let host = world.slots()[0].host.as_ref().unwrap();
        let peak = host.max_upstream_in_flight(Upstream::Target);
        expect(
            peak > 4 * BOUND,
            name,
            seed,
            format!("the target had up to {peak} requests in flight"),
            &v,
        );
    }
}

/// The source refuses one write in five; with `primary-first` none of those reaches the
/// target, with `parallel` some do.
#[test]
fn primary_first_keeps_refused_writes_off_the_secondary() {
    for seed in seeds(30..33) {
        for (order, wait) in [
            (WriteOrder::PrimaryFirst, WaitPolicy::Both),
            (WriteOrder::PrimaryFirst, WaitPolicy::Primary),
            (WriteOrder::Parallel, WaitPolicy::Both),
        ] {
            let name = format!("{order:?}, {wait:?}");
            let mut s = saturated(seed, BOUND);
            s.config.wait = wait;
            s.config.write_order = order;
            s.target.latency = Latency::millis(0, 2);
            s.clients[0].workload.ops = 600;
            s.clients[0].workload.max_in_flight = 50;
            s.source.faults = vec![FaultRule::new(
                Match {
                    chance_ppm: 200_000,
                    ..Match::writes()
                },
                Fault::Error(ErrorCode::INVALID),
            )];
            let (_, v) = run(&name, s);
            let s = &v.summary;
            expect(s.unanswered == 0, &name, seed, "all answered", &v);
            expect(
                s.source_errors > 0,
                &name,
                seed,
                "the source refused some",
                &v,
            );
            match order {
                WriteOrder::PrimaryFirst => {
                    expect(
                        s.target_only_writes == 0 && s.target_writes == s.source_writes,
                        &name,
                        seed,
                        "the target has exactly the writes the source accepted",
                        &v,
                    );
                }
                WriteOrder::Parallel => expect(
                    s.target_only_writes > 0,
                    &name,
                    seed,
                    "refused writes landed on the target alone",
                    &v,
                ),
            }
            expect(s.missed_reported == 0, &name, seed, "no missed write", &v);
        }
    }
}
