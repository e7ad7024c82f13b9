//! Between requests and records: the statements of a QUERY, an EXECUTE or a BATCH as a record
//! keeps them, and the request that applies a record again.
//!
//! Replay sends every statement as text with its values (a QUERY, or a BATCH of text
//! statements): the cluster binds the values to the markers of the text as it would for the
//! prepared statement, and no prepared id is needed.

use bytes::BytesMut;

use crate::frame::{Opcode, ProtocolVersion};
use crate::message::batch::{self, Batch, BatchStatement, Statements};
use crate::message::params::{self, QueryParams};
use crate::message::{Body, Query};
use crate::wire::Value;

use super::record::{BoundValue, Record, Statement, Values, Write};

impl Values {
    /// The values of a request, owned; `None` (no values flag) stays none.
    pub fn from_wire(values: Option<&params::Values<'_>>) -> Self {
        let Some(values) = values else {
            return Self::None;
        };
        if values.has_names() {
            Self::Named(
                values
                    .iter()
                    .map(|(name, v)| (name.unwrap_or_default().to_owned(), v.into()))
                    .collect(),
            )
        } else {
            Self::Positional(values.iter().map(|(_, v)| v.into()).collect())
        }
    }
}

impl Statement {
    /// The statement of a QUERY.
    pub fn query(query: &Query<'_>) -> Self {
        Self {
            prepared: false,
            text: query.text.to_owned(),
            values: Values::from_wire(query.params.values.as_ref()),
        }
    }

    /// The statement of an EXECUTE: the prepared statement's `text` with the values bound.
    pub fn prepared(text: &str, params: &QueryParams<'_>) -> Self {
        Self {
            prepared: true,
            text: text.to_owned(),
            values: Values::from_wire(params.values.as_ref()),
        }
    }
}

impl Write {
    /// The statements of a BATCH, each prepared one as its text (`text_of` gives the text for
    /// a prepared id). `Err` with the first id `text_of` does not know.
    pub fn batch<'a>(
        batch: &Batch<'a>,
        mut text_of: impl FnMut(&[u8]) -> Option<String>,
    ) -> Result<Self, &'a [u8]> {
        let mut entries = Vec::with_capacity(batch.statements.len());
        for st in batch.statements.iter() {
            let values = Values::from_wire(Some(&st.values));
            entries.push(match st.statement {
                batch::Statement::Query(text) => Statement {
                    prepared: false,
                    text: text.to_owned(),
                    values,
                },
                batch::Statement::Prepared(id) => Statement {
                    prepared: true,
                    text: text_of(id).ok_or(id)?,
                    values,
                },
            });
        }
        Ok(Self::Batch {
            batch_type: batch.batch_type,
            entries,
        })
    }
}

/// A statement's values as the message types borrow them.
enum Borrowed<'a> {
    None,
    Positional(Vec<Value<'a>>),
    Named(Vec<(&'a str, Value<'a>)>),
}

impl<'a> Borrowed<'a> {
    fn of(values: &'a Values) -> Self {
        match values {
            Values::None => Self::None,
            Values::Positional(v) => Self::Positional(v.iter().map(BoundValue::as_value).collect()),
            Values::Named(v) => Self::Named(
                v.iter()
                    .map(|(name, value)| (name.as_str(), value.as_value()))
                    .collect(),
            ),
        }
    }

    fn values(&self) -> Option<params::Values<'_>> {
        match self {
            Self::None => None,
            Self::Positional(v) => Some(params::Values::positional(v)),
            Self::Named(v) => Some(params::Values::named(v)),
        }
    }
}

impl Record {
    /// The request that applies this write again, encoded for `version`: a QUERY, or a BATCH
    /// of text statements, with the record's consistency levels and write timestamp.
    ///
    /// The record's keyspace travels in the request only with v5 (the only version with a
    /// per-request keyspace): with v3 and v4, the connection must `USE` it first.
    pub fn request(&self, version: ProtocolVersion) -> (Opcode, BytesMut) {
        let keyspace = match version {
            ProtocolVersion::V5 => self.keyspace.as_deref(),
            ProtocolVersion::V3 | ProtocolVersion::V4 => None,
        };
        let mut out = BytesMut::new();
        match &self.write {
            Write::Single(statement) => {
                let values = Borrowed::of(&statement.values);
                let query = Query {
                    text: &statement.text,
                    params: QueryParams {
                        values: values.values(),
                        serial_consistency: self.serial_consistency,
                        timestamp: self.timestamp,
                        keyspace,
                        now_in_seconds: self.now_in_seconds,
                        ..QueryParams::new(self.consistency)
                    },
                };
                query.encode(version, &mut out);
                (Opcode::QUERY, out)
            }
            Write::Batch {
                batch_type,
                entries,
            } => {
                let values: Vec<Borrowed<'_>> =
                    entries.iter().map(|s| Borrowed::of(&s.values)).collect();
                let statements: Vec<BatchStatement<'_>> = entries
                    .iter()
                    .zip(&values)
                    .map(|(s, v)| BatchStatement {
                        statement: batch::Statement::Query(&s.text),
                        // A batch statement always has a values count, zero for none.
                        values: v.values().unwrap_or(params::Values::positional(&[])),
                    })
                    .collect();
                let batch = Batch {
                    batch_type: *batch_type,
                    statements: Statements::new(&statements),
                    consistency: self.consistency,
                    serial_consistency: self.serial_consistency,
                    timestamp: self.timestamp,
                    keyspace,
                    now_in_seconds: self.now_in_seconds,
                };
                batch.encode(version, &mut out);
                (Opcode::BATCH, out)
            }
        }
    }
}
