//! `--write-order primary-first`: a write reaches the secondary only once the primary accepted
//! it; a write the primary refuses never reaches it and is not missed there; reads are not
//! delayed; the causal order of barriers holds on the secondary as with `parallel`.
//!
//! One session driven by hand; a silent cluster keeps its QUERYs until the test releases them.

#![allow(clippy::unwrap_used)]

mod session_common;

use std::sync::atomic::Ordering;

use cqlmirror_core::config::{Upstream, WaitPolicy, WriteOrder};
use cqlmirror_core::frame::Opcode;
use cqlmirror_core::message::{Body, ErrorCode, Query};
use cqlmirror_core::routing::ReadMode;
use cqlmirror_core::session::Peer;
use session_common::bench::{Bench, VERSION, query};

const SOURCE: usize = 0;
const TARGET: usize = 1;

fn bench(wait: WaitPolicy) -> Bench {
    Bench::ready(|c| {
        c.wait = wait;
        c.write_order = WriteOrder::PrimaryFirst;
    })
}

/// The statement texts of the QUERYs `upstream` received, in order.
fn texts(bench: &Bench, upstream: usize) -> Vec<String> {
    bench.received[upstream]
        .iter()
        .filter(|e| e.opcode() == Opcode::QUERY)
        .map(|e| Query::decode(e.body(), VERSION).unwrap().text.to_owned())
        .collect()
}

fn send(bench: &mut Bench, stream: i16, text: &str) {
    bench.client_in.extend_from_slice(&query(stream, text));
    bench.settle();
}

fn missed(bench: &Bench) -> u64 {
    bench.proxy.stats().missed_writes[TARGET].load(Ordering::Relaxed)
}

#[test]
fn the_secondary_gets_a_write_only_after_the_primary_answered_it() {
    for wait in [WaitPolicy::Both, WaitPolicy::Primary] {
        let mut bench = bench(wait);
        bench.silent[SOURCE] = true;
        send(&mut bench, 5, "INSERT INTO ks.t (k) VALUES (1)");
        assert_eq!(bench.queries, [1, 0], "{wait:?}");
        assert_eq!(bench.client_answers(), vec![]);
        bench.release(Upstream::Source, 1);
        assert_eq!(bench.queries, [1, 1], "{wait:?}");
        // The target answers at once here: with either wait policy the client has its answer.
        assert_eq!(bench.client_answers(), vec![(5, Opcode::RESULT)]);
        assert_eq!(missed(&bench), 0);
    }
}

#[test]
fn with_wait_true_the_answer_comes_after_both_in_turn() {
    let mut bench = bench(WaitPolicy::Both);
    bench.silent = [true, true];
    send(&mut bench, 5, "INSERT INTO ks.t (k) VALUES (1)");
    bench.release(Upstream::Source, 1);
    assert_eq!(bench.queries, [1, 1]);
    assert_eq!(bench.client_answers(), vec![]);
    bench.release(Upstream::Target, 1);
    assert_eq!(bench.client_answers(), vec![(5, Opcode::RESULT)]);
}

#[test]
fn with_wait_false_the_answer_comes_after_the_primary() {
    let mut bench = bench(WaitPolicy::Primary);
    bench.silent = [true, true];
    send(&mut bench, 5, "INSERT INTO ks.t (k) VALUES (1)");
    bench.release(Upstream::Source, 1);
    assert_eq!(bench.client_answers(), vec![(5, Opcode::RESULT)]);
    assert_eq!(bench.unanswered[TARGET].len(), 1);
    bench.release(Upstream::Target, 1);
    assert_eq!(missed(&bench), 0);
}

#[test]
fn a_write_the_primary_refuses_never_reaches_the_secondary() {
    for wait in [WaitPolicy::Both, WaitPolicy::Primary] {
        let mut bench = bench(wait);
        bench.failing[SOURCE] = Some(ErrorCode::INVALID);
        send(&mut bench, 5, "INSERT INTO ks.t (k) VALUES (1)");
        assert_eq!(bench.client_answers(), vec![(5, Opcode::ERROR)]);
        assert_eq!(bench.queries, [1, 0], "{wait:?}");
        assert_eq!(missed(&bench), 0);
        assert_eq!(bench.session.in_flight(), 0);
    }
}

#[test]
fn with_parallel_the_secondary_gets_it_at_once_and_a_refused_write_lands_there_alone() {
    let mut bench = Bench::ready(|c| c.wait = WaitPolicy::Primary);
    bench.silent[SOURCE] = true;
    send(&mut bench, 5, "INSERT INTO ks.t (k) VALUES (1)");
    assert_eq!(bench.queries, [1, 1]);
    bench.silent[SOURCE] = false;
    bench.failing[SOURCE] = Some(ErrorCode::INVALID);
    send(&mut bench, 6, "INSERT INTO ks.t (k) VALUES (2)");
    assert_eq!(bench.queries, [2, 2]);
    // Switched at run time: the next write waits for the primary's answer.
    bench.proxy.set_write_order(WriteOrder::PrimaryFirst);
    send(&mut bench, 7, "INSERT INTO ks.t (k) VALUES (3)");
    assert_eq!(bench.queries, [3, 2]);
}

#[test]
fn reads_are_not_held_for_the_primary() {
    let mut bench = Bench::ready(|c| {
        c.write_order = WriteOrder::PrimaryFirst;
        c.read_mode = ReadMode::Compare;
    });
    bench.silent[SOURCE] = true;
    send(&mut bench, 5, "SELECT * FROM ks.t WHERE k = 1");
    assert_eq!(bench.queries, [1, 1]);
}

#[test]
fn barriers_keep_their_order_on_the_secondary() {
    let mut bench = Bench::ready(|c| {
        c.wait = WaitPolicy::Primary;
        c.write_order = WriteOrder::PrimaryFirst;
        // No schema-agreement reads among the target's QUERYs.
        c.schema_agreement_timeout = std::time::Duration::ZERO;
    });
    bench.silent[TARGET] = true;
    send(
        &mut bench,
        5,
        "CREATE TABLE ks.l (k int PRIMARY KEY, v list<int>)",
    );
    assert_eq!(bench.client_answers(), vec![(5, Opcode::RESULT)]);
    assert_eq!(texts(&bench, TARGET).len(), 1);
    // Both arrive once the client saw the CREATE TABLE answered: on the target they wait
    // for it, whatever the primary does; the INSERT arrives after the list append was
    // answered, so it waits for that barrier too.
    send(&mut bench, 6, "UPDATE ks.l SET v = v + [1] WHERE k = 1");
    send(&mut bench, 7, "INSERT INTO ks.l (k) VALUES (2)");
    assert_eq!(
        bench.client_answers(),
        vec![(6, Opcode::RESULT), (7, Opcode::RESULT)]
    );
    assert_eq!(texts(&bench, TARGET).len(), 1);
    bench.release(Upstream::Target, 1);
    assert_eq!(texts(&bench, TARGET).len(), 2);
    bench.release(Upstream::Target, 1);
    assert_eq!(
        texts(&bench, TARGET),
        vec![
            "CREATE TABLE ks.l (k int PRIMARY KEY, v list<int>)",
            "UPDATE ks.l SET v = v + [1] WHERE k = 1",
            "INSERT INTO ks.l (k) VALUES (2)",
        ]
    );
    bench.release(Upstream::Target, 1);
    // A barrier sent after another was answered waits for it on the target.
    send(&mut bench, 8, "UPDATE ks.l SET v = v + [2] WHERE k = 1");
    send(&mut bench, 9, "UPDATE ks.l SET v = v + [3] WHERE k = 1");
    assert_eq!(texts(&bench, TARGET).len(), 4);
    bench.release(Upstream::Target, 1);
    assert_eq!(texts(&bench, TARGET).len(), 5);
    bench.release(Upstream::Target, 1);
    assert_eq!(missed(&bench), 0);
    assert_eq!(bench.session.in_flight(), 0);
}

#[test]
fn a_failed_secondary_misses_writes_at_once_and_never_holds_the_client() {
    let mut bench = Bench::ready(|c| {
        c.wait = WaitPolicy::Primary;
        c.write_order = WriteOrder::PrimaryFirst;
        c.max_secondary_lag = 1;
    });
    bench.silent[SOURCE] = true;
    bench
        .session
        .handle_closed(Peer::Target, "connection reset", bench.now);
    bench.settle();
    bench.client_read_size = query(5, "INSERT INTO ks.t (k) VALUES (1)").len();
    send(&mut bench, 5, "INSERT INTO ks.t (k) VALUES (1)");
    send(&mut bench, 6, "INSERT INTO ks.t (k) VALUES (2)");
    // Nothing waits for the target: both reach the source although the bound is one.
    assert_eq!(bench.queries, [2, 0]);
    bench.release(Upstream::Source, 2);
    assert_eq!(bench.client_answers().len(), 2);
    assert_eq!(missed(&bench), 2);
}
