//! Everything a simulated run is made of: the proxy's configuration, two clusters, clients,
//! the network, and the seed that decides every random choice.

use std::time::Duration;

use crate::client::ClientSpec;
use crate::cluster::ClusterSpec;
use crate::host::Engine;
use crate::pipe::PipeSpec;
use cqlmirror_core::config::{Config, Endpoint, Upstream};
use cqlmirror_core::frame::ProtocolVersion;

/// The network between the parties. Each direction of each connection is its own pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkSpec {
    /// Client to proxy.
    pub client_up: PipeSpec,
    /// Proxy to client.
    pub client_down: PipeSpec,
    /// Proxy to cluster.
    pub upstream_up: PipeSpec,
    /// Cluster to proxy.
    pub upstream_down: PipeSpec,
}

impl NetworkSpec {
    /// The same pipe in every direction.
    pub fn uniform(pipe: PipeSpec) -> Self {
        Self {
            client_up: pipe,
            client_down: pipe,
            upstream_up: pipe,
            upstream_down: pipe,
        }
    }
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self::uniform(PipeSpec::default())
    }
}

/// A complete simulated run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    /// The proxy's configuration; its contact points are only names here.
    pub config: Config,
    pub source: ClusterSpec,
    pub target: ClusterSpec,
    /// One session per client.
    pub clients: Vec<ClientSpec>,
    pub network: NetworkSpec,
    /// Bytes the proxy reads from a socket at once (a driver's read buffer).
    pub proxy_max_read: usize,
    /// How the sessions are driven: directly, or through the runtimes' `Driver`.
    pub engine: Engine,
    /// Wall-clock microseconds at run time zero.
    pub epoch_micros: i64,
    /// The run stops at this run time even if something is still pending.
    pub time_limit: Duration,
    /// Switches of the proxy's primary at run times, in order (the source is primary at
    /// first): requests read from then on take the new route.
    pub primary_switches: Vec<(Duration, Upstream)>,
    /// When the proxy is asked to shut down: every session stops taking requests and closes
    /// after those in flight.
    pub shutdown_at: Option<Duration>,
    /// Track the bytes of cluster answers each session holds ([`crate::host::Host::max_held_answers`]),
    /// at the cost of a walk of its requests at every drain.
    pub track_held_answers: bool,
}

impl Scenario {
    /// The primary for a request the proxy read at run time `at`, and the other one when a
    /// switch happened at exactly that time (either may then apply).
    pub fn primary_at(&self, at: Duration) -> (Upstream, Option<Upstream>) {
        let mut primary = Upstream::Source;
        let mut tie = None;
        for &(when, upstream) in &self.primary_switches {
            if when < at {
                primary = upstream;
            } else if when == at {
                tie = Some(primary);
                primary = upstream;
            }
        }
        (primary, tie.filter(|&t| t != primary))
    }

    /// Every cluster that is primary at some time of the run.
    pub fn primaries(&self) -> Vec<Upstream> {
        let mut all = vec![Upstream::Source];
        for &(_, upstream) in &self.primary_switches {
            if !all.contains(&upstream) {
                all.push(upstream);
            }
        }
        all
    }

    /// One v4 client with the default workload against two healthy clusters whose prepared
    /// ids differ.
    pub fn new(seed: u64) -> Self {
        let endpoint = |host: &str| Endpoint {
            host: host.to_owned(),
            port: 9042,
        };
        Self {
            seed,
            config: Config::new(vec![endpoint("source.sim")], vec![endpoint("target.sim")]),
            source: ClusterSpec::healthy(0x5eed_0001),
            target: ClusterSpec::healthy(0x5eed_0002),
            clients: vec![ClientSpec::new(ProtocolVersion::V4)],
            network: NetworkSpec::default(),
            proxy_max_read: 16 * 1024,
            engine: Engine::Session,
            epoch_micros: 1_700_000_000_000_000,
            time_limit: Duration::from_secs(600),
            primary_switches: Vec::new(),
            shutdown_at: None,
            track_held_answers: false,
        }
    }
}
