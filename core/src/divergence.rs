//! The divergence report: what comparing the two clusters' answers found, per table and per
//! kind of difference, with a bounded sample of the differing rows.
//!
//! Sessions record each comparison here; the runtime serves the report (JSON over the admin
//! API, a table from the `report` command) and turns the counts into metrics. The sample is a
//! ring of the latest differences, so that memory stays bounded however far the clusters
//! have drifted apart; counts are complete.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use crate::compare::{DivergenceKind, RowDifference};
use crate::config::Upstream;
use crate::frame::Opcode;

/// Where a divergence was seen: the table, when known (`None` for the keyspace or table of
/// a statement the proxy could not name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub keyspace: Option<String>,
    pub table: Option<String>,
}

impl TableName {
    /// `keyspace.table`, with `?` for what is unknown.
    pub fn qualified(&self) -> String {
        format!(
            "{}.{}",
            self.keyspace.as_deref().unwrap_or("?"),
            self.table.as_deref().unwrap_or("?")
        )
    }
}

/// One comparison that found differences, as kept in the sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Wall-clock microseconds since the Unix epoch.
    pub at_micros: i64,
    pub table: TableName,
    /// The cluster that answered the client; the other is the secondary.
    pub primary: Upstream,
    pub opcode: Opcode,
    /// The statement, cut short.
    pub statement: Option<String>,
    /// Differences by kind, in [`DivergenceKind::ALL`] order (zero counts left out).
    pub counts: Vec<(DivergenceKind, u64)>,
    pub notes: Vec<String>,
    pub rows: Vec<RowDifference>,
}

/// Counts of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Comparisons of answers about this table.
    pub compared: u64,
    /// Comparisons that found a difference.
    pub differing: u64,
    /// Differences by kind (rows for row kinds, answers for the others).
    pub by_kind: BTreeMap<DivergenceKind, u64>,
}

/// A copy of the report at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub compared: u64,
    pub differing: u64,
    pub tables: BTreeMap<TableName, TableCounts>,
    /// Latest first.
    pub samples: Vec<Divergence>,
    /// Divergences that fell out of the sample to keep it bounded.
    pub dropped_samples: u64,
    /// Reads not compared because an answer was larger than [`MAX_COMPARED_BYTES`].
    pub too_large: u64,
}

#[derive(Debug, Default)]
struct Inner {
    compared: u64,
    differing: u64,
    tables: BTreeMap<TableName, TableCounts>,
    samples: VecDeque<Divergence>,
    dropped_samples: u64,
    too_large: u64,
}

/// The proxy-wide report (see the module docs).
#[derive(Debug)]
pub struct DivergenceReport {
    capacity: usize,
    inner: Mutex<Inner>,
}

/// Answers larger than this (a body, compressed or not) are not compared: a comparison holds
/// both answers and indexes the cells of rows that differ, several times their size.
pub const MAX_COMPARED_BYTES: usize = 8 * 1024 * 1024;

/// How many distinct tables the report counts; beyond that, a table is counted under an
/// unknown name, so that reads of many tables cannot grow the report without bound.
const MAX_TABLES: usize = 10_000;

impl DivergenceReport {
    /// A report keeping the latest `capacity` divergences.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a comparison of `table` that found nothing.
    pub fn record_equal(&self, table: TableName) {
        let mut inner = self.lock();
        inner.compared += 1;
        let table = Self::bounded(&inner, table);
        inner.tables.entry(table).or_default().compared += 1;
    }

    /// Records a comparison that found `divergence`.
    pub fn record(&self, divergence: Divergence) {
        let mut inner = self.lock();
        inner.compared += 1;
        inner.differing += 1;
        let table = Self::bounded(&inner, divergence.table.clone());
        let counts = inner.tables.entry(table).or_default();
        counts.compared += 1;
        counts.differing += 1;
        for (kind, n) in &divergence.counts {
            *counts.by_kind.entry(*kind).or_default() += n;
        }
        if self.capacity == 0 {
            inner.dropped_samples += 1;
            return;
        }
        if inner.samples.len() == self.capacity {
            inner.samples.pop_front();
            inner.dropped_samples += 1;
        }
        inner.samples.push_back(divergence);
    }

    fn bounded(inner: &Inner, table: TableName) -> TableName {
        if inner.tables.len() >= MAX_TABLES && !inner.tables.contains_key(&table) {
            TableName {
                keyspace: None,
                table: None,
            }
        } else {
            table
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            compared: inner.compared,
            differing: inner.differing,
            tables: inner.tables.clone(),
            samples: inner.samples.iter().rev().cloned().collect(),
            dropped_samples: inner.dropped_samples,
            too_large: inner.too_large,
        }
    }

    /// A read was not compared: an answer was larger than [`MAX_COMPARED_BYTES`].
    pub fn record_too_large(&self) {
        self.lock().too_large += 1;
    }

    /// Forgets everything (after the operator repaired what the report showed).
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(t: &str) -> TableName {
        TableName {
            keyspace: Some("ks".into()),
            table: Some(t.into()),
        }
    }

    fn divergence(t: &str, missing: u64) -> Divergence {
        Divergence {
            at_micros: 1,
            table: name(t),
            primary: Upstream::Source,
            opcode: Opcode::QUERY,
            statement: None,
            counts: vec![(DivergenceKind::MissingRows, missing)],
            notes: vec![],
            rows: vec![],
        }
    }

    #[test]
    fn counts_are_complete_and_the_sample_is_bounded() {
        let report = DivergenceReport::new(2);
        report.record_equal(name("a"));
        for i in 1..=3 {
            report.record(divergence("a", i));
        }
        report.record(divergence("b", 5));
        let s = report.snapshot();
        assert_eq!((s.compared, s.differing), (5, 4));
        let a = &s.tables[&name("a")];
        assert_eq!((a.compared, a.differing), (4, 3));
        assert_eq!(a.by_kind[&DivergenceKind::MissingRows], 6);
        assert_eq!(
            s.tables[&name("b")].by_kind[&DivergenceKind::MissingRows],
            5
        );
        assert_eq!(s.samples.len(), 2);
        assert_eq!(s.samples[0].table, name("b"), "latest first");
        assert_eq!(s.dropped_samples, 2);
        report.record_too_large();
        assert_eq!(report.snapshot().too_large, 1);
        report.clear();
        assert_eq!(report.snapshot(), Snapshot::default());
    }
}
