//! How a simulated cluster understands a request: what it asks for ([`Plan`]) and the answer
//! it gets once carried out. Protocol rules are Cassandra's, reduced to the simulated table.

use bytes::Bytes;

use crate::cluster::store::Store;
use crate::cql::{self, Stmt, Term};
use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::{Compression, Direction, Envelope, Opcode, Prefix, ProtocolVersion};
use cqlmirror_core::message::{
    AuthResponse, Authenticate, Batch, Body, ColumnSpec, ColumnType, Columns, ErrorCode,
    ErrorDetails, ErrorMessage, Execute, Prepare, Prepared, PreparedMetadata, Query, ResultMessage,
    RowsMetadata, RowsWriter, Startup, Statement as BatchEntry, Supported, TableSpec,
};
use cqlmirror_core::wire::{Consistency, Value};

/// The custom-payload key that carries a simulated request's tag.
pub const TAG_KEY: &str = "sim-tag";

/// What a request asks for.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Options,
    Startup {
        compression: Option<Compression>,
    },
    AuthResponse {
        username: String,
        password: String,
    },
    Register,
    Writes {
        /// Key, value, write id.
        writes: Vec<(i64, String, String)>,
        timestamp: Option<i64>,
    },
    Select {
        key: i64,
        alias: Option<String>,
    },
    Use {
        keyspace: String,
    },
    Prepare {
        text: String,
        stmt: Stmt,
        keyspace: Option<String>,
    },
    Unprepared {
        id: Bytes,
    },
    /// `SELECT * FROM system.<table>`: the cluster's topology tables (the proxy reads them
    /// to answer drivers' own reads).
    Topology {
        table: &'static str,
    },
    Fail {
        code: ErrorCode,
        message: String,
    },
}

impl Plan {
    fn fail(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Fail {
            code,
            message: message.into(),
        }
    }
}

/// A decoded request: its plan, its tag, and the prepared ids it names.
#[derive(Debug, Clone)]
pub(crate) struct Understood {
    pub(crate) plan: Plan,
    pub(crate) tag: Option<String>,
    pub(crate) prepared_ids: Vec<Bytes>,
    /// The message could not be decoded (a proxy bug if the client sent it well formed).
    pub(crate) malformed: Option<String>,
}

/// The id of a write carried in a value: the value up to `#` (the rest is padding).
pub fn write_id(value: &str) -> &str {
    value.split('#').next().unwrap_or(value)
}

/// The tag of a request from one of its write ids: the id up to `/` (batch entries).
pub fn tag_of_write(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

/// The tag of a request from a bound value that is a simulated write's value
/// (`c<client>_<n>...`), for requests whose statement the cluster does not know.
fn tag_in_value(value: &Value<'_>) -> Option<String> {
    let Value::Bytes(b) = value else {
        return None;
    };
    let text = std::str::from_utf8(b).ok()?;
    let rest = text.strip_prefix('c')?;
    let (client, _) = rest.split_once('_')?;
    if client.is_empty() || !client.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some(tag_of_write(write_id(text)).to_owned())
}

/// What the connection knows that decides how a request is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnView<'a> {
    pub(crate) compression: Option<Compression>,
    pub(crate) ready: bool,
    pub(crate) keyspace: Option<&'a str>,
}

/// Reads a request.
pub(crate) fn understand(envelope: &Envelope, conn: ConnView<'_>, store: &Store) -> Understood {
    let mut out = Understood {
        plan: Plan::Register,
        tag: None,
        prepared_ids: Vec::new(),
        malformed: None,
    };
    let plain = match envelope.decompressed(conn.compression, 256 * 1024 * 1024) {
        Ok(p) => p,
        Err(e) => {
            out.malformed = Some(format!("undecompressable {}: {e}", envelope.opcode()));
            out.plan = Plan::fail(ErrorCode::PROTOCOL_ERROR, "bad compression");
            return out;
        }
    };
    let body = plain.body().clone();
    let (prefix, at) = match Prefix::parse(plain.header().flags, Direction::Request, &body) {
        Ok(p) => p,
        Err(e) => {
            out.malformed = Some(format!("bad prefix of {}: {e}", envelope.opcode()));
            out.plan = Plan::fail(ErrorCode::PROTOCOL_ERROR, "bad custom payload");
            return out;
        }
    };
    out.tag = prefix.custom_payload.as_ref().and_then(|map| {
        map.iter()
            .find(|(k, _)| *k == TAG_KEY)
            .and_then(|(_, v)| v.and_then(|v| std::str::from_utf8(v).ok()))
            .map(str::to_owned)
    });
    let message = body.slice(at..);
    let version = envelope.version();
    let opcode = envelope.opcode();
    let handshake = matches!(
        opcode,
        Opcode::OPTIONS | Opcode::STARTUP | Opcode::AUTH_RESPONSE
    );
    if !conn.ready && !handshake {
        out.plan = Plan::fail(
            ErrorCode::PROTOCOL_ERROR,
            format!("Unexpected message {opcode}, expecting STARTUP"),
        );
        return out;
    }
    // A tag found in bound values when the statement itself is unknown.
    let mut content_tag = None;
    let decoded = match opcode {
        Opcode::OPTIONS => Ok(Plan::Options),
        Opcode::STARTUP => startup(&message, version),
        Opcode::AUTH_RESPONSE => auth_response(&message, version),
        Opcode::REGISTER => Ok(Plan::Register),
        Opcode::QUERY => query(&message, version, conn, &mut content_tag),
        Opcode::PREPARE => prepare(&message, version, conn),
        Opcode::EXECUTE => execute(
            &message,
            version,
            store,
            &mut out.prepared_ids,
            &mut content_tag,
        ),
        Opcode::BATCH => batch(
            &message,
            version,
            conn,
            store,
            &mut out.prepared_ids,
            &mut content_tag,
        ),
        other => Ok(Plan::fail(
            ErrorCode::PROTOCOL_ERROR,
            format!("unexpected request {other}"),
        )),
    };
    match decoded {
        Ok(plan) => out.plan = plan,
        Err(e) => {
            out.malformed = Some(format!("malformed {opcode}: {e}"));
            out.plan = Plan::fail(ErrorCode::PROTOCOL_ERROR, e);
        }
    }
    if out.tag.is_none() {
        out.tag = match &out.plan {
            Plan::Writes { writes, .. } => {
                writes.first().map(|(_, _, id)| tag_of_write(id).to_owned())
            }
            Plan::Select { alias, .. } => alias.clone(),
            _ => content_tag,
        };
    }
    out
}

fn startup(message: &[u8], version: ProtocolVersion) -> Result<Plan, String> {
    let startup = Startup::decode(message, version).map_err(|e| e.to_string())?;
    Ok(match startup.compression() {
        None => Plan::Startup { compression: None },
        Some(name) => match Compression::from_name(name) {
            Some(c) => Plan::Startup {
                compression: Some(c),
            },
            None => Plan::fail(
                ErrorCode::PROTOCOL_ERROR,
                format!("Unsupported compression algorithm {name}"),
            ),
        },
    })
}

fn auth_response(message: &[u8], version: ProtocolVersion) -> Result<Plan, String> {
    let response = AuthResponse::decode(message, version).map_err(|e| e.to_string())?;
    let token = response.token.unwrap_or(&[]);
    let mut parts = token.split(|&b| b == 0);
    let _authzid = parts.next();
    let username = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
    let password = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
    Ok(Plan::AuthResponse { username, password })
}

/// A keyspace for a statement: its own, the request's (v5), or the connection's.
/// The plan of a QUERY or BATCH body received on a ready connection without compression
/// whose keyspace is `keyspace`: what a replay tool's request asks of the cluster.
pub(crate) fn plan_body(
    opcode: Opcode,
    message: &[u8],
    version: ProtocolVersion,
    keyspace: Option<&str>,
    store: &Store,
) -> Result<Plan, String> {
    let conn = ConnView {
        compression: None,
        ready: true,
        keyspace,
    };
    let mut tag = None;
    match opcode {
        Opcode::QUERY => query(message, version, conn, &mut tag),
        Opcode::BATCH => batch(message, version, conn, store, &mut Vec::new(), &mut tag),
        other => Err(format!("{other} is not a write request")),
    }
}

fn keyspace_of(own: Option<&str>, request: Option<&str>, conn: ConnView<'_>) -> Option<String> {
    own.or(request).or(conn.keyspace).map(str::to_owned)
}

/// The plan of a parsed statement with its bound values.
fn plan_statement(
    stmt: &Stmt,
    values: &[Value<'_>],
    keyspace: Option<String>,
    timestamp: Option<i64>,
) -> Plan {
    if let Stmt::Use { keyspace } = stmt {
        return if keyspace == cql::KEYSPACE {
            Plan::Use {
                keyspace: keyspace.clone(),
            }
        } else {
            Plan::fail(
                ErrorCode::INVALID,
                format!("Keyspace '{keyspace}' does not exist"),
            )
        };
    }
    match keyspace.as_deref() {
        Some(cql::KEYSPACE) => {}
        Some(other) => {
            return Plan::fail(
                ErrorCode::INVALID,
                format!("Keyspace '{other}' does not exist"),
            );
        }
        None => return Plan::fail(ErrorCode::INVALID, "No keyspace has been specified"),
    }
    if values.len() != stmt.markers() {
        return Plan::fail(
            ErrorCode::INVALID,
            format!(
                "There were {} markers(?) in CQL but {} bound variables",
                stmt.markers(),
                values.len()
            ),
        );
    }
    let mut bound = values.iter();
    let mut int = |t: &Term| -> Result<i64, String> {
        match t {
            Term::Int(n) => Ok(*n),
            Term::Marker => match bound.next() {
                Some(Value::Bytes(b)) if b.len() == 4 => {
                    Ok(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
                }
                Some(Value::Bytes(b)) if b.len() == 8 => Ok(i64::from_be_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ])),
                other => Err(format!("Invalid value for k: {other:?}")),
            },
            Term::Text(_) => Err("Invalid STRING constant for k of type int".to_owned()),
        }
    };
    match stmt {
        Stmt::Insert { key, value, .. } => {
            let key = match int(key) {
                Ok(k) => k,
                Err(e) => return Plan::fail(ErrorCode::INVALID, e),
            };
            let value = match value {
                Term::Text(s) => s.clone(),
                Term::Marker => match bound.next() {
                    Some(Value::Bytes(b)) => match std::str::from_utf8(b) {
                        Ok(s) => s.to_owned(),
                        Err(_) => return Plan::fail(ErrorCode::INVALID, "Invalid UTF-8 for v"),
                    },
                    _ => return Plan::fail(ErrorCode::INVALID, "Invalid null value for v"),
                },
                Term::Int(_) => {
                    return Plan::fail(
                        ErrorCode::INVALID,
                        "Invalid INTEGER constant for v of type text",
                    );
                }
            };
            let id = write_id(&value).to_owned();
            Plan::Writes {
                writes: vec![(key, value, id)],
                timestamp,
            }
        }
        Stmt::Select { alias, key, .. } => match int(key) {
            Ok(key) => Plan::Select {
                key,
                alias: alias.clone(),
            },
            Err(e) => Plan::fail(ErrorCode::INVALID, e),
        },
        Stmt::Use { .. } => Plan::fail(ErrorCode::SERVER_ERROR, "unreachable"),
    }
}

fn query(
    message: &[u8],
    version: ProtocolVersion,
    conn: ConnView<'_>,
    tag: &mut Option<String>,
) -> Result<Plan, String> {
    let q = Query::decode(message, version).map_err(|e| e.to_string())?;
    for table in ["local", "peers", "peers_v2"] {
        if q.text == format!("SELECT * FROM system.{table}") {
            return Ok(Plan::Topology { table });
        }
    }
    let stmt = match cql::parse(q.text) {
        Ok(s) => s,
        Err(e) => return Ok(Plan::fail(ErrorCode::SYNTAX_ERROR, e)),
    };
    // Named even when the statement then fails (no keyspace, say).
    *tag = match &stmt {
        Stmt::Insert {
            value: Term::Text(v),
            ..
        } => Some(tag_of_write(write_id(v)).to_owned()),
        Stmt::Select { alias, .. } => alias.clone(),
        _ => None,
    };
    let values: Vec<Value<'_>> = q
        .params
        .values
        .map(|v| v.iter().map(|(_, v)| v).collect())
        .unwrap_or_default();
    let keyspace = keyspace_of(statement_keyspace(&stmt), q.params.keyspace, conn);
    Ok(plan_statement(&stmt, &values, keyspace, q.params.timestamp))
}

fn statement_keyspace(stmt: &Stmt) -> Option<&str> {
    match stmt {
        Stmt::Insert { keyspace, .. } | Stmt::Select { keyspace, .. } => keyspace.as_deref(),
        Stmt::Use { .. } => None,
    }
}

fn prepare(message: &[u8], version: ProtocolVersion, conn: ConnView<'_>) -> Result<Plan, String> {
    let p = Prepare::decode(message, version).map_err(|e| e.to_string())?;
    Ok(match cql::parse(p.query) {
        Ok(stmt) => {
            let keyspace = keyspace_of(statement_keyspace(&stmt), p.keyspace, conn);
            Plan::Prepare {
                text: p.query.to_owned(),
                stmt,
                keyspace,
            }
        }
        Err(e) => Plan::fail(ErrorCode::SYNTAX_ERROR, e),
    })
}

fn execute(
    message: &[u8],
    version: ProtocolVersion,
    store: &Store,
    ids: &mut Vec<Bytes>,
    tag: &mut Option<String>,
) -> Result<Plan, String> {
    let e = Execute::decode(message, version).map_err(|e| e.to_string())?;
    ids.push(Bytes::copy_from_slice(e.id));
    let values: Vec<Value<'_>> = e
        .params
        .values
        .map(|v| v.iter().map(|(_, v)| v).collect())
        .unwrap_or_default();
    *tag = values.iter().find_map(tag_in_value);
    let Some(entry) = store.prepared(e.id) else {
        return Ok(Plan::Unprepared {
            id: Bytes::copy_from_slice(e.id),
        });
    };
    Ok(plan_statement(
        &entry.stmt,
        &values,
        entry.keyspace.clone(),
        e.params.timestamp,
    ))
}

fn batch(
    message: &[u8],
    version: ProtocolVersion,
    conn: ConnView<'_>,
    store: &Store,
    ids: &mut Vec<Bytes>,
    tag: &mut Option<String>,
) -> Result<Plan, String> {
    let b = Batch::decode(message, version).map_err(|e| e.to_string())?;
    let mut writes = Vec::new();
    let mut unknown = None;
    for entry in b.statements.iter() {
        let values: Vec<Value<'_>> = entry.values.iter().map(|(_, v)| v).collect();
        if tag.is_none() {
            *tag = values
                .iter()
                .find_map(tag_in_value)
                .or_else(|| match entry.statement {
                    BatchEntry::Query(text) => match cql::parse(text) {
                        Ok(Stmt::Insert {
                            value: Term::Text(v),
                            ..
                        }) => Some(tag_of_write(write_id(&v)).to_owned()),
                        _ => None,
                    },
                    BatchEntry::Prepared(_) => None,
                });
        }
        let (stmt, keyspace) = match entry.statement {
            BatchEntry::Query(text) => match cql::parse(text) {
                Ok(stmt) => {
                    let ks = keyspace_of(statement_keyspace(&stmt), b.keyspace, conn);
                    (stmt, ks)
                }
                Err(e) => return Ok(Plan::fail(ErrorCode::SYNTAX_ERROR, e)),
            },
            BatchEntry::Prepared(id) => {
                ids.push(Bytes::copy_from_slice(id));
                match store.prepared(id) {
                    Some(p) => (p.stmt.clone(), p.keyspace.clone()),
                    None => {
                        unknown.get_or_insert_with(|| Bytes::copy_from_slice(id));
                        continue;
                    }
                }
            }
        };
        if !stmt.is_write() {
            return Ok(Plan::fail(
                ErrorCode::INVALID,
                "Only INSERT, UPDATE and DELETE statements are allowed in a batch",
            ));
        }
        match plan_statement(&stmt, &values, keyspace, None) {
            Plan::Writes { writes: w, .. } => writes.extend(w),
            other => return Ok(other),
        }
    }
    if let Some(id) = unknown {
        return Ok(Plan::Unprepared { id });
    }
    Ok(Plan::Writes {
        writes,
        timestamp: b.timestamp,
    })
}

// ---- answers ---------------------------------------------------------------------------

/// The SUPPORTED body of a cluster speaking `versions` with `compressions`.
pub(crate) fn supported(versions: &[ProtocolVersion], compressions: &[Compression]) -> Bytes {
    let versions: Vec<&str> = versions
        .iter()
        .map(|&v| Supported::protocol_version_entry(v))
        .collect();
    let compressions: Vec<&str> = compressions.iter().map(|c| c.name()).collect();
    Supported {
        options: vec![
            ("CQL_VERSION", vec!["3.4.7"]),
            ("COMPRESSION", compressions),
            ("PROTOCOL_VERSIONS", versions),
        ],
    }
    .to_bytes(ProtocolVersion::V4)
}

pub(crate) fn authenticate() -> Bytes {
    Authenticate {
        authenticator: Authenticate::PASSWORD_AUTHENTICATOR,
    }
    .to_bytes(ProtocolVersion::V4)
}

/// An ERROR body with the fields its code needs.
pub(crate) fn error(code: ErrorCode, message: &str, version: ProtocolVersion) -> Bytes {
    let details = match code {
        ErrorCode::UNAVAILABLE => ErrorDetails::Unavailable {
            consistency: Consistency::ONE,
            required: 1,
            alive: 0,
        },
        ErrorCode::WRITE_TIMEOUT => ErrorDetails::WriteTimeout {
            consistency: Consistency::ONE,
            received: 0,
            block_for: 1,
            write_type: "SIMPLE",
            contentions: None,
        },
        ErrorCode::READ_TIMEOUT => ErrorDetails::ReadTimeout {
            consistency: Consistency::ONE,
            received: 0,
            block_for: 1,
            data_present: false,
        },
        _ => ErrorDetails::None,
    };
    ErrorMessage {
        code,
        message: message.into(),
        details,
    }
    .to_bytes(version)
}

pub(crate) fn unprepared(id: &[u8], version: ProtocolVersion) -> Bytes {
    ErrorMessage::unprepared(id).to_bytes(version)
}

pub(crate) fn void() -> Bytes {
    ResultMessage::Void.to_bytes(ProtocolVersion::V4)
}

pub(crate) fn set_keyspace(keyspace: &str) -> Bytes {
    ResultMessage::SetKeyspace(keyspace).to_bytes(ProtocolVersion::V4)
}

const TABLE_SPEC: TableSpec<'static> = TableSpec {
    keyspace: cql::KEYSPACE,
    table: cql::TABLE,
};

/// A Rows result of one text column named `column`, with zero or one row.
pub(crate) fn rows(column: &str, value: Option<&str>) -> Bytes {
    let metadata = RowsMetadata::new(Columns::in_table(
        TABLE_SPEC,
        &[(column, ColumnType::Varchar)],
    ));
    let mut writer = RowsWriter::new(&metadata);
    if let Some(v) = value {
        // One cell for one column: cannot fail.
        let _ = writer.push_row([Some(v.as_bytes())]);
    }
    writer.finish()
}

/// The address of a simulated cluster's `n`th node (the proxy connects to node 0; node 1 is
/// its peer): an address drivers must never see.
pub fn node_address(which: Upstream, n: u8) -> [u8; 4] {
    [10, 0, 1 + which.index() as u8, 1 + n]
}

type Column = (&'static str, ColumnType<'static>);
type Cell = Option<Vec<u8>>;

/// A Rows result of `system.<table>` as the `which` cluster has it: two nodes, the one
/// answering and a peer, with the columns drivers read.
pub(crate) fn topology_rows(which: Upstream, table: &str) -> Bytes {
    let spec = TableSpec {
        keyspace: "system",
        table: match table {
            "local" => "local",
            "peers" => "peers",
            _ => "peers_v2",
        },
    };
    let tokens = |t: &str| {
        let mut out = Vec::new();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&(t.len() as i32).to_be_bytes());
        out.extend_from_slice(t.as_bytes());
        out
    };
    let dc = format!("dc_{which}");
    let host_id = |n: u8| {
        vec![
            which.index() as u8 + 1,
            n,
            0,
            0,
            0,
            0,
            0x40,
            0,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            n,
        ]
    };
    let schema = vec![7u8; 16];
    let text = |s: &str| Some(s.as_bytes().to_vec());
    let (columns, row): (Vec<Column>, Vec<Cell>) = match table {
        "local" => (
            vec![
                ("key", ColumnType::Varchar),
                ("broadcast_address", ColumnType::Inet),
                ("cluster_name", ColumnType::Varchar),
                ("data_center", ColumnType::Varchar),
                ("host_id", ColumnType::Uuid),
                ("partitioner", ColumnType::Varchar),
                ("rack", ColumnType::Varchar),
                ("release_version", ColumnType::Varchar),
                ("rpc_address", ColumnType::Inet),
                ("rpc_port", ColumnType::Int),
                ("schema_version", ColumnType::Uuid),
                ("tokens", ColumnType::Set(Box::new(ColumnType::Varchar))),
            ],
            vec![
                text("local"),
                Some(node_address(which, 0).to_vec()),
                text(&format!("sim-{which}")),
                text(&dc),
                Some(host_id(0)),
                text("org.apache.cassandra.dht.Murmur3Partitioner"),
                text("rack1"),
                text("5.0.8"),
                Some(node_address(which, 0).to_vec()),
                Some(9042i32.to_be_bytes().to_vec()),
                Some(schema.clone()),
                Some(tokens("0")),
            ],
        ),
        "peers" => (
            vec![
                ("peer", ColumnType::Inet),
                ("data_center", ColumnType::Varchar),
                ("host_id", ColumnType::Uuid),
                ("preferred_ip", ColumnType::Inet),
                ("rack", ColumnType::Varchar),
                ("release_version", ColumnType::Varchar),
                ("rpc_address", ColumnType::Inet),
                ("schema_version", ColumnType::Uuid),
                ("tokens", ColumnType::Set(Box::new(ColumnType::Varchar))),
            ],
            vec![
                Some(node_address(which, 1).to_vec()),
                text(&dc),
                Some(host_id(1)),
                None,
                text("rack1"),
                text("5.0.8"),
                Some(node_address(which, 1).to_vec()),
                Some(schema.clone()),
                Some(tokens("42")),
            ],
        ),
        _ => (
            vec![
                ("peer", ColumnType::Inet),
                ("peer_port", ColumnType::Int),
                ("data_center", ColumnType::Varchar),
                ("host_id", ColumnType::Uuid),
                ("native_address", ColumnType::Inet),
                ("native_port", ColumnType::Int),
                ("preferred_ip", ColumnType::Inet),
                ("preferred_port", ColumnType::Int),
                ("rack", ColumnType::Varchar),
                ("release_version", ColumnType::Varchar),
                ("schema_version", ColumnType::Uuid),
                ("tokens", ColumnType::Set(Box::new(ColumnType::Varchar))),
            ],
            vec![
                Some(node_address(which, 1).to_vec()),
                Some(7000i32.to_be_bytes().to_vec()),
                text(&dc),
                Some(host_id(1)),
                Some(node_address(which, 1).to_vec()),
                Some(9042i32.to_be_bytes().to_vec()),
                None,
                None,
                text("rack1"),
                text("5.0.8"),
                Some(schema.clone()),
                Some(tokens("42")),
            ],
        ),
    };
    let metadata = RowsMetadata::new(Columns::in_table(spec, &columns));
    let mut writer = RowsWriter::new(&metadata);
    // As many cells as columns, by construction.
    let _ = writer.push_row(row.iter().map(|c| c.as_deref()));
    writer.finish()
}

/// A Prepared result for `stmt` with the cluster's ids.
pub(crate) fn prepared(
    stmt: &Stmt,
    id: &[u8],
    result_metadata_id: &[u8],
    version: ProtocolVersion,
) -> Bytes {
    let mut columns = Vec::new();
    let mut pk_indexes = Vec::new();
    let mut marker = |name: &'static str, column_type: ColumnType<'static>, is_key: bool| {
        if is_key {
            pk_indexes.push(columns.len() as u16);
        }
        columns.push(ColumnSpec {
            table: None,
            name,
            column_type,
        });
    };
    let result_columns = match stmt {
        Stmt::Insert { key, value, .. } => {
            if *key == Term::Marker {
                marker("k", ColumnType::Int, true);
            }
            if *value == Term::Marker {
                marker("v", ColumnType::Varchar, false);
            }
            Columns::Skipped { count: 0 }
        }
        Stmt::Select { key, alias, .. } => {
            if *key == Term::Marker {
                marker("k", ColumnType::Int, true);
            }
            let name = alias.as_deref().unwrap_or("v");
            Columns::Described {
                global_table_spec: Some(TABLE_SPEC),
                specs: vec![ColumnSpec {
                    table: None,
                    name,
                    column_type: ColumnType::Varchar,
                }],
            }
        }
        Stmt::Use { .. } => Columns::Skipped { count: 0 },
    };
    let result = ResultMessage::Prepared(Prepared {
        id,
        result_metadata_id: Some(result_metadata_id),
        metadata: PreparedMetadata {
            pk_indexes,
            global_table_spec: Some(TABLE_SPEC),
            columns,
        },
        result_metadata: RowsMetadata::new(result_columns),
    });
    result.to_bytes(version)
}
