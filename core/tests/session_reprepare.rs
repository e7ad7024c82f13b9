//! A cluster that forgot a prepared statement (it restarted) is given it again by the proxy.
//! With protocol v3 and v4 a PREPARE names no keyspace: a statement prepared after `USE ks1`
//! and executed after `USE ks2` must be prepared again in `ks1`, not in the connection's
//! keyspace of the moment, where it would name another table or none.

#![allow(clippy::unwrap_used)]

mod session_common;

use cqlmirror_core::frame::{Envelope, Opcode};
use cqlmirror_core::message::{Body, Execute, Prepare};
use cqlmirror_core::wire::Consistency;
use session_common::bench::{self, Bench, VERSION, query, request};

const SOURCE: usize = 0;
const TARGET: usize = 1;
const TEXT: &str = "INSERT INTO t (k) VALUES (1)";

fn execute(stream: i16, id: &[u8]) -> bytes::BytesMut {
    bench::execute(stream, id, &[], Consistency::ONE)
}

fn of(bench: &Bench, cluster: usize, opcode: Opcode) -> Vec<Envelope> {
    bench.received[cluster]
        .iter()
        .filter(|e| e.opcode() == opcode)
        .cloned()
        .collect()
}

fn prepared_texts(bench: &Bench, cluster: usize) -> Vec<String> {
    of(bench, cluster, Opcode::PREPARE)
        .iter()
        .map(|e| Prepare::decode(e.body(), VERSION).unwrap().query.to_owned())
        .collect()
}

fn executed_ids(bench: &Bench, cluster: usize) -> Vec<Vec<u8>> {
    of(bench, cluster, Opcode::EXECUTE)
        .iter()
        .map(|e| Execute::peek_id(e.body()).unwrap().to_vec())
        .collect()
}

/// Prepared after `USE ks1`, executed after `USE ks2`, forgotten by `forgetful`.
fn forgotten_after_use(forgetful: usize) -> Bench {
    let mut bench = Bench::ready(|_| {});
    bench.client_in.extend_from_slice(&query(2, "USE ks1"));
    let prepare = Prepare {
        query: TEXT,
        keyspace: None,
    };
    bench
        .client_in
        .extend_from_slice(&request(3, Opcode::PREPARE, prepare.to_bytes(VERSION)));
    bench.settle();
    bench.client_in.extend_from_slice(&query(4, "USE ks2"));
    bench.settle();
    bench.unprepared_next[forgetful] = true;
    bench
        .client_in
        .extend_from_slice(&execute(5, TEXT.as_bytes()));
    bench.settle();
    bench
}

#[test]
fn the_target_prepares_it_again_in_the_keyspace_it_was_prepared_in() {
    let mut bench = forgotten_after_use(TARGET);
    let qualified = "INSERT INTO \"ks1\".t (k) VALUES (1)";
    assert_eq!(prepared_texts(&bench, TARGET), [TEXT, qualified]);
    assert_eq!(
        prepared_texts(&bench, SOURCE),
        [TEXT],
        "the source is not asked again"
    );
    // The target ran it again under its new id; the client got its answer once.
    assert_eq!(
        executed_ids(&bench, TARGET),
        [TEXT.as_bytes().to_vec(), qualified.as_bytes().to_vec()]
    );
    let answers = bench.client_answers();
    assert_eq!(answers.iter().filter(|(stream, _)| *stream == 5).count(), 1);
    assert!(answers.contains(&(5, Opcode::RESULT)), "{answers:?}");

    // From now on the client's id goes to the target as the target's own.
    bench
        .client_in
        .extend_from_slice(&execute(6, TEXT.as_bytes()));
    bench.settle();
    assert_eq!(
        executed_ids(&bench, TARGET).last().unwrap(),
        qualified.as_bytes()
    );
    assert_eq!(
        executed_ids(&bench, SOURCE).last().unwrap(),
        TEXT.as_bytes()
    );
    assert_eq!(prepared_texts(&bench, TARGET).len(), 2, "no second repair");
}

#[test]
fn the_primary_prepares_it_again_in_its_keyspace_and_the_client_keeps_its_id() {
    let mut bench = forgotten_after_use(SOURCE);
    let qualified = "INSERT INTO \"ks1\".t (k) VALUES (1)";
    assert_eq!(prepared_texts(&bench, SOURCE), [TEXT, qualified]);
    assert!(bench.client_answers().contains(&(5, Opcode::RESULT)));
    bench
        .client_in
        .extend_from_slice(&execute(6, TEXT.as_bytes()));
    bench.settle();
    assert_eq!(
        executed_ids(&bench, SOURCE).last().unwrap(),
        qualified.as_bytes()
    );
    assert!(bench.client_answers().contains(&(6, Opcode::RESULT)));
}

#[test]
fn in_the_same_keyspace_the_text_is_prepared_as_it_was() {
    let mut bench = Bench::ready(|_| {});
    bench.client_in.extend_from_slice(&query(2, "USE ks1"));
    let prepare = Prepare {
        query: TEXT,
        keyspace: None,
    };
    bench
        .client_in
        .extend_from_slice(&request(3, Opcode::PREPARE, prepare.to_bytes(VERSION)));
    bench.settle();
    bench.unprepared_next[TARGET] = true;
    bench
        .client_in
        .extend_from_slice(&execute(4, TEXT.as_bytes()));
    bench.settle();
    assert_eq!(prepared_texts(&bench, TARGET), [TEXT, TEXT]);
    assert_eq!(
        executed_ids(&bench, TARGET),
        [TEXT.as_bytes().to_vec(), TEXT.as_bytes().to_vec()]
    );
}
