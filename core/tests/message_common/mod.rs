//! Proptest strategies for message bodies, shared by the `message_*` tests.
//!
//! Message types borrow from the body; generated data is leaked to `'static` so that the
//! strategies can produce the borrowed types directly (a few kilobytes per test run).
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use cqlmirror_core::frame::ProtocolVersion;
use cqlmirror_core::message::error::{ErrorCode, ErrorDetails, ErrorMessage, Failures};
use cqlmirror_core::message::*;
use cqlmirror_core::wire::{Consistency, Value};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub fn leak<T>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

pub fn leak_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(ProtocolVersion::ALL.to_vec())
}

/// Arbitrary UTF-8 text, including multi-byte characters.
pub fn text() -> impl Strategy<Value = &'static str> {
    ".{0,24}".prop_map(leak_str)
}

/// Identifier-like names.
pub fn name() -> impl Strategy<Value = &'static str> {
    "[a-z_][a-z0-9_]{0,10}".prop_map(leak_str)
}

pub fn blob(max: usize) -> impl Strategy<Value = &'static [u8]> {
    vec(any::<u8>(), 0..max).prop_map(leak)
}

/// Non-empty bytes (cassandra-protocol cannot decode an empty `[value]`).
pub fn nonempty_blob(max: usize) -> impl Strategy<Value = &'static [u8]> {
    vec(any::<u8>(), 1..max).prop_map(leak)
}

pub fn consistency() -> impl Strategy<Value = Consistency> {
    (0u16..=0x000A).prop_map(Consistency)
}

pub fn value() -> impl Strategy<Value = Value<'static>> {
    prop_oneof![
        4 => blob(12).prop_map(Value::Bytes),
        1 => Just(Value::Null),
        1 => Just(Value::Unset),
    ]
}

pub fn positional_values() -> impl Strategy<Value = Values<'static>> {
    vec(value(), 0..6).prop_map(|v| Values::positional(leak(v)))
}

pub fn named_values() -> impl Strategy<Value = Values<'static>> {
    vec((name(), value()), 0..6).prop_map(|v| Values::named(leak(v)))
}

pub fn values() -> impl Strategy<Value = Values<'static>> {
    prop_oneof![positional_values(), named_values()]
}

pub fn params(version: ProtocolVersion) -> impl Strategy<Value = QueryParams<'static>> {
    (
        (
            consistency(),
            option::of(values()),
            any::<bool>(),
            option::of(any::<i32>()),
            option::of(blob(16)),
        ),
        (
            option::of(consistency()),
            option::of(any::<i64>()),
            option::of(name()),
            option::of(any::<i32>()),
        ),
    )
        .prop_map(
            move |(
                (consistency, values, skip_metadata, page_size, paging_state),
                (serial_consistency, timestamp, keyspace, now),
            )| QueryParams {
                consistency,
                values,
                skip_metadata,
                page_size,
                paging_state,
                serial_consistency,
                timestamp,
                keyspace,
                now_in_seconds: now.filter(|_| version.wide_query_flags()),
            },
        )
}

pub fn query(version: ProtocolVersion) -> impl Strategy<Value = Query<'static>> {
    (text(), params(version)).prop_map(|(text, params)| Query { text, params })
}

pub fn execute(version: ProtocolVersion) -> impl Strategy<Value = Execute<'static>> {
    (blob(20), blob(20), params(version)).prop_map(move |(id, rmid, params)| Execute {
        id,
        result_metadata_id: Some(rmid).filter(|_| version >= ProtocolVersion::V5),
        params,
    })
}

pub fn batch_type() -> impl Strategy<Value = BatchType> {
    (0u8..=2).prop_map(BatchType)
}

pub fn batch(version: ProtocolVersion) -> impl Strategy<Value = Batch<'static>> {
    let statement = prop_oneof![
        text().prop_map(Statement::Query),
        blob(20).prop_map(Statement::Prepared)
    ];
    let statements =
        (any::<bool>(), vec((statement, 0usize..4), 0..5)).prop_flat_map(|(named, shapes)| {
            let per: Vec<_> = shapes
                .into_iter()
                .map(move |(statement, n)| {
                    let values = if named {
                        vec((name(), value()), n..=n)
                            .prop_map(|v| Values::named(leak(v)))
                            .boxed()
                    } else {
                        vec(value(), n..=n)
                            .prop_map(|v| Values::positional(leak(v)))
                            .boxed()
                    };
                    values.prop_map(move |values| BatchStatement { statement, values })
                })
                .collect();
            per
        });
    (
        batch_type(),
        statements,
        consistency(),
        option::of(consistency()),
        option::of(any::<i64>()),
        option::of(name()),
        option::of(any::<i32>()),
    )
        .prop_map(
            move |(batch_type, statements, consistency, serial, timestamp, keyspace, now)| Batch {
                batch_type,
                statements: Statements::new(leak(statements)),
                consistency,
                serial_consistency: serial,
                timestamp,
                keyspace,
                now_in_seconds: now.filter(|_| version.wide_query_flags()),
            },
        )
}

pub fn prepare(version: ProtocolVersion) -> impl Strategy<Value = Prepare<'static>> {
    (text(), option::of(name())).prop_map(move |(query, keyspace)| Prepare {
        query,
        keyspace: keyspace.filter(|_| version >= ProtocolVersion::V5),
    })
}

pub fn startup() -> impl Strategy<Value = Startup<'static>> {
    vec((name(), text()), 0..6).prop_map(|options| Startup { options })
}

pub fn supported() -> impl Strategy<Value = Supported<'static>> {
    vec((name(), vec(text(), 0..4)), 0..6).prop_map(|options| Supported { options })
}

pub fn register() -> impl Strategy<Value = Register<'static>> {
    vec(
        prop::sample::select(vec![
            Event::TOPOLOGY_CHANGE,
            Event::STATUS_CHANGE,
            Event::SCHEMA_CHANGE,
        ]),
        0..4,
    )
    .prop_map(|events| Register { events })
}

pub fn token() -> impl Strategy<Value = Option<&'static [u8]>> {
    option::of(blob(40))
}

pub fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

pub fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (ip(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

pub fn schema_change() -> impl Strategy<Value = SchemaChange<'static>> {
    let target = prop_oneof![
        name().prop_map(SchemaTarget::Keyspace),
        (name(), name()).prop_map(|(keyspace, name)| SchemaTarget::Table { keyspace, name }),
        (name(), name()).prop_map(|(keyspace, name)| SchemaTarget::Type { keyspace, name }),
        (name(), name(), vec(name(), 0..4)).prop_map(|(keyspace, name, arg_types)| {
            SchemaTarget::Function {
                keyspace,
                name,
                arg_types,
            }
        }),
        (name(), name(), vec(name(), 0..4)).prop_map(|(keyspace, name, arg_types)| {
            SchemaTarget::Aggregate {
                keyspace,
                name,
                arg_types,
            }
        }),
    ];
    (
        prop::sample::select(vec![
            SchemaChange::CREATED,
            SchemaChange::UPDATED,
            SchemaChange::DROPPED,
        ]),
        target,
    )
        .prop_map(|(change, target)| SchemaChange { change, target })
}

pub fn event() -> impl Strategy<Value = Event<'static>> {
    prop_oneof![
        (
            prop::sample::select(vec![Event::NEW_NODE, Event::REMOVED_NODE]),
            socket_addr()
        )
            .prop_map(|(change, address)| Event::TopologyChange { change, address }),
        (
            prop::sample::select(vec![Event::UP, Event::DOWN]),
            socket_addr()
        )
            .prop_map(|(change, address)| Event::StatusChange { change, address }),
        schema_change().prop_map(Event::SchemaChange),
    ]
}

pub const WRITE_TYPES: [&str; 8] = [
    "SIMPLE",
    "BATCH",
    "UNLOGGED_BATCH",
    "COUNTER",
    "BATCH_LOG",
    "CAS",
    "VIEW",
    "CDC",
];

/// Codes that carry no fields after the message.
pub const PLAIN_CODES: [ErrorCode; 11] = [
    ErrorCode::SERVER_ERROR,
    ErrorCode::PROTOCOL_ERROR,
    ErrorCode::BAD_CREDENTIALS,
    ErrorCode::OVERLOADED,
    ErrorCode::IS_BOOTSTRAPPING,
    ErrorCode::TRUNCATE_ERROR,
    ErrorCode::CDC_WRITE_FAILURE,
    ErrorCode::SYNTAX_ERROR,
    ErrorCode::UNAUTHORIZED,
    ErrorCode::INVALID,
    ErrorCode::CONFIG_ERROR,
];

pub fn failures(version: ProtocolVersion) -> BoxedStrategy<Failures> {
    if version >= ProtocolVersion::V5 {
        vec((ip(), any::<u16>()), 0..4)
            .prop_map(Failures::Reasons)
            .boxed()
    } else {
        any::<i32>().prop_map(Failures::Count).boxed()
    }
}

pub fn error_message(version: ProtocolVersion) -> impl Strategy<Value = ErrorMessage<'static>> {
    let counts = || (consistency(), any::<i32>(), any::<i32>());
    let write_type = || prop::sample::select(WRITE_TYPES.to_vec());
    let detailed = prop_oneof![
        counts().prop_map(|(consistency, required, alive)| (
            ErrorCode::UNAVAILABLE,
            ErrorDetails::Unavailable {
                consistency,
                required,
                alive
            }
        )),
        (counts(), write_type(), any::<u16>()).prop_map(
            move |((consistency, received, block_for), write_type, c)| (
                ErrorCode::WRITE_TIMEOUT,
                ErrorDetails::WriteTimeout {
                    consistency,
                    received,
                    block_for,
                    write_type,
                    contentions: Some(c)
                        .filter(|_| version >= ProtocolVersion::V5 && write_type == "CAS"),
                }
            )
        ),
        (counts(), any::<bool>()).prop_map(|((consistency, received, block_for), data_present)| (
            ErrorCode::READ_TIMEOUT,
            ErrorDetails::ReadTimeout {
                consistency,
                received,
                block_for,
                data_present
            }
        )),
        (counts(), failures(version), any::<bool>()).prop_map(
            |((consistency, received, block_for), failures, data_present)| (
                ErrorCode::READ_FAILURE,
                ErrorDetails::ReadFailure {
                    consistency,
                    received,
                    block_for,
                    failures,
                    data_present
                }
            )
        ),
        (name(), name(), vec(name(), 0..3)).prop_map(|(keyspace, function, arg_types)| (
            ErrorCode::FUNCTION_FAILURE,
            ErrorDetails::FunctionFailure {
                keyspace,
                function,
                arg_types
            }
        )),
        (counts(), failures(version), write_type()).prop_map(
            |((consistency, received, block_for), failures, write_type)| (
                ErrorCode::WRITE_FAILURE,
                ErrorDetails::WriteFailure {
                    consistency,
                    received,
                    block_for,
                    failures,
                    write_type
                }
            )
        ),
        counts().prop_map(|(consistency, received, block_for)| (
            ErrorCode::CAS_WRITE_UNKNOWN,
            ErrorDetails::CasWriteUnknown {
                consistency,
                received,
                block_for
            }
        )),
        (name(), prop_oneof![Just(""), name()]).prop_map(|(keyspace, table)| (
            ErrorCode::ALREADY_EXISTS,
            ErrorDetails::AlreadyExists { keyspace, table }
        )),
        blob(20).prop_map(|id| (ErrorCode::UNPREPARED, ErrorDetails::Unprepared { id })),
    ];
    let plain = prop::sample::select(PLAIN_CODES.to_vec()).prop_map(|c| (c, ErrorDetails::None));
    (prop_oneof![plain, detailed], text()).prop_map(|((code, details), message)| ErrorMessage {
        code,
        message: message.into(),
        details,
    })
}

const NATIVE_TYPES: [ColumnType<'static>; 20] = [
    ColumnType::Ascii,
    ColumnType::Bigint,
    ColumnType::Blob,
    ColumnType::Boolean,
    ColumnType::Counter,
    ColumnType::Decimal,
    ColumnType::Double,
    ColumnType::Float,
    ColumnType::Int,
    ColumnType::Timestamp,
    ColumnType::Uuid,
    ColumnType::Varchar,
    ColumnType::Varint,
    ColumnType::Timeuuid,
    ColumnType::Inet,
    ColumnType::Date,
    ColumnType::Time,
    ColumnType::Smallint,
    ColumnType::Tinyint,
    ColumnType::Duration,
];

pub fn column_type() -> impl Strategy<Value = ColumnType<'static>> {
    let leaf = prop_oneof![
        8 => prop::sample::select(NATIVE_TYPES.to_vec()),
        1 => name().prop_map(ColumnType::Custom),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| ColumnType::List(Box::new(t))),
            inner.clone().prop_map(|t| ColumnType::Set(Box::new(t))),
            (inner.clone(), inner.clone()).prop_map(|kv| ColumnType::Map(Box::new(kv))),
            (name(), name(), vec((name(), inner.clone()), 0..4)).prop_map(
                |(keyspace, name, fields)| ColumnType::Udt(Box::new(UdtType {
                    keyspace,
                    name,
                    fields
                }))
            ),
            vec(inner, 0..4).prop_map(ColumnType::Tuple),
        ]
    })
}

pub fn table_spec() -> impl Strategy<Value = TableSpec<'static>> {
    (name(), name()).prop_map(|(keyspace, table)| TableSpec { keyspace, table })
}

/// Column specs, all with a table of their own or all without (when `global`).
pub fn column_specs(global: bool, max: usize) -> impl Strategy<Value = Vec<ColumnSpec<'static>>> {
    vec((table_spec(), name(), column_type()), 0..max).prop_map(move |cols| {
        cols.into_iter()
            .map(|(table, name, column_type)| ColumnSpec {
                table: Some(table).filter(|_| !global),
                name,
                column_type,
            })
            .collect()
    })
}

pub fn columns() -> impl Strategy<Value = Columns<'static>> {
    prop_oneof![
        (0usize..6).prop_map(|count| Columns::Skipped { count }),
        any::<bool>().prop_flat_map(|global| {
            (table_spec(), column_specs(global, 6)).prop_map(move |(table, specs)| {
                Columns::Described {
                    global_table_spec: Some(table).filter(|_| global),
                    specs,
                }
            })
        }),
    ]
}

pub fn rows_metadata() -> impl Strategy<Value = RowsMetadata<'static>> {
    (option::of(blob(16)), option::of(blob(16)), columns()).prop_map(
        |(paging_state, new_metadata_id, columns)| RowsMetadata {
            paging_state,
            // Metadata_changed is only valid with the columns described.
            new_metadata_id: new_metadata_id
                .filter(|_| matches!(columns, Columns::Described { .. })),
            columns,
        },
    )
}

pub fn prepared(version: ProtocolVersion) -> impl Strategy<Value = Prepared<'static>> {
    (
        blob(20),
        blob(20),
        vec(any::<u16>(), 0..4),
        option::of(table_spec()),
        any::<bool>(),
        rows_metadata(),
    )
        .prop_flat_map(move |(id, rmid, pk, global, _, result_metadata)| {
            column_specs(global.is_some(), 5).prop_map(move |columns| Prepared {
                id,
                result_metadata_id: Some(rmid).filter(|_| version >= ProtocolVersion::V5),
                metadata: PreparedMetadata {
                    pk_indexes: if version >= ProtocolVersion::V4 {
                        pk.clone()
                    } else {
                        Vec::new()
                    },
                    global_table_spec: global,
                    columns,
                },
                result_metadata: result_metadata.clone(),
            })
        })
}

/// Rows of cells for `columns` columns.
pub fn cells(columns: usize, max_rows: usize) -> impl Strategy<Value = Vec<Vec<Option<Vec<u8>>>>> {
    vec(
        vec(option::of(vec(any::<u8>(), 0..12)), columns..=columns),
        0..max_rows,
    )
}

/// A RESULT Rows body built by the writer, with the cells it holds.
pub fn rows_body()
-> impl Strategy<Value = (Bytes, RowsMetadata<'static>, Vec<Vec<Option<Vec<u8>>>>)> {
    rows_metadata()
        .prop_filter("rows need columns", |m| m.column_count() > 0)
        .prop_flat_map(|metadata| {
            let n = metadata.column_count();
            (Just(metadata), cells(n, 6))
        })
        .prop_map(|(metadata, rows)| {
            let mut w = RowsWriter::new(&metadata);
            for row in &rows {
                w.push_row(row.iter().map(|c| c.as_deref())).unwrap();
            }
            (w.finish(), metadata, rows)
        })
}

/// The cells of a decoded Rows result.
pub fn collect_cells(rows: &Rows<'_>) -> Vec<Vec<Option<Vec<u8>>>> {
    rows.iter()
        .map(|row| {
            row.unwrap()
                .cells()
                .map(|c| c.map(<[u8]>::to_vec))
                .collect()
        })
        .collect()
}
