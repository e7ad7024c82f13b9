//! Shutdown: every session stops taking requests, answers those the proxy already read, and
//! closes its client connection as soon as nothing is in flight; idle connections close at
//! once. The model checks that every request the proxy read was answered.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_sim::{ClientSpec, Engine, Latency, Mix, Scenario, Workload};
use sim_common::{expect, run, seeds};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn client(version: ProtocolVersion, ops: usize) -> ClientSpec {
    let mut c = ClientSpec::new(version);
    c.workload = Workload {
        ops,
        max_in_flight: 16,
        mix: Mix::MIXED,
        keys: 20,
        think: Latency::millis(0, 3),
        value_size: 0,
        unqualified: false,
    };
    c
}

#[test]
fn idle_connections_close_at_once() {
    for seed in seeds(0..4) {
        for engine in [Engine::Session, Engine::Driver] {
            let name = format!("idle at shutdown, {engine:?}");
            let mut s = Scenario::new(seed);
            s.engine = engine;
            // Done with their work well before the shutdown, the clients keep their
            // connections open, as drivers' pools do.
            s.clients = (0..3)
                .map(|_| {
                    let mut c = client(ProtocolVersion::V4, 30);
                    c.close_when_done = false;
                    c
                })
                .collect();
            let at = Duration::from_secs(5);
            s.shutdown_at = Some(at);
            let (world, v) = run(&name, s);
            for slot in world.slots() {
                let closed = slot.client.closed();
                expect(
                    // By the proxy, as soon as the close crosses the network.
                    closed.is_some_and(|(when, by_proxy)| by_proxy && when < at + ms(50)),
                    &name,
                    seed,
                    format!("the idle connection was closed at once (closed: {closed:?})"),
                    &v,
                );
            }
            expect(
                v.summary.unanswered == 0,
                &name,
                seed,
                "nothing was left unanswered",
                &v,
            );
        }
    }
}

#[test]
fn busy_connections_finish_what_was_read() {
    for seed in seeds(10..16) {
        for engine in [Engine::Session, Engine::Driver] {
            let name = format!("busy at shutdown, {engine:?}");
            let mut s = Scenario::new(seed);
            s.engine = engine;
            s.source.latency = Latency::millis(20, 60);
            s.target.latency = Latency::millis(20, 60);
            s.clients = vec![
                client(ProtocolVersion::V4, 400),
                client(ProtocolVersion::V5, 400),
            ];
            let at = ms(300);
            s.shutdown_at = Some(at);
            let (world, v) = run(&name, s);
            let mut answered_after = 0;
            for slot in world.slots() {
                let client = &slot.client;
                expect(
                    client.closed().is_some_and(|(_, by_proxy)| by_proxy),
                    &name,
                    seed,
                    "the proxy closed the connection",
                    &v,
                );
                answered_after += client
                    .ops()
                    .iter()
                    .filter(|op| op.answer.as_ref().is_some_and(|a| a.at > at))
                    .count();
            }
            // The model checks that every request the proxy read was answered; here, that
            // there were such requests in flight at the shutdown, and requests left unread.
            expect(
                answered_after > 0 && v.summary.unanswered > 0,
                &name,
                seed,
                format!(
                    "requests in flight at the shutdown were answered after it ({answered_after}), and later ones were not read"
                ),
                &v,
            );
        }
    }
}

/// With `--wait false` the clients have their answers long before a slow secondary is done:
/// they are let go at once, and the secondary's writes still finish before the sessions end,
/// so a shutdown loses no write.
#[test]
fn secondary_writes_finish_after_the_clients_left() {
    for seed in seeds(20..24) {
        let name = "slow secondary at shutdown".to_owned();
        let mut s = Scenario::new(seed);
        s.config.wait = cqlmirror_core::config::WaitPolicy::Primary;
        s.target.latency = Latency::millis(300, 500);
        s.clients = vec![client(ProtocolVersion::V4, 5000)];
        s.clients[0].workload.mix = Mix::INSERTS;
        // Well after the handshake (which waits for the slow target), in the middle of the
        // workload.
        let at = ms(1500);
        s.shutdown_at = Some(at);
        let (world, v) = run(&name, s);
        let host = world.slots()[0].host.as_ref().unwrap();
        let closed = world.slots()[0].client.closed();
        let finished = host.finished_at();
        expect(
            closed.is_some_and(|(when, by_proxy)| by_proxy && when < at + ms(50))
                && finished.is_some_and(|f| f > at + ms(250)),
            &name,
            seed,
            format!(
                "the client was let go at once ({closed:?}), the session finished once the secondary was done ({finished:?})"
            ),
            &v,
        );
        let s = &v.summary;
        expect(
            s.source_writes > 0 && s.source_writes == s.target_writes && s.missed_reported == 0,
            &name,
            seed,
            "every write the source applied reached the target too",
            &v,
        );
    }
}
