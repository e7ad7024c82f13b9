//! With the journal on, every write the secondary misses comes with a record whose request is
//! the write the secondary got or would have got: same statement, values, timestamp and
//! consistency, generated values included. A write the secondary applied has none; the record
//! says whether it may be applied again (LWTs and counters with an unknown outcome may not).

#![allow(clippy::unwrap_used)]

mod session_common;

use std::sync::Arc;
use std::time::Duration;

use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::{Envelope, Opcode};
use cqlmirror_core::journal::{Cause, Outcome, Record, ReplayAction, Statement, Write, WriteKind};
use cqlmirror_core::message::{
    Batch, BatchStatement, BatchType, Body, ErrorCode, Execute, Prepare, Query, QueryParams, Values,
};
use cqlmirror_core::session::Event;
use cqlmirror_core::wire::{Consistency, Value};
use session_common::bench::{Bench, VERSION, batch, execute, query, request};

const SOURCE: usize = 0;
const TARGET: usize = 1;
const INSERT: &str = "INSERT INTO ks.t (k, v) VALUES (1, 'a')";

fn journaled() -> Bench {
    Bench::ready(|c| c.journal = true)
}

fn records(bench: &Bench) -> Vec<Arc<Record>> {
    bench
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Journal(r) => Some(Arc::clone(r)),
            _ => None,
        })
        .collect()
}

fn missed(bench: &Bench) -> usize {
    bench
        .events
        .iter()
        .filter(|e| matches!(e, Event::MissedWrite { .. }))
        .count()
}

fn write(bench: &mut Bench, stream: i16, text: &str) {
    bench.client_in.extend_from_slice(&query(stream, text));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(stream, Opcode::RESULT)]);
}

/// The target's connection is lost and it cannot be reached again.
fn target_down(bench: &mut Bench) {
    bench.drop_connection(Upstream::Target);
    bench.reachable[TARGET] = false;
}

/// Sends a write, not waiting for its answer.
fn send(bench: &mut Bench, stream: i16, text: &str) {
    bench.client_in.extend_from_slice(&query(stream, text));
    bench.settle();
}

/// The last request of `opcode` a cluster received.
fn last(bench: &Bench, cluster: usize, opcode: Opcode) -> Envelope {
    bench.received[cluster]
        .iter()
        .rev()
        .find(|e| e.opcode() == opcode)
        .unwrap()
        .clone()
}

/// The record's request is, byte for byte, the QUERY a cluster received.
fn replays_as(record: &Record, received: &Envelope) {
    let (opcode, body) = record.request(VERSION);
    assert_eq!(opcode, received.opcode());
    assert_eq!(&body[..], &received.body()[..], "the replayed body");
}

#[test]
fn a_write_the_target_refused_is_journaled_as_it_was_sent() {
    let mut bench = journaled();
    bench.failing[TARGET] = Some(ErrorCode::OVERLOADED);
    write(&mut bench, 2, INSERT);
    let records = records(&bench);
    assert_eq!(records.len(), 1);
    assert_eq!(missed(&bench), 1);
    let record = &records[0];
    assert_eq!(record.cluster, Upstream::Target);
    assert_eq!(record.kind, WriteKind::Plain);
    assert_eq!(record.outcome, Outcome::NotApplied);
    assert!(matches!(
        record.cause,
        Cause::Error {
            code: ErrorCode::OVERLOADED,
            ..
        }
    ));
    assert_eq!(record.replay_action(), ReplayAction::Apply);
    assert!(record.timestamp.is_some(), "the proxy's write timestamp");
    assert_eq!(record.tables.len(), 1);
    assert_eq!(record.tables[0].table, "t");
    // Exactly what the target got, and the source too (timestamp included).
    replays_as(record, &last(&bench, TARGET, Opcode::QUERY));
    replays_as(record, &last(&bench, SOURCE, Opcode::QUERY));
    // Survives the journal's encoding.
    assert_eq!(Record::decode(&record.to_bytes()).unwrap(), **record);
}

#[test]
fn a_write_timeout_answer_leaves_the_outcome_unknown() {
    let mut bench = journaled();
    bench.failing[TARGET] = Some(ErrorCode::WRITE_TIMEOUT);
    write(&mut bench, 2, "UPDATE ks.t SET l = l + [1] WHERE k = 1");
    let records = records(&bench);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, WriteKind::OrderSensitive);
    assert_eq!(records[0].outcome, Outcome::Unknown);
    assert_eq!(records[0].replay_action(), ReplayAction::Report);
}

#[test]
fn a_write_the_target_applied_has_no_record() {
    let mut bench = journaled();
    write(&mut bench, 2, INSERT);
    write(&mut bench, 3, "UPDATE ks.c SET n = n + 1 WHERE k = 1");
    assert_eq!(missed(&bench), 0);
    assert!(records(&bench).is_empty());
}

#[test]
fn without_the_journal_no_record_is_made() {
    let mut bench = Bench::ready(|_| {});
    bench.failing[TARGET] = Some(ErrorCode::OVERLOADED);
    write(&mut bench, 2, INSERT);
    assert_eq!(missed(&bench), 1);
    assert!(records(&bench).is_empty());
}

#[test]
fn a_timed_out_write_is_journaled_with_an_unknown_outcome() {
    let mut bench = journaled();
    bench.silent[TARGET] = true;
    send(&mut bench, 2, "UPDATE ks.c SET n = n + 1 WHERE k = 1");
    assert!(records(&bench).is_empty(), "still in flight on the target");
    bench.advance(Duration::from_secs(13));
    assert_eq!(bench.client_answers(), vec![(2, Opcode::RESULT)]);
    let records = records(&bench);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.cause, Cause::Timeout);
    assert_eq!(record.kind, WriteKind::Counter);
    assert_eq!(record.outcome, Outcome::Unknown);
    assert_eq!(
        record.replay_action(),
        ReplayAction::Report,
        "a counter that may have been applied is never applied again"
    );
    replays_as(record, &bench.unanswered[TARGET][0]);
}

#[test]
fn writes_lost_with_the_connection_and_while_it_is_down_are_journaled() {
    let mut bench = journaled();
    bench.silent[TARGET] = true;
    send(&mut bench, 2, INSERT);
    let in_flight = bench.unanswered[TARGET][0].clone();
    bench.drop_connection(Upstream::Target);
    assert_eq!(bench.client_answers(), vec![(2, Opcode::RESULT)]);
    bench.reachable[TARGET] = false;
    let counter = "UPDATE ks.c SET n = n + 1 WHERE k = 2";
    write(&mut bench, 3, counter);
    write(
        &mut bench,
        4,
        "INSERT INTO ks.t (k) VALUES (3) IF NOT EXISTS",
    );
    let records = records(&bench);
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].cause, Cause::Closed);
    assert_eq!(records[0].outcome, Outcome::Unknown);
    replays_as(&records[0], &in_flight);

    // Never sent: known not applied, so even a counter may be applied again.
    assert_eq!(records[1].cause, Cause::NotConnected);
    assert_eq!(records[1].kind, WriteKind::Counter);
    assert_eq!(records[1].outcome, Outcome::NotApplied);
    assert_eq!(records[1].replay_action(), ReplayAction::Apply);
    let source_counter = bench.received[SOURCE]
        .iter()
        .rfind(|e| {
            e.opcode() == Opcode::QUERY && Query::decode(e.body(), VERSION).unwrap().text == counter
        })
        .unwrap()
        .clone();
    replays_as(&records[1], &source_counter);

    assert_eq!(records[2].kind, WriteKind::Lwt);
    assert_eq!(
        records[2].timestamp, None,
        "an LWT carries no proxy timestamp"
    );
    assert_eq!(records[2].replay_action(), ReplayAction::Report);
    replays_as(&records[2], &last(&bench, SOURCE, Opcode::QUERY));
}

#[test]
fn the_keyspace_is_the_one_of_the_write_and_generated_values_are_kept() {
    let mut bench = journaled();
    write(&mut bench, 2, "USE ks");
    target_down(&mut bench);
    write(&mut bench, 3, "INSERT INTO t (k, id) VALUES (1, now())");
    let records = records(&bench);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.keyspace.as_deref(), Some("ks"));
    let Write::Single(statement) = &record.write else {
        panic!("a single statement")
    };
    assert!(
        !statement.text.contains("now()"),
        "the value the source stored, not the call: {}",
        statement.text
    );
    replays_as(record, &last(&bench, SOURCE, Opcode::QUERY));
}

fn prepare(bench: &mut Bench, stream: i16, text: &str) {
    let prepare = Prepare {
        query: text,
        keyspace: None,
    };
    bench
        .client_in
        .extend_from_slice(&request(stream, Opcode::PREPARE, prepare.to_bytes(VERSION)));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(stream, Opcode::RESULT)]);
}

#[test]
fn an_execute_is_journaled_as_its_text_with_its_values() {
    let mut bench = journaled();
    let text = "INSERT INTO ks.t (k, v) VALUES (?, ?)";
    prepare(&mut bench, 2, text);
    target_down(&mut bench);
    let values = [Value::Bytes(&[0, 0, 0, 7]), Value::Null];
    bench.client_in.extend_from_slice(&execute(
        3,
        text.as_bytes(),
        &values,
        Consistency::LOCAL_QUORUM,
    ));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(3, Opcode::RESULT)]);
    let records = records(&bench);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    let Write::Single(Statement {
        prepared: true,
        text: journaled_text,
        ..
    }) = &record.write
    else {
        panic!("a prepared statement: {:?}", record.write)
    };
    assert_eq!(journaled_text, text);
    // The source's EXECUTE and the record's QUERY carry the same parameters.
    let sent = last(&bench, SOURCE, Opcode::EXECUTE);
    let sent = Execute::decode(sent.body(), VERSION).unwrap();
    let (opcode, body) = record.request(VERSION);
    assert_eq!(opcode, Opcode::QUERY);
    let replayed = Query::decode(&body, VERSION).unwrap();
    assert_eq!(replayed.text, text);
    assert_eq!(replayed.params.consistency, Consistency::LOCAL_QUORUM);
    assert!(sent.params.timestamp.is_some());
    assert_eq!(replayed.params.timestamp, sent.params.timestamp);
    let values = |p: &QueryParams<'_>| -> Vec<Option<Vec<u8>>> {
        p.values
            .as_ref()
            .unwrap()
            .iter()
            .map(|(_, v)| match v {
                Value::Bytes(b) => Some(b.to_vec()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(values(&replayed.params), values(&sent.params));
}

#[test]
fn a_counter_batch_is_a_counter_write_with_every_entry() {
    let mut bench = journaled();
    let text = "UPDATE ks.c SET n = n + ? WHERE k = ?";
    prepare(&mut bench, 2, text);
    target_down(&mut bench);
    let prepared_values = [Value::Bytes(&[0, 0, 0, 0, 0, 0, 0, 2]), Value::Null];
    let statements = [
        BatchStatement {
            statement: cqlmirror_core::message::Statement::Prepared(text.as_bytes()),
            values: Values::positional(&prepared_values),
        },
        BatchStatement {
            statement: cqlmirror_core::message::Statement::Query(
                "UPDATE ks.c SET n = n + 1 WHERE k = 9",
            ),
            values: Values::positional(&[]),
        },
    ];
    bench
        .client_in
        .extend_from_slice(&batch(3, BatchType::COUNTER, &statements));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(3, Opcode::RESULT)]);
    let records = records(&bench);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.kind, WriteKind::Counter);
    assert_eq!(record.outcome, Outcome::NotApplied);
    let Write::Batch {
        batch_type,
        entries,
    } = &record.write
    else {
        panic!("a batch")
    };
    assert_eq!(*batch_type, BatchType::COUNTER);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].text, text);
    assert!(entries[0].prepared);
    let (opcode, body) = record.request(VERSION);
    assert_eq!(opcode, Opcode::BATCH);
    let sent = last(&bench, SOURCE, Opcode::BATCH);
    let sent = Batch::decode(sent.body(), VERSION).unwrap();
    let replayed = Batch::decode(&body, VERSION).unwrap();
    assert_eq!(replayed.timestamp, sent.timestamp);
    assert_eq!(replayed.batch_type, BatchType::COUNTER);
    let values = |b: &Batch<'_>| -> Vec<Vec<Vec<u8>>> {
        b.statements
            .iter()
            .map(|s| {
                s.values
                    .iter()
                    .map(|(_, v)| match v {
                        Value::Bytes(b) => b.to_vec(),
                        _ => vec![0xff],
                    })
                    .collect()
            })
            .collect()
    };
    assert_eq!(values(&replayed), values(&sent));
}

#[test]
fn an_execute_with_generated_values_keeps_the_markers_and_their_values() {
    let mut bench = journaled();
    bench.describe_markers = true;
    let text = "INSERT INTO ks.t (k, id) VALUES (?, now())";
    prepare(&mut bench, 2, text);
    let prepared = last(&bench, SOURCE, Opcode::PREPARE);
    let prepared = Prepare::decode(prepared.body(), VERSION)
        .unwrap()
        .query
        .to_owned();
    assert!(!prepared.contains("now()"), "prepared with a marker");
    target_down(&mut bench);
    let values = [Value::Bytes(&[0, 0, 0, 1])];
    // The bench's clusters name a statement by the text they prepared.
    bench
        .client_in
        .extend_from_slice(&execute(3, prepared.as_bytes(), &values, Consistency::ONE));
    bench.settle();
    assert_eq!(bench.client_answers(), vec![(3, Opcode::RESULT)]);
    let records = records(&bench);
    assert_eq!(records.len(), 1);
    let Write::Single(statement) = &records[0].write else {
        panic!("a single statement")
    };
    assert_eq!(statement.text, prepared, "the text the clusters prepared");
    let sent = last(&bench, SOURCE, Opcode::EXECUTE);
    let sent = Execute::decode(sent.body(), VERSION).unwrap();
    let (_, body) = records[0].request(VERSION);
    let replayed = Query::decode(&body, VERSION).unwrap();
    let values = |p: &QueryParams<'_>| -> Vec<Option<Vec<u8>>> {
        p.values
            .as_ref()
            .unwrap()
            .iter()
            .map(|(_, v)| match v {
                Value::Bytes(b) => Some(b.to_vec()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        values(&sent.params).len(),
        2,
        "the client's value and the generated one"
    );
    assert_eq!(values(&replayed.params), values(&sent.params));
}
