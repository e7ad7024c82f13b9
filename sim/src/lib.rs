//! Deterministic simulation of the proxy: the core driven by a virtual clock, with simulated
//! clients and simulated clusters on a simulated network, checked against a reference model.
//!
//! Everything random comes from one seed, so a failing run is replayed by running its seed
//! again. Nothing here reads a clock: the caller gives the `Instant` that stands for run time
//! zero, and run time advances from one due thing to the next.
//!
//! The parts, usable on their own by a program that embeds the core in its own simulation:
//! - [`rng::SimRng`]: the seeded generator; [`latency::Latency`]: seeded delays.
//! - [`pipe`]: one direction of a connection with latency, re-chunking, a capacity (the
//!   backpressure a socket exerts), FIN and reset; [`pipe::Link`] is a connection.
//! - [`host::Host`]: drives a [`Session`](cqlmirror_core::session::Session) exactly as a runtime
//!   driver does (inputs, then actions, transmits per peer as the connection takes them,
//!   events, timer; reads only while the session wants them), or through the runtimes'
//!   [`Driver`](cqlmirror_core::driver::Driver) ([`Engine`]).
//! - [`cluster::SimCluster`]: a Cassandra stand-in over the real codec with a key-value
//!   table, prepared statements with per-cluster ids, credentials and fault injection.
//! - [`client::SimClient`]: a driver stand-in: handshake (v3 to v5, compression), prepared
//!   statements, a workload with random stream ids, per-stream answer checks.
//! - [`world::World`]: all of them on one virtual clock, built from a [`Scenario`];
//!   [`Scenario::chaos`] draws every setting and fault from a seed.
//! - [`model::check`]: the reference model: what each client must have seen, which writes
//!   each cluster must have, and a clean end.
//!
//! ```no_run
//! # use std::time::Instant;
//! use cqlmirror_sim::Scenario;
//! let base = Instant::now(); // any instant: only offsets from it matter
//! let (world, verdict) = cqlmirror_sim::run(Scenario::new(42), base).expect("a valid scenario");
//! assert!(verdict.is_ok(), "seed 42:\n{}", verdict.report(20));
//! # let _ = world;
//! ```

#![forbid(unsafe_code)]

pub mod chaos;
pub mod client;
pub mod cluster;
pub mod cql;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod latency;
pub mod model;
pub mod pipe;
pub mod rng;
pub mod scenario;
pub mod world;

use std::time::Instant;

pub use client::{ClientSpec, Mix, StreamChoice, Workload};
pub use cluster::{ClusterEvent, ClusterSpec, ConnectMode, Fault, FaultRule, Match};
pub use host::Engine;
pub use latency::Latency;
pub use model::{Summary, Verdict};
pub use pipe::{Chunking, PipeSpec};
pub use rng::SimRng;
pub use scenario::{NetworkSpec, Scenario};
pub use world::World;

/// Runs a scenario to its end and checks it against the model.
pub fn run(scenario: Scenario, base: Instant) -> Result<(World, Verdict), String> {
    let mut world = World::new(scenario, base)?;
    world.run();
    let verdict = model::check(&world);
    Ok((world, verdict))
}
