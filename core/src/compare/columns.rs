//! The columns both answers are read with, and what makes two cells equal.
//!
//! Values are compared by their bytes, so two answers can only be compared row by row when
//! their columns agree (names and types, in order); when they do not, the shape is the
//! divergence and the rows are not compared. A Rows result sent without metadata (a prepared
//! statement executed with skip_metadata) is read with the prepared statement's result
//! metadata when the caller knows it, and with numbered, untyped columns otherwise.

use std::borrow::Cow;

use crate::message::{ColumnSpec, ColumnType, Columns, RowsMetadata, TableSpec};

use super::outcome::{DivergenceKind, Recorder, Which};
use super::render;

/// The columns of a result as far as they are known: described (names and types), or only
/// counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct ColumnView<'s> {
    specs: Option<&'s [ColumnSpec<'s>]>,
    count: usize,
}

impl<'s> ColumnView<'s> {
    /// The columns of one side: its own metadata, else the prepared statement's when it has
    /// as many columns, else numbered columns.
    fn of_side(
        metadata: &'s RowsMetadata<'s>,
        prepared: Option<&'s [ColumnSpec<'s>]>,
        which: Which,
        recorder: &mut Recorder,
    ) -> Self {
        match &metadata.columns {
            Columns::Described { specs, .. } => Self {
                specs: Some(specs),
                count: specs.len(),
            },
            Columns::Skipped { count } => {
                let specs = prepared.filter(|p| p.len() == *count);
                if let (Some(p), None) = (prepared, specs) {
                    recorder.note(format!(
                        "the prepared statement's metadata has {} columns and the {}'s rows {}: \
                         its columns are numbered",
                        p.len(),
                        which.name(),
                        count
                    ));
                }
                Self {
                    specs,
                    count: *count,
                }
            }
        }
    }

    /// Whether names and types are known (otherwise columns are numbered and values hex).
    pub(super) fn is_described(&self) -> bool {
        self.specs.is_some()
    }

    /// The name of column `index`, or `column N` (from 1) when the names are unknown.
    pub(super) fn name(&self, index: usize) -> Cow<'s, str> {
        match self.specs.and_then(|s| s.get(index)) {
            Some(spec) => Cow::Borrowed(spec.name),
            None => Cow::Owned(format!("column {}", index + 1)),
        }
    }

    /// The index of the first column named `name`, when names are known.
    pub(super) fn position(&self, name: &str) -> Option<usize> {
        self.specs?.iter().position(|spec| spec.name == name)
    }

    fn column_type(&self, index: usize) -> Option<&'s ColumnType<'s>> {
        Some(&self.specs?.get(index)?.column_type)
    }

    /// Whether column `index` reads a TTL (`ttl(v)`): two reads a moment apart may see it one
    /// second apart.
    fn is_ttl(&self, index: usize) -> bool {
        self.specs
            .and_then(|s| s.get(index))
            .and_then(|spec| spec.name.get(..4))
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("ttl("))
    }

    /// The columns in the order rows are sorted by for matching without a key: exact columns
    /// first, TTL columns last, so that rows differing only in a TTL sort next to each other.
    pub(super) fn sort_order(&self) -> Vec<usize> {
        let (mut exact, ttl): (Vec<usize>, Vec<usize>) =
            (0..self.count).partition(|i| !self.is_ttl(*i));
        exact.extend(ttl);
        exact
    }

    /// Whether two cells of column `index` hold the same value: the same bytes (identical
    /// values serialize identically), or for a TTL two ints at most one second apart.
    pub(super) fn cells_equal(&self, index: usize, a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
        if a == b {
            return true;
        }
        if !self.is_ttl(index) {
            return false;
        }
        match (a.and_then(read_int), b.and_then(read_int)) {
            (Some(x), Some(y)) => (i64::from(x) - i64::from(y)).abs() <= 1,
            _ => false,
        }
    }

    /// Whether two rows (their cells in column order) hold the same values.
    pub(super) fn rows_equal<'x>(
        &self,
        a: impl IntoIterator<Item = Option<&'x [u8]>>,
        b: impl IntoIterator<Item = Option<&'x [u8]>>,
    ) -> bool {
        a.into_iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| self.cells_equal(i, x, y))
    }

    /// A cell of column `index` rendered by the column's type; `None` for a null.
    pub(super) fn render(
        &self,
        index: usize,
        cell: Option<&[u8]>,
        max_len: usize,
    ) -> Option<String> {
        cell.map(|v| render::render(self.column_type(index), v, max_len))
    }

    /// `name type`, or the name alone when the type is unknown.
    fn describe(&self, index: usize) -> String {
        match self.column_type(index) {
            Some(t) => format!("{} {t}", self.name(index)),
            None => self.name(index).into_owned(),
        }
    }
}

fn read_int(v: &[u8]) -> Option<i32> {
    <[u8; 4]>::try_from(v).ok().map(i32::from_be_bytes)
}

/// The columns both sides' rows are compared with, or `None` (with `columns` counted and a
/// note) when the sides' columns differ.
pub(super) fn reconcile<'s>(
    primary: &'s RowsMetadata<'s>,
    secondary: &'s RowsMetadata<'s>,
    prepared: Option<&'s [ColumnSpec<'s>]>,
    recorder: &mut Recorder,
) -> Option<ColumnView<'s>> {
    let p = ColumnView::of_side(primary, prepared, Which::Primary, recorder);
    let s = ColumnView::of_side(secondary, prepared, Which::Secondary, recorder);
    if p.count != s.count {
        recorder.flag(DivergenceKind::Columns);
        recorder.note(format!(
            "the columns differ: the primary has {} columns and the secondary {}",
            p.count, s.count
        ));
        return None;
    }
    match (p.specs, s.specs) {
        (Some(a), Some(b)) => {
            let differs = a
                .iter()
                .zip(b)
                .position(|(x, y)| x.name != y.name || x.column_type != y.column_type);
            match differs {
                Some(i) => {
                    recorder.flag(DivergenceKind::Columns);
                    recorder.note(format!(
                        "the columns differ: column {} is `{}` on the primary and `{}` on the \
                         secondary",
                        i + 1,
                        p.describe(i),
                        s.describe(i)
                    ));
                    None
                }
                None => Some(p),
            }
        }
        // Only one side is described: its names and types serve both.
        (None, Some(_)) => Some(s),
        _ => Some(p),
    }
}

/// The table the rows come from: the global table spec or the first column's.
pub(super) fn table_of<'s>(metadata: &RowsMetadata<'s>) -> Option<TableSpec<'s>> {
    metadata.columns.table_of(0)
}

/// The table of a prepared statement's result columns (the first column's, when each names
/// its own).
pub(super) fn prepared_table<'s>(prepared: &[ColumnSpec<'s>]) -> Option<TableSpec<'s>> {
    prepared.first()?.table
}
