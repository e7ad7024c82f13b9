//! A target that fails never fails the client: it drops the connection mid-workload, stops
//! answering, never accepts the connection, refuses it, fails some writes, or loses some
//! answers. The client sees only the source's answers, within the request timeout, and every
//! write the target did not get is counted as missed (the model checks the count).

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::config::WaitPolicy;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::ErrorCode;
use cqlmirror_core::session::Event;
use cqlmirror_sim::{
    ClientSpec, ClusterEvent, ConnectMode, Fault, FaultRule, Latency, Match, Scenario, Verdict,
    Workload,
};
use sim_common::{expect, run, seeds};

const TIMEOUT: Duration = Duration::from_secs(2);

fn scenario(seed: u64, wait: WaitPolicy, version: ProtocolVersion) -> Scenario {
    let mut s = Scenario::new(seed);
    s.config.wait = wait;
    s.config.request_timeout = TIMEOUT;
    let mut c = ClientSpec::new(version);
    c.workload = Workload {
        ops: 300,
        max_in_flight: 24,
        think: Latency::millis(0, 3),
        ..Workload::default()
    };
    s.clients = vec![c];
    s
}

/// No error reached the client and every answer came within the request timeout.
fn client_unharmed(name: &str, seed: u64, v: &Verdict) {
    let s = &v.summary;
    expect(
        s.unanswered == 0 && s.proxy_timeouts == 0 && s.source_errors == 0,
        name,
        seed,
        "the client saw no error",
        v,
    );
    expect(
        s.max_latency <= TIMEOUT + Duration::from_millis(50),
        name,
        seed,
        format!(
            "answers within the request timeout (slowest {:?})",
            s.max_latency
        ),
        v,
    );
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

#[test]
fn target_drops_the_connection_mid_workload() {
    each_case(|name, mut s| {
        let name = format!("target drops, {name}");
        let seed = s.seed;
        let at = Duration::from_millis(40 + seed * 25);
        s.target.events = vec![(at, ClusterEvent::DropConnections)];
        let (_, v) = run(&name, s);
        client_unharmed(&name, seed, &v);
        expect(
            v.summary.missed_reported > 0,
            &name,
            seed,
            "missed writes were counted",
            &v,
        );
    });
}

#[test]
fn target_stops_answering() {
    each_case(|name, mut s| {
        let name = format!("silent target, {name}");
        let seed = s.seed;
        s.target.events = vec![(
            Duration::from_millis(30 + seed * 20),
            ClusterEvent::Silence(true),
        )];
        let (_, v) = run(&name, s);
        client_unharmed(&name, seed, &v);
        expect(
            v.summary.missed_reported > 0,
            &name,
            seed,
            "missed writes were counted",
            &v,
        );
    });
}

/// The target accepts the connection but never answers, not even the handshake: clients
/// still get in, every write is counted as missed, and sessions end when their clients leave.
#[test]
fn target_silent_from_the_start() {
    each_case(|name, mut s| {
        let name = format!("target silent from the start, {name}");
        let seed = s.seed;
        s.target.events = vec![(Duration::ZERO, ClusterEvent::Silence(true))];
        s.clients[0].workload.ops = 60;
        if seed % 2 == 1 {
            // The source asks for credentials: the client's handshake has one more step.
            s.source.credentials = Some(("app".into(), "s".into()));
            s.clients[0].credentials = Some(("app".into(), "s".into()));
        }
        if seed >= 2 {
            // The target's handshake requests time out before --wait-timeout runs out.
            s.config.request_timeout = s.config.wait_timeout - Duration::from_millis(200);
        }
        let (world, v) = run(&name, s);
        client_unharmed(&name, seed, &v);
        let writes = world.slots()[0]
            .client
            .ops()
            .iter()
            .filter(|o| o.kind.proxy_write())
            .count() as u64;
        expect(
            v.summary.missed_reported == writes,
            &name,
            seed,
            format!("all {writes} writes counted as missed"),
            &v,
        );
    });
}

#[test]
fn target_never_connects() {
    for mode in [ConnectMode::Hang, ConnectMode::Refuse] {
        each_case(|name, mut s| {
            let name = format!("target {mode:?}, {name}");
            let seed = s.seed;
            s.target.connect = mode;
            s.clients[0].workload.ops = 60;
            let (world, v) = run(&name, s);
            client_unharmed(&name, seed, &v);
            let writes = world.slots()[0]
                .client
                .ops()
                .iter()
                .filter(|o| o.kind.proxy_write())
                .count() as u64;
            expect(
                v.summary.missed_reported == writes && v.summary.target_writes == 0,
                &name,
                seed,
                format!("all {writes} writes counted as missed"),
                &v,
            );
        });
    }
}

#[test]
fn target_fails_or_loses_some_writes() {
    each_case(|name, mut s| {
        let name = format!("target faults, {name}");
        let seed = s.seed;
        s.target.faults = vec![
            FaultRule::new(
                Match::writes().with_chance(60_000),
                Fault::Error(ErrorCode::WRITE_TIMEOUT),
            ),
            FaultRule::new(
                Match::writes().with_chance(30_000),
                Fault::Error(ErrorCode::UNAVAILABLE),
            ),
            FaultRule::new(Match::all().with_chance(30_000), Fault::NoAnswer),
            FaultRule::new(Match::all().with_chance(20_000), Fault::Ignore),
            FaultRule::new(
                Match::all().with_chance(50_000),
                Fault::Delay(Latency::between(
                    TIMEOUT - Duration::from_millis(20),
                    TIMEOUT + Duration::from_millis(20),
                )),
            ),
        ];
        let (_, v) = run(&name, s);
        client_unharmed(&name, seed, &v);
        expect(
            v.summary.missed_reported > 0,
            &name,
            seed,
            "missed writes were counted",
            &v,
        );
    });
}

/// The target restarts (connections dropped, prepared statements forgotten) while clients
/// come and go: sessions opened after the restart get a fresh target connection and miss
/// nothing (statements prepared before the restart are prepared there again).
#[test]
fn target_restarts_while_clients_come_and_go() {
    for seed in seeds(30..36) {
        let name = "target restart";
        let mut s = Scenario::new(seed);
        s.config.request_timeout = TIMEOUT;
        let restart = Duration::from_millis(150);
        s.target.events = vec![
            (restart, ClusterEvent::DropConnections),
            (restart, ClusterEvent::ForgetPrepared),
        ];
        s.clients = (0..4)
            .map(|i| {
                let mut c = ClientSpec::new(if i % 2 == 0 {
                    ProtocolVersion::V4
                } else {
                    ProtocolVersion::V5
                });
                c.start_at = Duration::from_millis(100 * i);
                c.workload = Workload {
                    ops: 120,
                    max_in_flight: 16,
                    think: Latency::millis(0, 3),
                    ..Workload::default()
                };
                c
            })
            .collect();
        let (world, v) = run(name, s);
        for (i, slot) in world.slots().iter().enumerate() {
            let host = slot.host.as_ref().unwrap();
            let missed = host
                .events()
                .iter()
                .filter(|(_, e)| matches!(e, Event::MissedWrite { .. }))
                .count();
            if slot.client.spec().start_at > restart {
                expect(
                    missed == 0,
                    name,
                    seed,
                    format!("client {i} (after the restart) missed {missed}"),
                    &v,
                );
            }
        }
        client_unharmed(name, seed, &v);
    }
}

/// With `--dest-close`, losing the target closes the client connection too.
#[test]
fn dest_close_follows_the_target() {
    for seed in seeds(40..44) {
        let name = "dest close";
        let mut s = scenario(seed, WaitPolicy::Both, ProtocolVersion::V4);
        s.config.dest_close = true;
        s.target.events = vec![(
            Duration::from_millis(60 + seed),
            ClusterEvent::DropConnections,
        )];
        let (world, v) = run(name, s);
        let closed = world.slots()[0].client.closed();
        expect(
            closed.is_some_and(|(_, by_proxy)| by_proxy),
            name,
            seed,
            "the client connection was closed",
            &v,
        );
    }
}
