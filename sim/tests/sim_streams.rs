//! Many requests in flight on interleaved stream ids (random, lowest first, highest first up
//! to 32767) while both clusters answer out of order, each at its own pace: every answer
//! must reach its own stream exactly once, and the proxy must never reuse a stream id that is
//! still in flight towards a cluster (the simulated clusters check that).

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_sim::{ClientSpec, Latency, Mix, Scenario, StreamChoice, Workload};
use sim_common::{expect, run, seeds};

fn scenario(seed: u64, streams: StreamChoice, version: ProtocolVersion) -> Scenario {
    let mut s = Scenario::new(seed);
    // Answers in any order: latencies spread far wider than the gaps between requests, with
    // occasional spikes.
    s.source.latency = Latency::millis(0, 40).with_spikes(20_000, Duration::from_millis(150));
    s.target.latency = Latency::millis(0, 80).with_spikes(20_000, Duration::from_millis(300));
    let mut c = ClientSpec::new(version);
    c.streams = streams;
    c.workload = Workload {
        ops: 1500,
        max_in_flight: 400,
        mix: Mix::MIXED,
        keys: 40,
        think: Latency::between(Duration::ZERO, Duration::from_micros(300)),
        value_size: 0,
        unqualified: false,
    };
    s.clients = vec![c];
    s
}

#[test]
fn out_of_order_answers_on_random_streams() {
    for seed in seeds(0..4) {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            let name = format!("random streams {version}");
            let (world, v) = run(&name, scenario(seed, StreamChoice::Random, version));
            let ops = world.slots()[0].client.ops();
            let high = ops.iter().filter(|op| op.stream > 30_000).count();
            expect(high > 0, &name, seed, "high stream ids were used", &v);
            // Answers came back in another order than the requests went out.
            let mut answered: Vec<_> = ops
                .iter()
                .filter_map(|o| o.answer.as_ref().map(|a| (a.at, o.sent_at)))
                .collect();
            answered.sort();
            let reordered = answered.windows(2).any(|w| w[1].1 < w[0].1);
            expect(reordered, &name, seed, "answers were reordered", &v);
        }
    }
}

#[test]
fn lowest_and_highest_stream_ids() {
    for seed in seeds(20..22) {
        for choice in [StreamChoice::Lowest, StreamChoice::Highest] {
            let name = format!("{choice:?} streams");
            let (world, v) = run(&name, scenario(seed, choice, ProtocolVersion::V4));
            let max = world.slots()[0]
                .client
                .ops()
                .iter()
                .map(|o| o.stream)
                .max()
                .unwrap();
            if choice == StreamChoice::Highest {
                expect(max == i16::MAX, &name, seed, "stream 32767 was used", &v);
            }
            expect(v.summary.unanswered == 0, &name, seed, "all answered", &v);
        }
    }
}
