//! Topology: what drivers learn about the cluster's nodes, and which nodes the proxy connects
//! to.
//!
//! Drivers read `system.local`, `system.peers` and `system.peers_v2` to discover the nodes and
//! then connect to each. Relayed as they are, those tables would send drivers around the proxy,
//! straight to the source's nodes, and the target would miss what they write. So the proxy
//! answers these reads itself, from a [`view::ClusterView`] of the primary:
//!
//! - **virtual** (the default): the nodes are the proxy instances (`--proxy-topology-*`), each
//!   with evenly spread synthetic tokens and a stable host id;
//! - **ghost** (the older proxy's `--ghostIps`): the primary's nodes under the proxy addresses
//!   of a map.
//!
//! - [`query`]: recognizing a read of these tables in a statement;
//! - [`view`]: the cluster's tables as read with `SELECT *`, and its nodes;
//! - [`advertise`]: the tables as drivers see them, in either mode;
//! - [`answer`]: a driver's read answered from them (any column list, aliases, `count(*)`,
//!   `WHERE` on the key columns);
//! - [`events`]: topology and status EVENTs, dropped or rewritten.

pub mod advertise;
pub mod answer;
pub mod events;
pub mod query;
pub mod view;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

pub use advertise::{Advertised, AdvertisedNode, Partitioner, VirtualNodes};
pub use query::{SystemQuery, SystemTable};
pub use view::{ClusterView, TableData};

/// A proxy instance: where drivers connect to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instance {
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V6(v6) => write!(f, "[{v6}]:{}", self.port),
            IpAddr::V4(v4) => write!(f, "{v4}:{}", self.port),
        }
    }
}

/// A ghost address: the proxy address drivers see for a node, and its port when it is not
/// the one the proxy listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ghost {
    pub address: IpAddr,
    pub port: Option<u16>,
}

/// The older proxy's `--ghostIps`: each node's address → the proxy address drivers see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GhostMap {
    entries: BTreeMap<IpAddr, Ghost>,
}

impl GhostMap {
    pub fn insert(&mut self, node: IpAddr, ghost: IpAddr, port: Option<u16>) {
        self.entries.insert(
            node,
            Ghost {
                address: ghost,
                port,
            },
        );
    }

    pub fn get(&self, node: IpAddr) -> Option<Ghost> {
        self.entries.get(&node).copied()
    }

    /// The node behind a ghost address.
    pub fn node_of(&self, ghost: IpAddr) -> Option<IpAddr> {
        self.entries
            .iter()
            .find(|(_, g)| g.address == ghost)
            .map(|(node, _)| *node)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn nodes(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.entries.keys().copied()
    }
}

/// The proxy instances of a virtual topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualTopology {
    /// Every proxy instance, in the same order on each; empty: this instance alone, at the
    /// address the client reached it on (or `advertise`).
    pub instances: Vec<Instance>,
    /// Which of `instances` this proxy is.
    pub index: usize,
    /// Where clients reach this proxy when `instances` is empty and the listening address is a
    /// wildcard; `None`: the address each client connected to.
    pub advertise: Option<IpAddr>,
    /// Tokens per instance.
    pub num_tokens: usize,
    /// The data center drivers see; `None`: the primary's.
    pub data_center: Option<String>,
}

impl Default for VirtualTopology {
    fn default() -> Self {
        Self {
            instances: Vec::new(),
            index: 0,
            advertise: None,
            num_tokens: 8,
            data_center: None,
        }
    }
}

/// How the proxy presents the cluster's topology to drivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyMode {
    Virtual(VirtualTopology),
    Ghost(GhostMap),
}

impl Default for TopologyMode {
    fn default() -> Self {
        Self::Virtual(VirtualTopology::default())
    }
}
