//! Whether the two clusters' answers to one read differ, and how, for a divergence report.
//!
//! The proxy sends a sampled read to both clusters; [`compare`] looks at the two answers and
//! says what a person checking a migration wants to know: rows one side lacks, rows whose
//! values differ, errors on one side, columns that do not match, rows out of order where the
//! query defines the order. It is a pure function of the two messages and a [`Context`]: no
//! state, no clock, and no panic whatever the bytes. Besides what it reports, it allocates
//! the decoded column metadata and, only when the rows are not the same sequence on both
//! sides, one index of each side's cells for pairing them (16 bytes a cell).
//!
//! What is compared is the content only. Stream ids, tracing ids, warnings and custom
//! payloads are the caller's to strip; paging states are each cluster's own, so only whether
//! each side has more pages is looked at. Values are compared by their serialized bytes
//! (identical values serialize identically), except a `ttl(...)` column, where two reads a
//! moment apart may differ by a second.
//!
//! How rows are paired:
//! - with the table's primary key ([`Context::key`]) when every partition key column was
//!   selected and the selected key columns are unique on each side: a row of the same key
//!   with other values is one different row, described column by column;
//! - otherwise as multisets of rows: a row only the primary has is missing, a row only the
//!   secondary has is extra.
//!
//! Order matters where the query defines it: with `ORDER BY` ([`Context::ordered`]) for all
//! rows, and otherwise within a partition (clustering order) when the key is known.
//!
//! The files: `outcome` holds the report types; `answer` compares answers as wholes
//! (errors, result kinds); `rows`, `columns`, `key`, `grid`, `pairing` and `order` compare
//! Rows results; `render` writes values as text for samples.

mod answer;
mod columns;
mod grid;
mod key;
mod order;
mod outcome;
mod pairing;
mod render;
mod rows;
#[cfg(test)]
mod tests;

use crate::frame::{Opcode, ProtocolVersion};
use crate::message::ColumnSpec;
use crate::schema::TableKey;

pub use outcome::{ColumnDifference, Comparison, Counts, DivergenceKind, RowDifference};

/// One cluster's answer: its opcode and its message (the body after any tracing id,
/// warnings or custom payload, already decompressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side<'a> {
    pub opcode: Opcode,
    pub message: &'a [u8],
}

/// What the caller knows of the request, and the caps of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    /// The protocol version both answers were received in.
    pub version: ProtocolVersion,
    /// Column specs to use for a Rows result sent without metadata (a prepared statement
    /// executed with skip_metadata): the prepared statement's result metadata, when known.
    pub columns: Option<&'a [ColumnSpec<'a>]>,
    /// The primary key of the table read, when known.
    pub key: Option<&'a TableKey>,
    /// The query defines the order of all rows (it has `ORDER BY`): the sequence of rows
    /// must match.
    pub ordered: bool,
    /// At most this many differing rows are described in `samples` (counts are always
    /// complete).
    pub max_samples: usize,
    /// Rendered values are cut to this many characters (ending with `…` when cut).
    pub max_value_len: usize,
}

impl Context<'_> {
    /// Samples a report keeps by default.
    pub const DEFAULT_MAX_SAMPLES: usize = 10;
    /// Characters of a rendered value by default.
    pub const DEFAULT_MAX_VALUE_LEN: usize = 64;

    /// A context that knows nothing of the request: no prepared columns, no key, unordered,
    /// default caps.
    pub fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            columns: None,
            key: None,
            ordered: false,
            max_samples: Self::DEFAULT_MAX_SAMPLES,
            max_value_len: Self::DEFAULT_MAX_VALUE_LEN,
        }
    }
}

/// Compares the primary's and the secondary's answers to the same request.
pub fn compare(primary: Side<'_>, secondary: Side<'_>, context: &Context<'_>) -> Comparison {
    let mut recorder = outcome::Recorder::new(context.max_samples, context.max_value_len);
    answer::compare(primary, secondary, context, &mut recorder);
    recorder.finish()
}
