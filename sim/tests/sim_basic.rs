//! The simulation's baseline: healthy clusters whose prepared ids differ, several clients
//! sharing one proxy (and its prepared-statement map), and determinism: a seed replays
//! exactly.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_sim::{ClientSpec, Engine, Latency, Scenario, Workload};
use sim_common::{expect, run, seeds};

#[test]
fn healthy_clusters_see_every_write_once() {
    for seed in seeds(0..12) {
        let (_, v) = run("healthy", Scenario::new(seed));
        let s = &v.summary;
        expect(
            s.unanswered == 0 && s.ops > 150,
            "healthy",
            seed,
            "all answered",
            &v,
        );
        expect(
            s.source_writes == s.target_writes && s.missed_reported == 0,
            "healthy",
            seed,
            "the target has every write",
            &v,
        );
    }
}

#[test]
fn through_the_runtimes_driver() {
    for seed in seeds(200..206) {
        let mut scenario = Scenario::new(seed);
        scenario.engine = Engine::Driver;
        scenario.clients[0].version = if seed % 2 == 0 {
            ProtocolVersion::V4
        } else {
            ProtocolVersion::V5
        };
        let (_, v) = run("driver", scenario);
        let s = &v.summary;
        expect(
            s.unanswered == 0 && s.source_writes == s.target_writes && s.missed_reported == 0,
            "driver",
            seed,
            "all answered, the target has every write",
            &v,
        );
    }
}

#[test]
fn use_keyspace_then_unqualified_tables() {
    for seed in seeds(300..306) {
        let mut scenario = Scenario::new(seed);
        scenario.clients[0].version = if seed % 2 == 0 {
            ProtocolVersion::V4
        } else {
            ProtocolVersion::V5
        };
        scenario.clients[0].workload.unqualified = true;
        let (_, v) = run("unqualified", scenario);
        let s = &v.summary;
        expect(
            s.unanswered == 0 && s.source_writes == s.target_writes && s.missed_reported == 0,
            "unqualified",
            seed,
            "all answered, the target has every write",
            &v,
        );
    }
}

#[test]
fn clients_share_one_proxy() {
    for seed in seeds(100..106) {
        let mut scenario = Scenario::new(seed);
        scenario.clients = (0..4)
            .map(|i| {
                let mut c = ClientSpec::new(if i % 2 == 0 {
                    ProtocolVersion::V4
                } else {
                    ProtocolVersion::V5
                });
                c.start_at = Duration::from_millis(40 * i);
                c.workload = Workload {
                    ops: 150,
                    max_in_flight: 16,
                    think: Latency::millis(0, 3),
                    ..Workload::default()
                };
                c
            })
            .collect();
        let (world, v) = run("shared proxy", scenario);
        expect(
            v.summary.unanswered == 0 && v.summary.missed_reported == 0,
            "shared proxy",
            seed,
            "all answered, nothing missed",
            &v,
        );
        let stats = world.proxy().stats();
        let opened = stats
            .sessions_opened
            .load(std::sync::atomic::Ordering::Relaxed);
        let closed = stats
            .sessions_closed
            .load(std::sync::atomic::Ordering::Relaxed);
        expect(
            opened == 4 && closed == 4,
            "shared proxy",
            seed,
            format!("sessions {opened} opened, {closed} closed"),
            &v,
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in seeds(7..9) {
        let fingerprint = |seed| {
            let (world, _) = run("replay", Scenario::new(seed));
            let mut f = String::new();
            for slot in world.slots() {
                f.push_str(&format!("{:?}", slot.client.ops()));
            }
            for which in cqlmirror_core::config::Upstream::BOTH {
                f.push_str(&format!("{:?}", world.cluster(which).log()));
            }
            (f, world.steps(), world.now())
        };
        let a = fingerprint(seed);
        let b = fingerprint(seed);
        assert!(a == b, "seed {seed}: two runs differ");
    }
}
