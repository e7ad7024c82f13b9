//! The primary switched at run time, between requests of live connections: a request is
//! answered by the cluster that was primary when the proxy read it, also when that answer
//! comes after the switch; every write still reaches both clusters; and prepared statements
//! keep working across switches without a single UNPREPARED, whichever cluster's id the
//! client holds (the two clusters give different ids throughout).

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::config::{Upstream, WaitPolicy};
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::ErrorCode;
use cqlmirror_core::session::Event;
use cqlmirror_sim::{ClientSpec, Latency, Mix, Scenario, Workload, World};
use sim_common::{expect, run, seeds};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const SWITCHES: [(u64, Upstream); 3] = [
    (150, Upstream::Target),
    (330, Upstream::Source),
    (500, Upstream::Target),
];

fn scenario(seed: u64, wait: WaitPolicy) -> Scenario {
    let mut s = Scenario::new(seed);
    s.config.wait = wait;
    // Slow enough that requests are in flight at every switch.
    s.source.latency = Latency::millis(10, 30);
    s.target.latency = Latency::millis(10, 30);
    // Clients connect before, around and after the switches: they prepare their statements
    // while either cluster is primary, so they hold either cluster's ids.
    s.clients = (0..6u64)
        .map(|i| {
            let mut c = ClientSpec::new(if i % 2 == 0 {
                ProtocolVersion::V4
            } else {
                ProtocolVersion::V5
            });
            c.start_at = ms(i * 70);
            c.workload = Workload {
                ops: 100,
                max_in_flight: 8,
                mix: Mix::MIXED,
                keys: 20,
                think: Latency::millis(0, 4),
                value_size: 0,
                unqualified: i % 3 == 1,
            };
            c
        })
        .collect();
    s.primary_switches = SWITCHES.iter().map(|&(at, u)| (ms(at), u)).collect();
    s
}

/// Requests answered after a switch by the cluster that was primary before it: they were in
/// flight across the switch and kept their route.
fn crossing(world: &World) -> usize {
    let mut count = 0;
    for slot in world.slots() {
        let Some(host) = &slot.host else { continue };
        for (at, event) in host.events() {
            let Event::Answered {
                latency, primary, ..
            } = event
            else {
                continue;
            };
            let started = at.saturating_sub(*latency);
            let (before, _) = world.scenario().primary_at(started);
            let crossed = SWITCHES
                .iter()
                .any(|&(switch, _)| started < ms(switch) && ms(switch) < *at);
            if crossed && *primary == before {
                count += 1;
            }
        }
    }
    count
}

fn unprepared(world: &World, which: Upstream) -> usize {
    world
        .cluster(which)
        .log()
        .iter()
        .filter(|r| r.error_code() == Some(ErrorCode::UNPREPARED.0))
        .count()
}

#[test]
fn requests_keep_the_route_they_started_with() {
    for seed in seeds(0..6) {
        for wait in [WaitPolicy::Both, WaitPolicy::Primary] {
            let name = format!("switched primary, {wait:?}");
            let (world, v) = run(&name, scenario(seed, wait));
            let s = &v.summary;
            expect(
                s.unanswered == 0 && s.ops >= 600,
                &name,
                seed,
                "every request answered",
                &v,
            );
            expect(
                s.source_writes == s.target_writes
                    && s.source_writes > 0
                    && s.missed_reported == 0
                    && s.target_only_writes == 0,
                &name,
                seed,
                "both clusters got every write",
                &v,
            );
            expect(
                crossing(&world) > 0,
                &name,
                seed,
                "some requests were in flight across a switch and answered by the former primary",
                &v,
            );
            let answered_by = |which: Upstream| {
                world
                    .slots()
                    .iter()
                    .filter_map(|slot| slot.host.as_ref())
                    .flat_map(|host| host.events())
                    .filter(
                        |(_, e)| matches!(e, Event::Answered { primary, .. } if *primary == which),
                    )
                    .count()
            };
            expect(
                answered_by(Upstream::Source) > 50 && answered_by(Upstream::Target) > 50,
                &name,
                seed,
                "each cluster answered clients while it was primary",
                &v,
            );
            let client_unprepared = world
                .slots()
                .iter()
                .flat_map(|slot| slot.client.ops())
                .filter(|op| {
                    op.answer.as_ref().and_then(|a| a.error_code()) == Some(ErrorCode::UNPREPARED.0)
                })
                .count();
            expect(
                client_unprepared == 0,
                &name,
                seed,
                "no client was told a statement is unprepared",
                &v,
            );
            // With --wait false an EXECUTE may overtake its PREPARE on the secondary, which
            // then answers UNPREPARED and is repaired; when clients wait for both, every
            // cluster knows every statement under its own id before it is executed.
            if wait == WaitPolicy::Both {
                expect(
                    unprepared(&world, Upstream::Source) == 0
                        && unprepared(&world, Upstream::Target) == 0,
                    &name,
                    seed,
                    "prepared ids were mapped for each cluster: no UNPREPARED anywhere",
                    &v,
                );
            }
        }
    }
}
