//! A driver's read of a topology table, answered by the proxy from the tables it advertises:
//! the selected columns under their names (aliases included) or `count(*)`, the rows that
//! match the `WHERE` restrictions, with or without metadata.

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};

use crate::message::{ColumnSpec, ColumnType, Columns, RowsMetadata, RowsWriter, TableSpec};
use crate::topology::query::{Operand, Selector, SystemQuery};
use crate::topology::view::TableData;

/// The values bound to a statement's markers, in order, with their names when the client
/// named them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bound {
    pub values: Vec<(Option<String>, Option<Bytes>)>,
}

impl Bound {
    fn get(&self, index: usize, name: Option<&str>) -> Option<&Option<Bytes>> {
        if let Some(name) = name {
            if let Some((_, v)) = self
                .values
                .iter()
                .find(|(n, _)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            {
                return Some(v);
            }
        }
        self.values.get(index).map(|(_, v)| v)
    }
}

/// Why a read cannot be answered: the text of the Invalid error the client gets, as
/// Cassandra would word it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The RESULT body answering `query` over `table` (the advertised rows of `query.table`).
/// `skip_metadata` is the request's flag: the client already has the columns.
pub fn answer(
    query: &SystemQuery,
    bound: &Bound,
    table: &TableData,
    skip_metadata: bool,
) -> Result<Bytes, Refusal> {
    if !query.is_answerable() {
        return Err(Refusal(format!(
            "cqlmirror answers reads of {} itself, from the topology it advertises: select columns or count(*), without functions or JSON",
            query.table.name()
        )));
    }
    let mut rows: Vec<&Vec<Option<Bytes>>> = table
        .rows
        .iter()
        .filter(|row| matches(query, bound, table, row))
        .collect();
    // The limit bounds the rows of the result: `count(*)` still counts every match.
    if let (Some(limit), false) = (query.limit, query.is_count()) {
        rows.truncate(limit);
    }
    // What each output column is: a column of the table (with its output name) or a count.
    let outputs: Vec<(String, Option<usize>)> = match &query.selectors {
        None => (0..table.columns.len())
            .map(|i| (table.columns[i].name.clone(), Some(i)))
            .collect(),
        Some(selected) => {
            let mut out = Vec::with_capacity(selected.len());
            for s in selected {
                match &s.selector {
                    Selector::Column(name) => {
                        let at = table.position(name).ok_or_else(|| {
                            Refusal(format!(
                                "Undefined column name {name} in table {}",
                                query.table.name()
                            ))
                        })?;
                        out.push((s.alias.clone().unwrap_or_else(|| name.clone()), Some(at)));
                    }
                    Selector::Count => {
                        out.push((s.alias.clone().unwrap_or_else(|| "count".to_owned()), None));
                    }
                    Selector::Other => {}
                }
            }
            out
        }
    };
    let types: Vec<ColumnType<'_>> = outputs
        .iter()
        .map(|(_, at)| match at {
            Some(i) => table.column_type(*i).unwrap_or(ColumnType::Blob),
            None => ColumnType::Bigint,
        })
        .collect();
    let table_name = match query.table {
        crate::topology::SystemTable::Local => "local",
        crate::topology::SystemTable::Peers => "peers",
        crate::topology::SystemTable::PeersV2 => "peers_v2",
    };
    let columns = if skip_metadata {
        Columns::Skipped {
            count: outputs.len(),
        }
    } else {
        Columns::Described {
            global_table_spec: Some(TableSpec {
                keyspace: "system",
                table: table_name,
            }),
            specs: outputs
                .iter()
                .zip(&types)
                .map(|((name, _), column_type)| ColumnSpec {
                    table: None,
                    name: name.as_str(),
                    column_type: column_type.clone(),
                })
                .collect(),
        }
    };
    let mut writer = RowsWriter::new(&RowsMetadata::new(columns));
    let push = |writer: &mut RowsWriter, cells: Vec<Option<Bytes>>| {
        writer
            .push_row(cells.iter().map(|c| c.as_deref()))
            .map_err(|e| {
                Refusal(format!(
                    "cqlmirror could not build the rows of {}: {e}",
                    query.table.name()
                ))
            })
    };
    if query.is_count() {
        // One row: the count, and the first matching row's other columns.
        let count = Bytes::copy_from_slice(&(rows.len() as i64).to_be_bytes());
        let cells = outputs
            .iter()
            .map(|(_, at)| match at {
                Some(i) => rows.first().and_then(|r| r.get(*i).cloned().flatten()),
                None => Some(count.clone()),
            })
            .collect();
        push(&mut writer, cells)?;
    } else {
        for row in rows {
            let cells = outputs
                .iter()
                .map(|(_, at)| at.and_then(|i| row.get(i).cloned().flatten()))
                .collect();
            push(&mut writer, cells)?;
        }
    }
    Ok(writer.finish())
}

/// Whether `row` satisfies every restriction. A restriction the proxy cannot evaluate keeps
/// the row: a driver gets a node too many rather than miss one.
fn matches(query: &SystemQuery, bound: &Bound, table: &TableData, row: &[Option<Bytes>]) -> bool {
    if query.unknown_restriction {
        return true;
    }
    query.restrictions.iter().all(|r| {
        let Some(at) = table.position(&r.column) else {
            return false;
        };
        let wanted = match &r.operand {
            Operand::Marker { index, name } => match bound.get(*index, name.as_deref()) {
                Some(value) => value.clone(),
                None => return true,
            },
            Operand::Literal(text) => match table.column_type(at).and_then(|t| literal(&t, text)) {
                Some(bytes) => Some(bytes),
                None => return true,
            },
        };
        row.get(at).cloned().flatten() == wanted && wanted.is_some()
    })
}

/// A literal as a cell of `column_type`, for the types of key columns of these tables.
fn literal(column_type: &ColumnType<'_>, text: &str) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match column_type {
        ColumnType::Varchar | ColumnType::Ascii => out.extend_from_slice(text.as_bytes()),
        ColumnType::Inet => match text.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        },
        ColumnType::Int => out.extend_from_slice(&text.parse::<i32>().ok()?.to_be_bytes()),
        ColumnType::Bigint => out.extend_from_slice(&text.parse::<i64>().ok()?.to_be_bytes()),
        ColumnType::Uuid | ColumnType::Timeuuid => {
            out.extend_from_slice(uuid::Uuid::try_parse(text).ok()?.as_bytes())
        }
        _ => return None,
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ProtocolVersion;
    use crate::message::{Body, ResultMessage};
    use crate::topology::Instance;
    use crate::topology::advertise::{Partitioner, VirtualNodes};
    use crate::topology::view::inet;
    use crate::topology::view::tests::two_nodes;

    fn advertised() -> crate::topology::Advertised {
        let instances: Vec<Instance> = ["10.9.0.1:9042", "10.9.0.2:9042", "10.9.0.3:9043"]
            .iter()
            .map(|s| {
                let a: std::net::SocketAddr = s.parse().unwrap();
                Instance {
                    address: a.ip(),
                    port: a.port(),
                }
            })
            .collect();
        VirtualNodes::new(
            &instances,
            0,
            2,
            Partitioner::Murmur3,
            Some("proxies".into()),
        )
        .advertise(&two_nodes())
    }

    fn run(text: &str, bound: Bound, skip: bool) -> Result<TableData, Refusal> {
        let query = SystemQuery::parse(text, None).expect("a topology read");
        let advertised = advertised();
        let table = advertised.table(query.table).expect("the table exists");
        let body = answer(&query, &bound, table, skip)?;
        if skip {
            // Decodable only with the columns known; check the shape instead.
            let ResultMessage::Rows(rows) =
                ResultMessage::decode(&body, ProtocolVersion::V4).unwrap()
            else {
                panic!("rows expected");
            };
            assert!(matches!(rows.metadata.columns, Columns::Skipped { .. }));
            return Ok(TableData::default());
        }
        Ok(TableData::from_result(&body, ProtocolVersion::V4).expect("a rows result"))
    }

    #[test]
    fn star_and_column_lists() {
        let all = run("SELECT * FROM system.peers_v2", Bound::default(), false).unwrap();
        assert_eq!(all.rows.len(), 2);
        assert_eq!(all.columns[0].name, "peer");
        let some = run(
            "SELECT rpc_address AS a, data_center, tokens FROM system.local WHERE key = 'local'",
            Bound::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            some.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "data_center", "tokens"]
        );
        assert_eq!(inet(some.cell(0, "a")), Some("10.9.0.1".parse().unwrap()));
        assert_eq!(some.text(0, "data_center"), Some("proxies"));
        let none = run(
            "SELECT * FROM system.local WHERE key = 'other'",
            Bound::default(),
            false,
        )
        .unwrap();
        assert!(none.rows.is_empty());
    }

    #[test]
    fn limit_bounds_the_rows_not_the_count() {
        let one = run(
            "SELECT peer FROM system.peers LIMIT 1",
            Bound::default(),
            false,
        )
        .unwrap();
        assert_eq!(one.rows.len(), 1);
        let all = run(
            "SELECT peer FROM system.peers LIMIT ?",
            Bound::default(),
            false,
        )
        .unwrap();
        assert_eq!(all.rows.len(), 2);
        let count = run(
            "SELECT count(*) FROM system.peers LIMIT 1",
            Bound::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            count.cell(0, "count").map(|c| c.to_vec()),
            Some(2i64.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn count_and_restrictions() {
        let count = run("SELECT count(*) FROM system.peers", Bound::default(), false).unwrap();
        assert_eq!(count.columns[0].name, "count");
        assert_eq!(
            count.cell(0, "count").map(|c| c.to_vec()),
            Some(2i64.to_be_bytes().to_vec())
        );
        let one = run(
            "SELECT peer FROM system.peers_v2 WHERE peer = ? AND peer_port = ?",
            Bound {
                values: vec![
                    (None, Some(Bytes::from_static(&[10, 9, 0, 3]))),
                    (None, Some(Bytes::copy_from_slice(&9043i32.to_be_bytes()))),
                ],
            },
            false,
        )
        .unwrap();
        assert_eq!(one.rows.len(), 1);
        let literal = run(
            "SELECT peer FROM system.peers WHERE peer = '10.9.0.2'",
            Bound::default(),
            false,
        )
        .unwrap();
        assert_eq!(
            inet(literal.cell(0, "peer")),
            Some("10.9.0.2".parse().unwrap())
        );
        let named = run(
            "SELECT peer FROM system.peers_v2 WHERE peer = :address",
            Bound {
                values: vec![(
                    Some("address".into()),
                    Some(Bytes::from_static(&[10, 9, 0, 2])),
                )],
            },
            false,
        )
        .unwrap();
        assert_eq!(named.rows.len(), 1);
        assert!(run("SELECT * FROM system.peers", Bound::default(), true).is_ok());
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = run("SELECT nope FROM system.local", Bound::default(), false).unwrap_err();
        assert!(e.0.contains("Undefined column name nope"), "{e:?}");
        let e = run("SELECT JSON * FROM system.local", Bound::default(), false).unwrap_err();
        assert!(e.0.contains("without functions or JSON"), "{e:?}");
    }
}
