//! One side's rows laid out for matching: every cell, borrowed from the body, in one flat
//! vector.
//!
//! Rows that are not the same sequence on both sides must be sorted and merged, which needs
//! random access to cells. A row's cells are only reachable by walking its lengths, so they
//! are walked once here: one allocation per side rather than one per row.

use std::cmp::Ordering;

use crate::error::DecodeError;
use crate::message::Rows;

/// The first rows of a result, cell by cell (`None` for a null).
#[derive(Debug)]
pub(super) struct Grid<'a> {
    cells: Vec<Option<&'a [u8]>>,
    width: usize,
    rows: usize,
}

impl<'a> Grid<'a> {
    /// The first `limit` rows of `rows`. Every row is walked, so content that does not hold
    /// exactly the announced rows is an error even past the limit.
    pub(super) fn read(rows: &Rows<'a>, limit: usize) -> Result<Self, DecodeError> {
        let width = rows.column_count();
        let kept = limit.min(rows.row_count());
        // Decoding checked that the content holds row_count × width cells of 4 bytes at least.
        let mut cells = Vec::with_capacity(kept.saturating_mul(width));
        for (index, row) in rows.iter().enumerate() {
            let row = row?;
            if index < kept {
                cells.extend(row.cells());
            }
        }
        Ok(Self {
            cells,
            width,
            rows: kept,
        })
    }

    /// The cells of row `index` (empty past the last row).
    pub(super) fn row(&self, index: usize) -> &[Option<&'a [u8]>] {
        let start = index.saturating_mul(self.width);
        self.cells
            .get(start..start.saturating_add(self.width))
            .unwrap_or(&[])
    }

    /// The row indices sorted by the cells of `columns` (then by index, so that equal rows
    /// keep their order and matching is deterministic).
    pub(super) fn sorted_by(&self, columns: &[usize]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows).collect();
        order.sort_unstable_by(|a, b| {
            compare_cells(self.row(*a), self.row(*b), columns).then(a.cmp(b))
        });
        order
    }

    /// Whether two rows in `sorted` order (from [`Grid::sorted_by`] with the same columns)
    /// have the same cells in `columns`.
    pub(super) fn has_duplicates(&self, sorted: &[usize], columns: &[usize]) -> bool {
        sorted.windows(2).any(|pair| match pair {
            [a, b] => compare_cells(self.row(*a), self.row(*b), columns).is_eq(),
            _ => false,
        })
    }
}

/// Orders two rows by the cells of `columns`, in that order. Only a total order for
/// matching, not the clusters' order: nulls first, then bytes lexicographically.
pub(super) fn compare_cells(
    a: &[Option<&[u8]>],
    b: &[Option<&[u8]>],
    columns: &[usize],
) -> Ordering {
    columns
        .iter()
        .map(|i| a.get(*i).cmp(&b.get(*i)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}
