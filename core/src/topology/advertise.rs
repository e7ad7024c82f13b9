//! The topology tables as drivers see them: built from the primary's view, with the proxy
//! instances in place of the nodes (virtual mode) or the nodes under their ghost addresses
//! (ghost mode).
//!
//! Columns keep the cluster's names and types. In virtual mode the columns that say where
//! and which a node is (every `inet` column, the ports, `host_id`, `tokens`, `data_center`,
//! `rack`) take the instance's values; the others (`release_version`, `schema_version`,
//! `cluster_name`, ...) keep the answering node's, so drivers see a consistent cluster.

use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::message::ColumnType;
use crate::topology::view::{ClusterView, TableData, TableError, inet};
use crate::topology::{GhostMap, Instance, SystemTable};

/// A proxy instance as drivers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedNode {
    pub instance: Instance,
    pub host_id: [u8; 16],
    /// Its tokens, as the partitioner writes them.
    pub tokens: Vec<String>,
}

/// The partitioners whose tokens the proxy can spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// `Murmur3Partitioner`: signed 64-bit tokens.
    Murmur3,
    /// `RandomPartitioner`: tokens from 0 to 2^127.
    Random,
}

impl Partitioner {
    /// The partitioner named by `system.local.partitioner`; others (byte-ordered ones) get
    /// Murmur3 tokens, which drivers accept as strings and use for nothing worse than a
    /// less even spread.
    pub fn from_class(name: Option<&str>) -> Self {
        match name {
            Some(n) if n.ends_with("RandomPartitioner") => Self::Random,
            _ => Self::Murmur3,
        }
    }
}

/// `per_instance` tokens for instance `index` of `instances`, evenly spread over the ring and
/// interleaved with the other instances', so that each owns the same share of every region
/// of the ring.
pub fn tokens(
    partitioner: Partitioner,
    instances: usize,
    index: usize,
    per_instance: usize,
) -> Vec<String> {
    let instances = instances.max(1) as u128;
    let per_instance = per_instance.max(1) as u128;
    let total = instances * per_instance;
    let index = index as u128 % instances;
    (0..per_instance)
        .map(|j| {
            let k = j * instances + index;
            match partitioner {
                Partitioner::Murmur3 => {
                    // 2^64 positions from i64::MIN.
                    let step = (1u128 << 64) / total;
                    let at = k * step;
                    (i128::from(i64::MIN) + at as i128).to_string()
                }
                Partitioner::Random => {
                    let step = (1u128 << 127) / total;
                    (k * step).to_string()
                }
            }
        })
        .collect()
}

/// A host id for the instance at `instance`, the same on every proxy instance and across
/// restarts (a name-based UUID of the address).
pub fn host_id(instance: &Instance) -> [u8; 16] {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
        0x6a, 0x0e, 0x5b, 0x1c, 0x3f, 0x2d, 0x4e, 0x81, 0x9c, 0x4b, 0x1d, 0x0f, 0x7a, 0x52, 0x63,
        0x90,
    ]);
    let name = format!("cqlmirror-instance/{}/{}", instance.address, instance.port);
    *uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).as_bytes()
}

/// The topology tables drivers see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub local: TableData,
    pub peers: Result<TableData, TableError>,
    pub peers_v2: Result<TableData, TableError>,
}

impl Advertised {
    pub fn table(&self, table: SystemTable) -> Result<&TableData, &TableError> {
        match table {
            SystemTable::Local => Ok(&self.local),
            SystemTable::Peers => self.peers.as_ref(),
            SystemTable::PeersV2 => self.peers_v2.as_ref(),
        }
    }
}

/// What a virtual topology advertises: this instance and the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualNodes {
    pub local: AdvertisedNode,
    pub peers: Vec<AdvertisedNode>,
    /// The data center drivers see; the primary's own when `None`.
    pub data_center: Option<String>,
}

impl VirtualNodes {
    /// `instances` (every proxy instance, the same list on each), of which this one is
    /// `index`, with `num_tokens` tokens each.
    pub fn new(
        instances: &[Instance],
        index: usize,
        num_tokens: usize,
        partitioner: Partitioner,
        data_center: Option<String>,
    ) -> Self {
        let node = |i: usize, instance: &Instance| AdvertisedNode {
            instance: *instance,
            host_id: host_id(instance),
            tokens: tokens(partitioner, instances.len(), i, num_tokens),
        };
        let index = index.min(instances.len().saturating_sub(1));
        let local = instances
            .get(index)
            .map(|i| node(index, i))
            .unwrap_or_else(|| {
                node(
                    0,
                    &Instance {
                        address: IpAddr::from([127, 0, 0, 1]),
                        port: 9042,
                    },
                )
            });
        let peers = instances
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != index)
            .map(|(i, instance)| node(i, instance))
            .collect();
        Self {
            local,
            peers,
            data_center,
        }
    }

    /// The tables drivers see, from the primary's `view`.
    pub fn advertise(&self, view: &ClusterView) -> Advertised {
        let data_center = self
            .data_center
            .clone()
            .or_else(|| view.local_data_center().map(str::to_owned));
        let rack = view.local.text(0, "rack").map(str::to_owned);
        let fill = Fill {
            template: &view.local,
            data_center: data_center.as_deref(),
            rack: rack.as_deref(),
        };
        let mut local = TableData {
            columns: view.local.columns.clone(),
            rows: Vec::new(),
        };
        let base = view.local.rows.first().map(Vec::as_slice);
        local.rows.push(fill.row(&local, &self.local, base));
        let peers_of = |table: &Result<TableData, TableError>| {
            table.as_ref().map_err(Clone::clone).map(|t| {
                let mut out = TableData {
                    columns: t.columns.clone(),
                    rows: Vec::new(),
                };
                for peer in &self.peers {
                    let row = fill.row(&out, peer, None);
                    out.rows.push(row);
                }
                out
            })
        };
        Advertised {
            local,
            peers: peers_of(&view.peers),
            peers_v2: peers_of(&view.peers_v2),
        }
    }
}

/// How a virtual row's cells are filled.
struct Fill<'a> {
    /// The primary's `system.local`, for the columns that are the cluster's (versions, name).
    template: &'a TableData,
    data_center: Option<&'a str>,
    rack: Option<&'a str>,
}

impl Fill<'_> {
    /// A row of `table` for `node`; `base` is the real row whose other cells it keeps (the
    /// local row), else they come from the template by column name.
    fn row(
        &self,
        table: &TableData,
        node: &AdvertisedNode,
        base: Option<&[Option<Bytes>]>,
    ) -> Vec<Option<Bytes>> {
        (0..table.columns.len())
            .map(|i| {
                let name = table.columns[i].name.as_str();
                let kept = || match base {
                    Some(row) => row.get(i).cloned().flatten(),
                    None => self.template.cell(0, name).cloned(),
                };
                let column_type = table.column_type(i);
                match (name, column_type) {
                    // No preference: drivers connect to the native address.
                    ("preferred_ip" | "preferred_port", _) => None,
                    ("key", _) => kept(),
                    ("host_id", Some(ColumnType::Uuid)) => {
                        Some(Bytes::copy_from_slice(&node.host_id))
                    }
                    ("tokens", Some(ColumnType::Set(_) | ColumnType::List(_))) => {
                        Some(text_set(&node.tokens))
                    }
                    ("data_center", Some(ColumnType::Varchar | ColumnType::Ascii)) => {
                        self.data_center.map(text).or_else(kept)
                    }
                    ("rack", Some(ColumnType::Varchar | ColumnType::Ascii)) => {
                        self.rack.map(text).or_else(kept)
                    }
                    (_, Some(ColumnType::Inet)) => Some(inet_cell(node.instance.address)),
                    (n, Some(ColumnType::Int)) if n.ends_with("_port") => Some(
                        Bytes::copy_from_slice(&i32::from(node.instance.port).to_be_bytes()),
                    ),
                    _ => kept(),
                }
            })
            .collect()
    }
}

/// The primary's tables with each node under its ghost address: rows of peers whose address
/// the map does not know are left out (drivers must not learn them), and counted in
/// `unmapped`; the local row of an unmapped node gets `fallback`, the address the client
/// reached this proxy at. Port columns for native connections take the ghost's port, else
/// `fallback`'s.
pub fn ghost(view: &ClusterView, map: &GhostMap, fallback: Instance) -> (Advertised, Vec<IpAddr>) {
    let mut unmapped = Vec::new();
    let mut rewrite = |table: &TableData, local: bool| {
        let mut out = TableData {
            columns: table.columns.clone(),
            rows: Vec::new(),
        };
        for row in &table.rows {
            let mut cells = row.clone();
            let mut keep = true;
            let mut port = fallback.port;
            for (i, cell) in cells.iter_mut().enumerate() {
                if table.column_type(i) != Some(ColumnType::Inet) {
                    continue;
                }
                let Some(ip) = inet(cell.as_ref()) else {
                    continue;
                };
                if ip.is_unspecified() {
                    continue;
                }
                match map.get(ip) {
                    Some(ghost) => {
                        *cell = Some(inet_cell(ghost.address));
                        port = ghost.port.unwrap_or(fallback.port);
                    }
                    None if local => *cell = Some(inet_cell(fallback.address)),
                    None => {
                        if !unmapped.contains(&ip) {
                            unmapped.push(ip);
                        }
                        keep = false;
                    }
                }
            }
            for name in ["native_port", "rpc_port"] {
                if let Some(i) = table.position(name) {
                    if table.column_type(i) == Some(ColumnType::Int) && cells[i].is_some() {
                        cells[i] = Some(Bytes::copy_from_slice(&i32::from(port).to_be_bytes()));
                    }
                }
            }
            if keep {
                out.rows.push(cells);
            }
        }
        out
    };
    let local = rewrite(&view.local, true);
    let peers = view
        .peers
        .as_ref()
        .map_err(Clone::clone)
        .map(|t| rewrite(t, false));
    let peers_v2 = view
        .peers_v2
        .as_ref()
        .map_err(Clone::clone)
        .map(|t| rewrite(t, false));
    (
        Advertised {
            local,
            peers,
            peers_v2,
        },
        unmapped,
    )
}

fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(crate) fn inet_cell(ip: IpAddr) -> Bytes {
    match ip {
        IpAddr::V4(v4) => Bytes::copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => Bytes::copy_from_slice(&v6.octets()),
    }
}

/// A `set<text>` (or `list<text>`) cell, as protocol v3+ encode collections.
fn text_set(items: &[String]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i32(items.len() as i32);
    for item in items {
        out.put_i32(item.len() as i32);
        out.put_slice(item.as_bytes());
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::view::tests::two_nodes;

    fn instance(s: &str) -> Instance {
        let address: std::net::SocketAddr = s.parse().expect("an address");
        Instance {
            address: address.ip(),
            port: address.port(),
        }
    }

    #[test]
    fn tokens_are_spread_evenly_and_interleaved() {
        let a = tokens(Partitioner::Murmur3, 2, 0, 2);
        let b = tokens(Partitioner::Murmur3, 2, 1, 2);
        assert_eq!(a, vec![i64::MIN.to_string(), "0".to_owned()]);
        assert_eq!(
            b,
            vec![(i64::MIN / 2).to_string(), (i64::MAX / 2 + 1).to_string()]
        );
        let r = tokens(Partitioner::Random, 1, 0, 4);
        assert_eq!(r[1], (1u128 << 125).to_string());
        // Every token of every instance is distinct.
        let mut all: Vec<String> = (0..3)
            .flat_map(|i| tokens(Partitioner::Murmur3, 3, i, 8))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 24);
    }

    #[test]
    fn host_ids_are_stable_and_distinct() {
        let a = host_id(&instance("10.1.0.1:9042"));
        assert_eq!(a, host_id(&instance("10.1.0.1:9042")));
        assert_ne!(a, host_id(&instance("10.1.0.1:9043")));
        assert_ne!(a, host_id(&instance("10.1.0.2:9042")));
        assert_eq!(a[6] >> 4, 5, "a version-5 UUID");
    }

    #[test]
    fn virtual_tables_show_only_instances() {
        let view = two_nodes();
        let instances = [
            instance("10.9.0.1:29042"),
            instance("10.9.0.2:29043"),
            instance("[::1]:29044"),
        ];
        let nodes = VirtualNodes::new(&instances, 1, 4, Partitioner::Murmur3, None);
        let advertised = nodes.advertise(&view);
        let local = &advertised.local;
        assert_eq!(local.rows.len(), 1);
        assert_eq!(
            inet(local.cell(0, "rpc_address")),
            Some("10.9.0.2".parse().unwrap())
        );
        assert_eq!(
            inet(local.cell(0, "broadcast_address")),
            Some("10.9.0.2".parse().unwrap())
        );
        assert_eq!(local.text(0, "cluster_name"), Some("prod"));
        assert_eq!(local.text(0, "data_center"), Some("dc1"));
        assert_eq!(
            local.cell(0, "rpc_port").map(|c| c.to_vec()),
            Some(29043i32.to_be_bytes().to_vec())
        );
        let v2 = advertised.peers_v2.as_ref().unwrap();
        assert_eq!(v2.rows.len(), 2);
        assert_eq!(inet(v2.cell(0, "peer")), Some("10.9.0.1".parse().unwrap()));
        assert_eq!(
            inet(v2.cell(1, "native_address")),
            Some("::1".parse().unwrap())
        );
        assert_eq!(
            v2.cell(1, "native_port").map(|c| c.to_vec()),
            Some(29044i32.to_be_bytes().to_vec())
        );
        assert_eq!(v2.text(0, "release_version"), Some("5.0.8"));
        assert_eq!(v2.cell(0, "preferred_ip"), None);
        let peers = advertised.peers.as_ref().unwrap();
        assert_eq!(peers.rows.len(), 2);
        // No backend address anywhere.
        for table in [local, v2, peers] {
            for row in &table.rows {
                for (i, cell) in row.iter().enumerate() {
                    if table.column_type(i) == Some(ColumnType::Inet) {
                        let ip = inet(cell.as_ref());
                        assert!(
                            ip.is_none_or(|ip| instances.iter().any(|i| i.address == ip)),
                            "{ip:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn ghost_tables_map_addresses_and_leave_out_unknown_nodes() {
        let view = two_nodes();
        let mut map = GhostMap::default();
        map.insert(
            "10.0.0.1".parse().unwrap(),
            "10.9.0.1".parse().unwrap(),
            Some(29042),
        );
        let (advertised, unmapped) = ghost(&view, &map, instance("10.9.0.7:29042"));
        assert_eq!(
            inet(advertised.local.cell(0, "rpc_address")),
            Some("10.9.0.1".parse().unwrap())
        );
        assert_eq!(advertised.peers_v2.as_ref().unwrap().rows.len(), 0);
        assert_eq!(unmapped, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        map.insert(
            "10.0.0.2".parse().unwrap(),
            "10.9.0.2".parse().unwrap(),
            None,
        );
        let (advertised, unmapped) = ghost(&view, &map, instance("10.9.0.7:29042"));
        let v2 = advertised.peers_v2.as_ref().unwrap();
        assert!(unmapped.is_empty());
        assert_eq!(inet(v2.cell(0, "peer")), Some("10.9.0.2".parse().unwrap()));
        assert_eq!(
            v2.cell(0, "native_port").map(|c| c.to_vec()),
            Some(29042i32.to_be_bytes().to_vec())
        );
        assert_eq!(v2.cell(0, "host_id").map(|c| c.to_vec()), Some(vec![2; 16]));
    }
}
