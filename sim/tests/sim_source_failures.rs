//! The source's failures reach the client as a real coordinator's would: its ERROR answers
//! are relayed as they are, a source that stops answering gives timeout errors (and only
//! then), and a lost or unreachable source connection closes the client connection so that
//! the driver reconnects.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::config::WaitPolicy;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::ErrorCode;
use cqlmirror_sim::{
    ClientSpec, ClusterEvent, ConnectMode, Fault, FaultRule, Latency, Match, Scenario, Workload,
    World,
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

fn each_case(mut body: impl FnMut(String, Scenario)) {
    for seed in seeds(0..4) {
        for wait in [WaitPolicy::Both, WaitPolicy::Primary] {
            for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
                body(format!("{wait:?} {version}"), scenario(seed, wait, version));
            }
        }
    }
}

fn closed_by_proxy(world: &World) -> bool {
    world.slots()[0]
        .client
        .closed()
        .is_some_and(|(_, by_proxy)| by_proxy)
}

#[test]
fn source_errors_are_relayed() {
    each_case(|name, mut s| {
        let name = format!("source errors, {name}");
        let seed = s.seed;
        s.source.faults = [
            ErrorCode::WRITE_TIMEOUT,
            ErrorCode::UNAVAILABLE,
            ErrorCode::OVERLOADED,
            ErrorCode::READ_TIMEOUT,
            ErrorCode::SERVER_ERROR,
        ]
        .into_iter()
        .map(|code| FaultRule::new(Match::all().with_chance(25_000), Fault::Error(code)))
        .collect();
        let (world, v) = run(&name, s);
        expect(
            v.summary.source_errors > 0 && v.summary.unanswered == 0 && !closed_by_proxy(&world),
            &name,
            seed,
            "errors relayed, connection kept",
            &v,
        );
    });
}

#[test]
fn source_connection_lost_closes_the_client() {
    each_case(|name, mut s| {
        let name = format!("source drops, {name}");
        let seed = s.seed;
        s.source.events = vec![(
            Duration::from_millis(40 + seed * 30),
            ClusterEvent::DropConnections,
        )];
        let (world, v) = run(&name, s);
        expect(
            closed_by_proxy(&world),
            &name,
            seed,
            "the client connection was closed",
            &v,
        );
    });
}

#[test]
fn source_drops_the_connection_on_a_request() {
    each_case(|name, mut s| {
        let name = format!("source drops on a request, {name}");
        let seed = s.seed;
        s.source.faults = vec![FaultRule::new(
            Match::all().nth(20 + seed * 7, 21 + seed * 7),
            Fault::DropConnection,
        )];
        let (world, v) = run(&name, s);
        expect(
            closed_by_proxy(&world),
            &name,
            seed,
            "the client connection was closed",
            &v,
        );
    });
}

#[test]
fn silent_source_gives_timeouts() {
    each_case(|name, mut s| {
        let name = format!("silent source, {name}");
        let seed = s.seed;
        s.source.events = vec![(
            Duration::from_millis(30 + seed * 20),
            ClusterEvent::Silence(true),
        )];
        s.clients[0].workload.ops = 120;
        let (_, v) = run(&name, s);
        expect(
            v.summary.proxy_timeouts > 0 && v.summary.unanswered == 0,
            &name,
            seed,
            "timeouts reported to the client",
            &v,
        );
        expect(
            v.summary.max_latency <= TIMEOUT + Duration::from_millis(50),
            &name,
            seed,
            format!(
                "answers within the request timeout (slowest {:?})",
                v.summary.max_latency
            ),
            &v,
        );
    });
}

#[test]
fn unreachable_source_closes_the_client() {
    for mode in [ConnectMode::Refuse, ConnectMode::Hang] {
        each_case(|name, mut s| {
            let name = format!("source {mode:?}, {name}");
            let seed = s.seed;
            s.source.connect = mode;
            let (world, v) = run(&name, s);
            let client = &world.slots()[0].client;
            // Refused: the proxy closes the client at once. Hanging: the handshake's request
            // times out first (an error from the proxy), then the connect timeout closes it.
            expect(
                client.ready_at().is_none() && client.closed().is_some(),
                &name,
                seed,
                "the client was never ready and its connection ended",
                &v,
            );
        });
    }
}
