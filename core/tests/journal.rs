//! The journal's record encoding and segment recovery: round trips of arbitrary records,
//! arbitrary bytes never panicking, and recovery from every truncation point and from a bit
//! flipped anywhere in a segment.

use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::journal::segment::{self, HEADER_LEN, SegmentHeader};
use cqlmirror_core::journal::{
    BoundValue, Cause, HeaderError, Outcome, Record, ReplayAction, Statement, Tail, Values, Write,
    WriteKind,
};
use cqlmirror_core::message::batch::BatchType;
use cqlmirror_core::message::error::ErrorCode;
use cqlmirror_core::statement::tables::TableRef;
use cqlmirror_core::wire::Consistency;
use proptest::prelude::*;

fn bound_value() -> impl Strategy<Value = BoundValue> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24).prop_map(BoundValue::Bytes),
        Just(BoundValue::Null),
        Just(BoundValue::Unset),
    ]
}

fn values() -> impl Strategy<Value = Values> {
    prop_oneof![
        Just(Values::None),
        prop::collection::vec(bound_value(), 0..4).prop_map(Values::Positional),
        prop::collection::vec((".{0,8}", bound_value()), 0..4).prop_map(Values::Named),
    ]
}

fn statement() -> impl Strategy<Value = Statement> {
    (any::<bool>(), ".{0,40}", values()).prop_map(|(prepared, text, values)| Statement {
        prepared,
        text,
        values,
    })
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        statement().prop_map(Write::Single),
        (any::<u8>(), prop::collection::vec(statement(), 0..4)).prop_map(|(t, entries)| {
            Write::Batch {
                batch_type: BatchType(t),
                entries,
            }
        }),
    ]
}

fn cause() -> impl Strategy<Value = Cause> {
    prop_oneof![
        (any::<i32>(), ".{0,30}").prop_map(|(code, message)| Cause::Error {
            code: ErrorCode(code),
            message
        }),
        Just(Cause::Timeout),
        Just(Cause::Closed),
        Just(Cause::NotConnected),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    let head = (
        any::<i64>(),
        prop_oneof![Just(Upstream::Source), Just(Upstream::Target)],
        prop::sample::select(ProtocolVersion::ALL.to_vec()),
        proptest::option::of("[a-z_\"]{1,12}"),
        any::<u16>(),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(any::<i32>()),
    );
    let tail = (
        prop::sample::select(vec![
            WriteKind::Plain,
            WriteKind::OrderSensitive,
            WriteKind::Counter,
            WriteKind::Lwt,
        ]),
        prop_oneof![Just(Outcome::NotApplied), Just(Outcome::Unknown)],
        cause(),
        prop::collection::vec(
            (proptest::option::of("[a-z]{1,8}"), "[a-z]{1,8}")
                .prop_map(|(keyspace, table)| TableRef { keyspace, table }),
            0..3,
        ),
        write(),
    );
    (head, tail).prop_map(
        |(
            (wall_micros, cluster, version, keyspace, consistency, serial, timestamp, now),
            (kind, outcome, cause, tables, write),
        )| Record {
            wall_micros,
            cluster,
            version,
            keyspace,
            write,
            consistency: Consistency(consistency),
            serial_consistency: serial.map(Consistency),
            timestamp,
            now_in_seconds: now,
            kind,
            outcome,
            cause,
            tables,
        },
    )
}

/// A segment holding `records`, and where each frame ends.
fn segment_of(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let header = SegmentHeader {
        sequence: 7,
        created_micros: 1_700_000_000_000_000,
    };
    let mut bytes = header.encode().to_vec();
    let mut ends = Vec::new();
    for r in records {
        segment::put_frame(&mut bytes, &r.to_bytes()).expect("a small record fits a frame");
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn decoded(scan: &segment::Scan<'_>) -> Vec<Record> {
    scan.records
        .iter()
        .map(|(_, payload)| Record::decode(payload).expect("a valid frame holds a valid record"))
        .collect()
}

proptest! {
    #[test]
    fn record_round_trip(r in record()) {
        let bytes = r.to_bytes();
        prop_assert_eq!(Record::decode(&bytes), Ok(r));
    }

    #[test]
    fn record_decode_of_any_bytes_does_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Record::decode(&bytes);
    }

    /// A valid record cut short or extended is refused, never read as another record.
    #[test]
    fn record_cut_or_extended_is_refused(r in record(), cut in any::<prop::sample::Index>(), extra in any::<u8>()) {
        let bytes = r.to_bytes();
        let cut = cut.index(bytes.len());
        prop_assert!(Record::decode(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert!(Record::decode(&longer).is_err());
    }

    #[test]
    fn scan_of_any_bytes_does_not_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), keep_header in any::<bool>()) {
        let mut input = if keep_header {
            SegmentHeader { sequence: 1, created_micros: 0 }.encode().to_vec()
        } else {
            Vec::new()
        };
        input.extend_from_slice(&bytes);
        if let Ok(scan) = segment::scan(&input) {
            prop_assert!(scan.valid_len <= input.len());
        }
    }

    /// A bit flipped anywhere: the records before the damaged one come back, none after it,
    /// and a flip in the header is reported as a corrupt header.
    #[test]
    fn recovery_from_a_flipped_bit(records in prop::collection::vec(record(), 1..5), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (mut bytes, ends) = segment_of(&records);
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        match segment::scan(&bytes) {
            Ok(scan) => {
                prop_assert!(at >= HEADER_LEN, "a flipped header bit went unnoticed");
                // The damaged frame is the first whose end is past the flipped byte.
                let intact = ends.iter().take_while(|&&end| end <= at).count();
                prop_assert_eq!(decoded(&scan), records[..intact].to_vec());
                let valid_len = if intact == 0 { HEADER_LEN } else { ends[intact - 1] };
                prop_assert_eq!(scan.valid_len, valid_len);
                prop_assert_ne!(scan.tail, Tail::Clean);
            }
            Err(e) => {
                prop_assert!(at < HEADER_LEN, "a record's flipped bit failed the header: {e}");
                prop_assert!(matches!(e, HeaderError::Magic | HeaderError::Format { .. } | HeaderError::Checksum { .. }), "{e:?}");
            }
        }
    }
}

/// Every possible truncation point of a segment of several records: exactly the records
/// complete before the cut come back, and the length to truncate to is the end of the last.
#[test]
fn recovery_from_every_truncation_point() {
    let records: Vec<Record> = (0..4).map(sample).collect();
    let (bytes, ends) = segment_of(&records);
    for cut in 0..=bytes.len() {
        let part = &bytes[..cut];
        match segment::scan(part) {
            Ok(scan) => {
                assert!(cut >= HEADER_LEN, "cut {cut}: a torn header was accepted");
                let complete = ends.iter().take_while(|&&end| end <= cut).count();
                assert_eq!(decoded(&scan), records[..complete], "cut {cut}");
                let valid_len = if complete == 0 {
                    HEADER_LEN
                } else {
                    ends[complete - 1]
                };
                assert_eq!(scan.valid_len, valid_len, "cut {cut}");
                let expected_tail = if cut == valid_len {
                    Tail::Clean
                } else {
                    Tail::Torn
                };
                assert_eq!(scan.tail, expected_tail, "cut {cut}");
                assert_eq!(scan.header.sequence, 7);
            }
            Err(e) => {
                assert!(cut < HEADER_LEN, "cut {cut}: {e}");
                assert_eq!(e, HeaderError::Short { length: cut });
            }
        }
    }
}

#[test]
fn foreign_files_and_other_formats_are_named() {
    assert_eq!(
        segment::scan(b"hello, this is not a journal segment at all"),
        Err(HeaderError::Magic)
    );
    let mut header = SegmentHeader {
        sequence: 1,
        created_micros: 2,
    }
    .encode();
    header[9] = 2;
    assert!(matches!(
        segment::scan(&header),
        Err(HeaderError::Format { format: 2, .. })
    ));
    let mut r = sample(1).to_bytes();
    r[0] = 9;
    let e = Record::decode(&r).expect_err("format 9 is unknown");
    assert!(e.to_string().contains("journal record format"), "{e}");
}

/// A frame whose length was damaged to a huge value is corrupt, not a request to read
/// gigabytes.
#[test]
fn huge_length_is_corrupt() {
    let (mut bytes, _) = segment_of(&[sample(1)]);
    bytes[HEADER_LEN] = 0xff;
    let scan = segment::scan(&bytes).expect("the header is intact");
    assert!(scan.records.is_empty());
    assert!(matches!(
        scan.tail,
        Tail::Corrupt(segment::FrameFault::TooLong { .. })
    ));
}

#[test]
fn outcome_and_replay_action() {
    let error = |code| Cause::Error {
        code,
        message: String::new(),
    };
    assert_eq!(
        Outcome::of(&error(ErrorCode::UNAVAILABLE)),
        Outcome::NotApplied
    );
    assert_eq!(
        Outcome::of(&error(ErrorCode::OVERLOADED)),
        Outcome::NotApplied
    );
    assert_eq!(
        Outcome::of(&error(ErrorCode::WRITE_TIMEOUT)),
        Outcome::Unknown
    );
    assert_eq!(
        Outcome::of(&error(ErrorCode::WRITE_FAILURE)),
        Outcome::Unknown
    );
    assert_eq!(Outcome::of(&Cause::Timeout), Outcome::Unknown);
    assert_eq!(Outcome::of(&Cause::Closed), Outcome::Unknown);
    assert_eq!(Outcome::of(&Cause::NotConnected), Outcome::NotApplied);

    assert_eq!(WriteKind::of(true, true, true), WriteKind::Lwt);
    assert_eq!(WriteKind::of(false, true, true), WriteKind::Counter);
    assert_eq!(WriteKind::of(false, true, false), WriteKind::OrderSensitive);
    assert_eq!(WriteKind::of(false, false, false), WriteKind::Plain);

    let action = |kind, outcome| {
        Record {
            kind,
            outcome,
            ..sample(0)
        }
        .replay_action()
    };
    use ReplayAction::{Apply, ApplyAndCheckOrder, Report};
    for outcome in [Outcome::NotApplied, Outcome::Unknown] {
        assert_eq!(action(WriteKind::Plain, outcome), Apply);
        assert_eq!(action(WriteKind::Lwt, outcome), Report);
    }
    assert_eq!(action(WriteKind::Counter, Outcome::NotApplied), Apply);
    assert_eq!(
        action(WriteKind::OrderSensitive, Outcome::NotApplied),
        ApplyAndCheckOrder
    );
    for kind in [WriteKind::Counter, WriteKind::OrderSensitive] {
        assert_eq!(action(kind, Outcome::Unknown), Report);
    }
    assert!(Apply.applies() && ApplyAndCheckOrder.applies() && !Report.applies());
}

/// A record of each shape, `n` picking the shape.
fn sample(n: u8) -> Record {
    let statement = |text: &str, values| Statement {
        prepared: n % 2 == 1,
        text: text.to_owned(),
        values,
    };
    let write = match n % 3 {
        0 => Write::Single(statement(
            "INSERT INTO t (k, v) VALUES (?, ?)",
            Values::Positional(vec![BoundValue::Bytes(vec![0, 0, 0, 1]), BoundValue::Null]),
        )),
        1 => Write::Single(statement(
            "UPDATE t SET v = :v WHERE k = :k",
            Values::Named(vec![
                ("v".into(), BoundValue::Unset),
                ("k".into(), BoundValue::Bytes(vec![7])),
            ]),
        )),
        _ => Write::Batch {
            batch_type: BatchType::UNLOGGED,
            entries: vec![
                statement("DELETE FROM t WHERE k = 1", Values::None),
                statement("INSERT INTO t (k) VALUES (?)", Values::Positional(vec![])),
            ],
        },
    };
    Record {
        wall_micros: 1_700_000_000_000_000 + i64::from(n),
        cluster: Upstream::Target,
        version: ProtocolVersion::V4,
        keyspace: Some("ks".into()),
        write,
        consistency: Consistency::LOCAL_QUORUM,
        serial_consistency: None,
        timestamp: Some(1_700_000_000_000_000 + i64::from(n)),
        now_in_seconds: None,
        kind: WriteKind::Plain,
        outcome: Outcome::NotApplied,
        cause: Cause::Error {
            code: ErrorCode::UNAVAILABLE,
            message: "Cannot achieve consistency level LOCAL_QUORUM".into(),
        },
        tables: vec![TableRef {
            keyspace: Some("ks".into()),
            table: "t".into(),
        }],
    }
}

fn wire_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    // `None` is null; unset is left out so that the v3 encoding (which has none) holds too.
    proptest::option::of(prop::collection::vec(any::<u8>(), 0..12))
}

fn as_value(v: &Option<Vec<u8>>) -> cqlmirror_core::wire::Value<'_> {
    match v {
        Some(b) => cqlmirror_core::wire::Value::Bytes(b),
        None => cqlmirror_core::wire::Value::Null,
    }
}

proptest! {
    /// A QUERY kept in a record comes back as the very same request body.
    #[test]
    fn a_query_record_gives_back_the_same_request(
        version in prop::sample::select(ProtocolVersion::ALL.to_vec()),
        text in ".{0,40}",
        values in proptest::option::of(prop::collection::vec(wire_value(), 0..4)),
        names in any::<bool>(),
        consistency in any::<u16>(),
        serial in proptest::option::of(any::<u16>()),
        timestamp in proptest::option::of(any::<i64>()),
        keyspace in proptest::option::of("[a-z]{1,8}"),
        now in proptest::option::of(any::<i32>()),
    ) {
        use cqlmirror_core::message::{Body, Query, QueryParams};
        use cqlmirror_core::message::params::Values as WireValues;
        let v5 = version == ProtocolVersion::V5;
        let positional: Vec<_> = values.iter().flatten().map(as_value).collect();
        let named_names: Vec<String> = (0..positional.len()).map(|i| format!("m{i}")).collect();
        let named: Vec<_> = named_names.iter().map(String::as_str).zip(positional.iter().copied()).collect();
        let wire_values = values.as_ref().map(|_| if names { WireValues::named(&named) } else { WireValues::positional(&positional) });
        let query = Query {
            text: &text,
            params: QueryParams {
                values: wire_values,
                serial_consistency: serial.map(Consistency),
                timestamp,
                keyspace: keyspace.as_deref().filter(|_| v5),
                now_in_seconds: now.filter(|_| v5),
                ..QueryParams::new(Consistency(consistency))
            },
        };
        let mut body = bytes::BytesMut::new();
        query.encode(version, &mut body);
        let decoded = Query::decode(&body, version).expect("decodes");
        let record = Record {
            version,
            keyspace: decoded.params.keyspace.map(str::to_owned),
            write: Write::Single(Statement::query(&decoded)),
            consistency: decoded.params.consistency,
            serial_consistency: decoded.params.serial_consistency,
            timestamp: decoded.params.timestamp,
            now_in_seconds: decoded.params.now_in_seconds,
            ..sample(0)
        };
        // Through the journal's encoding too.
        let record = Record::decode(&record.to_bytes()).expect("round trip");
        let (opcode, request) = record.request(version);
        prop_assert_eq!(opcode, cqlmirror_core::frame::Opcode::QUERY);
        prop_assert_eq!(&request[..], &body[..]);
    }
}

/// A BATCH with prepared statements is kept with their texts and replayed as text statements
/// with the same values, type, consistency and timestamp.
#[test]
fn a_batch_record_gives_back_its_statements_as_text() {
    use cqlmirror_core::message::batch::{BatchStatement, Statement as Entry, Statements};
    use cqlmirror_core::message::params::Values as WireValues;
    use cqlmirror_core::message::{Batch, Body};
    use cqlmirror_core::wire::Value;
    let one = [Value::Bytes(b"\x00\x00\x00\x01"), Value::Null];
    let none: [Value<'_>; 0] = [];
    let entries = [
        BatchStatement {
            statement: Entry::Prepared(b"id-1"),
            values: WireValues::positional(&one),
        },
        BatchStatement {
            statement: Entry::Query("DELETE FROM ks.t WHERE k = 2"),
            values: WireValues::positional(&none),
        },
    ];
    let batch = Batch {
        batch_type: BatchType::UNLOGGED,
        statements: Statements::new(&entries),
        consistency: Consistency::QUORUM,
        serial_consistency: Some(Consistency::LOCAL_SERIAL),
        timestamp: Some(1_700_000_000_123_456),
        keyspace: None,
        now_in_seconds: None,
    };
    let mut body = bytes::BytesMut::new();
    batch.encode(ProtocolVersion::V4, &mut body);
    let decoded = Batch::decode(&body, ProtocolVersion::V4).expect("decodes");

    assert_eq!(
        Write::batch(&decoded, |_| None),
        Err(&b"id-1"[..]),
        "an unknown prepared id is named"
    );
    let write = Write::batch(&decoded, |id| {
        (id == b"id-1").then(|| "INSERT INTO ks.t (k, v) VALUES (?, ?)".to_owned())
    })
    .expect("every id known");
    let record = Record {
        write,
        consistency: decoded.consistency,
        serial_consistency: decoded.serial_consistency,
        timestamp: decoded.timestamp,
        // With v4 the keyspace is the connection's (`USE`), never in the request.
        keyspace: Some("ks".into()),
        ..sample(0)
    };
    let (opcode, request) = record.request(ProtocolVersion::V4);
    assert_eq!(opcode, cqlmirror_core::frame::Opcode::BATCH);
    let replayed = Batch::decode(&request, ProtocolVersion::V4).expect("decodes");
    let expected = [
        BatchStatement {
            statement: Entry::Query("INSERT INTO ks.t (k, v) VALUES (?, ?)"),
            values: WireValues::positional(&one),
        },
        entries[1],
    ];
    assert_eq!(
        replayed,
        Batch {
            statements: Statements::new(&expected),
            ..batch
        }
    );
}
