//! Backpressure: a client that stops reading while answers keep coming, and a target that
//! takes its requests slowly. The session's queues stay bounded by about
//! `write_buffer_size` plus what one read brings in (one read buffer and one frame), and
//! everything is answered once the client reads again.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::config::WaitPolicy;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::session::Peer;
use cqlmirror_sim::{
    Chunking, ClientSpec, Latency, Mix, NetworkSpec, PipeSpec, Scenario, Verdict, Workload, World,
};
use sim_common::{expect, run, seeds};

const BUFFER: usize = 64 * 1024;
const READ: usize = 16 * 1024;
const VALUE: usize = 1500;

fn scenario(seed: u64, version: ProtocolVersion) -> Scenario {
    let mut s = Scenario::new(seed);
    s.config.write_buffer_size = BUFFER;
    s.proxy_max_read = READ;
    let pipe = PipeSpec {
        latency: Latency::millis(0, 2),
        chunking: Chunking::Random { max: 12_000 },
        capacity: 32 * 1024,
    };
    s.network = NetworkSpec::uniform(pipe);
    let mut c = ClientSpec::new(version);
    c.workload = Workload {
        ops: 1200,
        max_in_flight: 1000,
        mix: Mix {
            insert: 1,
            select: 4,
            ..Mix::SELECTS
        },
        keys: 20,
        think: Latency::ZERO,
        value_size: VALUE,
        unqualified: false,
    };
    s.clients = vec![c];
    s
}

/// The bound: the buffer, one read's worth of frames, and one frame more.
fn bounded(name: &str, seed: u64, world: &World, v: &Verdict) {
    let host = world.slots()[0].host.as_ref().unwrap();
    let limit = BUFFER + READ + 2 * (VALUE + 200);
    for peer in Peer::ALL {
        let max = host.max_queued(peer);
        expect(
            max <= limit,
            name,
            seed,
            format!("the queue for the {peer} peaked at {max} bytes (bound {limit})"),
            v,
        );
    }
}

#[test]
fn client_that_stops_reading() {
    for seed in seeds(0..3) {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            let name = format!("stalled client {version}");
            let mut s = scenario(seed, version);
            s.clients[0].read_pause = Some((Duration::from_millis(30), Duration::from_secs(3)));
            let (world, v) = run(&name, s);
            bounded(&name, seed, &world, &v);
            let host = world.slots()[0].host.as_ref().unwrap();
            expect(
                host.max_queued(Peer::Client) >= BUFFER,
                &name,
                seed,
                "the client's queue filled up to the buffer",
                &v,
            );
            expect(
                v.summary.unanswered == 0,
                &name,
                seed,
                "all answered after the stall",
                &v,
            );
        }
    }
}

#[test]
fn target_that_reads_slowly() {
    for seed in seeds(10..13) {
        for wait in [WaitPolicy::Both, WaitPolicy::Primary] {
            let name = format!("slow target, {wait:?}");
            let mut s = scenario(seed, ProtocolVersion::V4);
            s.config.wait = wait;
            s.clients[0].workload.mix = Mix::INSERTS;
            s.clients[0].workload.ops = 800;
            s.target.latency = Latency::millis(20, 60);
            s.target.out_limit = 8 * 1024;
            s.network.upstream_up.capacity = 16 * 1024;
            let (world, v) = run(&name, s);
            bounded(&name, seed, &world, &v);
            expect(v.summary.unanswered == 0, &name, seed, "all answered", &v);
        }
    }
}

/// With `--wait false` the client has the primary's answer long before a slow secondary
/// finishes: the session keeps no answer body for that time (only what finishing the request
/// needs), so what it holds stays within the bound however far the secondary lags.
#[test]
fn answers_are_not_held_for_a_slow_secondary() {
    for seed in seeds(20..23) {
        let name = "slow secondary, --wait false, large reads".to_owned();
        let mut s = scenario(seed, ProtocolVersion::V4);
        s.config.wait = WaitPolicy::Primary;
        s.track_held_answers = true;
        s.clients[0].workload.mix = Mix {
            insert: 1,
            select: 6,
            ..Mix::SELECTS
        };
        s.clients[0].workload.max_in_flight = 200;
        s.target.latency = Latency::millis(300, 600);
        let (world, v) = run(&name, s);
        bounded(&name, seed, &world, &v);
        let host = world.slots()[0].host.as_ref().unwrap();
        let held = host.max_held_answers();
        let limit = BUFFER + READ + 2 * (VALUE + 200);
        expect(
            held <= limit,
            &name,
            seed,
            format!("the session held up to {held} bytes of answers (bound {limit})"),
            &v,
        );
        expect(v.summary.unanswered == 0, &name, seed, "all answered", &v);
    }
}
