//! Stream-id exhaustion: a client with all 32768 of its stream ids in flight while the source
//! holds on to ids of requests that timed out. Once all 32768 source ids are taken the proxy
//! answers OVERLOADED at once (sending nothing to either cluster), never panics, and every id
//! on both sides of the proxy gets used.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::collections::BTreeSet;
use std::time::Duration;

use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_sim::{
    ClientSpec, Fault, FaultRule, Latency, Match, Mix, Scenario, StreamChoice, Workload,
};
use sim_common::{expect, run, seeds};

// About 66 000 requests per seed: one seed by default (SIM_SEEDS runs others).
#[test]
fn all_source_stream_ids_in_flight() {
    for seed in seeds(0..1) {
        let name = "exhaustion";
        let mut s = Scenario::new(seed);
        s.config.request_timeout = Duration::from_secs(10);
        // The client may use every stream id of its connection (the default caps it lower).
        s.config.max_in_flight = 32_768;
        // The first 300 requests are answered long after their timeout; their ids stay taken.
        // The rest take 5 s, so the client keeps all of its ids in flight.
        s.source.latency = Latency::fixed(Duration::from_secs(5));
        s.source.faults = vec![FaultRule::new(
            Match::all().nth(0, 300),
            Fault::Delay(Latency::fixed(Duration::from_secs(60))),
        )];
        s.source.compress_ppm = 0;
        s.target.compress_ppm = 0;
        let mut c = ClientSpec::new(ProtocolVersion::V4);
        c.streams = StreamChoice::Random;
        c.payload_tag_ppm = 0;
        c.compress_ppm = 0;
        c.client_timestamp_ppm = 0;
        c.send_options = false;
        c.workload = Workload {
            ops: 66_000,
            max_in_flight: 32_768,
            mix: Mix::INSERTS,
            keys: 1000,
            think: Latency::ZERO,
            value_size: 0,
            unqualified: false,
        };
        s.clients = vec![c];
        let (world, v) = run(name, s);
        expect(
            v.summary.overloaded > 0,
            name,
            seed,
            "OVERLOADED was answered",
            &v,
        );
        expect(
            v.summary.proxy_timeouts >= 300,
            name,
            seed,
            "the slow requests timed out",
            &v,
        );
        let client_streams: BTreeSet<i16> = world.slots()[0]
            .client
            .ops()
            .iter()
            .map(|o| o.stream)
            .collect();
        expect(
            client_streams.len() == 32_768,
            name,
            seed,
            "the client used every stream id",
            &v,
        );
        for which in Upstream::BOTH {
            let used: BTreeSet<i16> = world
                .cluster(which)
                .log()
                .iter()
                .map(|r| r.stream)
                .collect();
            expect(
                which == Upstream::Target || used.len() == 32_768,
                name,
                seed,
                format!(
                    "the proxy used every stream id towards the {which} ({})",
                    used.len()
                ),
                &v,
            );
        }
    }
}
