//! What the proxy read of a cluster's topology tables: every column of `system.local`,
//! `system.peers` and `system.peers_v2` as the cluster describes them, and the nodes they
//! list.
//!
//! The view is read with `SELECT *` (by a control connection, or by a session when none has
//! been read yet). Answers to drivers' own reads of these tables are built from it: the
//! columns and their types are the cluster's, so every column list a driver may ask for can
//! be answered without knowing the schema of a given Cassandra version.

use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::frame::ProtocolVersion;
use crate::message::{Body, ColumnType, Columns, ResultMessage};
use crate::wire::Reader;

/// A column of a topology table: its name and its type as encoded on the wire (decoded when
/// needed with [`TableData::column_type`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_bytes: Bytes,
}

/// Every column and row of one table, cells as the cluster encoded them (`None`: null).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableData {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<Bytes>>>,
}

impl TableData {
    /// Reads the body of a RESULT Rows message (as a `SELECT *` returns it, with metadata).
    pub fn from_result(message: &[u8], version: ProtocolVersion) -> Result<Self, ViewError> {
        let result = ResultMessage::decode(message, version).map_err(ViewError::Decode)?;
        let ResultMessage::Rows(rows) = result else {
            return Err(ViewError::NotRows);
        };
        let Columns::Described { specs, .. } = &rows.metadata.columns else {
            return Err(ViewError::NoMetadata);
        };
        let columns = specs
            .iter()
            .map(|spec| {
                let mut type_bytes = BytesMut::new();
                spec.column_type.encode(&mut type_bytes);
                Column {
                    name: spec.name.to_owned(),
                    type_bytes: type_bytes.freeze(),
                }
            })
            .collect();
        let mut out = Vec::with_capacity(rows.row_count());
        for row in rows.iter() {
            let row = row.map_err(ViewError::Decode)?;
            out.push(
                row.cells()
                    .map(|cell| cell.map(Bytes::copy_from_slice))
                    .collect(),
            );
        }
        Ok(Self { columns, rows: out })
    }

    /// The position of the column `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The type of the column at `index`.
    pub fn column_type(&self, index: usize) -> Option<ColumnType<'_>> {
        let column = self.columns.get(index)?;
        ColumnType::decode(&mut Reader::new(&column.type_bytes)).ok()
    }

    /// The cell of `row` in the column `name`.
    pub fn cell(&self, row: usize, name: &str) -> Option<&Bytes> {
        let at = self.position(name)?;
        self.rows.get(row)?.get(at)?.as_ref()
    }

    /// The text in the cell of `row` in the column `name`.
    pub fn text(&self, row: usize, name: &str) -> Option<&str> {
        std::str::from_utf8(self.cell(row, name)?).ok()
    }
}

/// Why a topology table could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewError {
    Decode(DecodeError),
    /// The answer was not a Rows result.
    NotRows,
    /// The Rows result did not describe its columns.
    NoMetadata,
}

impl std::fmt::Display for ViewError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "undecodable result: {e}"),
            Self::NotRows => f.write_str("the answer is not rows"),
            Self::NoMetadata => f.write_str("the rows come without column descriptions"),
        }
    }
}

/// A table the cluster could not be asked about: its ERROR, kept to give drivers the same
/// answer (`system.peers_v2` before Cassandra 4.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError {
    /// The ERROR message body (code, text, details), as the cluster sent it.
    pub message: Bytes,
}

impl TableError {
    /// Whether an ERROR message says the table does not exist (Invalid, "unconfigured
    /// table"), the one error that is an answer about the table rather than a failure.
    pub fn is_missing_table(message: &[u8], version: ProtocolVersion) -> bool {
        crate::message::ErrorMessage::decode(message, version)
            .is_ok_and(|e| e.code == crate::message::ErrorCode::INVALID)
    }
}

/// What a cluster says of its topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// `system.local`: one row, of the node that answered.
    pub local: TableData,
    pub peers: Result<TableData, TableError>,
    pub peers_v2: Result<TableData, TableError>,
    /// The address the view was read through (the answering node's address for clients, when
    /// its `rpc_address` is a wildcard).
    pub read_from: Option<SocketAddr>,
}

/// A node of a cluster, as its topology tables describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Where clients connect to it.
    pub address: SocketAddr,
    pub data_center: Option<String>,
    pub rack: Option<String>,
}

impl ClusterView {
    /// The partitioner class name, from `system.local`.
    pub fn partitioner(&self) -> Option<&str> {
        self.local.text(0, "partitioner")
    }

    /// The data center of the node that answered.
    pub fn local_data_center(&self) -> Option<&str> {
        self.local.text(0, "data_center")
    }

    /// Every node with the address clients connect to. Ports come from `peers_v2` when the
    /// cluster has it; otherwise every node is taken to listen on `default_port` (that of the
    /// contact point).
    pub fn nodes(&self, default_port: u16) -> Vec<Node> {
        let mut nodes = Vec::new();
        let local_address = inet(self.local.cell(0, "rpc_address"))
            .filter(|ip| !ip.is_unspecified())
            .or_else(|| inet(self.local.cell(0, "broadcast_address")))
            .map(|ip| SocketAddr::new(ip, default_port))
            .or(self.read_from);
        if let Some(address) = local_address {
            nodes.push(Node {
                address,
                data_center: self.local.text(0, "data_center").map(str::to_owned),
                rack: self.local.text(0, "rack").map(str::to_owned),
            });
        }
        match (&self.peers_v2, &self.peers) {
            (Ok(v2), _) if !v2.rows.is_empty() || self.peers.is_err() => {
                for row in 0..v2.rows.len() {
                    let ip = inet(v2.cell(row, "native_address"))
                        .filter(|ip| !ip.is_unspecified())
                        .or_else(|| inet(v2.cell(row, "peer")));
                    let port = int(v2.cell(row, "native_port"))
                        .and_then(|p| u16::try_from(p).ok())
                        .unwrap_or(default_port);
                    if let Some(ip) = ip {
                        nodes.push(Node {
                            address: SocketAddr::new(ip, port),
                            data_center: v2.text(row, "data_center").map(str::to_owned),
                            rack: v2.text(row, "rack").map(str::to_owned),
                        });
                    }
                }
            }
            (_, Ok(v1)) => {
                for row in 0..v1.rows.len() {
                    let ip = inet(v1.cell(row, "rpc_address"))
                        .filter(|ip| !ip.is_unspecified())
                        .or_else(|| inet(v1.cell(row, "peer")));
                    if let Some(ip) = ip {
                        nodes.push(Node {
                            address: SocketAddr::new(ip, default_port),
                            data_center: v1.text(row, "data_center").map(str::to_owned),
                            rack: v1.text(row, "rack").map(str::to_owned),
                        });
                    }
                }
            }
            _ => {}
        }
        nodes
    }
}

/// An `inet` cell as an address.
pub fn inet(cell: Option<&Bytes>) -> Option<IpAddr> {
    let cell = cell?;
    match cell.len() {
        4 => <[u8; 4]>::try_from(cell.as_ref()).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(cell.as_ref()).ok().map(IpAddr::from),
        _ => None,
    }
}

/// An `int` cell.
pub fn int(cell: Option<&Bytes>) -> Option<i32> {
    <[u8; 4]>::try_from(cell?.as_ref())
        .ok()
        .map(i32::from_be_bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::message::{RowsMetadata, RowsWriter, TableSpec};

    /// A Rows result body of `columns` (name, type) and `rows`, as a cluster would send it.
    pub(crate) fn rows_body(
        table: &str,
        columns: &[(&str, ColumnType<'static>)],
        rows: &[Vec<Option<Vec<u8>>>],
    ) -> Bytes {
        let metadata = RowsMetadata::new(Columns::in_table(
            TableSpec {
                keyspace: "system",
                table,
            },
            columns,
        ));
        RowsWriter::body_of(&metadata, rows).expect("as many cells as columns")
    }

    pub(crate) fn text(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    pub(crate) fn ip(s: &str) -> Option<Vec<u8>> {
        Some(match s.parse::<IpAddr>().expect("an address") {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        })
    }

    pub(crate) fn port(p: i32) -> Option<Vec<u8>> {
        Some(p.to_be_bytes().to_vec())
    }

    /// A view of a two-node cluster (10.0.0.1 answering, 10.0.0.2 its peer) in `dc1`.
    pub(crate) fn two_nodes() -> ClusterView {
        let v4 = ProtocolVersion::V4;
        let [local, peers, peers_v2] = two_node_results();
        ClusterView {
            local: TableData::from_result(&local, v4).expect("local rows"),
            peers: Ok(TableData::from_result(&peers, v4).expect("peers rows")),
            peers_v2: Ok(TableData::from_result(&peers_v2, v4).expect("peers_v2 rows")),
            read_from: None,
        }
    }

    /// The results of reading `system.local`, `system.peers` and `system.peers_v2` on the
    /// first node of the cluster of [`two_nodes`].
    pub(crate) fn two_node_results() -> [Bytes; 3] {
        let local = rows_body(
            "local",
            &[
                ("key", ColumnType::Varchar),
                ("broadcast_address", ColumnType::Inet),
                ("cluster_name", ColumnType::Varchar),
                ("data_center", ColumnType::Varchar),
                ("host_id", ColumnType::Uuid),
                ("partitioner", ColumnType::Varchar),
                ("rack", ColumnType::Varchar),
                ("release_version", ColumnType::Varchar),
                ("rpc_address", ColumnType::Inet),
                ("rpc_port", ColumnType::Int),
                ("schema_version", ColumnType::Uuid),
                ("tokens", ColumnType::Set(Box::new(ColumnType::Varchar))),
            ],
            &[vec![
                text("local"),
                ip("10.0.0.1"),
                text("prod"),
                text("dc1"),
                Some(vec![1; 16]),
                text("org.apache.cassandra.dht.Murmur3Partitioner"),
                text("rack1"),
                text("5.0.8"),
                ip("10.0.0.1"),
                port(9042),
                Some(vec![7; 16]),
                Some(vec![0, 0, 0, 1, 0, 0, 0, 1, b'0']),
            ]],
        );
        let peers_v2 = rows_body(
            "peers_v2",
            &[
                ("peer", ColumnType::Inet),
                ("peer_port", ColumnType::Int),
                ("data_center", ColumnType::Varchar),
                ("host_id", ColumnType::Uuid),
                ("native_address", ColumnType::Inet),
                ("native_port", ColumnType::Int),
                ("preferred_ip", ColumnType::Inet),
                ("preferred_port", ColumnType::Int),
                ("rack", ColumnType::Varchar),
                ("release_version", ColumnType::Varchar),
                ("schema_version", ColumnType::Uuid),
                ("tokens", ColumnType::Set(Box::new(ColumnType::Varchar))),
            ],
            &[vec![
                ip("10.0.0.2"),
                port(7000),
                text("dc1"),
                Some(vec![2; 16]),
                ip("10.0.0.2"),
                port(9042),
                None,
                None,
                text("rack1"),
                text("5.0.8"),
                Some(vec![7; 16]),
                Some(vec![0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2']),
            ]],
        );
        let peers = rows_body(
            "peers",
            &[
                ("peer", ColumnType::Inet),
                ("data_center", ColumnType::Varchar),
                ("host_id", ColumnType::Uuid),
                ("preferred_ip", ColumnType::Inet),
                ("rack", ColumnType::Varchar),
                ("release_version", ColumnType::Varchar),
                ("rpc_address", ColumnType::Inet),
                ("schema_version", ColumnType::Uuid),
                ("tokens", ColumnType::Set(Box::new(ColumnType::Varchar))),
            ],
            &[vec![
                ip("10.0.0.2"),
                text("dc1"),
                Some(vec![2; 16]),
                None,
                text("rack1"),
                text("5.0.8"),
                ip("10.0.0.2"),
                Some(vec![7; 16]),
                Some(vec![0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2']),
            ]],
        );
        [local, peers, peers_v2]
    }

    #[test]
    fn nodes_and_their_addresses() {
        let view = two_nodes();
        assert_eq!(
            view.partitioner(),
            Some("org.apache.cassandra.dht.Murmur3Partitioner")
        );
        assert_eq!(view.local_data_center(), Some("dc1"));
        let nodes = view.nodes(9042);
        let addresses: Vec<String> = nodes.iter().map(|n| n.address.to_string()).collect();
        assert_eq!(addresses, vec!["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(
            view.local.column_type(11),
            Some(ColumnType::Set(Box::new(ColumnType::Varchar)))
        );
    }
}
