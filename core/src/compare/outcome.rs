//! What a comparison reports: complete counts by kind of divergence, sentences for a human,
//! and a few rendered samples.
//!
//! Counts are always complete, so that metrics stay exact however many rows differ; samples
//! are capped, so that one badly diverged table cannot make a report (or the proxy's memory)
//! grow with the size of a page.

use std::fmt;

/// A kind of divergence between the two clusters' answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DivergenceKind {
    /// Rows the primary returned that the secondary lacks.
    MissingRows,
    /// Rows only the secondary returned.
    ExtraRows,
    /// Rows with the same key whose values differ.
    DifferentValues,
    /// One side answered ERROR, or both did with different codes.
    Error,
    /// The same rows in a different order, where the order is defined.
    Order,
    /// The answers have different shapes: columns, result kinds, or an unreadable body.
    Columns,
}

impl DivergenceKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Self; 6] = [
        Self::MissingRows,
        Self::ExtraRows,
        Self::DifferentValues,
        Self::Error,
        Self::Order,
        Self::Columns,
    ];

    /// The snake_case name, for metrics labels and reports.
    pub const fn label(self) -> &'static str {
        match self {
            Self::MissingRows => "missing_rows",
            Self::ExtraRows => "extra_rows",
            Self::DifferentValues => "different_values",
            Self::Error => "error",
            Self::Order => "order",
            Self::Columns => "columns",
        }
    }
}

impl fmt::Display for DivergenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How much the answers diverge, by kind. Row counts count rows; `error`, `order` and
/// `columns` are 0 or 1 (they describe the answer as a whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counts {
    pub missing_rows: u64,
    pub extra_rows: u64,
    pub different_rows: u64,
    pub error: u64,
    pub order: u64,
    pub columns: u64,
}

impl Counts {
    /// Whether no divergence was counted: the answers are equal.
    pub fn is_empty(&self) -> bool {
        DivergenceKind::ALL.iter().all(|kind| self.get(*kind) == 0)
    }

    /// The count of one kind, so that callers can iterate over [`DivergenceKind::ALL`].
    pub fn get(&self, kind: DivergenceKind) -> u64 {
        match kind {
            DivergenceKind::MissingRows => self.missing_rows,
            DivergenceKind::ExtraRows => self.extra_rows,
            DivergenceKind::DifferentValues => self.different_rows,
            DivergenceKind::Error => self.error,
            DivergenceKind::Order => self.order,
            DivergenceKind::Columns => self.columns,
        }
    }

    fn slot(&mut self, kind: DivergenceKind) -> &mut u64 {
        match kind {
            DivergenceKind::MissingRows => &mut self.missing_rows,
            DivergenceKind::ExtraRows => &mut self.extra_rows,
            DivergenceKind::DifferentValues => &mut self.different_rows,
            DivergenceKind::Error => &mut self.error,
            DivergenceKind::Order => &mut self.order,
            DivergenceKind::Columns => &mut self.columns,
        }
    }
}

/// One column of a sample: its value on each side, rendered by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDifference {
    pub name: String,
    /// `None`: null, or the primary has no such row.
    pub primary: Option<String>,
    /// `None`: null, or the secondary has no such row.
    pub secondary: Option<String>,
}

/// One diverging row (or error), described for a human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowDifference {
    pub kind: DivergenceKind,
    /// The row's primary key: each key column's name and rendered value; empty when the rows
    /// were compared without a key.
    pub key: Vec<(String, String)>,
    /// A different row: only the columns that differ. A missing or extra row: its non-key
    /// columns, valued on the side that has it. An error: one column named `error`.
    pub columns: Vec<ColumnDifference>,
}

/// The outcome of comparing the two clusters' answers to one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Comparison {
    /// Keyspace and table of the rows, when the metadata names them.
    pub table: Option<(String, String)>,
    pub counts: Counts,
    /// Sentences on what the counts cannot say (paging, unreadable bodies, error codes).
    pub notes: Vec<String>,
    /// At most [`Context::max_samples`](super::Context::max_samples) diverging rows.
    pub samples: Vec<RowDifference>,
}

impl Comparison {
    /// Whether the answers are equal: nothing was counted. Notes may still say something
    /// worth knowing (e.g. that only one side has more pages).
    pub fn is_equal(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Which cluster an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Primary,
    Secondary,
}

impl Which {
    pub(super) const fn name(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }
}

/// Collects a [`Comparison`] while the answers are walked, holding the caps of the context.
#[derive(Debug)]
pub(super) struct Recorder {
    comparison: Comparison,
    max_samples: usize,
    pub(super) max_value_len: usize,
}

impl Recorder {
    pub(super) fn new(max_samples: usize, max_value_len: usize) -> Self {
        Self {
            comparison: Comparison::default(),
            max_samples,
            max_value_len,
        }
    }

    /// Counts one more diverging row.
    pub(super) fn count(&mut self, kind: DivergenceKind) {
        let slot = self.comparison.counts.slot(kind);
        *slot = slot.saturating_add(1);
    }

    /// Marks a divergence of the whole answer (`error`, `order`, `columns`): 1, never more.
    pub(super) fn flag(&mut self, kind: DivergenceKind) {
        *self.comparison.counts.slot(kind) = 1;
    }

    pub(super) fn note(&mut self, note: impl Into<String>) {
        self.comparison.notes.push(note.into());
    }

    /// Whether another sample would be kept: callers skip rendering one that would not.
    pub(super) fn wants_sample(&self) -> bool {
        self.comparison.samples.len() < self.max_samples
    }

    pub(super) fn sample(&mut self, sample: RowDifference) {
        if self.wants_sample() {
            self.comparison.samples.push(sample);
        }
    }

    pub(super) fn set_table(&mut self, keyspace: &str, table: &str) {
        if self.comparison.table.is_none() && !(keyspace.is_empty() && table.is_empty()) {
            self.comparison.table = Some((keyspace.to_owned(), table.to_owned()));
        }
    }

    pub(super) fn counts(&self) -> &Counts {
        &self.comparison.counts
    }

    pub(super) fn finish(self) -> Comparison {
        self.comparison
    }
}
