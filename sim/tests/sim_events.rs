//! Server-pushed EVENTs: a client that REGISTERed gets the source's events, each once, and
//! never the target's (both clusters push their own), in v4 and v5, directly and through the
//! runtimes' driver.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_sim::{ClientSpec, Engine, Latency, Scenario, Workload};
use sim_common::{expect, run, seeds};

#[test]
fn source_events_reach_registered_clients() {
    for seed in seeds(0..4) {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            for engine in [Engine::Session, Engine::Driver] {
                let name = format!("events {version} {engine:?}");
                let mut s = Scenario::new(seed);
                s.engine = engine;
                s.source.event_every = Some(Duration::from_millis(15));
                s.target.event_every = Some(Duration::from_millis(11));
                s.clients = (0..2)
                    .map(|i| {
                        let mut c = ClientSpec::new(version);
                        c.register = i == 0;
                        c.start_at = Duration::from_millis(20 * i);
                        c.workload = Workload {
                            ops: 150,
                            think: Latency::millis(0, 3),
                            ..Workload::default()
                        };
                        c
                    })
                    .collect();
                let (world, v) = run(&name, s);
                let events = world.slots()[0].client.events().len();
                expect(
                    events >= 5,
                    &name,
                    seed,
                    format!("{events} events received"),
                    &v,
                );
                expect(
                    world.slots()[1].client.events().is_empty(),
                    &name,
                    seed,
                    "the client that did not REGISTER got no event",
                    &v,
                );
            }
        }
    }
}
