//! Protocol versions and compression: v3, v4 and v5, uncompressed, lz4 and snappy (v5:
//! lz4 segments), each against clusters that compress some of their answers; and a target
//! that does not speak v5, which the proxy must refuse to v5 clients in the words drivers
//! parse to step down, while v4 clients work.

#![allow(clippy::unwrap_used)]

mod sim_common;

use std::time::Duration;

use cqlmirror_core::frame::{Compression, ProtocolVersion};
use cqlmirror_sim::{ClientSpec, Scenario, Workload};
use sim_common::{expect, run, seeds};

#[test]
fn every_version_and_compression() {
    let configs = [
        (ProtocolVersion::V3, None),
        (ProtocolVersion::V3, Some(Compression::Lz4)),
        (ProtocolVersion::V3, Some(Compression::Snappy)),
        (ProtocolVersion::V4, None),
        (ProtocolVersion::V4, Some(Compression::Lz4)),
        (ProtocolVersion::V4, Some(Compression::Snappy)),
        (ProtocolVersion::V5, None),
        (ProtocolVersion::V5, Some(Compression::Lz4)),
    ];
    for seed in seeds(0..4) {
        for (version, compression) in configs {
            let name = format!("{version} {compression:?}");
            let mut s = Scenario::new(seed);
            let mut c = ClientSpec::new(version);
            c.compression = compression;
            c.send_options = seed % 2 == 0;
            c.workload = Workload {
                ops: 150,
                ..Workload::default()
            };
            s.clients = vec![c];
            let (_, v) = run(&name, s);
            expect(
                v.summary.unanswered == 0 && v.summary.missed_reported == 0,
                &name,
                seed,
                "all answered, nothing missed",
                &v,
            );
        }
    }
}

#[test]
fn a_target_without_v5_refuses_v5_clients() {
    for seed in seeds(10..14) {
        let name = "target without v5";
        let mut s = Scenario::new(seed);
        s.target.versions = vec![ProtocolVersion::V3, ProtocolVersion::V4];
        let mut first = ClientSpec::new(ProtocolVersion::V5);
        first.expect_handshake_failure = true;
        first.send_options = false;
        let mut later = first.clone();
        later.start_at = Duration::from_millis(50);
        let mut v4 = ClientSpec::new(ProtocolVersion::V4);
        v4.start_at = Duration::from_millis(60);
        v4.workload.ops = 100;
        s.clients = vec![first, later, v4];
        let (world, v) = run(name, s);
        for slot in &world.slots()[..2] {
            let error = slot.client.handshake_error().unwrap_or_default();
            expect(
                error.contains("Invalid or unsupported protocol version (5)"),
                name,
                seed,
                format!("v5 refused with the stepping-down words, got: {error}"),
                &v,
            );
        }
        expect(
            world.slots()[2].client.ready_at().is_some() && v.summary.unanswered == 0,
            name,
            seed,
            "the v4 client works",
            &v,
        );
    }
}
