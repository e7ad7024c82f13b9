//! Byte streams cut every way: one byte at a time, random pieces, whole writes, and a proxy
//! that reads a few bytes at a time, on every connection, in v3, v4 (lz4, snappy) and v5
//! (segments, lz4); also values large enough to span several v5 segments. Odd seeds drive the
//! session through the runtimes' `Driver`.

#![allow(clippy::unwrap_used)]

mod sim_common;

use cqlmirror_core::frame::{Compression, ProtocolVersion};
use cqlmirror_sim::{
    Chunking, ClientSpec, Engine, Latency, Mix, NetworkSpec, PipeSpec, Scenario, SimRng, Workload,
};
use sim_common::{expect, run, seeds};

const CONFIGS: [(ProtocolVersion, Option<Compression>); 6] = [
    (ProtocolVersion::V3, None),
    (ProtocolVersion::V4, None),
    (ProtocolVersion::V4, Some(Compression::Lz4)),
    (ProtocolVersion::V4, Some(Compression::Snappy)),
    (ProtocolVersion::V5, None),
    (ProtocolVersion::V5, Some(Compression::Lz4)),
];

fn scenario(seed: u64, version: ProtocolVersion, compression: Option<Compression>) -> Scenario {
    let mut rng = SimRng::new(seed ^ 0xc4c4);
    let mut s = Scenario::new(seed);
    let pipe = |rng: &mut SimRng| PipeSpec {
        latency: Latency::millis(0, rng.between(0, 3)),
        chunking: Chunking::Mixed {
            max: rng.between(2, 300) as usize,
        },
        capacity: 64 * 1024,
    };
    s.network = NetworkSpec {
        client_up: pipe(&mut rng),
        client_down: pipe(&mut rng),
        upstream_up: pipe(&mut rng),
        upstream_down: pipe(&mut rng),
    };
    s.proxy_max_read = [1, 7, 100, 16 * 1024][rng.index(4)];
    // Every other seed through the runtimes' driver, whose reads and writes are cut too.
    if seed % 2 == 1 {
        s.engine = Engine::Driver;
    }
    let mut c = ClientSpec::new(version);
    c.compression = compression;
    c.max_read = [1, 13, 4096][rng.index(3)];
    c.workload = Workload {
        ops: 60,
        max_in_flight: 12,
        mix: Mix::MIXED,
        keys: 10,
        think: Latency::millis(0, 2),
        value_size: rng.between(0, 300) as usize,
        unqualified: false,
    };
    s.clients = vec![c];
    s
}

#[test]
fn every_cut_every_version() {
    for seed in seeds(0..5) {
        for (version, compression) in CONFIGS {
            let name = format!("rechunk {version} {compression:?}");
            let (_, v) = run(&name, scenario(seed, version, compression));
            expect(v.summary.unanswered == 0, &name, seed, "all answered", &v);
        }
    }
}

#[test]
fn values_spanning_several_segments() {
    for seed in seeds(50..53) {
        for (version, compression) in [
            (ProtocolVersion::V5, None),
            (ProtocolVersion::V5, Some(Compression::Lz4)),
            (ProtocolVersion::V4, Some(Compression::Lz4)),
        ] {
            let name = format!("large values {version} {compression:?}");
            let mut s = scenario(seed, version, compression);
            let pipe = PipeSpec {
                latency: Latency::millis(0, 2),
                chunking: Chunking::Random { max: 9000 },
                capacity: 512 * 1024,
            };
            s.network = NetworkSpec::uniform(pipe);
            s.proxy_max_read = 16 * 1024;
            s.clients[0].max_read = 16 * 1024;
            s.clients[0].workload = Workload {
                ops: 12,
                max_in_flight: 4,
                mix: Mix::MIXED,
                keys: 3,
                think: Latency::millis(0, 2),
                value_size: 140_000,
                unqualified: false,
            };
            let (_, v) = run(&name, s);
            expect(v.summary.unanswered == 0, &name, seed, "all answered", &v);
        }
    }
}
