//! Everything a simulated run is made of: the proxy's configuration, two clusters, clients,
//! the network, and the seed that decides every random choice.

use std::time::Duration;

use cqlmirror_core::config::{Config, Endpoint};
use cqlmirror_core::frame::ProtocolVersion;
use crate::client::ClientSpec;
use crate::cluster::ClusterSpec;
use crate::host::Engine;
use crate::pipe::PipeSpec;

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
}

impl Scenario {
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
        }
    }
}
