//! Hand-written cases: byte layouts checked against the spec text, the proxy's own errors,
//! secrets in `Debug`, and the limits that protect the proxy from hostile input.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use cqlmirror_core::error::DecodeErrorKind;
use cqlmirror_core::frame::ProtocolVersion::{self, V3, V4, V5};
use cqlmirror_core::message::error::{ErrorCode, ErrorDetails, ErrorMessage};
use cqlmirror_core::message::startup::keys;
use cqlmirror_core::message::*;
use cqlmirror_core::wire::{Consistency, Reader, Value};

#[test]
fn version_refusal_wording() {
    let all = ErrorMessage::version_refusal(0x42, &ProtocolVersion::ALL);
    assert_eq!(all.code, ErrorCode::PROTOCOL_ERROR);
    assert_eq!(
        all.message,
        "Invalid or unsupported protocol version (66); supported versions are (3/v3,4/v4,5/v5)"
    );
    let some = ErrorMessage::version_refusal(5, &[V3, V4]);
    assert_eq!(
        some.message,
        "Invalid or unsupported protocol version (5); supported versions are (3/v3,4/v4)"
    );
    let body = some.to_bytes(V4);
    assert_eq!(&body[..4], &[0, 0, 0, 0x0a]);
    assert_eq!(
        usize::from(u16::from_be_bytes([body[4], body[5]])),
        some.message.len()
    );
    assert_eq!(&body[6..], some.message.as_bytes());
}

#[test]
fn proxy_errors() {
    assert_eq!(
        ErrorMessage::overloaded("too many requests").code,
        ErrorCode::OVERLOADED
    );
    assert_eq!(
        ErrorMessage::server_error("bug").code,
        ErrorCode::SERVER_ERROR
    );
    assert_eq!(
        ErrorMessage::protocol_error("bad").code,
        ErrorCode::PROTOCOL_ERROR
    );
    let id = [0xca, 0xfe];
    let unprepared = ErrorMessage::unprepared(&id);
    assert!(unprepared.message.contains("0xcafe"));
    let body = unprepared.to_bytes(V5);
    assert!(body.ends_with(&[0x00, 0x02, 0xca, 0xfe]));
    let back = ErrorMessage::decode(&body, V5).unwrap();
    assert_eq!(back.code, ErrorCode::UNPREPARED);
    assert_eq!(back.details, ErrorDetails::Unprepared { id: &id });
    assert_eq!(format!("{:?}", ErrorCode(0x1300)), "READ_FAILURE");
    assert_eq!(format!("{:?}", ErrorCode(0x7777)), "ErrorCode(0x7777)");
}

#[test]
fn secrets_stay_out_of_debug() {
    let token = sasl_plain_token("cassandra", "hunter2");
    assert_eq!(token.expose(), b"\0cassandra\0hunter2");
    let shown = format!("{token:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("18 bytes"),
        "{shown}"
    );
    let response = AuthResponse {
        token: Some(token.expose()),
    };
    let shown = format!("{response:?} {:?}", response.to_bytes(V4));
    assert!(!format!("{response:?}").contains("hunter2"));
    assert!(shown.contains("redacted"));
    for debug in [
        format!(
            "{:?}",
            AuthChallenge {
                token: Some(b"hunter2")
            }
        ),
        format!(
            "{:?}",
            AuthSuccess {
                token: Some(b"hunter2")
            }
        ),
        format!("{:?}", token.auth_response_body()),
    ] {
        assert!(!debug.contains("hunter2"), "{debug}");
    }
    // The AUTH_RESPONSE body is the token as [bytes].
    let body = token.auth_response_body();
    assert_eq!(&body.expose()[..4], &[0, 0, 0, 18]);
    assert_eq!(
        AuthResponse::decode(body.expose(), V4).unwrap().token,
        Some(token.expose())
    );
    assert_eq!(
        AuthResponse::decode(&[0xff, 0xff, 0xff, 0xff], V4)
            .unwrap()
            .token,
        None
    );
}

/// STARTUP `{"CQL_VERSION": "3.0.0"}` as laid out by the spec: a [string map].
#[test]
fn startup_layout_and_helpers() {
    let body = b"\x00\x01\x00\x0bCQL_VERSION\x00\x053.0.0";
    let mut s = Startup::decode(body, V4).unwrap();
    assert_eq!(s.cql_version(), Some("3.0.0"));
    assert_eq!(s.compression(), None);
    assert_eq!(&s.to_bytes(V4)[..], &body[..]);
    s.set(keys::COMPRESSION, "lz4");
    s.set(keys::COMPRESSION, "snappy");
    assert_eq!(s.compression(), Some("snappy"));
    assert_eq!(s.options.len(), 2);
    assert_eq!(s.remove(keys::COMPRESSION), Some("snappy"));
    assert!(Startup::decode(&[0, 0, 0], V4).is_err(), "trailing byte");
}

#[test]
fn supported_editing() {
    let mut source = Supported {
        options: vec![
            (keys::PROTOCOL_VERSIONS, vec!["3/v3", "4/v4", "5/v5"]),
            (keys::COMPRESSION, vec!["snappy", "lz4"]),
            (keys::CQL_VERSION, vec!["3.4.7"]),
            ("SCYLLA_SHARD", vec!["3"]),
        ],
    };
    let target = Supported {
        options: vec![
            (keys::PROTOCOL_VERSIONS, vec!["3/v3", "4/v4", "5/v5-beta"]),
            (keys::COMPRESSION, vec!["lz4"]),
        ],
    };
    assert_eq!(source.protocol_versions(), vec![V3, V4, V5]);
    assert_eq!(target.protocol_versions(), vec![V3, V4]);
    source.intersect(keys::COMPRESSION, &target);
    assert_eq!(source.values(keys::COMPRESSION), Some(&["lz4"][..]));
    source.retain(|key, _| !key.starts_with("SCYLLA_"));
    assert_eq!(source.values("SCYLLA_SHARD"), None);
    source.set(
        keys::PROTOCOL_VERSIONS,
        vec![Supported::protocol_version_entry(V4)],
    );
    assert_eq!(source.protocol_versions(), vec![V4]);
    assert_eq!(
        source.options[0].0,
        keys::PROTOCOL_VERSIONS,
        "keeps its place"
    );
    assert_eq!(source.remove(keys::CQL_VERSION), Some(vec!["3.4.7"]));
    let body = source.to_bytes(V4);
    let back = Supported::decode(&body, V4).unwrap();
    assert_eq!(back, source);
}

/// QUERY in v4: [long string], consistency, one flag byte, values, page size.
#[test]
fn query_v4_layout() {
    let values = [Value::Bytes(&[0, 0, 0, 1]), Value::Null, Value::Unset];
    let q = Query {
        text: "SELECT * FROM t WHERE k=? AND a=? AND b=?",
        params: QueryParams {
            values: Some(Values::positional(&values)),
            page_size: Some(5000),
            ..QueryParams::new(Consistency::LOCAL_QUORUM)
        },
    };
    let body = q.to_bytes(V4);
    let mut expected = BytesMut::new();
    expected.put_i32(q.text.len() as i32);
    expected.put_slice(q.text.as_bytes());
    expected.put_slice(&[0x00, 0x06, 0x05, 0x00, 0x03]);
    expected.put_slice(&[0, 0, 0, 4, 0, 0, 0, 1]);
    expected.put_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
    expected.put_slice(&[0, 0, 0x13, 0x88]);
    assert_eq!(body, expected);
    assert_eq!(
        q.params.flags(),
        QueryFlags::VALUES.union(QueryFlags::PAGE_SIZE)
    );
    assert_eq!(Query::peek_text(&body).unwrap(), q.text);
    // v5 widens the flags to an int.
    let v5 = q.to_bytes(V5);
    assert_eq!(v5.len(), body.len() + 3);
}

#[test]
fn query_errors_point_at_the_field() {
    let mut body = BytesMut::new();
    body.put_i32(1);
    body.put_u8(b'x');
    body.put_u16(1); // consistency
    body.put_u8(0x80); // keyspace flag
    body.put_slice(&[0, 2, 0xff, 0xfe]); // not UTF-8
    let err = Query::decode(&body, V4).unwrap_err();
    assert_eq!((err.offset, err.kind), (10, DecodeErrorKind::InvalidUtf8));

    // An unknown flag bit is refused at the flags' offset.
    let mut body = BytesMut::new();
    body.put_i32(0);
    body.put_u16(1);
    body.put_u32(0x200);
    let err = Query::decode(&body, V5).unwrap_err();
    assert_eq!(err.offset, 6);
    assert!(matches!(
        err.kind,
        DecodeErrorKind::InvalidValue { value: 0x200, .. }
    ));
    assert!(
        err.to_string()
            .starts_with("at byte 6: invalid query flags")
    );
}

/// EXECUTE in v5: id, result metadata id, consistency, int flags.
#[test]
fn execute_v5_layout() {
    let e = Execute {
        id: &[0xab; 16],
        result_metadata_id: Some(&[0xcd; 16]),
        params: QueryParams {
            skip_metadata: true,
            ..QueryParams::new(Consistency::ONE)
        },
    };
    let body = e.to_bytes(V5);
    assert_eq!(&body[..2], &[0, 16]);
    assert_eq!(&body[18..20], &[0, 16]);
    assert_eq!(&body[36..], &[0, 1, 0, 0, 0, 0x02]);
    assert_eq!(Execute::peek_id(&body).unwrap(), &[0xab; 16]);
    // The v4 layout has no result metadata id.
    let v4 = Execute {
        result_metadata_id: None,
        ..e
    }
    .to_bytes(V4);
    assert_eq!(&v4[18..], &[0, 1, 0x02]);
}

#[test]
fn prepare_layouts() {
    let p = Prepare {
        query: "SELECT 1",
        keyspace: Some("ks"),
    };
    assert_eq!(
        &p.to_bytes(V5)[..],
        b"\x00\x00\x00\x08SELECT 1\x00\x00\x00\x01\x00\x02ks"
    );
    assert_eq!(&p.to_bytes(V4)[..], b"\x00\x00\x00\x08SELECT 1");
    assert!(Prepare::decode(b"\x00\x00\x00\x08SELECT 1\x00\x00\x00\x02", V5).is_err());
}

/// A batch whose values carry names (flag 0x40): the flag comes after the statements, so
/// decoding must try both readings.
#[test]
fn batch_with_named_values() {
    let named = [("a", Value::Bytes(b"1")), ("b", Value::Null)];
    let statements = [
        BatchStatement {
            statement: Statement::Query("INSERT INTO t (a, b) VALUES (:a, :b)"),
            values: Values::named(&named),
        },
        BatchStatement {
            statement: Statement::Prepared(&[1, 2, 3]),
            values: Values::named(&named[..1]),
        },
    ];
    for version in ProtocolVersion::ALL {
        let b = Batch {
            batch_type: BatchType::UNLOGGED,
            statements: Statements::new(&statements),
            consistency: Consistency::QUORUM,
            serial_consistency: None,
            timestamp: Some(1),
            keyspace: None,
            now_in_seconds: None,
        };
        let body = b.to_bytes(version);
        let back = Batch::decode(&body, version).unwrap();
        assert!(back.statements.has_names());
        assert_eq!(back, b);
    }
}

#[test]
fn batch_refusals() {
    let b = Batch {
        batch_type: BatchType::LOGGED,
        statements: Statements::new(&[]),
        consistency: Consistency::ONE,
        serial_consistency: None,
        timestamp: None,
        keyspace: None,
        now_in_seconds: None,
    };
    let mut body = b.to_bytes(V4).to_vec();
    assert_eq!(body, [0, 0, 0, 0, 1, 0]);
    body[0] = 3;
    let err = Batch::decode(&body, V4).unwrap_err();
    assert_eq!(err.offset, 0);
    body[0] = 0;
    body[5] = 0x01; // the values flag makes no sense in a batch
    let err = Batch::decode(&body, V4).unwrap_err();
    assert_eq!(err.offset, 5);
    // Unknown statement kind.
    let err = Batch::decode(&[0, 0, 1, 7], V4).unwrap_err();
    assert_eq!(err.offset, 3);
}

fn nested_list(depth: usize) -> Vec<u8> {
    let mut out = vec![];
    for _ in 1..depth {
        out.extend_from_slice(&[0x00, 0x20]);
    }
    out.extend_from_slice(&[0x00, 0x09]);
    out
}

#[test]
fn type_nesting_is_bounded() {
    let ok = nested_list(MAX_TYPE_DEPTH);
    let t = ColumnType::decode(&mut Reader::new(&ok)).unwrap();
    assert_eq!(t.depth(), MAX_TYPE_DEPTH);
    let deep = nested_list(MAX_TYPE_DEPTH + 1);
    let err = ColumnType::decode(&mut Reader::new(&deep)).unwrap_err();
    assert_eq!(
        err.kind,
        DecodeErrorKind::TooDeep {
            max: MAX_TYPE_DEPTH
        }
    );
    assert_eq!(err.offset, 2 * MAX_TYPE_DEPTH);
    // A million levels fail fast instead of overflowing the stack.
    let hostile = nested_list(1_000_000);
    assert!(ColumnType::decode(&mut Reader::new(&hostile)).is_err());
}

#[test]
fn column_type_display() {
    let t = ColumnType::Map(Box::new((
        ColumnType::Varchar,
        ColumnType::List(Box::new(ColumnType::Tuple(vec![
            ColumnType::Int,
            ColumnType::Custom("org.apache.cassandra.db.marshal.DurationType"),
        ]))),
    )));
    assert_eq!(
        t.to_string(),
        "map<text, list<tuple<int, 'org.apache.cassandra.db.marshal.DurationType'>>>"
    );
}

fn peers_metadata() -> RowsMetadata<'static> {
    RowsMetadata::new(Columns::in_table(
        TableSpec {
            keyspace: "system",
            table: "peers",
        },
        &[
            ("peer", ColumnType::Inet),
            ("data_center", ColumnType::Varchar),
            ("tokens", ColumnType::Set(Box::new(ColumnType::Varchar))),
        ],
    ))
}

/// The synthetic `system.peers` answer, byte by byte.
#[test]
fn rows_writer_layout() {
    let mut w = RowsWriter::new(&peers_metadata());
    w.push_row([Some(&[10, 0, 0, 2][..]), Some(b"dc1"), None])
        .unwrap();
    assert_eq!(
        w.push_row([Some(&b"x"[..])]),
        Err(RowsWriterError::CellCount {
            expected: 3,
            got: 1
        })
    );
    assert_eq!(w.row_count(), 1);
    let body = w.finish();
    let mut expected = BytesMut::new();
    expected.put_i32(0x0002); // Rows
    expected.put_i32(0x0001); // global table spec
    expected.put_i32(3);
    expected.put_slice(b"\x00\x06system\x00\x05peers");
    expected.put_slice(b"\x00\x04peer\x00\x10");
    expected.put_slice(b"\x00\x0bdata_center\x00\x0d");
    expected.put_slice(b"\x00\x06tokens\x00\x22\x00\x0d");
    expected.put_i32(1);
    expected.put_slice(b"\x00\x00\x00\x04\x0a\x00\x00\x02\x00\x00\x00\x03dc1\xff\xff\xff\xff");
    assert_eq!(body, expected);

    let ResultMessage::Rows(rows) = ResultMessage::decode(&body, V4).unwrap() else {
        panic!()
    };
    assert_eq!(rows.metadata.columns.position("tokens"), Some(2));
    assert_eq!(
        rows.metadata.columns.table_of(1).map(|t| t.table),
        Some("peers")
    );
    let row = rows.iter().next().unwrap().unwrap();
    assert_eq!(row.cell(1), Some(Some(&b"dc1"[..])));
    assert_eq!(row.cell(2), Some(None));
    assert_eq!(row.cell(3), None);

    // Copying decoded rows into a new result reproduces them.
    let mut copy = RowsWriter::new(&rows.metadata);
    for row in rows.iter() {
        copy.push_raw_row(&row.unwrap()).unwrap();
    }
    assert_eq!(copy.finish(), body);
}

#[test]
fn rows_content_is_checked_to_the_byte() {
    let mut w = RowsWriter::new(&peers_metadata());
    w.push_row([Some(&b"a"[..]), Some(b"b"), Some(b"c")])
        .unwrap();
    let body = w.finish();

    // One stray byte after the last row.
    let mut extra = body.to_vec();
    extra.push(0);
    let ResultMessage::Rows(rows) = ResultMessage::decode(&extra, V4).unwrap() else {
        panic!()
    };
    let items: Vec<_> = rows.iter().collect();
    assert_eq!(items.len(), 2);
    let err = items[1].clone().unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::TrailingBytes { count: 1 });
    assert_eq!(err.offset, body.len());
    assert!(rows.validate().is_err());

    // A cell running past the end, reported at its length field.
    let mut short = body.to_vec();
    let last_cell_at = short.len() - 5;
    short[last_cell_at + 3] = 9;
    let ResultMessage::Rows(rows) = ResultMessage::decode(&short, V4).unwrap() else {
        panic!()
    };
    let err = rows.validate().unwrap_err();
    assert_eq!(err.offset, last_cell_at + 4);
    assert!(matches!(
        err.kind,
        DecodeErrorKind::Truncated {
            needed: 9,
            available: 1
        }
    ));
}

#[test]
fn rows_counts_are_checked_before_iterating() {
    // 2^31-1 rows announced for a 3-column result with a few bytes of content.
    let mut body = BytesMut::new();
    body.put_i32(0x0002);
    body.put_i32(0x0004); // no metadata
    body.put_i32(3);
    body.put_i32(i32::MAX);
    body.put_slice(&[0; 12]);
    let err = ResultMessage::decode(&body, V4).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::Truncated { .. }));
    // Rows without columns.
    let mut body = BytesMut::new();
    body.put_i32(0x0002);
    body.put_i32(0x0004);
    body.put_i32(0);
    body.put_i32(5);
    let err = ResultMessage::decode(&body, V4).unwrap_err();
    assert_eq!(err.offset, 12);
    // No_metadata and Metadata_changed together are refused.
    let mut body = BytesMut::new();
    body.put_i32(0x0002);
    body.put_i32(0x000c);
    body.put_i32(1);
    assert_eq!(ResultMessage::decode(&body, V5).unwrap_err().offset, 4);
}

#[test]
fn events_and_address_rewrite() {
    let from: SocketAddr = "10.0.0.7:9042".parse().unwrap();
    let to: SocketAddr = "[fd00::1]:29042".parse().unwrap();
    let e = Event::StatusChange {
        change: Event::UP,
        address: from,
    };
    let body = e.to_bytes(V4);
    assert_eq!(
        &body[..],
        b"\x00\x0dSTATUS_CHANGE\x00\x02UP\x04\x0a\x00\x00\x07\x00\x00\x23\x52"
    );
    let moved = Event::decode(&body, V4).unwrap().with_address(to);
    assert_eq!(moved.address(), Some(to));
    assert_eq!(Event::decode(&moved.to_bytes(V4), V4).unwrap(), moved);
    let err = Event::decode(b"\x00\x03FOO", V4).unwrap_err();
    assert_eq!(err.offset, 0);
}

#[test]
fn error_v5_reason_map_and_cas_contentions() {
    let mut body = BytesMut::new();
    body.put_i32(0x1300);
    body.put_slice(b"\x00\x04fail");
    body.put_u16(0x0004);
    body.put_i32(1);
    body.put_i32(2);
    body.put_i32(1); // one reason
    body.put_slice(&[4, 10, 0, 0, 9]);
    body.put_u16(0x0001);
    body.put_u8(1);
    let e = ErrorMessage::decode(&body, V5).unwrap();
    let ErrorDetails::ReadFailure {
        failures,
        data_present,
        ..
    } = &e.details
    else {
        panic!("{e:?}")
    };
    assert_eq!(failures.count(), 1);
    assert!(*data_present);

    let mut body = BytesMut::new();
    body.put_i32(0x1100);
    body.put_slice(b"\x00\x00");
    body.put_u16(0x0008);
    body.put_i32(0);
    body.put_i32(1);
    body.put_slice(b"\x00\x03CAS");
    body.put_u16(3);
    let e = ErrorMessage::decode(&body, V5).unwrap();
    assert!(matches!(
        e.details,
        ErrorDetails::WriteTimeout {
            contentions: Some(3),
            ..
        }
    ));
    // Before v5 there is no contentions field.
    let e4 = ErrorMessage::decode(&body, V4).unwrap();
    assert!(matches!(
        e4.details,
        ErrorDetails::WriteTimeout {
            contentions: None,
            ..
        }
    ));
}

#[test]
fn statement_texts_with_passwords_stay_out_of_debug() {
    let q = Query {
        text: "ALTER ROLE app WITH PASSWORD = 'hunter2'",
        params: QueryParams::new(Consistency::ONE),
    };
    let shown = format!("{q:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("redacted"),
        "{shown}"
    );
    let p = Prepare {
        query: "CREATE USER u WITH Password 'hunter2'",
        keyspace: None,
    };
    assert!(!format!("{p:?}").contains("hunter2"));
    let st = Statement::Query("CREATE ROLE r WITH PASSWORD = 'hunter2'");
    assert!(!format!("{st:?}").contains("hunter2"));
    // Ordinary statements are shown as they are.
    let plain = Query {
        text: "SELECT * FROM t",
        params: QueryParams::new(Consistency::ONE),
    };
    assert!(format!("{plain:?}").contains("SELECT * FROM t"));
}

#[test]
fn rows_debug_is_compact() {
    let mut w = RowsWriter::new(&peers_metadata());
    for _ in 0..100 {
        w.push_row([Some(&[7u8; 64][..]), None, None]).unwrap();
    }
    let body = w.finish();
    let shown = format!("{:?}", ResultMessage::decode(&body, V4).unwrap());
    assert!(
        shown.contains("row_count: 100") && shown.len() < 1000,
        "{shown}"
    );
}
