//! The journal's part of the session: the record of a write the secondary missed (see
//! [`crate::journal`]), made when the request retires, from the body the secondary got or
//! would have got.
//!
//! That body is the one the request keeps anyway for naming its tables and for repairs: the
//! QUERY as stamped and with its function calls replaced, the EXECUTE or BATCH with the
//! client's ids and the generated values bound. An EXECUTE is kept as the prepared statement's
//! text from the proxy-wide cache (with the proxy's markers, whose values are bound), so replay
//! needs no prepared id. Nothing here runs unless [`Config::journal`] is on.
//!
//! [`Config::journal`]: crate::config::Config::journal

use std::time::Instant;

use crate::config::Upstream;
use crate::failure::FailureKind;
use crate::frame::{Opcode, ProtocolVersion};
use crate::journal::{Cause, Outcome as Applied, Record, Statement, Write, WriteKind};
use crate::message::batch::{BatchType, Statement as BatchEntry};
use crate::message::{Batch, Body, ColumnType, ErrorCode, Execute, Query, ResultMessage};
use crate::prepared::PreparedStatement;
use crate::session::intake::BatchFilter;
use crate::session::request::{Kind, Leg, Outcome, Request};
use crate::session::{Session, Unjournaled};
use crate::statement::{self, StatementKind};

impl Session {
    /// The record of `request`, which `upstream` missed; `Ok(None)` for a request that
    /// changed only the connection's state (`USE`), which replay has nothing to apply of.
    pub(super) fn journal_record(
        &self,
        request: &Request,
        upstream: Upstream,
        now: Instant,
    ) -> Result<Option<Record>, Unjournaled> {
        let version = request.version;
        let cause = self.miss_cause(request, upstream);
        let outcome = Applied::of(&cause);
        let parts = match (request.opcode, &request.kind) {
            (Opcode::QUERY, _) => {
                let message = request.query.as_ref().ok_or(Unjournaled::Malformed)?;
                let query = Query::decode(message, version).map_err(|_| Unjournaled::Malformed)?;
                let classified = statement::Statement::classify(query.text);
                match classified.kind {
                    StatementKind::Use => return Ok(None),
                    kind if !kind.is_data_write() => return Err(Unjournaled::NotDataWrite),
                    _ => {}
                }
                Parts {
                    kind: WriteKind::of(
                        classified.conditional,
                        classified.order_sensitive,
                        statement::updates_counter(query.text),
                    ),
                    keyspace: query
                        .params
                        .keyspace
                        .map(str::to_owned)
                        .or_else(|| request.journal_keyspace.clone()),
                    consistency: query.params.consistency,
                    serial_consistency: query.params.serial_consistency,
                    timestamp: query.params.timestamp,
                    now_in_seconds: query.params.now_in_seconds,
                    write: Write::Single(Statement::query(&query)),
                }
            }
            (Opcode::EXECUTE, Kind::Prepared(repair)) => {
                let execute =
                    Execute::decode(&repair.body, version).map_err(|_| Unjournaled::Malformed)?;
                let cache = self.proxy.prepared();
                let prepared = cache.get(execute.id).ok_or(Unjournaled::UnknownStatement)?;
                if !prepared.statement.kind.is_data_write() {
                    return Err(Unjournaled::NotDataWrite);
                }
                Parts {
                    kind: prepared_kind(prepared, version),
                    keyspace: prepared.keyspace.clone(),
                    consistency: execute.params.consistency,
                    serial_consistency: execute.params.serial_consistency,
                    timestamp: execute.params.timestamp,
                    now_in_seconds: execute.params.now_in_seconds,
                    write: Write::Single(Statement::prepared(&prepared.query, &execute.params)),
                }
            }
            (Opcode::BATCH, Kind::Prepared(repair)) => {
                // The target got the batch without the statements `--filter-tables` keeps off
                // it.
                let filtered = match upstream {
                    Upstream::Target => self
                        .filtered_batch(&repair.body, version)
                        .map_err(|_| Unjournaled::Malformed)?,
                    Upstream::Source => BatchFilter::Unfiltered,
                };
                let body = match &filtered {
                    BatchFilter::Some(rest) => rest,
                    BatchFilter::Unfiltered | BatchFilter::All => &repair.body,
                };
                let batch = Batch::decode(body, version).map_err(|_| Unjournaled::Malformed)?;
                self.batch_parts(&batch, request, version)?
            }
            _ => return Err(Unjournaled::Malformed),
        };
        Ok(Some(Record {
            wall_micros: self.proxy.wall_micros(now),
            cluster: upstream,
            version,
            keyspace: parts.keyspace,
            write: parts.write,
            consistency: parts.consistency,
            serial_consistency: parts.serial_consistency,
            timestamp: parts.timestamp,
            now_in_seconds: parts.now_in_seconds,
            kind: parts.kind,
            outcome,
            cause,
            tables: self.written_tables(request),
        }))
    }

    fn batch_parts(
        &self,
        batch: &Batch<'_>,
        request: &Request,
        version: ProtocolVersion,
    ) -> Result<Parts, Unjournaled> {
        let cache = self.proxy.prepared();
        let mut kind = if batch.batch_type == BatchType::COUNTER {
            WriteKind::Counter
        } else {
            WriteKind::Plain
        };
        // Text entries run in the batch's (v5) or the connection's keyspace; prepared ones in
        // the keyspace they were prepared in, which is the record's when nothing else names
        // one.
        let mut keyspace = batch
            .keyspace
            .map(str::to_owned)
            .or_else(|| request.journal_keyspace.clone());
        for entry in batch.statements.iter() {
            let entry_kind = match entry.statement {
                BatchEntry::Query(text) => {
                    let s = statement::Statement::classify(text);
                    WriteKind::of(
                        s.conditional,
                        s.order_sensitive,
                        statement::updates_counter(text),
                    )
                }
                BatchEntry::Prepared(id) => {
                    let prepared = cache.get(id).ok_or(Unjournaled::UnknownStatement)?;
                    if keyspace.is_none() {
                        keyspace.clone_from(&prepared.keyspace);
                    }
                    prepared_kind(prepared, version)
                }
            };
            kind = kind.max(entry_kind);
        }
        let write = Write::batch(batch, |id| cache.get(id).map(|p| p.query.clone()))
            .map_err(|_| Unjournaled::UnknownStatement)?;
        Ok(Parts {
            kind,
            keyspace,
            consistency: batch.consistency,
            serial_consistency: batch.serial_consistency,
            timestamp: batch.timestamp,
            now_in_seconds: batch.now_in_seconds,
            write,
        })
    }

    /// Why `upstream` missed `request`.
    fn miss_cause(&self, request: &Request, upstream: Upstream) -> Cause {
        if request.unsent[upstream.index()] {
            return Cause::NotConnected;
        }
        match request.leg(upstream) {
            Leg::Unused => Cause::NotConnected,
            Leg::Done(Outcome::Failed(FailureKind::Timeout)) => Cause::Timeout,
            // The connection never came up: nothing reached the cluster.
            Leg::Done(Outcome::Failed(FailureKind::Unreachable | FailureKind::Refused)) => {
                Cause::NotConnected
            }
            Leg::Done(Outcome::Failed(_)) | Leg::Waiting => Cause::Closed,
            Leg::Done(Outcome::Answer(envelope)) => Cause::Error {
                code: readable(self.error_code(envelope, request.version)),
                message: self.describe_error(envelope, request.version),
            },
            Leg::Done(Outcome::Digest(digest)) => Cause::Error {
                code: readable(digest.code),
                message: digest.error.clone().unwrap_or_default(),
            },
        }
    }
}

/// An ERROR whose code cannot be read (-1) may have been anything: taken as one that leaves
/// the write's outcome unknown.
fn readable(code: Option<ErrorCode>) -> ErrorCode {
    code.filter(|c| c.0 >= 0).unwrap_or(ErrorCode::SERVER_ERROR)
}

/// What a record holds besides what every request has.
struct Parts {
    kind: WriteKind,
    keyspace: Option<String>,
    consistency: crate::wire::Consistency,
    serial_consistency: Option<crate::wire::Consistency>,
    timestamp: Option<i64>,
    now_in_seconds: Option<i32>,
    write: Write,
}

/// The kind of a prepared statement's write: a counter when its text shows one or a bind
/// marker is a counter (`c = c + ?` on a counter column), from the PREPARED answer kept.
fn prepared_kind(prepared: &PreparedStatement, version: ProtocolVersion) -> WriteKind {
    let s = &prepared.statement;
    let counter = statement::updates_counter(&prepared.query)
        || prepared.result.as_ref().is_some_and(|body| {
            matches!(
                ResultMessage::decode(body, version),
                Ok(ResultMessage::Prepared(p))
                    if p.metadata.columns.iter().any(|c| c.column_type == ColumnType::Counter)
            )
        });
    WriteKind::of(s.conditional, s.order_sensitive, counter)
}
