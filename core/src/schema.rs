//! What the proxy knows of the clusters' schema: each table's primary key, so that reads of
//! the two clusters can be compared row by row (which row is which) rather than as bags of
//! rows.
//!
//! Each cluster's control connection reads it from `system_schema.columns`, one row per
//! column with its `kind` (`partition_key`, `clustering`, `regular`, `static`) and, for key
//! columns, its `position` in the key. Only key columns are kept. The names are those the
//! cluster stores, already resolved (unquoted names lower-cased, quoted ones as written), so
//! they match the column names of result metadata as they are.
//!
//! A table whose key columns cannot all be read (a row with a null or undecodable cell, or
//! positions that do not run 0, 1, 2, …) is left out: no key is better than a wrong one,
//! which would pair rows of the two clusters that are not the same row.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::error::DecodeError;
use crate::frame::ProtocolVersion;
use crate::message::{Body, ColumnType, ResultMessage, Rows};

/// The primary key of a table: its partition key columns and its clustering columns, in
/// order, by name (as CQL stores them: unquoted names lower-cased, quoted ones as written).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TableKey {
    pub partition: Vec<String>,
    pub clustering: Vec<String>,
}

/// The statement that reads what a [`Schema`] is built from.
pub const SCHEMA_QUERY: &str =
    "SELECT keyspace_name, table_name, column_name, kind, position FROM system_schema.columns";

/// The primary key of every table of one cluster, by keyspace and table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    /// Keyspace → table → key. Nested so that a lookup by `&str` allocates nothing; ordered
    /// maps, as everywhere in the core, so that nothing depends on hashing.
    keyspaces: BTreeMap<String, BTreeMap<String, Arc<TableKey>>>,
    tables: usize,
}

/// Why an answer could not be read as a schema at all (single bad rows are skipped instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaError {
    Decode(DecodeError),
    /// The answer was not a Rows result.
    NotRows,
    /// The Rows result did not describe its columns.
    NoMetadata,
    /// A column the statement selects is not in the result.
    MissingColumn(&'static str),
    /// A column has a type other than the one `system_schema.columns` gives it.
    ColumnType(&'static str),
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(e) => write!(f, "undecodable result: {e}"),
            Self::NotRows => f.write_str("the answer is not rows"),
            Self::NoMetadata => f.write_str("the rows come without column descriptions"),
            Self::MissingColumn(name) => write!(f, "the rows have no column {name}"),
            Self::ColumnType(name) => write!(f, "the column {name} has an unexpected type"),
        }
    }
}

impl std::error::Error for SchemaError {}

/// The key columns of one table, as rows are read.
#[derive(Debug, Default)]
struct Pending {
    partition: Vec<(i32, String)>,
    clustering: Vec<(i32, String)>,
    /// A row of the table could not be read: it may have been a key column.
    incomplete: bool,
}

impl Pending {
    fn into_key(self) -> Option<TableKey> {
        if self.incomplete || self.partition.is_empty() {
            return None;
        }
        Some(TableKey {
            partition: in_position_order(self.partition)?,
            clustering: in_position_order(self.clustering)?,
        })
    }
}

/// The names in position order, if the positions are exactly 0, 1, 2, ….
fn in_position_order(mut columns: Vec<(i32, String)>) -> Option<Vec<String>> {
    columns.sort_unstable();
    let contiguous = columns
        .iter()
        .enumerate()
        .all(|(i, (position, _))| usize::try_from(*position).is_ok_and(|p| p == i));
    contiguous.then(|| columns.into_iter().map(|(_, name)| name).collect())
}

impl Schema {
    /// Reads the body of a RESULT message answering [`SCHEMA_QUERY`].
    pub fn from_result(message: &[u8], version: ProtocolVersion) -> Result<Self, SchemaError> {
        match ResultMessage::decode(message, version).map_err(SchemaError::Decode)? {
            ResultMessage::Rows(rows) => Self::from_rows(&rows),
            _ => Err(SchemaError::NotRows),
        }
    }

    /// Reads the rows of [`SCHEMA_QUERY`]; its columns are found by name, in any order. A row
    /// that may be a key column and has a null or undecodable cell leaves its table out (see
    /// the module documentation); other columns' cells are not looked at. An error is only
    /// for an answer that is not that table's rows at all, or whose rows cannot be walked.
    pub fn from_rows(rows: &Rows<'_>) -> Result<Self, SchemaError> {
        let columns = &rows.metadata.columns;
        let Some(specs) = columns.specs() else {
            return Err(SchemaError::NoMetadata);
        };
        let find = |name: &'static str, text: bool| {
            let at = columns
                .position(name)
                .ok_or(SchemaError::MissingColumn(name))?;
            let fits = match specs.get(at).map(|s| &s.column_type) {
                Some(ColumnType::Varchar | ColumnType::Ascii) => text,
                Some(ColumnType::Int) => !text,
                _ => false,
            };
            if fits {
                Ok(at)
            } else {
                Err(SchemaError::ColumnType(name))
            }
        };
        let keyspace_at = find("keyspace_name", true)?;
        let table_at = find("table_name", true)?;
        let column_at = find("column_name", true)?;
        let kind_at = find("kind", true)?;
        let position_at = find("position", false)?;

        let mut pending: BTreeMap<(String, String), Pending> = BTreeMap::new();
        for row in rows.iter() {
            let row = row.map_err(SchemaError::Decode)?;
            let text = |at: usize| {
                row.cell(at)
                    .flatten()
                    .and_then(|c| std::str::from_utf8(c).ok())
            };
            // A row that does not say which table it is about cannot spoil any table's key.
            let (Some(keyspace), Some(table)) = (text(keyspace_at), text(table_at)) else {
                continue;
            };
            let key_column = match text(kind_at) {
                Some(kind) if kind.eq_ignore_ascii_case("partition_key") => Some(true),
                Some(kind) if kind.eq_ignore_ascii_case("clustering") => Some(false),
                Some(_) => None,
                None => {
                    table_entry(&mut pending, keyspace, table).incomplete = true;
                    continue;
                }
            };
            let Some(partition) = key_column else {
                // Regular and static columns are not part of the key.
                continue;
            };
            let entry = table_entry(&mut pending, keyspace, table);
            let position = row
                .cell(position_at)
                .flatten()
                .and_then(|c| <[u8; 4]>::try_from(c).ok())
                .map(i32::from_be_bytes);
            let (Some(name), Some(position)) = (text(column_at), position) else {
                entry.incomplete = true;
                continue;
            };
            let list = if partition {
                &mut entry.partition
            } else {
                &mut entry.clustering
            };
            list.push((position, name.to_owned()));
        }

        let mut schema = Self::default();
        for ((keyspace, table), columns) in pending {
            if let Some(key) = columns.into_key() {
                schema
                    .keyspaces
                    .entry(keyspace)
                    .or_default()
                    .insert(table, Arc::new(key));
                schema.tables += 1;
            }
        }
        Ok(schema)
    }

    /// The primary key of `keyspace`.`table`, names as stored (see [`TableKey`]).
    pub fn key(&self, keyspace: &str, table: &str) -> Option<Arc<TableKey>> {
        self.keyspaces.get(keyspace)?.get(table).cloned()
    }

    /// How many tables have a known key.
    pub fn len(&self) -> usize {
        self.tables
    }

    pub fn is_empty(&self) -> bool {
        self.tables == 0
    }
}

fn table_entry<'p>(
    pending: &'p mut BTreeMap<(String, String), Pending>,
    keyspace: &str,
    table: &str,
) -> &'p mut Pending {
    pending
        .entry((keyspace.to_owned(), table.to_owned()))
        .or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::message::{Columns, RowsMetadata, RowsWriter, TableSpec};

    /// A row of `system_schema.columns`: keyspace, table, column, kind, position.
    pub(crate) type ColumnRow<'a> = (&'a str, &'a str, &'a str, &'a str, i32);

    /// The RESULT body a cluster sends for [`SCHEMA_QUERY`] with `rows`.
    pub(crate) fn schema_result(rows: &[ColumnRow<'_>]) -> Bytes {
        let cells: Vec<Vec<Option<Vec<u8>>>> = rows
            .iter()
            .map(|(keyspace, table, column, kind, position)| {
                vec![
                    Some(keyspace.as_bytes().to_vec()),
                    Some(table.as_bytes().to_vec()),
                    Some(column.as_bytes().to_vec()),
                    Some(kind.as_bytes().to_vec()),
                    Some(position.to_be_bytes().to_vec()),
                ]
            })
            .collect();
        result_of(SCHEMA_COLUMNS, &cells)
    }

    /// The columns of [`SCHEMA_QUERY`]'s answer, in its order.
    pub(crate) const SCHEMA_COLUMNS: &[(&str, ColumnType<'static>)] = &[
        ("keyspace_name", ColumnType::Varchar),
        ("table_name", ColumnType::Varchar),
        ("column_name", ColumnType::Varchar),
        ("kind", ColumnType::Varchar),
        ("position", ColumnType::Int),
    ];

    /// A RESULT Rows body of `columns` and `rows` (`None`: null).
    pub(crate) fn result_of(
        columns: &[(&str, ColumnType<'static>)],
        rows: &[Vec<Option<Vec<u8>>>],
    ) -> Bytes {
        let metadata = RowsMetadata::new(Columns::in_table(
            TableSpec {
                keyspace: "system_schema",
                table: "columns",
            },
            columns,
        ));
        RowsWriter::body_of(&metadata, rows).expect("as many cells as columns")
    }

    fn read(body: &[u8]) -> Result<Schema, SchemaError> {
        Schema::from_result(body, ProtocolVersion::V4)
    }

    fn key(partition: &[&str], clustering: &[&str]) -> Option<Arc<TableKey>> {
        Some(Arc::new(TableKey {
            partition: partition.iter().map(|s| s.to_string()).collect(),
            clustering: clustering.iter().map(|s| s.to_string()).collect(),
        }))
    }

    #[test]
    fn key_columns_in_position_order_and_nothing_else() {
        let schema = read(&schema_result(&[
            ("shop", "orders", "total", "regular", -1),
            ("shop", "orders", "day", "clustering", 1),
            ("shop", "orders", "customer", "partition_key", 0),
            ("shop", "orders", "Region", "partition_key", 1),
            ("shop", "orders", "note", "static", -1),
            ("shop", "orders", "placed", "clustering", 0),
            ("shop", "users", "id", "partition_key", 0),
            ("shop", "users", "name", "regular", -1),
            ("audit", "orders", "id", "partition_key", 0),
            ("audit", "orders", "at", "clustering", 0),
        ]))
        .unwrap();
        assert_eq!(schema.len(), 3);
        assert_eq!(
            schema.key("shop", "orders"),
            key(&["customer", "Region"], &["placed", "day"])
        );
        assert_eq!(schema.key("shop", "users"), key(&["id"], &[]));
        assert_eq!(schema.key("audit", "orders"), key(&["id"], &["at"]));
        assert_eq!(schema.key("shop", "missing"), None);
        assert_eq!(schema.key("missing", "orders"), None);
        // Names are as stored: no case folding on lookup.
        assert_eq!(schema.key("Shop", "orders"), None);
    }

    #[test]
    fn columns_are_found_by_name_in_any_order() {
        let columns = [
            ("position", ColumnType::Int),
            ("kind", ColumnType::Varchar),
            ("extra", ColumnType::Boolean),
            ("column_name", ColumnType::Varchar),
            ("table_name", ColumnType::Varchar),
            ("keyspace_name", ColumnType::Ascii),
        ];
        let t = |s: &str| Some(s.as_bytes().to_vec());
        let rows = vec![
            vec![
                Some(0i32.to_be_bytes().to_vec()),
                t("partition_key"),
                None,
                t("k"),
                t("t"),
                t("ks"),
            ],
            vec![
                Some(0i32.to_be_bytes().to_vec()),
                t("clustering"),
                None,
                t("c"),
                t("t"),
                t("ks"),
            ],
        ];
        let schema = read(&result_of(&columns, &rows)).unwrap();
        assert_eq!(schema.key("ks", "t"), key(&["k"], &["c"]));
    }

    #[test]
    fn a_table_with_an_unreadable_key_column_is_left_out() {
        let t = |s: &str| Some(s.as_bytes().to_vec());
        let int = |p: i32| Some(p.to_be_bytes().to_vec());
        let rows = vec![
            // ks.nulls: a key column without a name.
            vec![t("ks"), t("nulls"), t("k"), t("partition_key"), int(0)],
            vec![t("ks"), t("nulls"), None, t("clustering"), int(0)],
            // ks.short: a position that is not an int.
            vec![
                t("ks"),
                t("short"),
                t("k"),
                t("partition_key"),
                Some(vec![0, 0]),
            ],
            // ks.kindless: a column of unknown kind could be a key column.
            vec![t("ks"), t("kindless"), t("k"), t("partition_key"), int(0)],
            vec![t("ks"), t("kindless"), t("c"), None, int(0)],
            // ks.gap: positions 0 and 2 (1 is missing).
            vec![t("ks"), t("gap"), t("a"), t("partition_key"), int(0)],
            vec![t("ks"), t("gap"), t("b"), t("partition_key"), int(2)],
            // ks.twice: two columns at position 0.
            vec![t("ks"), t("twice"), t("a"), t("clustering"), int(0)],
            vec![t("ks"), t("twice"), t("b"), t("clustering"), int(0)],
            vec![t("ks"), t("twice"), t("k"), t("partition_key"), int(0)],
            // ks.keyless: clustering columns but no partition key.
            vec![t("ks"), t("keyless"), t("c"), t("clustering"), int(0)],
            // A row that names no table, and one whose table name is not UTF-8: skipped.
            vec![None, t("good"), t("x"), t("partition_key"), int(0)],
            vec![
                t("ks"),
                Some(vec![0xff]),
                t("x"),
                t("partition_key"),
                int(0),
            ],
            // ks.good: a regular column's null position does not matter.
            vec![t("ks"), t("good"), t("k"), t("partition_key"), int(0)],
            vec![t("ks"), t("good"), t("v"), t("regular"), None],
        ];
        let schema = read(&result_of(SCHEMA_COLUMNS, &rows)).unwrap();
        assert_eq!(schema.len(), 1, "{schema:?}");
        assert_eq!(schema.key("ks", "good"), key(&["k"], &[]));
    }

    #[test]
    fn answers_that_are_not_the_columns_table_are_errors() {
        assert_eq!(
            read(&result_of(&SCHEMA_COLUMNS[..4], &[])),
            Err(SchemaError::MissingColumn("position"))
        );
        let mut columns = SCHEMA_COLUMNS.to_vec();
        columns[4].1 = ColumnType::Varchar;
        assert_eq!(
            read(&result_of(&columns, &[])),
            Err(SchemaError::ColumnType("position"))
        );
        columns[4].1 = ColumnType::Int;
        columns[0].1 = ColumnType::Blob;
        assert_eq!(
            read(&result_of(&columns, &[])),
            Err(SchemaError::ColumnType("keyspace_name"))
        );
        let skipped = RowsWriter::new(&RowsMetadata::new(Columns::Skipped { count: 5 })).finish();
        assert_eq!(read(&skipped), Err(SchemaError::NoMetadata));
        assert_eq!(read(&[0, 0, 0, 1]), Err(SchemaError::NotRows));
        assert!(matches!(read(&[0, 0, 0, 2]), Err(SchemaError::Decode(_))));
        // Rows whose content is cut short: an error, not a schema missing tables.
        let body = schema_result(&[("ks", "t", "k", "partition_key", 0)]);
        assert!(matches!(
            read(&body[..body.len() - 1]),
            Err(SchemaError::Decode(_))
        ));
        // No rows at all is an empty schema.
        assert_eq!(read(&schema_result(&[])), Ok(Schema::default()));
    }
}
