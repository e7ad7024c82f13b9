//! Whether the rows both sides have come in the same order, where the order is defined.
//!
//! With `ORDER BY` the query defines the order of all rows. Without it, partitions come in
//! token order, which two clusters share only if their partitioners agree, so it is not
//! checked; but the rows of one partition always come in clustering order, so a partition
//! whose rows are reordered is a divergence. Only matched rows count: a missing or extra row
//! is reported as such and does not also make an order divergence.

use super::grid::{Grid, compare_cells};
use super::key::KeyColumns;
use super::outcome::{DivergenceKind, Recorder};
use super::pairing::Pairs;

/// What defines the order of the rows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ordered<'k> {
    /// The query orders all rows.
    All,
    /// Rows of each partition (these key columns) keep their clustering order.
    WithinPartition(&'k KeyColumns),
}

/// Flags `order` when matched rows come in a different relative order on the two sides.
pub(super) fn check(
    mut pairs: Pairs,
    primary: &Grid<'_>,
    ordered: Ordered<'_>,
    recorder: &mut Recorder,
) {
    let pairs = &mut pairs.0;
    if pairs.len() < 2 {
        return;
    }
    match ordered {
        Ordered::All => {
            pairs.sort_unstable_by_key(|(p, _)| *p);
            if pairs.windows(2).any(|w| matches!(w, [x, y] if x.1 > y.1)) {
                recorder.flag(DivergenceKind::Order);
                recorder.note("the rows come in a different order, and the query orders them");
            }
        }
        Ordered::WithinPartition(key) => {
            let partition = key.partition();
            let same_partition = |a: usize, b: usize| {
                compare_cells(primary.row(a), primary.row(b), partition).is_eq()
            };
            // Group the pairs by partition, each group in the primary's order.
            pairs.sort_unstable_by(|x, y| {
                compare_cells(primary.row(x.0), primary.row(y.0), partition).then(x.0.cmp(&y.0))
            });
            let reordered = pairs
                .windows(2)
                .any(|w| matches!(w, [x, y] if x.1 > y.1 && same_partition(x.0, y.0)));
            if reordered {
                recorder.flag(DivergenceKind::Order);
                recorder.note(
                    "rows of a partition come in a different order: the clustering order differs",
                );
            }
        }
    }
}
