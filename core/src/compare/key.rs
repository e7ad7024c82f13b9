//! Which result columns identify a row, from the table's primary key.
//!
//! With a key, a row of one side is paired with the row of the other side that has the same
//! key, so a changed value is reported as one different row (with the columns that differ)
//! instead of one missing and one extra row. The key is usable only when every partition key
//! column was selected; clustering columns count up to the first one that was not (a later
//! one alone does not narrow the rows of a partition in key order).

use crate::schema::TableKey;

use super::columns::ColumnView;

/// The result columns of a row's key, in key order: the partition key columns, then the
/// selected prefix of the clustering columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyColumns {
    indices: Vec<usize>,
    partition: usize,
}

impl KeyColumns {
    /// The key columns of `key` in the result's columns, or `None` when a partition key
    /// column is not among them (or the table has no partition key, or names are unknown).
    pub(super) fn find(key: &TableKey, view: &ColumnView<'_>) -> Option<Self> {
        if key.partition.is_empty() {
            return None;
        }
        let mut indices = key
            .partition
            .iter()
            .map(|name| view.position(name))
            .collect::<Option<Vec<usize>>>()?;
        let partition = indices.len();
        indices.extend(key.clustering.iter().map_while(|name| view.position(name)));
        Some(Self { indices, partition })
    }

    /// Every key column, partition key first.
    pub(super) fn all(&self) -> &[usize] {
        &self.indices
    }

    /// The partition key columns.
    pub(super) fn partition(&self) -> &[usize] {
        self.indices.get(..self.partition).unwrap_or(&self.indices)
    }

    pub(super) fn contains(&self, index: usize) -> bool {
        self.indices.contains(&index)
    }
}
