//! Comparisons of answers built with the crate's own encoders.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::message::{
    Body, ColumnType, Columns, ErrorCode, ErrorDetails, ErrorMessage, RowsMetadata, RowsWriter,
    TableSpec,
};
use crate::wire::Consistency;

const V: ProtocolVersion = ProtocolVersion::V4;
const TABLE: TableSpec<'static> = TableSpec {
    keyspace: "ks",
    table: "t",
};

/// A row to encode: its cells, `None` for a null.
type RowCells = Vec<Option<Vec<u8>>>;

fn int(v: i32) -> Option<Vec<u8>> {
    Some(v.to_be_bytes().to_vec())
}

fn text(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

/// A row of the table `(k int, c int, v text, PRIMARY KEY (k, c))`.
fn kcv(k: i32, c: i32, v: &str) -> RowCells {
    vec![int(k), int(c), text(v)]
}

fn kcv_columns() -> Vec<(&'static str, ColumnType<'static>)> {
    vec![
        ("k", ColumnType::Int),
        ("c", ColumnType::Int),
        ("v", ColumnType::Varchar),
    ]
}

fn kcv_key() -> TableKey {
    TableKey {
        partition: vec!["k".to_owned()],
        clustering: vec!["c".to_owned()],
    }
}

fn body_with(metadata: &RowsMetadata<'_>, rows: &[RowCells]) -> Bytes {
    RowsWriter::body_of(metadata, rows).expect("row fits the columns")
}

fn body(columns: &[(&str, ColumnType<'_>)], rows: &[RowCells]) -> Bytes {
    body_with(&RowsMetadata::new(Columns::in_table(TABLE, columns)), rows)
}

fn kcv_body(rows: &[RowCells]) -> Bytes {
    body(&kcv_columns(), rows)
}

fn result(message: &[u8]) -> Side<'_> {
    Side {
        opcode: Opcode::RESULT,
        message,
    }
}

/// An ERROR body; read timeouts and unavailable errors get their extra fields.
fn error_body(code: ErrorCode, message: &str) -> Bytes {
    let consistency = Consistency(0x0004);
    let details = match code {
        ErrorCode::READ_TIMEOUT => ErrorDetails::ReadTimeout {
            consistency,
            received: 1,
            block_for: 2,
            data_present: false,
        },
        ErrorCode::UNAVAILABLE => ErrorDetails::Unavailable {
            consistency,
            required: 2,
            alive: 1,
        },
        _ => ErrorDetails::None,
    };
    ErrorMessage {
        details,
        ..ErrorMessage::new(code, message)
    }
    .to_bytes(V)
}

fn error(message: &[u8]) -> Side<'_> {
    Side {
        opcode: Opcode::ERROR,
        message,
    }
}

fn keyed(key: &TableKey) -> Context<'_> {
    Context {
        key: Some(key),
        ..Context::new(V)
    }
}

fn counts(f: impl FnOnce(&mut Counts)) -> Counts {
    let mut c = Counts::default();
    f(&mut c);
    c
}

fn column(name: &str, primary: Option<&str>, secondary: Option<&str>) -> ColumnDifference {
    ColumnDifference {
        name: name.to_owned(),
        primary: primary.map(str::to_owned),
        secondary: secondary.map(str::to_owned),
    }
}

fn key_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn equal_results_are_equal() {
    let key = kcv_key();
    let a = kcv_body(&[kcv(1, 1, "a"), kcv(1, 2, "b"), kcv(2, 1, "c")]);
    let b = a.clone();
    for context in [Context::new(V), keyed(&key)] {
        let c = compare(result(&a), result(&b), &context);
        assert!(c.is_equal(), "{c:?}");
        assert_eq!(c.table, Some(("ks".to_owned(), "t".to_owned())));
        assert!(c.notes.is_empty() && c.samples.is_empty());
    }
}

#[test]
fn a_missing_row_is_described_by_key() {
    let key = kcv_key();
    let a = kcv_body(&[kcv(1, 1, "a"), kcv(1, 2, "b"), kcv(2, 1, "c")]);
    let b = kcv_body(&[kcv(1, 1, "a"), kcv(2, 1, "c")]);
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.missing_rows = 1));
    assert_eq!(
        c.samples,
        vec![RowDifference {
            kind: DivergenceKind::MissingRows,
            key: key_of(&[("k", "1"), ("c", "2")]),
            columns: vec![column("v", Some("b"), None)],
        }]
    );
}

#[test]
fn an_extra_row_is_described_by_key() {
    let key = kcv_key();
    let a = kcv_body(&[kcv(1, 1, "a")]);
    let b = kcv_body(&[kcv(1, 1, "a"), kcv(3, 0, "z")]);
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.extra_rows = 1));
    assert_eq!(
        c.samples,
        vec![RowDifference {
            kind: DivergenceKind::ExtraRows,
            key: key_of(&[("k", "3"), ("c", "0")]),
            columns: vec![column("v", None, Some("z"))],
        }]
    );
}

#[test]
fn a_changed_value_lists_only_that_column() {
    let key = kcv_key();
    let a = kcv_body(&[kcv(1, 1, "a"), kcv(1, 2, "old")]);
    let b = kcv_body(&[kcv(1, 1, "a"), kcv(1, 2, "new")]);
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.different_rows = 1));
    assert_eq!(
        c.samples,
        vec![RowDifference {
            kind: DivergenceKind::DifferentValues,
            key: key_of(&[("k", "1"), ("c", "2")]),
            columns: vec![column("v", Some("old"), Some("new"))],
        }]
    );
    // Without a key the changed row is one missing and one extra row.
    let c = compare(result(&a), result(&b), &Context::new(V));
    assert_eq!(
        c.counts,
        counts(|c| {
            c.missing_rows = 1;
            c.extra_rows = 1;
        })
    );
    assert!(c.samples.iter().all(|s| s.key.is_empty()));
    assert_eq!(c.samples.len(), 2);
}

#[test]
fn a_null_against_a_value_is_a_difference() {
    let key = kcv_key();
    let a = kcv_body(&[kcv(1, 1, "a")]);
    let b = kcv_body(&[vec![int(1), int(1), None]]);
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.different_rows = 1));
    assert_eq!(c.samples[0].columns, vec![column("v", Some("a"), None)]);
}

#[test]
fn an_error_on_one_side_is_an_error_divergence() {
    let rows = kcv_body(&[kcv(1, 1, "a")]);
    let err = error_body(ErrorCode::READ_TIMEOUT, "Operation timed out");
    let c = compare(error(&err), result(&rows), &Context::new(V));
    assert_eq!(c.counts, counts(|c| c.error = 1));
    assert_eq!(c.table, Some(("ks".to_owned(), "t".to_owned())));
    assert_eq!(
        c.samples,
        vec![RowDifference {
            kind: DivergenceKind::Error,
            key: Vec::new(),
            columns: vec![column(
                "error",
                Some("READ_TIMEOUT (0x1200): Operation timed out"),
                None
            )],
        }]
    );
    assert!(
        c.notes.iter().any(|n| n.contains("ERROR READ_TIMEOUT")),
        "{c:?}"
    );

    let c = compare(result(&rows), error(&err), &Context::new(V));
    assert_eq!(c.counts, counts(|c| c.error = 1));
    assert_eq!(c.samples[0].columns[0].primary, None);
    assert!(c.samples[0].columns[0].secondary.is_some());
}

#[test]
fn the_same_error_code_on_both_sides_is_equal() {
    let a = error_body(ErrorCode::INVALID, "unconfigured table t");
    let b = error_body(ErrorCode::INVALID, "unconfigured table t (another node)");
    let c = compare(error(&a), error(&b), &Context::new(V));
    assert!(c.is_equal(), "{c:?}");
    assert!(c.samples.is_empty());
}

#[test]
fn different_error_codes_are_an_error_divergence() {
    let a = error_body(ErrorCode::READ_TIMEOUT, "timed out");
    let b = error_body(ErrorCode::UNAVAILABLE, "not enough replicas");
    let c = compare(error(&a), error(&b), &Context::new(V));
    assert_eq!(c.counts, counts(|c| c.error = 1));
    assert!(
        c.notes[0].starts_with("both answered ERROR"),
        "{:?}",
        c.notes
    );
    let sample = &c.samples[0].columns[0];
    assert!(
        sample
            .primary
            .as_deref()
            .is_some_and(|t| t.starts_with("READ_TIMEOUT"))
    );
    assert!(
        sample
            .secondary
            .as_deref()
            .is_some_and(|t| t.starts_with("UNAVAILABLE"))
    );
}

#[test]
fn error_messages_are_cut() {
    let a = error_body(ErrorCode::SERVER_ERROR, &"x".repeat(500));
    let rows = kcv_body(&[]);
    let context = Context {
        max_value_len: 20,
        ..Context::new(V)
    };
    let c = compare(error(&a), result(&rows), &context);
    let text = c.samples[0].columns[0].primary.clone().unwrap_or_default();
    assert_eq!(text.chars().count(), 20);
    assert!(text.ends_with('…'));
}

#[test]
fn different_columns_are_not_compared_row_by_row() {
    let key = kcv_key();
    let a = kcv_body(&[kcv(1, 1, "a")]);
    // A type changed.
    let b = body(
        &[
            ("k", ColumnType::Int),
            ("c", ColumnType::Int),
            ("v", ColumnType::Blob),
        ],
        &[kcv(1, 1, "a")],
    );
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.columns = 1));
    assert!(c.notes[0].contains("column 3"), "{:?}", c.notes);
    // A name changed.
    let b = body(
        &[
            ("k", ColumnType::Int),
            ("c", ColumnType::Int),
            ("w", ColumnType::Varchar),
        ],
        &[kcv(1, 1, "zzz")],
    );
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.columns = 1));
    assert!(c.samples.is_empty());
    // A column more.
    let b = body(&[("k", ColumnType::Int)], &[vec![int(1)]]);
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.columns = 1));
    assert!(c.notes[0].contains("3 columns"), "{:?}", c.notes);
}

#[test]
fn different_result_kinds_are_a_columns_divergence() {
    let rows = kcv_body(&[kcv(1, 1, "a")]);
    let void = crate::message::ResultMessage::Void.to_bytes(V);
    let c = compare(result(&rows), result(&void), &Context::new(V));
    assert_eq!(c.counts, counts(|c| c.columns = 1));
    assert!(
        c.notes[0].contains("Rows") && c.notes[0].contains("Void"),
        "{:?}",
        c.notes
    );
    let c = compare(result(&void), result(&void), &Context::new(V));
    assert!(c.is_equal());
}

#[test]
fn rows_without_metadata_use_the_prepared_columns() {
    let key = kcv_key();
    let skipped = RowsMetadata::new(Columns::Skipped { count: 3 });
    let a = body_with(&skipped, &[kcv(1, 1, "a"), kcv(1, 2, "b")]);
    let b = body_with(&skipped, &[kcv(1, 1, "a"), kcv(1, 2, "B")]);
    let prepared = Columns::in_table(TABLE, &kcv_columns());
    let specs = prepared.specs().unwrap_or(&[]);
    let context = Context {
        columns: Some(specs),
        ..keyed(&key)
    };
    let c = compare(result(&a), result(&b), &context);
    assert_eq!(c.counts, counts(|c| c.different_rows = 1));
    assert_eq!(
        c.samples[0],
        RowDifference {
            kind: DivergenceKind::DifferentValues,
            key: key_of(&[("k", "1"), ("c", "2")]),
            columns: vec![column("v", Some("b"), Some("B"))],
        }
    );

    // Without the prepared columns: numbered columns, hex values, no key.
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(
        c.counts,
        counts(|c| {
            c.missing_rows = 1;
            c.extra_rows = 1;
        })
    );
    assert_eq!(c.table, None);
    let missing = c
        .samples
        .iter()
        .find(|s| s.kind == DivergenceKind::MissingRows)
        .map(|s| s.columns.clone());
    assert_eq!(
        missing,
        Some(vec![
            column("column 1", Some("0x00000001"), None),
            column("column 2", Some("0x00000002"), None),
            column("column 3", Some("0x62"), None),
        ])
    );
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("without column metadata"))
    );
}

#[test]
fn a_ttl_may_differ_by_one_second() {
    let columns = [
        ("k", ColumnType::Int),
        ("c", ColumnType::Int),
        ("ttl(v)", ColumnType::Int),
    ];
    let key = kcv_key();
    let a = body(&columns, &[vec![int(1), int(1), int(100)]]);
    let close = body(&columns, &[vec![int(1), int(1), int(101)]]);
    let far = body(&columns, &[vec![int(1), int(1), int(102)]]);
    for context in [Context::new(V), keyed(&key)] {
        assert!(compare(result(&a), result(&close), &context).is_equal());
        assert!(!compare(result(&a), result(&far), &context).is_equal());
    }
    let c = compare(result(&a), result(&far), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.different_rows = 1));
    assert_eq!(
        c.samples[0].columns,
        vec![column("ttl(v)", Some("100"), Some("102"))]
    );
    // Without a key, rows still pair across a one-second TTL when they are not in step.
    let a = body(
        &columns,
        &[
            vec![int(1), int(1), int(100)],
            vec![int(2), int(1), int(50)],
        ],
    );
    let b = body(
        &columns,
        &[
            vec![int(2), int(1), int(49)],
            vec![int(1), int(1), int(101)],
        ],
    );
    assert!(compare(result(&a), result(&b), &Context::new(V)).is_equal());
}

fn paged(rows: &[RowCells], state: Option<&'static [u8]>) -> Bytes {
    let metadata = RowsMetadata {
        paging_state: state,
        ..RowsMetadata::new(Columns::in_table(TABLE, &kcv_columns()))
    };
    body_with(&metadata, rows)
}

#[test]
fn paging_states_are_ignored_but_more_pages_on_one_side_is_noted() {
    let rows = [kcv(1, 1, "a"), kcv(1, 2, "b")];
    let a = paged(&rows, Some(b"primary-state"));
    let b = paged(&rows, Some(b"secondary-state"));
    let c = compare(result(&a), result(&b), &Context::new(V));
    assert!(c.is_equal() && c.notes.is_empty(), "{c:?}");

    let b = paged(&rows, None);
    let c = compare(result(&a), result(&b), &Context::new(V));
    assert!(c.is_equal());
    assert_eq!(
        c.notes,
        vec!["the primary has more pages and the secondary does not".to_owned()]
    );
    let c = compare(result(&b), result(&a), &Context::new(V));
    assert_eq!(
        c.notes,
        vec!["the secondary has more pages and the primary does not".to_owned()]
    );
}

#[test]
fn pages_of_different_lengths_are_compared_as_far_as_the_shorter() {
    let a = paged(
        &[kcv(1, 1, "a"), kcv(1, 2, "b"), kcv(1, 3, "c")],
        Some(b"s"),
    );
    let b = paged(&[kcv(1, 1, "a"), kcv(1, 2, "b")], Some(b"s"));
    let c = compare(result(&a), result(&b), &Context::new(V));
    assert!(c.is_equal(), "{c:?}");
    assert!(
        c.notes[0].starts_with(
            "the pages hold different numbers of rows (3 and 2): the sides page differently"
        ),
        "{:?}",
        c.notes
    );
    let b = paged(&[kcv(1, 1, "a"), kcv(1, 2, "x")], Some(b"s"));
    let c = compare(result(&a), result(&b), &keyed(&kcv_key()));
    assert_eq!(c.counts, counts(|c| c.different_rows = 1));
}

#[test]
fn an_ordered_query_must_keep_its_order() {
    let a = kcv_body(&[kcv(1, 1, "a"), kcv(2, 1, "b"), kcv(3, 1, "c")]);
    let b = kcv_body(&[kcv(1, 1, "a"), kcv(3, 1, "c"), kcv(2, 1, "b")]);
    let key = kcv_key();
    for key in [None, Some(&key)] {
        let context = Context {
            ordered: true,
            key,
            ..Context::new(V)
        };
        let c = compare(result(&a), result(&b), &context);
        assert_eq!(c.counts, counts(|c| c.order = 1), "{c:?}");
    }
    // Without ORDER BY and without a key, the order is not defined.
    assert!(compare(result(&a), result(&b), &Context::new(V)).is_equal());
}

#[test]
fn without_order_by_partitions_may_move_but_rows_of_a_partition_may_not() {
    let key = kcv_key();
    let a = kcv_body(&[
        kcv(1, 1, "a"),
        kcv(1, 2, "b"),
        kcv(2, 1, "c"),
        kcv(2, 2, "d"),
    ]);
    let partitions_swapped = kcv_body(&[
        kcv(2, 1, "c"),
        kcv(2, 2, "d"),
        kcv(1, 1, "a"),
        kcv(1, 2, "b"),
    ]);
    let c = compare(result(&a), result(&partitions_swapped), &keyed(&key));
    assert!(c.is_equal(), "{c:?}");

    let rows_swapped = kcv_body(&[
        kcv(1, 2, "b"),
        kcv(1, 1, "a"),
        kcv(2, 1, "c"),
        kcv(2, 2, "d"),
    ]);
    let c = compare(result(&a), result(&rows_swapped), &keyed(&key));
    assert_eq!(c.counts, counts(|c| c.order = 1), "{c:?}");
    assert!(c.notes.iter().any(|n| n.contains("partition")));
}

#[test]
fn without_a_key_rows_are_a_multiset() {
    let a = kcv_body(&[kcv(1, 1, "a"), kcv(1, 1, "a"), kcv(2, 2, "b")]);
    let b = kcv_body(&[kcv(2, 2, "b"), kcv(1, 1, "a"), kcv(2, 2, "b")]);
    let c = compare(result(&a), result(&b), &Context::new(V));
    assert_eq!(
        c.counts,
        counts(|c| {
            c.missing_rows = 1;
            c.extra_rows = 1;
        })
    );
    let kinds: Vec<_> = c.samples.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![DivergenceKind::MissingRows, DivergenceKind::ExtraRows]
    );
    let shuffled = kcv_body(&[kcv(2, 2, "b"), kcv(1, 1, "a"), kcv(1, 1, "a")]);
    assert!(compare(result(&a), result(&shuffled), &Context::new(V)).is_equal());
}

#[test]
fn a_key_that_is_not_unique_falls_back_to_the_multiset() {
    // Clustering column not selected: several rows per partition key.
    let columns = [("k", ColumnType::Int), ("v", ColumnType::Varchar)];
    let key = kcv_key();
    let a = body(
        &columns,
        &[vec![int(1), text("a")], vec![int(1), text("b")]],
    );
    let b = body(
        &columns,
        &[vec![int(1), text("a")], vec![int(1), text("c")]],
    );
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(
        c.counts,
        counts(|c| {
            c.missing_rows = 1;
            c.extra_rows = 1;
        })
    );
    assert!(c.samples.iter().all(|s| s.key.is_empty()));
    // A partition key column not selected: no key at all.
    let columns = [("c", ColumnType::Int), ("v", ColumnType::Varchar)];
    let a = body(&columns, &[vec![int(1), text("a")]]);
    let b = body(&columns, &[vec![int(1), text("b")]]);
    let c = compare(result(&a), result(&b), &keyed(&key));
    assert_eq!(c.counts.missing_rows, 1);
    assert_eq!(c.counts.different_rows, 0);
}

#[test]
fn counts_are_complete_and_samples_capped() {
    let key = kcv_key();
    let a = kcv_body(&(0..50).map(|i| kcv(i, 0, "x")).collect::<Vec<_>>());
    let b = kcv_body(&[]);
    let context = Context {
        max_samples: 3,
        ..keyed(&key)
    };
    let c = compare(result(&a), result(&b), &context);
    assert_eq!(c.counts, counts(|c| c.missing_rows = 50));
    assert_eq!(c.samples.len(), 3);
    let context = Context {
        max_samples: 0,
        ..context
    };
    assert!(compare(result(&a), result(&b), &context).samples.is_empty());
}

#[test]
fn malformed_bodies_are_divergences_naming_the_side() {
    let rows = kcv_body(&[kcv(1, 1, "a")]);
    let garbage = [0u8, 0, 0, 2, 0xff];
    let c = compare(result(&garbage), result(&rows), &Context::new(V));
    assert_eq!(c.counts, counts(|c| c.columns = 1));
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("primary's RESULT is malformed")),
        "{c:?}"
    );

    let c = compare(result(&rows), error(&garbage), &Context::new(V));
    assert_eq!(c.counts, counts(|c| c.error = 1));
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("secondary's ERROR is malformed")),
        "{c:?}"
    );

    // Rows whose content does not hold the announced cells.
    let mut bad = rows.to_vec();
    let last = bad.len() - 1;
    bad[last - 3] = 0x7f;
    let c = compare(result(&rows), result(&bad), &Context::new(V));
    assert_eq!(c.counts, counts(|c| c.columns = 1), "{c:?}");

    // The same unreadable bytes on both sides say the same thing.
    let c = compare(result(&garbage), result(&garbage), &Context::new(V));
    assert!(c.is_equal());
}

#[test]
fn messages_that_answer_no_read_are_a_columns_divergence() {
    let rows = kcv_body(&[]);
    let ready = Side {
        opcode: Opcode::READY,
        message: &[],
    };
    let c = compare(ready, result(&rows), &Context::new(V));
    assert_eq!(c.counts, counts(|c| c.columns = 1));
}

#[test]
fn divergence_kinds_have_labels_and_counts() {
    let labels: Vec<_> = DivergenceKind::ALL.iter().map(|k| k.label()).collect();
    assert_eq!(
        labels,
        [
            "missing_rows",
            "extra_rows",
            "different_values",
            "error",
            "order",
            "columns"
        ]
    );
    let c = counts(|c| c.different_rows = 4);
    assert_eq!(c.get(DivergenceKind::DifferentValues), 4);
    assert!(!c.is_empty());
    assert!(Counts::default().is_empty());
}

// Random results: a few columns of a few types, cells of arbitrary bytes (not always valid
// for their type, which rendering must survive).

fn column_type() -> impl Strategy<Value = ColumnType<'static>> {
    prop_oneof![
        Just(ColumnType::Int),
        Just(ColumnType::Varchar),
        Just(ColumnType::Blob),
        Just(ColumnType::Timestamp),
        Just(ColumnType::Uuid),
    ]
}

fn cell() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..6))
}

/// Column types and rows of a random result.
fn random_result() -> impl Strategy<Value = (Vec<ColumnType<'static>>, Vec<RowCells>)> {
    prop::collection::vec(column_type(), 1..5).prop_flat_map(|types| {
        let width = types.len();
        let rows = prop::collection::vec(prop::collection::vec(cell(), width), 0..12);
        (Just(types), rows)
    })
}

const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

/// Columns named `k` (when keyed) then `a`, `b`, ...
fn named(types: &[ColumnType<'static>], keyed: bool) -> Vec<(&'static str, ColumnType<'static>)> {
    let mut columns = Vec::new();
    if keyed {
        columns.push(("k", ColumnType::Int));
    }
    columns.extend(NAMES.iter().copied().zip(types.iter().cloned()));
    columns
}

proptest! {
    #[test]
    fn a_reordered_copy_is_equal_when_order_is_not_defined(
        (types, rows, shuffled) in random_result().prop_flat_map(|(types, rows)| {
            let shuffled = Just(rows.clone()).prop_shuffle();
            (Just(types), Just(rows), shuffled)
        })
    ) {
        let columns = named(&types, false);
        let a = body(&columns, &rows);
        let b = body(&columns, &shuffled);
        let c = compare(result(&a), result(&b), &Context::new(V));
        prop_assert!(c.is_equal(), "{:?}", c);
        prop_assert!(c.samples.is_empty());
    }

    #[test]
    fn any_changed_cell_is_found(
        (types, rows) in random_result().prop_filter("has rows", |(_, rows)| !rows.is_empty()),
        row_pick in any::<prop::sample::Index>(),
        column_pick in any::<prop::sample::Index>(),
        replacement in cell(),
        with_key in any::<bool>(),
    ) {
        let columns = named(&types, with_key);
        // With a key, each row gets a unique `k` first.
        let rows: Vec<RowCells> = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let mut cells = Vec::new();
                if with_key {
                    cells.push(int(i32::try_from(i).unwrap_or(i32::MAX)));
                }
                cells.extend(row);
                cells
            })
            .collect();
        let r = row_pick.index(rows.len());
        let col = column_pick.index(columns.len());
        let mut changed = rows.clone();
        let old = changed[r][col].clone();
        let new = if replacement == old {
            // Something else than the old value.
            match old {
                Some(mut v) => { v.push(0); Some(v) }
                None => Some(Vec::new()),
            }
        } else {
            replacement
        };
        changed[r][col] = new;
        let key = TableKey { partition: vec!["k".to_owned()], clustering: Vec::new() };
        let context = if with_key { keyed(&key) } else { Context::new(V) };
        let a = body(&columns, &rows);
        let b = body(&columns, &changed);
        let c = compare(result(&a), result(&b), &context);
        prop_assert!(!c.counts.is_empty(), "{:?}", c);
        let c = compare(result(&b), result(&a), &context);
        prop_assert!(!c.counts.is_empty(), "{:?}", c);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        opcodes in (0u8..3, 0u8..3, any::<u8>()),
        primary in prop::collection::vec(any::<u8>(), 0..128),
        secondary in prop::collection::vec(any::<u8>(), 0..128),
        ordered in any::<bool>(),
        with_key in any::<bool>(),
        with_columns in any::<bool>(),
        max_samples in 0usize..4,
        max_value_len in 0usize..12,
    ) {
        let opcode = |pick: u8| match pick {
            0 => Opcode::ERROR,
            1 => Opcode::RESULT,
            _ => Opcode(opcodes.2),
        };
        let key = kcv_key();
        let prepared = Columns::in_table(TABLE, &kcv_columns());
        let context = Context {
            version: V,
            columns: prepared.specs().filter(|_| with_columns),
            key: Some(&key).filter(|_| with_key),
            ordered,
            max_samples,
            max_value_len,
        };
        let p = Side { opcode: opcode(opcodes.0), message: &primary };
        let s = Side { opcode: opcode(opcodes.1), message: &secondary };
        let c = compare(p, s, &context);
        prop_assert!(c.samples.len() <= max_samples);
    }

    #[test]
    fn damaged_rows_never_panic(
        (types, rows) in random_result(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        version in prop::sample::select(ProtocolVersion::ALL.to_vec()),
    ) {
        let columns = named(&types, false);
        let a = body(&columns, &rows);
        let mut b = a.to_vec();
        for (at, byte) in damage {
            let i = at.index(b.len());
            b[i] = byte;
        }
        if truncate {
            b.truncate(cut.index(b.len() + 1));
        }
        let key = TableKey { partition: vec!["a".to_owned()], clustering: vec!["b".to_owned()] };
        let context = Context { key: Some(&key), ordered: true, ..Context::new(version) };
        let c = compare(result(&a), result(&b), &context);
        prop_assert!(c.samples.len() <= context.max_samples);
        let c = compare(result(&b), result(&a), &context);
        prop_assert!(c.samples.len() <= context.max_samples);
    }
}
