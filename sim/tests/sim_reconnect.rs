//! The target's connections are dropped again and again mid-workload, and for a while its
//! nodes refuse new connections (down), then accept them again; once, it also forgets its
//! prepared statements (a restart). Each session connects its target again in the background:
//! after every reconnection, each write the client was told succeeded is on both clusters
//! (`model::writes_after_reconnection`), writes in between are counted missed (the model's
//! usual count), the client never sees an error, and everything ends cleanly (the model's
//! checks: no connection left open, no timer left, no request unanswered).

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::config::{Credentials, Secret, WaitPolicy};
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::session::Event;
use cqlmirror_core::session::reconnect::Reconnect;
use cqlmirror_sim::model::writes_after_reconnection;
use cqlmirror_sim::{ClientSpec, ClusterEvent, Engine, Latency, Scenario, Workload};
use sim_common::{expect, run, seeds};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Far more than a write takes to reach the simulated target and be applied there (a few
/// milliseconds): a write read this long before the target's connection failed again must be
/// on it.
const SETTLE: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn scenario(seed: u64, version: ProtocolVersion, engine: Engine) -> Scenario {
    let mut s = Scenario::new(seed);
    s.engine = engine;
    s.config.request_timeout = TIMEOUT;
    s.config.wait = if seed % 2 == 0 {
        WaitPolicy::Both
    } else {
        WaitPolicy::Primary
    };
    let client = |unqualified| {
        let mut c = ClientSpec::new(version);
        c.workload = Workload {
            ops: 1500,
            max_in_flight: 8,
            think: Latency::millis(1, 4),
            unqualified,
            ..Workload::default()
        };
        c
    };
    // One client names its tables with the keyspace, one after `USE ks`: the new connection
    // must be switched to it.
    s.clients = vec![client(false), client(true)];
    if seed % 3 == 1 {
        // The target asks for credentials: the proxy's own for half the seeds, else the
        // client's, relayed at its handshake and given again on each new connection.
        s.target.credentials = Some(("app".into(), "t".into()));
        if seed % 2 == 0 {
            s.config.target.credentials = Some(Credentials {
                username: "app".into(),
                password: Secret::new("t"),
            });
        } else {
            s.source.credentials = Some(("app".into(), "t".into()));
            for c in &mut s.clients {
                c.credentials = Some(("app".into(), "t".into()));
            }
        }
    }
    let jitter = ms(seed * 17 % 60);
    s.target.events = vec![
        // Down for a while: connections dropped, new ones refused.
        (ms(150) + jitter, ClusterEvent::DropConnections),
        (ms(150) + jitter, ClusterEvent::RefuseConnections(true)),
        (ms(700) + jitter, ClusterEvent::RefuseConnections(false)),
        // A blip: dropped and accepted again at once.
        (ms(1300) + jitter, ClusterEvent::DropConnections),
        // A restart: dropped, and the statements prepared before are forgotten.
        (ms(1900) + jitter, ClusterEvent::ForgetPrepared),
        (ms(1900) + jitter, ClusterEvent::DropConnections),
    ];
    s
}

#[test]
fn target_connections_dropped_and_restored_repeatedly() {
    for seed in seeds(0..6) {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            let engine = if seed % 2 == 0 {
                Engine::Session
            } else {
                Engine::Driver
            };
            let name = format!("target reconnects, {version}, {engine:?}");
            let (world, v) = run(&name, scenario(seed, version, engine));
            expect(
                v.summary.unanswered == 0 && v.summary.source_errors == 0,
                &name,
                seed,
                "the client saw no error",
                &v,
            );
            let after = writes_after_reconnection(&world, SETTLE);
            assert!(
                after.violations.is_empty(),
                "{name}, seed {seed}: {:#?}",
                after.violations
            );
            // Each client's session came back at least after the long outage and after the
            // restart (the blip may come while it still waits out its backoff of the first).
            expect(
                after.reconnections >= 2 * 2,
                &name,
                seed,
                format!("{} reconnections", after.reconnections),
                &v,
            );
            expect(
                after.checked > 500,
                &name,
                seed,
                format!("{} writes checked after reconnections", after.checked),
                &v,
            );
            expect(
                v.summary.target_repairs > 0,
                &name,
                seed,
                "prepared statements the restarted target forgot were prepared again on the new connections",
                &v,
            );
            expect(
                v.summary.missed_reported > 0,
                &name,
                seed,
                "writes during the outages were counted missed",
                &v,
            );
            // The long outage made attempts fail first, reported with their backoff.
            let failed = world
                .slots()
                .iter()
                .filter_map(|s| s.host.as_ref())
                .flat_map(|h| h.events())
                .filter(|(_, e)| {
                    matches!(
                        e,
                        Event::SecondaryReconnect {
                            result: Reconnect::Failed { .. },
                            ..
                        }
                    )
                })
                .count();
            expect(
                failed > 0,
                &name,
                seed,
                "attempts failed while the target refused connections",
                &v,
            );
        }
    }
}
