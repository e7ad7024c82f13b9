//! Compares two answers as wholes: errors, result kinds, unreadable bodies; Rows results go
//! on to [`super::rows`].
//!
//! An answer that cannot be decoded is itself a divergence (the proxy could not vouch for
//! it), counted as `error` when either side answered ERROR and as `columns` otherwise, with a
//! note naming the malformed side. Two byte-identical answers are never a divergence, even
//! unreadable ones: whatever they mean, they mean the same.

use crate::error::DecodeError;
use crate::frame::{Opcode, ProtocolVersion};
use crate::message::{Body, ErrorMessage, ResultMessage};

use super::columns;
use super::outcome::{ColumnDifference, DivergenceKind, Recorder, RowDifference, Which};
use super::render::truncate;
use super::rows::{self, RowsContext};
use super::{Context, Side};

/// One side's answer, decoded.
#[derive(Debug)]
enum Answer<'a> {
    Error(ErrorMessage<'a>),
    Result(ResultMessage<'a>),
    /// A message that answers no read (neither RESULT nor ERROR).
    Unexpected(Opcode),
    /// A RESULT or ERROR whose body does not decode.
    Malformed {
        opcode: Opcode,
        error: DecodeError,
    },
}

impl<'a> Answer<'a> {
    fn read(side: Side<'a>, version: ProtocolVersion) -> Self {
        let decoded = match side.opcode {
            Opcode::ERROR => ErrorMessage::decode(side.message, version).map(Self::Error),
            Opcode::RESULT => ResultMessage::decode(side.message, version).map(Self::Result),
            other => return Self::Unexpected(other),
        };
        decoded.unwrap_or_else(|error| Self::Malformed {
            opcode: side.opcode,
            error,
        })
    }

    fn is_error(&self) -> bool {
        match self {
            Self::Error(_) => true,
            Self::Malformed { opcode, .. } => *opcode == Opcode::ERROR,
            Self::Result(_) | Self::Unexpected(_) => false,
        }
    }

    /// What the side answered, for a note: `ERROR READ_TIMEOUT`, `a Rows result`.
    fn describe(&self) -> String {
        match self {
            Self::Error(e) => format!("ERROR {}", e.code),
            Self::Result(r) => format!("a {:?} result", r.kind()),
            Self::Unexpected(opcode) => format!("a {opcode} message"),
            Self::Malformed { opcode, .. } => format!("an unreadable {opcode}"),
        }
    }

    /// The side's error for an `error` sample: code, name and message.
    fn error_text(&self, max_len: usize) -> Option<String> {
        match self {
            Self::Error(e) => {
                let name = e.code.name().unwrap_or("unknown error");
                let text = format!("{name} (0x{:04x}): {}", e.code.0, e.message);
                Some(truncate(&text, max_len))
            }
            Self::Malformed { opcode, .. } if *opcode == Opcode::ERROR => {
                Some(truncate("unreadable ERROR", max_len))
            }
            _ => None,
        }
    }
}

/// Compares the two sides' answers into `recorder`.
pub(super) fn compare(
    primary: Side<'_>,
    secondary: Side<'_>,
    context: &Context<'_>,
    recorder: &mut Recorder,
) {
    let p = Answer::read(primary, context.version);
    let s = Answer::read(secondary, context.version);
    record_table(&p, &s, context, recorder);
    match (&p, &s) {
        (Answer::Result(a), Answer::Result(b)) => compare_results(a, b, context, recorder),
        (Answer::Error(a), Answer::Error(b)) => {
            if a.code != b.code {
                recorder.flag(DivergenceKind::Error);
                recorder.note(format!(
                    "both answered ERROR: {} on the primary and {} on the secondary",
                    a.code, b.code
                ));
                error_sample(&p, &s, recorder);
            }
        }
        _ if primary.opcode == secondary.opcode && primary.message == secondary.message => {
            if let Answer::Malformed { opcode, error } = &p {
                recorder.note(format!(
                    "both answers are the same unreadable {opcode}: {error}"
                ));
            }
        }
        _ => {
            let kind = if p.is_error() || s.is_error() {
                DivergenceKind::Error
            } else {
                DivergenceKind::Columns
            };
            recorder.flag(kind);
            recorder.note(format!(
                "the primary answered {} and the secondary {}",
                p.describe(),
                s.describe()
            ));
            for (which, answer) in [(Which::Primary, &p), (Which::Secondary, &s)] {
                if let Answer::Malformed { opcode, error } = answer {
                    recorder.note(format!(
                        "the {}'s {opcode} is malformed: {error}",
                        which.name()
                    ));
                }
            }
            if kind == DivergenceKind::Error {
                error_sample(&p, &s, recorder);
            }
        }
    }
}

/// Both answered RESULT: Rows are compared row by row; other kinds are equal when they are
/// the same kind (a Void, a keyspace set, a schema change, a statement prepared: what they
/// carry depends on the request, not on the data).
fn compare_results(
    a: &ResultMessage<'_>,
    b: &ResultMessage<'_>,
    context: &Context<'_>,
    recorder: &mut Recorder,
) {
    match (a, b) {
        (ResultMessage::Rows(x), ResultMessage::Rows(y)) => {
            let rows_context = RowsContext {
                prepared: context.columns,
                key: context.key,
                ordered: context.ordered,
            };
            rows::compare(x, y, rows_context, recorder);
        }
        _ if a.kind() == b.kind() => {}
        _ => {
            recorder.flag(DivergenceKind::Columns);
            recorder.note(format!(
                "the primary answered a {:?} result and the secondary a {:?} result",
                a.kind(),
                b.kind()
            ));
        }
    }
}

/// The keyspace and table of the rows: from either side's metadata, else from the prepared
/// statement's.
fn record_table(p: &Answer<'_>, s: &Answer<'_>, context: &Context<'_>, recorder: &mut Recorder) {
    let from_rows = [p, s].into_iter().find_map(|answer| match answer {
        Answer::Result(ResultMessage::Rows(rows)) => columns::table_of(&rows.metadata),
        _ => None,
    });
    let table = from_rows.or_else(|| context.columns.and_then(columns::prepared_table));
    if let Some(table) = table {
        recorder.set_table(table.keyspace, table.table);
    }
}

/// One sample with a column `error`: each side's error, `None` for a side without one.
fn error_sample(p: &Answer<'_>, s: &Answer<'_>, recorder: &mut Recorder) {
    if !recorder.wants_sample() {
        return;
    }
    let max = recorder.max_value_len;
    recorder.sample(RowDifference {
        kind: DivergenceKind::Error,
        key: Vec::new(),
        columns: vec![ColumnDifference {
            name: "error".to_owned(),
            primary: p.error_text(max),
            secondary: s.error_text(max),
        }],
    });
}
