//! Comparing what the two clusters answered: the rows of shadowed and compared reads, and the
//! outcomes of writes (one cluster applied it, the other refused it). What differs goes to
//! the proxy's divergence report and out as an [`Event::Compared`].

use std::sync::Arc;
use std::time::Instant;

use crate::compare::{
    self, ColumnDifference, Comparison, Context, DivergenceKind, RowDifference, Side,
};
use crate::divergence::{Divergence, TableName};
use crate::message::{Body, ResultMessage};
use crate::session::request::{Outcome, Request};
use crate::session::{Event, Session};
use crate::statement::tables::TableRef;

/// Differing rows described per comparison (the report keeps the latest comparisons).
const ROWS_PER_COMPARISON: usize = 10;
/// Values in the report are cut to this many characters.
const VALUE_CHARS: usize = 64;

impl Session {
    /// Compares the answers of a read both clusters answered, once both are in.
    pub(super) fn compare_answers(&mut self, request: &Request, now: Instant) {
        let Some(compared) = &request.compare else {
            return;
        };
        let Some(secondary) = request.route.secondary else {
            return;
        };
        let primary = request.route.primary;
        let (Some(Outcome::Answer(first)), Some(Outcome::Answer(second))) = (
            request.leg(primary).outcome(),
            request.leg(secondary).outcome(),
        ) else {
            // A cluster failed (timeout, lost connection): counted as a failure, not a
            // difference in data.
            return;
        };
        let (Ok(first_message), Ok(second_message)) =
            (self.response_message(first), self.response_message(second))
        else {
            return;
        };
        let version = request.version;
        let prepared_result = compared
            .prepared
            .as_ref()
            .and_then(|id| self.proxy.prepared().get(id).and_then(|p| p.result.clone()));
        let decoded = prepared_result
            .as_ref()
            .and_then(|r| ResultMessage::decode(r, version).ok());
        let columns = match &decoded {
            Some(ResultMessage::Prepared(p)) => p.result_metadata.columns.specs(),
            _ => None,
        };
        let key = compared.table.as_ref().and_then(|t| {
            self.proxy
                .table_key(primary, t.keyspace.as_deref()?, &t.table)
        });
        let comparison = compare::compare(
            Side {
                opcode: first.opcode(),
                message: &first_message,
            },
            Side {
                opcode: second.opcode(),
                message: &second_message,
            },
            &Context {
                version,
                columns,
                key: key.as_deref(),
                ordered: compared.ordered,
                max_samples: ROWS_PER_COMPARISON,
                max_value_len: VALUE_CHARS,
            },
        );
        let table = table_name(compared.table.as_ref(), &comparison);
        if comparison.counts.is_empty() {
            self.proxy.divergences().record_equal(table.clone());
            self.events.push_back(Event::Compared {
                table,
                divergence: None,
            });
            return;
        }
        let divergence = Divergence {
            at_micros: self.proxy.wall_micros(now),
            table: table.clone(),
            primary,
            opcode: request.opcode,
            statement: compared.statement.clone(),
            counts: DivergenceKind::ALL
                .into_iter()
                .map(|kind| (kind, comparison.counts.get(kind)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            notes: comparison.notes,
            rows: comparison.samples,
        };
        self.record_divergence(request, table, divergence);
    }

    /// A write one cluster applied and the other refused with an ERROR: the tables it writes
    /// diverge (which rows, the journal of missed writes says when the secondary refused).
    pub(super) fn write_outcomes_differ(&mut self, request: &Request, now: Instant) {
        let primary = request.route.primary;
        let Some(secondary) = request.route.secondary else {
            return;
        };
        let describe = |session: &Self, outcome: Option<&Outcome>| match outcome {
            Some(Outcome::Answer(envelope)) if !outcome.is_some_and(Outcome::is_success) => {
                Some(session.describe_error(envelope, request.version))
            }
            Some(Outcome::Digest(digest)) => digest.error.clone(),
            Some(Outcome::Failed(kind)) => Some(kind.to_string()),
            Some(Outcome::Answer(_)) | None => None,
        };
        let cut = |s: String| s.chars().take(VALUE_CHARS * 4).collect::<String>();
        let row = RowDifference {
            kind: DivergenceKind::Error,
            key: Vec::new(),
            columns: vec![ColumnDifference {
                name: "error".to_owned(),
                primary: describe(self, request.leg(primary).outcome()).map(cut),
                secondary: describe(self, request.leg(secondary).outcome()).map(cut),
            }],
        };
        let mut tables = self.written_tables(request);
        if tables.is_empty() {
            tables.push(TableRef {
                keyspace: None,
                table: String::new(),
            });
        }
        let statement = request
            .query
            .as_ref()
            .and_then(|m| crate::message::Query::peek_text(m).ok())
            .map(cut_statement);
        for table in tables {
            let table = TableName {
                keyspace: table.keyspace,
                table: (!table.table.is_empty()).then_some(table.table),
            };
            let divergence = Divergence {
                at_micros: self.proxy.wall_micros(now),
                table: table.clone(),
                primary,
                opcode: request.opcode,
                statement: statement.clone(),
                counts: vec![(DivergenceKind::Error, 1)],
                notes: vec![format!(
                    "the write succeeded on the {} cluster and failed on the {}",
                    if request
                        .leg(primary)
                        .outcome()
                        .is_some_and(Outcome::is_success)
                    {
                        primary
                    } else {
                        secondary
                    },
                    if request
                        .leg(primary)
                        .outcome()
                        .is_some_and(Outcome::is_success)
                    {
                        secondary
                    } else {
                        primary
                    },
                )],
                rows: vec![row.clone()],
            };
            self.record_divergence(request, table, divergence);
        }
    }

    fn record_divergence(&mut self, request: &Request, table: TableName, divergence: Divergence) {
        self.proxy.divergences().record(divergence.clone());
        if request.compare.is_some() {
            self.events.push_back(Event::OutcomesDiffer {
                opcode: request.opcode,
                write: request.write,
            });
        }
        self.events.push_back(Event::Compared {
            table,
            divergence: Some(Arc::new(divergence)),
        });
    }
}

/// A statement as the report shows it: its first 300 characters.
pub(super) fn cut_statement(text: &str) -> String {
    text.chars().take(300).collect()
}

/// The table a comparison is about: the statement's when known, else the answer's metadata.
fn table_name(statement: Option<&TableRef>, comparison: &Comparison) -> TableName {
    match (statement, &comparison.table) {
        (Some(t), _) if t.keyspace.is_some() => TableName {
            keyspace: t.keyspace.clone(),
            table: Some(t.table.clone()),
        },
        (_, Some((keyspace, table))) => TableName {
            keyspace: Some(keyspace.clone()),
            table: Some(table.clone()),
        },
        (Some(t), None) => TableName {
            keyspace: None,
            table: Some(t.table.clone()),
        },
        (None, None) => TableName {
            keyspace: None,
            table: None,
        },
    }
}
