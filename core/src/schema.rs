//! What the proxy knows of the clusters' schema: each table's primary key, so that reads of
//! the two clusters can be compared row by row (which row is which) rather than as bags of
//! rows.

/// The primary key of a table: its partition key columns and its clustering columns, in
/// order, by name (as CQL stores them: unquoted names lower-cased, quoted ones as written).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TableKey {
    pub partition: Vec<String>,
    pub clustering: Vec<String>,
}
