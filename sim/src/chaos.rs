//! Random scenarios: every setting and fault the simulation has, drawn from a seed. Useful
//! for sweeping many seeds; whatever fails is replayed by its seed.

use std::time::Duration;

use crate::client::{ClientSpec, Mix, StreamChoice, Workload};
use crate::cluster::{ClusterEvent, ClusterSpec, ConnectMode, Fault, FaultRule, Match};
use crate::host::Engine;
use crate::latency::Latency;
use crate::pipe::{Chunking, PipeSpec};
use crate::rng::SimRng;
use crate::scenario::{NetworkSpec, Scenario};
use cqlmirror_core::config::{Credentials, Secret, Upstream, WaitPolicy};
use cqlmirror_core::frame::{Compression, Opcode, ProtocolVersion};
use cqlmirror_core::message::ErrorCode;

fn ms(rng: &mut SimRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.between(lo, hi))
}

fn pipe(rng: &mut SimRng) -> PipeSpec {
    let max = rng.between(1, 4000) as usize;
    PipeSpec {
        latency: Latency::millis(0, rng.between(0, 5)),
        chunking: match rng.below(4) {
            0 => Chunking::Whole,
            1 => Chunking::Random { max },
            _ => Chunking::Mixed { max },
        },
        capacity: [8 * 1024, 64 * 1024, 256 * 1024][rng.index(3)],
    }
}

/// Faults for one cluster; `severity` scales how many.
fn faults(rng: &mut SimRng, severity: u32) -> (Vec<FaultRule>, Vec<(Duration, ClusterEvent)>) {
    let mut rules = Vec::new();
    let mut events = Vec::new();
    let chance = |rng: &mut SimRng, max: u32| rng.between(1_000, u64::from(max)) as u32;
    let maybe = |rng: &mut SimRng, p: f64| rng.chance(p * f64::from(severity));
    if maybe(rng, 0.15) {
        let code = [
            ErrorCode::WRITE_TIMEOUT,
            ErrorCode::UNAVAILABLE,
            ErrorCode::OVERLOADED,
            ErrorCode::SERVER_ERROR,
            ErrorCode::READ_TIMEOUT,
        ][rng.index(5)];
        let c = chance(rng, 80_000);
        rules.push(FaultRule::new(
            Match::all().with_chance(c),
            Fault::Error(code),
        ));
    }
    if maybe(rng, 0.1) {
        let c = chance(rng, 60_000);
        let m = Match {
            opcodes: vec![Opcode::EXECUTE, Opcode::BATCH],
            ..Match::all()
        };
        rules.push(FaultRule::new(m.with_chance(c), Fault::Unprepared));
    }
    if maybe(rng, 0.08) {
        let c = chance(rng, 30_000);
        rules.push(FaultRule::new(Match::all().with_chance(c), Fault::NoAnswer));
    }
    if maybe(rng, 0.08) {
        let c = chance(rng, 30_000);
        rules.push(FaultRule::new(Match::all().with_chance(c), Fault::Ignore));
    }
    if maybe(rng, 0.1) {
        let c = chance(rng, 100_000);
        let d = Latency::between(ms(rng, 100, 1000), ms(rng, 1000, 6000));
        rules.push(FaultRule::new(Match::all().with_chance(c), Fault::Delay(d)));
    }
    if maybe(rng, 0.05) {
        let n = rng.between(5, 200);
        rules.push(FaultRule::new(
            Match::all().nth(n, n + 1),
            Fault::DropConnection,
        ));
    }
    if maybe(rng, 0.05) {
        events.push((ms(rng, 10, 400), ClusterEvent::DropConnections));
    }
    if maybe(rng, 0.05) {
        events.push((ms(rng, 10, 400), ClusterEvent::Silence(true)));
    }
    if maybe(rng, 0.08) {
        events.push((ms(rng, 10, 400), ClusterEvent::ForgetPrepared));
    }
    if maybe(rng, 0.05) {
        let at = ms(rng, 10, 300);
        events.push((at, ClusterEvent::RefuseConnections(true)));
        events.push((
            at + ms(rng, 10, 300),
            ClusterEvent::RefuseConnections(false),
        ));
    }
    if maybe(rng, 0.05) {
        let l = Latency::millis(rng.between(0, 50), rng.between(50, 400));
        events.push((ms(rng, 10, 300), ClusterEvent::Latency(l)));
    }
    (rules, events)
}

fn cluster(rng: &mut SimRng, salt: u64, severity: u32) -> ClusterSpec {
    let mut c = ClusterSpec::healthy(salt);
    c.latency = Latency::millis(0, rng.between(1, 40))
        .with_spikes(rng.below(30_000) as u32, ms(rng, 10, 300));
    let (faults, events) = faults(rng, severity);
    c.faults = faults;
    c.events = events;
    if rng.chance(0.02 * f64::from(severity)) {
        c.connect = if rng.chance(0.5) {
            ConnectMode::Refuse
        } else {
            ConnectMode::Hang
        };
    }
    c.compress_ppm = rng.below(1_000_001) as u32;
    c.out_limit = [8 * 1024, 64 * 1024, 256 * 1024][rng.index(3)];
    if rng.chance(0.3) {
        c.event_every = Some(ms(rng, 5, 100));
    }
    c
}

impl Scenario {
    /// A random scenario: versions, compression, wait policy, timeouts, buffers, network,
    /// the engine, one to three clients with random workloads, credentials, faults on both
    /// clusters (more, and more severe, on the target), and sometimes switches of primary
    /// and a shutdown of the proxy.
    pub fn chaos(seed: u64) -> Self {
        let mut rng = SimRng::new(seed ^ 0xc4a0_5c4a_05c4_a05c);
        let mut s = Self::new(seed);
        s.config.wait = if rng.chance(0.5) {
            WaitPolicy::Both
        } else {
            WaitPolicy::Primary
        };
        s.config.request_timeout = ms(&mut rng, 500, 5000);
        s.config.connect_timeout = ms(&mut rng, 200, 3000);
        s.config.write_buffer_size = [4 * 1024, 64 * 1024, 1024 * 1024][rng.index(3)];
        s.config.prepared_cache_size = [1, 2, 100][rng.index(3)];
        s.network = NetworkSpec {
            client_up: pipe(&mut rng),
            client_down: pipe(&mut rng),
            upstream_up: pipe(&mut rng),
            upstream_down: pipe(&mut rng),
        };
        s.proxy_max_read = [512, 4096, 16 * 1024][rng.index(3)];
        s.engine = if rng.chance(0.5) {
            Engine::Session
        } else {
            Engine::Driver
        };
        s.source = cluster(&mut rng, 0x5eed_0001, 1);
        s.target = cluster(&mut rng, 0x5eed_0002, 3);
        if rng.chance(0.2) {
            s.target.credentials = Some(("migrator".into(), "t".into()));
            let password = if rng.chance(0.8) { "t" } else { "wrong" };
            s.config.target.credentials = Some(Credentials {
                username: "migrator".into(),
                password: Secret::new(password),
            });
        }
        let source_login = rng.chance(0.2);
        if source_login {
            s.source.credentials = Some(("app".into(), "s".into()));
        }
        let clients = rng.between(1, 3) as usize;
        s.clients = (0..clients)
            .map(|_| {
                let version = [
                    ProtocolVersion::V3,
                    ProtocolVersion::V4,
                    ProtocolVersion::V5,
                ][rng.index(3)];
                let mut c = ClientSpec::new(version);
                c.compression = match (version, rng.below(3)) {
                    (_, 0) => None,
                    (ProtocolVersion::V5, _) | (_, 1) => Some(Compression::Lz4),
                    _ => Some(Compression::Snappy),
                };
                if source_login {
                    c.credentials = Some(("app".into(), "s".into()));
                }
                c.send_options = rng.chance(0.5);
                c.start_at = ms(&mut rng, 0, 200);
                c.streams = [
                    StreamChoice::Random,
                    StreamChoice::Lowest,
                    StreamChoice::Highest,
                ][rng.index(3)];
                c.payload_tag_ppm = rng.below(1_000_001) as u32;
                c.compress_ppm = rng.below(1_000_001) as u32;
                c.client_timestamp_ppm = rng.below(300_000) as u32;
                c.max_read = [512, 16 * 1024][rng.index(2)];
                if rng.chance(0.15) {
                    let from = ms(&mut rng, 0, 300);
                    c.read_pause = Some((from, from + ms(&mut rng, 10, 2000)));
                }
                if rng.chance(0.1) {
                    c.abort_at = Some(ms(&mut rng, 20, 500));
                }
                c.register = rng.chance(0.3);
                c.workload = Workload {
                    ops: rng.between(20, 150) as usize,
                    max_in_flight: rng.between(1, 64) as usize,
                    mix: [Mix::MIXED, Mix::PREPARED, Mix::INSERTS][rng.index(3)],
                    keys: rng.between(1, 50) as i64,
                    think: Latency::millis(0, rng.between(0, 5)),
                    value_size: [0, 0, 100, 2000][rng.index(4)],
                    unqualified: rng.chance(0.3),
                };
                c
            })
            .collect();
        // Drawn last, so that the settings above stay what they were for each seed.
        if rng.chance(0.25) {
            let mut at = Duration::ZERO;
            for _ in 0..rng.between(1, 3) {
                at += ms(&mut rng, 20, 400);
                let primary = if s.primary_switches.len() % 2 == 0 {
                    Upstream::Target
                } else {
                    Upstream::Source
                };
                s.primary_switches.push((at, primary));
            }
        }
        if rng.chance(0.15) {
            s.shutdown_at = Some(ms(&mut rng, 50, 1500));
        }
        s
    }
}
