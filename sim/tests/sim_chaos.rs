//! Random scenarios (`Scenario::chaos`): every setting and fault drawn from the seed (the
//! engine too: the session driven directly or through the runtimes' `Driver`), the model
//! checked on each. Sweep more with `SIM_SEEDS=1000,1001,...`.

#![allow(clippy::unwrap_used)]

mod sim_common;

use cqlmirror_sim::Scenario;
use sim_common::{run, seeds};

#[test]
fn random_scenarios() {
    for seed in seeds(0..30) {
        run("chaos", Scenario::chaos(seed));
    }
}
