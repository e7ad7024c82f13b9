//! Reads and comparison in one session: where reads go in each read mode, the shadow budget,
//! the divergence report fed by comparing both clusters' answers, and `--filter-tables`.

#![allow(clippy::unwrap_used)]

mod session_common;

use bytes::Bytes;
use cqlmirror_core::compare::DivergenceKind;
use cqlmirror_core::config::Upstream;
use cqlmirror_core::filter::TableFilter;
use cqlmirror_core::frame::Opcode;
use cqlmirror_core::message::metadata::{Columns, RowsMetadata, TableSpec};
use cqlmirror_core::message::rows::RowsWriter;
use cqlmirror_core::message::types::ColumnType;
use cqlmirror_core::message::{Batch, BatchStatement, BatchType, Body, Statement, Values};
use cqlmirror_core::routing::ReadMode;
use cqlmirror_core::session::Event;
use session_common::bench::{Bench, VERSION, batch, query};

const SOURCE: usize = 0;
const TARGET: usize = 1;

/// A Rows answer of `ks.t (k int, v text)` with these rows.
fn rows(rows: &[(i32, &str)]) -> (Opcode, Bytes) {
    let metadata = RowsMetadata::new(Columns::in_table(
        TableSpec {
            keyspace: "ks",
            table: "t",
        },
        &[("k", ColumnType::Int), ("v", ColumnType::Varchar)],
    ));
    let mut writer = RowsWriter::new(&metadata);
    for (k, v) in rows {
        let k = k.to_be_bytes();
        writer.push_row([Some(&k[..]), Some(v.as_bytes())]).unwrap();
    }
    (Opcode::RESULT, writer.finish())
}

fn queries_of(bench: &Bench, cluster: usize) -> Vec<String> {
    bench.received[cluster]
        .iter()
        .filter(|e| e.opcode() == Opcode::QUERY)
        .map(|e| {
            cqlmirror_core::message::Query::peek_text(e.body())
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn reads_reach_the_primary_alone_by_default_and_writes_reach_both() {
    let mut bench = Bench::ready(|_| {});
    let statements = [
        "SELECT * FROM ks.t",
        "  /* a comment */ select v from \"ks\".t WHERE k = 1",
        "-- a line\nSELECT JSON k FROM ks.t",
    ];
    for (i, text) in statements.iter().enumerate() {
        bench
            .client_in
            .extend_from_slice(&query(10 + i as i16, text));
    }
    bench
        .client_in
        .extend_from_slice(&query(20, "INSERT INTO ks.t (k) VALUES (1)"));
    bench.client_in.extend_from_slice(&query(
        21,
        "BEGIN UNLOGGED BATCH INSERT INTO ks.t (k) VALUES (2); APPLY BATCH",
    ));
    bench.settle();
    assert_eq!(queries_of(&bench, SOURCE).len(), 5);
    assert_eq!(
        queries_of(&bench, TARGET),
        [
            "INSERT INTO ks.t (k) VALUES (1)",
            "BEGIN UNLOGGED BATCH INSERT INTO ks.t (k) VALUES (2); APPLY BATCH"
        ]
    );
    assert_eq!(bench.client_answers().len(), 5);
}

#[test]
fn system_keyspaces_are_read_from_the_primary_alone_in_every_mode() {
    for mode in ReadMode::ALL {
        let mut bench = Bench::ready(|c| c.read_mode = mode);
        bench
            .client_in
            .extend_from_slice(&query(10, "SELECT * FROM system_schema.tables"));
        bench
            .client_in
            .extend_from_slice(&query(11, "USE system_auth"));
        bench
            .client_in
            .extend_from_slice(&query(12, "SELECT * FROM roles"));
        bench.settle();
        assert_eq!(queries_of(&bench, TARGET), ["USE system_auth"], "{mode}");
        assert_eq!(bench.client_answers().len(), 3);
    }
}

#[test]
fn compared_reads_go_to_both_and_their_differences_to_the_report() {
    let mut bench = Bench::ready(|c| c.read_mode = ReadMode::Compare);
    bench.answers = [
        Some(rows(&[(1, "a"), (2, "b")])),
        Some(rows(&[(2, "b"), (1, "changed")])),
    ];
    bench
        .client_in
        .extend_from_slice(&query(10, "SELECT k, v FROM ks.t"));
    bench.settle();
    assert_eq!(queries_of(&bench, TARGET).len(), 1);
    // The client has the primary's rows, untouched.
    let frames = bench.client_frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].body(), &rows(&[(1, "a"), (2, "b")]).1);

    let report = bench.proxy.divergences().snapshot();
    assert_eq!((report.compared, report.differing), (1, 1));
    let (name, counts) = report.tables.iter().next().unwrap();
    assert_eq!(name.qualified(), "ks.t");
    // Without the table's key (no control connection here), a changed row is one missing and
    // one extra row; the reordered equal row is not a difference.
    assert_eq!(counts.by_kind[&DivergenceKind::MissingRows], 1);
    assert_eq!(counts.by_kind[&DivergenceKind::ExtraRows], 1);
    let sample = &report.samples[0];
    assert_eq!(sample.primary, Upstream::Source);
    assert_eq!(sample.statement.as_deref(), Some("SELECT k, v FROM ks.t"));
    assert!(bench.events.iter().any(|e| matches!(
        e,
        Event::Compared {
            divergence: Some(_),
            ..
        }
    )));
    assert!(
        bench
            .events
            .iter()
            .any(|e| matches!(e, Event::OutcomesDiffer { write: false, .. }))
    );

    // The same rows in another order: equal (the query orders nothing).
    bench.answers = [
        Some(rows(&[(1, "a"), (2, "b")])),
        Some(rows(&[(2, "b"), (1, "a")])),
    ];
    bench
        .client_in
        .extend_from_slice(&query(11, "SELECT k, v FROM ks.t"));
    bench.settle();
    let report = bench.proxy.divergences().snapshot();
    assert_eq!((report.compared, report.differing), (2, 1));
}

#[test]
fn shadow_reads_stay_within_the_budget_and_never_hold_the_client() {
    let mut bench = Bench::ready(|c| {
        c.read_mode = ReadMode::Shadow;
        c.shadow_max_in_flight = 2;
    });
    bench.silent = [false, true];
    for stream in 10..15 {
        bench
            .client_in
            .extend_from_slice(&query(stream, "SELECT k, v FROM ks.t"));
    }
    bench.settle();
    assert_eq!(
        bench.client_answers().len(),
        5,
        "every read answered at once"
    );
    assert_eq!(
        queries_of(&bench, TARGET).len(),
        2,
        "two shadow reads at most in flight"
    );
    assert_eq!(bench.proxy.shadow().skipped(), 3);
    assert_eq!(bench.proxy.shadow().in_flight(), 2);

    // A fraction: one read in four is shadowed.
    let mut bench = Bench::ready(|c| {
        c.read_mode = ReadMode::Shadow;
        c.shadow_sample = 0.25;
    });
    for stream in 10..18 {
        bench
            .client_in
            .extend_from_slice(&query(stream, "SELECT k, v FROM ks.t"));
    }
    bench.settle();
    assert_eq!(queries_of(&bench, TARGET).len(), 2);
    assert_eq!(
        bench.proxy.shadow().in_flight(),
        0,
        "answered shadow reads leave the budget"
    );
}

#[test]
fn the_read_mode_and_the_primary_switch_at_run_time() {
    let mut bench = Bench::ready(|_| {});
    bench.answers = [Some(rows(&[(1, "source")])), Some(rows(&[(1, "target")]))];
    bench.proxy.set_primary(Upstream::Target);
    bench
        .client_in
        .extend_from_slice(&query(10, "SELECT k, v FROM ks.t"));
    bench.settle();
    assert_eq!(bench.client_frames()[0].body(), &rows(&[(1, "target")]).1);
    assert!(
        queries_of(&bench, SOURCE).is_empty(),
        "the source no longer sees reads"
    );

    bench.proxy.set_read_mode(ReadMode::Shadow);
    bench
        .client_in
        .extend_from_slice(&query(11, "SELECT k, v FROM ks.t"));
    bench.settle();
    assert_eq!(bench.client_frames()[0].body(), &rows(&[(1, "target")]).1);
    assert_eq!(
        queries_of(&bench, SOURCE).len(),
        1,
        "shadowed to the source"
    );
    let report = bench.proxy.divergences().snapshot();
    assert_eq!(report.samples[0].primary, Upstream::Target);
}

#[test]
fn filtered_tables_never_reach_the_target() {
    let mut bench =
        Bench::ready(|c| c.filter_tables = Some(TableFilter::new(r"ks\.audit.*").unwrap()));
    bench
        .client_in
        .extend_from_slice(&query(10, "INSERT INTO ks.audit_log (k) VALUES (1)"));
    bench
        .client_in
        .extend_from_slice(&query(11, "INSERT INTO ks.kept (k) VALUES (1)"));
    bench.client_in.extend_from_slice(&query(12, "USE ks"));
    bench
        .client_in
        .extend_from_slice(&query(13, "UPDATE audit_log SET v = 1 WHERE k = 1"));
    let statements = [
        BatchStatement {
            statement: Statement::Query("INSERT INTO ks.audit_log (k) VALUES (2)"),
            values: Values::positional(&[]),
        },
        BatchStatement {
            statement: Statement::Query("INSERT INTO kept (k) VALUES (2)"),
            values: Values::positional(&[]),
        },
    ];
    bench
        .client_in
        .extend_from_slice(&batch(14, BatchType::LOGGED, &statements));
    bench.settle();
    assert_eq!(bench.client_answers().len(), 5);
    assert_eq!(
        queries_of(&bench, TARGET),
        ["INSERT INTO ks.kept (k) VALUES (1)", "USE ks"]
    );
    assert_eq!(queries_of(&bench, SOURCE).len(), 4);
    let batches: Vec<_> = bench.received[TARGET]
        .iter()
        .filter(|e| e.opcode() == Opcode::BATCH)
        .collect();
    assert_eq!(batches.len(), 1);
    let sent = Batch::decode(batches[0].body(), VERSION).unwrap();
    let texts: Vec<_> = sent
        .statements
        .iter()
        .map(|s| match s.statement {
            Statement::Query(text) => text.to_owned(),
            Statement::Prepared(_) => String::new(),
        })
        .collect();
    assert_eq!(texts, ["INSERT INTO kept (k) VALUES (2)"]);
    assert!(
        sent.timestamp.is_some(),
        "the target's batch keeps the write time both share"
    );
    let source_batch = bench.received[SOURCE]
        .iter()
        .find(|e| e.opcode() == Opcode::BATCH)
        .unwrap();
    assert_eq!(
        Batch::decode(source_batch.body(), VERSION)
            .unwrap()
            .statements
            .len(),
        2
    );
    assert!(
        !bench
            .events
            .iter()
            .any(|e| matches!(e, Event::MissedWrite { .. }))
    );
}

#[test]
fn answers_too_large_to_compare_are_counted_not_compared() {
    let mut bench = Bench::ready(|c| c.read_mode = ReadMode::Compare);
    let big = "x".repeat(cqlmirror_core::divergence::MAX_COMPARED_BYTES + 1);
    bench.answers = [Some(rows(&[(1, &big)])), Some(rows(&[(1, "small")]))];
    bench
        .client_in
        .extend_from_slice(&query(10, "SELECT k, v FROM ks.t"));
    bench.settle();
    let frames = bench.client_frames();
    assert_eq!(frames.len(), 1);
    let failures: Vec<_> = bench
        .events
        .iter()
        .filter(|e| matches!(e, Event::Failure { .. }))
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        frames[0].body().len(),
        rows(&[(1, &big)]).1.len(),
        "{:?}: {:?}",
        frames[0].opcode(),
        String::from_utf8_lossy(&frames[0].body()[..frames[0].body().len().min(200)])
    );
    let report = bench.proxy.divergences().snapshot();
    assert_eq!((report.compared, report.too_large), (0, 1));
    assert_eq!(bench.session.in_flight(), 0, "the request retired");
}
