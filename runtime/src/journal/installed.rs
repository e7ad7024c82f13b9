//! The process's journal, once `--journal-dir` opened it: the connection loops append the
//! records their sessions emit, the metrics and the admin API read its state, and shutdown
//! flushes it.
//!
//! Process-wide like the metrics recorder: sessions run on any worker thread, and appending
//! only queues the record for the journal's own thread (never blocking a request).

use std::sync::OnceLock;

use cqlmirror_core::session::{Event, Unjournaled};
use metrics::counter;

use super::{Journal, JournalStats};

static JOURNAL: OnceLock<Journal> = OnceLock::new();

/// Makes `journal` the process's; `Err` with it if one is installed already.
pub fn install(journal: Journal) -> Result<(), Journal> {
    JOURNAL.set(journal)
}

/// The process's journal, if `--journal-dir` is set.
pub fn installed() -> Option<&'static Journal> {
    JOURNAL.get()
}

/// Appends what a session event asks to journal: a record, or counts a missed write that no
/// record can describe. Never waits.
pub fn observe(event: &Event) {
    match event {
        Event::Journal(record) => {
            // A refusal is counted in the journal's state (published as
            // cqlmirror_journal_refused_total) and logged there.
            if let Some(journal) = installed() {
                let _ = journal.append(std::sync::Arc::clone(record));
            }
        }
        Event::Unjournaled { reason, .. } => {
            counter!("cqlmirror_journal_refused_total", "reason" => reason.name()).increment(1);
        }
        _ => {}
    }
}

/// The reasons of `cqlmirror_journal_refused_total` the journal counts itself, with the
/// count of each: the cap was reached, the disk could not keep up, a write failed.
pub fn refusals(stats: &JournalStats) -> [(&'static str, u64); 3] {
    [
        ("full", stats.refused_full),
        ("queue", stats.refused_queue),
        ("write-error", stats.failed),
    ]
}

/// The reasons a missed write has no record, for metrics that start at zero.
pub fn unjournaled_reasons() -> impl Iterator<Item = &'static str> {
    Unjournaled::ALL.into_iter().map(Unjournaled::name)
}
