//! Pairs the rows of the two sides and counts those without a partner.
//!
//! Both sides are sorted and merged, which is deterministic and costs O(n log n) whatever the
//! rows hold (rows come from client data, so a hash table keyed by them could be made slow).
//! With a key that is unique on both sides, rows pair by key and a pair whose values differ
//! is one different row. Otherwise rows are a multiset: a row pairs with an equal row of the
//! other side, and every unpaired row is missing (primary) or extra (secondary). TTL columns
//! sort last and compare with their tolerance, so rows that differ only by a TTL read a
//! second apart still pair.

use std::cmp::Ordering;

use super::columns::ColumnView;
use super::grid::{Grid, compare_cells};
use super::key::KeyColumns;
use super::outcome::{ColumnDifference, DivergenceKind, Recorder, RowDifference, Which};

/// The pairs of row indices (primary, secondary) that were matched.
#[derive(Debug, Default)]
pub(super) struct Pairs(pub(super) Vec<(usize, usize)>);

/// How rows are matched: by key columns, or by all their cells.
#[derive(Debug, Clone, Copy)]
enum Matching<'k> {
    Keyed(&'k KeyColumns),
    Multiset,
}

/// Matches the rows of both grids, counting (and sampling) missing, extra and different
/// rows. The matched pairs are kept only when `keep_pairs` (an order check needs them).
pub(super) fn pair_rows(
    primary: &Grid<'_>,
    secondary: &Grid<'_>,
    view: &ColumnView<'_>,
    key: Option<&KeyColumns>,
    keep_pairs: bool,
    recorder: &mut Recorder,
) -> Pairs {
    // A key identifies rows only if no two rows of a side share it (it may not when the
    // clustering columns were not all selected).
    let keyed = key.and_then(|key| {
        let p = primary.sorted_by(key.all());
        let s = secondary.sorted_by(key.all());
        let unique =
            !primary.has_duplicates(&p, key.all()) && !secondary.has_duplicates(&s, key.all());
        unique.then_some((key, p, s))
    });
    // Without a usable key, rows sort by all their cells (TTL columns last).
    let sort_columns = match keyed {
        Some(_) => Vec::new(),
        None => view.sort_order(),
    };
    let (matching, columns, order_p, order_s) = match keyed {
        Some((key, p, s)) => (Matching::Keyed(key), key.all(), p, s),
        None => (
            Matching::Multiset,
            sort_columns.as_slice(),
            primary.sorted_by(&sort_columns),
            secondary.sorted_by(&sort_columns),
        ),
    };
    let merge = Merge {
        primary,
        secondary,
        view,
        matching,
    };
    let mut pairs = Pairs::default();
    let (mut i, mut j) = (0, 0);
    loop {
        match (order_p.get(i), order_s.get(j)) {
            (Some(&a), Some(&b)) => match merge.step(a, b, columns) {
                Ordering::Less => {
                    merge.unpaired(Which::Primary, a, recorder);
                    i += 1;
                }
                Ordering::Greater => {
                    merge.unpaired(Which::Secondary, b, recorder);
                    j += 1;
                }
                Ordering::Equal => {
                    merge.paired(a, b, recorder);
                    if keep_pairs {
                        pairs.0.push((a, b));
                    }
                    i += 1;
                    j += 1;
                }
            },
            (Some(&a), None) => {
                merge.unpaired(Which::Primary, a, recorder);
                i += 1;
            }
            (None, Some(&b)) => {
                merge.unpaired(Which::Secondary, b, recorder);
                j += 1;
            }
            (None, None) => break,
        }
    }
    pairs
}

/// What the merge needs to record a step.
struct Merge<'g, 'a, 'v, 'k> {
    primary: &'g Grid<'a>,
    secondary: &'g Grid<'a>,
    view: &'v ColumnView<'v>,
    matching: Matching<'k>,
}

impl Merge<'_, '_, '_, '_> {
    /// Where the merge goes next: `Equal` pairs the two rows, `Less` leaves the primary's
    /// row unpaired, `Greater` the secondary's. Without a key, rows equal up to a TTL's
    /// tolerance pair even though their bytes differ.
    fn step(&self, a: usize, b: usize, columns: &[usize]) -> Ordering {
        let (ra, rb) = (self.primary.row(a), self.secondary.row(b));
        if matches!(self.matching, Matching::Multiset)
            && self.view.rows_equal(ra.iter().copied(), rb.iter().copied())
        {
            return Ordering::Equal;
        }
        compare_cells(ra, rb, columns)
    }

    /// A row only `which` side has: missing (primary) or extra (secondary).
    fn unpaired(&self, which: Which, index: usize, recorder: &mut Recorder) {
        let (kind, grid) = match which {
            Which::Primary => (DivergenceKind::MissingRows, self.primary),
            Which::Secondary => (DivergenceKind::ExtraRows, self.secondary),
        };
        recorder.count(kind);
        if !recorder.wants_sample() {
            return;
        }
        let row = grid.row(index);
        let max = recorder.max_value_len;
        let columns = row
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.is_key(*i))
            .map(|(i, cell)| {
                let value = self.view.render(i, *cell, max);
                let (primary, secondary) = match which {
                    Which::Primary => (value, None),
                    Which::Secondary => (None, value),
                };
                ColumnDifference {
                    name: self.view.name(i).into_owned(),
                    primary,
                    secondary,
                }
            })
            .collect();
        recorder.sample(RowDifference {
            kind,
            key: self.key_of(row, max),
            columns,
        });
    }

    /// Two matched rows: by key they may still differ in other columns.
    fn paired(&self, a: usize, b: usize, recorder: &mut Recorder) {
        if matches!(self.matching, Matching::Multiset) {
            return;
        }
        let (ra, rb) = (self.primary.row(a), self.secondary.row(b));
        if self.view.rows_equal(ra.iter().copied(), rb.iter().copied()) {
            return;
        }
        recorder.count(DivergenceKind::DifferentValues);
        if !recorder.wants_sample() {
            return;
        }
        let max = recorder.max_value_len;
        let columns = ra
            .iter()
            .zip(rb)
            .enumerate()
            .filter(|(i, (x, y))| !self.view.cells_equal(*i, **x, **y))
            .map(|(i, (x, y))| ColumnDifference {
                name: self.view.name(i).into_owned(),
                primary: self.view.render(i, *x, max),
                secondary: self.view.render(i, *y, max),
            })
            .collect();
        recorder.sample(RowDifference {
            kind: DivergenceKind::DifferentValues,
            key: self.key_of(ra, max),
            columns,
        });
    }

    fn is_key(&self, index: usize) -> bool {
        match self.matching {
            Matching::Keyed(key) => key.contains(index),
            Matching::Multiset => false,
        }
    }

    /// The key columns of `row` by name and rendered value; empty without a key.
    fn key_of(&self, row: &[Option<&[u8]>], max: usize) -> Vec<(String, String)> {
        let Matching::Keyed(key) = self.matching else {
            return Vec::new();
        };
        key.all()
            .iter()
            .map(|i| {
                let cell = row.get(*i).copied().flatten();
                let value = self
                    .view
                    .render(*i, cell, max)
                    .unwrap_or_else(|| "null".to_owned());
                (self.view.name(*i).into_owned(), value)
            })
            .collect()
    }
}
