//! Compares two Rows results: columns first, then paging, then the rows.
//!
//! Two clusters holding the same data answer with the same rows in the same order, so the
//! common case is settled without allocating: byte-identical row contents, else one walk of
//! both sides in step (which also accepts a TTL a second apart). Only when that fails are the
//! rows laid out, sorted and paired to say what differs.

use crate::message::{ColumnSpec, Rows};
use crate::schema::TableKey;

use super::columns::{self, ColumnView};
use super::grid::Grid;
use super::key::KeyColumns;
use super::order::{self, Ordered};
use super::outcome::{DivergenceKind, Recorder, Which};
use super::pairing;

/// What the caller knows of the request, for the rows.
#[derive(Debug, Clone, Copy)]
pub(super) struct RowsContext<'c> {
    pub(super) prepared: Option<&'c [ColumnSpec<'c>]>,
    pub(super) key: Option<&'c TableKey>,
    pub(super) ordered: bool,
}

pub(super) fn compare<'s>(
    primary: &'s Rows<'s>,
    secondary: &'s Rows<'s>,
    context: RowsContext<'s>,
    recorder: &mut Recorder,
) {
    let Some(view) = columns::reconcile(
        &primary.metadata,
        &secondary.metadata,
        context.prepared,
        recorder,
    ) else {
        return;
    };
    let (limit_p, limit_s) = compared_rows(primary, secondary, recorder);
    let whole = limit_p == primary.row_count() && limit_s == secondary.row_count();
    if whole && same_sequence(primary, secondary, &view) {
        return;
    }
    let grids = Grid::read(primary, limit_p)
        .map_err(|e| (Which::Primary, e))
        .and_then(|p| {
            Grid::read(secondary, limit_s)
                .map(|s| (p, s))
                .map_err(|e| (Which::Secondary, e))
        });
    let (p, s) = match grids {
        Ok(grids) => grids,
        Err((which, error)) => {
            recorder.flag(DivergenceKind::Columns);
            recorder.note(format!(
                "the {}'s rows are malformed: {error}",
                which.name()
            ));
            return;
        }
    };
    let key = context.key.and_then(|k| KeyColumns::find(k, &view));
    let ordered = if context.ordered {
        Some(Ordered::All)
    } else {
        key.as_ref().map(Ordered::WithinPartition)
    };
    let pairs = pairing::pair_rows(&p, &s, &view, key.as_ref(), ordered.is_some(), recorder);
    if let Some(ordered) = ordered {
        order::check(pairs, &p, ordered, recorder);
    }
    if !view.is_described() && !recorder.counts().is_empty() {
        recorder.note(
            "the rows came without column metadata: columns are numbered and values shown as hex",
        );
    }
}

/// How many rows of each side to compare, with notes on paging. Only whether each side has
/// more pages matters (paging states are each cluster's own). When both have more pages but
/// their pages differ in length, the pages end at different rows: only as many rows as the
/// shorter page holds are compared, since the rest of the longer one may well be on the other
/// side's next page.
fn compared_rows(
    primary: &Rows<'_>,
    secondary: &Rows<'_>,
    recorder: &mut Recorder,
) -> (usize, usize) {
    let (np, ns) = (primary.row_count(), secondary.row_count());
    let more_p = primary.metadata.paging_state.is_some();
    let more_s = secondary.metadata.paging_state.is_some();
    match (more_p, more_s) {
        (true, false) => recorder.note("the primary has more pages and the secondary does not"),
        (false, true) => recorder.note("the secondary has more pages and the primary does not"),
        (true, true) if np != ns => {
            let shorter = np.min(ns);
            recorder.note(format!(
                "the pages hold different numbers of rows ({np} and {ns}): the sides page \
                 differently; the first {shorter} rows of each are compared"
            ));
            return (shorter, shorter);
        }
        _ => {}
    }
    (np, ns)
}

/// Whether both sides hold the same rows in the same order, without allocating. A walk that
/// fails (malformed content) answers `false`, leaving the error to the full comparison.
fn same_sequence(primary: &Rows<'_>, secondary: &Rows<'_>, view: &ColumnView<'_>) -> bool {
    if primary.row_count() != secondary.row_count() {
        return false;
    }
    if primary.content() == secondary.content() {
        return true;
    }
    let mut a = primary.iter();
    let mut b = secondary.iter();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(Ok(x)), Some(Ok(y))) => {
                if x.raw() != y.raw() && !view.rows_equal(x.cells(), y.cells()) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}
