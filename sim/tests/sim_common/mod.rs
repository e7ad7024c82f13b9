//! Shared by the `sim_*` scenario tests: the virtual timeline's base, the seeds to run, and a
//! runner that reports the seed and the model's findings on failure.
//!
//! Replay one failing case with `SIM_SEEDS=<seed> cargo test -p cqlmirror-sim --test <file>`
//! (a comma-separated list runs several).

#![allow(dead_code)]

use std::time::Instant;

use cqlmirror_sim::{Scenario, Verdict, World};

/// One real instant as the base of the virtual timeline; only offsets from it matter.
#[allow(clippy::disallowed_methods)]
pub fn base() -> Instant {
    Instant::now()
}

/// The seeds to run: `SIM_SEEDS` if set (to replay a failure), else `default`.
#[allow(clippy::disallowed_methods)] // replaying a seed is the one thing tests read from the environment
pub fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("SIM_SEEDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        _ => default.collect(),
    }
}

/// Runs a scenario and fails the test with the seed and the violations if the model
/// objects; returns the world for scenario-specific assertions.
pub fn run(name: &str, scenario: Scenario) -> (World, Verdict) {
    let seed = scenario.seed;
    let (world, verdict) = match cqlmirror_sim::run(scenario, base()) {
        Ok(done) => done,
        Err(e) => panic!("{name}, seed {seed}: invalid scenario: {e}"),
    };
    assert!(
        verdict.is_ok(),
        "{name}, seed {seed} (replay with SIM_SEEDS={seed}): {} violations\n{}",
        verdict.violations.len(),
        verdict.report(25)
    );
    (world, verdict)
}

/// Fails with the seed when `cond` is false.
#[track_caller]
pub fn expect(cond: bool, name: &str, seed: u64, what: impl std::fmt::Display, verdict: &Verdict) {
    assert!(
        cond,
        "{name}, seed {seed} (replay with SIM_SEEDS={seed}): {what}\n{:?}",
        verdict.summary
    );
}
