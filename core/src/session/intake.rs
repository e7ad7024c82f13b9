//! Client frames: deciding what each request is, preparing what each cluster gets, and sending.
//!
//! A request is decoded only as far as routing and its rewrites need: the statement text of a
//! QUERY, the id of an EXECUTE, the statements of a BATCH. Bodies the proxy does not change are
//! forwarded as they arrived (still compressed, shared by both clusters).

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::{Upstream, WriteOrder};
use crate::error::{DecodeError, DecodeErrorKind};
use crate::failure::FailureKind;
use crate::frame::{Direction, Envelope, Flags, Header, Opcode, Prefix, ProtocolVersion, StreamId};
use crate::message::timestamp::stamp_decoded;
use crate::message::{
    Batch, Body, DefaultTimestamp, ErrorMessage, Execute, Prepare, Query, Spliced,
    Statement as BatchEntry, ensure_default_timestamp,
};
use crate::routing::{Mirror, ReadMode, RequestClass, Route, route};
use crate::session::leg::Purpose;
use crate::session::order::Held;
use crate::session::request::{Compared, Kind, Leg, Outcome, Outgoing, Repair, Request, RequestId};
use crate::session::topology::TopologyRead;
use crate::session::{Phase, Session, functions};
use crate::statement::datacenters::map_datacenters;
use crate::statement::{Statement, StatementKind, has_order_by, tables};
use crate::topology::SystemQuery;
use crate::topology::answer::Bound;

/// What a request turned out to be.
enum Inspected {
    /// A request for the clusters.
    Request(Intake),
    /// An EXECUTE or BATCH of a prepared statement the proxy does not know (this is its id).
    Unknown(Bytes),
    /// A read of a topology table, which the session answers itself.
    TopologyRead {
        query: SystemQuery,
        bound: Bound,
        skip_metadata: bool,
    },
}

/// What the session learned from a request and what it will send.
struct Intake {
    class: RequestClass,
    write: bool,
    /// Ordered against what the client saw answered (see `order.rs`).
    barrier: bool,
    kind: Kind,
    /// The message with the client's prepared ids, when the proxy changed it (a write
    /// timestamp).
    message: Option<Bytes>,
    /// Per cluster (by [`Upstream::index`]), the message when it differs from `message`: the
    /// cluster's own prepared ids (a new head and the shared rest of the message, for an
    /// EXECUTE).
    mapped: [Option<Spliced>; 2],
    /// What comparing the answers needs, for a read the read mode may compare (boxed as the
    /// request keeps it: most requests are not compared).
    compare: Option<Box<Compared>>,
    /// A schema change (see `agreement.rs`).
    schema_change: bool,
    /// Every table it touches is in `--filter-tables`: the target never gets it.
    off_target: bool,
}

impl Session {
    pub(super) fn read_client(&mut self, buf: &mut bytes::BytesMut, now: Instant) {
        // A draining session takes no new requests; what the client sent stays unread.
        while self.client.is_open() && !self.draining {
            match self.client.decode(buf) {
                Ok(Some(envelope)) => self.on_client_envelope(envelope, now),
                Ok(None) => break,
                Err(error) => {
                    self.client_frame_error(&error, buf, now);
                    break;
                }
            }
        }
    }

    fn client_frame_error(&mut self, error: &DecodeError, buf: &bytes::BytesMut, now: Instant) {
        if let DecodeErrorKind::UnsupportedVersion { version } = error.kind {
            match self.client.peek_refusal(buf) {
                Some(refusal) => self.refuse_version(refusal.version, refusal.stream, now),
                // Inside a segment the bytes that did arrive are all there will be.
                None if self.client.is_segmented() => {
                    self.refuse_version(version, StreamId(0), now)
                }
                // Wait for the stream id bytes, which the refusal must echo.
                None => {}
            }
            return;
        }
        let stream = match (self.phase, buf.get(2..4)) {
            (Phase::Startup | Phase::Starting, Some(&[hi, lo])) => {
                StreamId(i16::from_be_bytes([hi, lo]))
            }
            _ => StreamId(0),
        };
        self.fatal_client_error(stream, format!("malformed frame: {error}"), now);
    }

    fn on_client_envelope(&mut self, envelope: Envelope, now: Instant) {
        let version = envelope.version();
        let stream = envelope.stream();
        if let Some(established) = self.version {
            if version != established {
                let why = format!(
                    "this connection uses protocol {established}; a {version} frame is not allowed on it"
                );
                return self.fatal_client_error(stream, why, now);
            }
        }
        if !self.proxy.accepts(version) || envelope.header().flags.contains(Flags::USE_BETA) {
            return self.refuse_version(version.number(), stream, now);
        }
        self.spoken = Some(version);
        if stream.0 < 0 {
            // Negative ids are the server's (events): an answer on one would reach the
            // client's event handler, not the request.
            let why = format!(
                "stream id {} is negative: negative stream ids are reserved for server events",
                stream.0
            );
            return self.fatal_client_error(StreamId(0), why, now);
        }
        match (envelope.opcode(), self.phase) {
            (Opcode::OPTIONS, _) => self.start_options(envelope, now),
            (Opcode::STARTUP, Phase::Startup) => self.start_startup(envelope, now),
            (Opcode::AUTH_RESPONSE, Phase::Authenticating) => {
                self.start_auth_response(envelope, now)
            }
            (
                Opcode::QUERY
                | Opcode::PREPARE
                | Opcode::EXECUTE
                | Opcode::BATCH
                | Opcode::REGISTER,
                Phase::Ready,
            ) => self.start_request(envelope, now),
            (opcode, phase) => {
                let why = match phase {
                    Phase::Ready => {
                        format!("unexpected message {opcode} on an established connection")
                    }
                    Phase::Authenticating => {
                        format!("unexpected message {opcode}, expecting AUTH_RESPONSE")
                    }
                    Phase::Startup | Phase::Starting => {
                        format!("unexpected message {opcode}, expecting STARTUP or OPTIONS")
                    }
                };
                let is_request = matches!(
                    opcode,
                    Opcode::STARTUP
                        | Opcode::OPTIONS
                        | Opcode::QUERY
                        | Opcode::PREPARE
                        | Opcode::EXECUTE
                        | Opcode::BATCH
                        | Opcode::REGISTER
                        | Opcode::AUTH_RESPONSE
                );
                if is_request {
                    self.client_error(why.clone(), now);
                    self.error_to_client(stream, version, &ErrorMessage::protocol_error(why));
                } else {
                    self.fatal_client_error(stream, why, now);
                }
            }
        }
    }

    /// A QUERY, PREPARE, EXECUTE, BATCH or REGISTER on an established connection.
    fn start_request(&mut self, envelope: Envelope, now: Instant) {
        let version = envelope.version();
        let header = *envelope.header();
        let max = self.proxy.config().max_frame_size;
        // A plain body is read where it is (a clone of the envelope is a reference count more).
        let split = match envelope.has_compressed_body() {
            true => envelope
                .decompressed(self.compression, max)
                .and_then(|plain| split_prefix(&plain)),
            false => split_prefix(&envelope),
        };
        let (prefix, message) = match split {
            Ok(parts) => parts,
            Err(e) => {
                return self.fatal_client_error(
                    header.stream,
                    format!("malformed {}: {e}", header.opcode),
                    now,
                );
            }
        };
        let mut intake = match self.inspect(header.opcode, &message, version, now) {
            Ok(Inspected::Request(intake)) => intake,
            // A prepared statement the proxy does not know (it restarted, or forgot it) could
            // be neither mapped to a cluster's own id nor stamped nor repaired: the driver
            // prepares it again, through the proxy, and retries.
            Ok(Inspected::Unknown(unknown)) => {
                let mut error = ErrorMessage::unprepared(&unknown);
                error.message =
                    format!("cqlmirror: {} (unknown to the proxy)", error.message).into();
                return self.error_to_client(header.stream, version, &error);
            }
            Ok(Inspected::TopologyRead {
                query,
                bound,
                skip_metadata,
            }) => {
                let read = TopologyRead {
                    stream: header.stream,
                    version,
                    query,
                    bound,
                    skip_metadata,
                };
                return self.topology_read(read, now);
            }
            Err(e) => {
                return self.fatal_client_error(
                    header.stream,
                    format!("malformed {} body: {e}", header.opcode),
                    now,
                );
            }
        };
        if let Kind::Prepared(repair) = &mut intake.kind {
            repair.flags = header.flags.difference(Flags::COMPRESSION);
        }
        // Unchanged bodies go out as they came, compressed or not; changed ones go uncompressed
        // (the compression flag is per frame).
        let flags = header.flags.difference(Flags::COMPRESSION);
        let base = match &intake.message {
            Some(message) => Outgoing::new(flags, join(&prefix, message)),
            None => Outgoing::new(header.flags, envelope.body().clone()),
        };
        // A cluster's own version: its new head goes out before the shared rest as it is
        // (the custom payload, if any, goes first).
        let rebuilt = |spliced: Spliced| {
            let head = match prefix.is_empty() {
                true => spliced.head,
                false => join(&prefix, &spliced.head),
            };
            Outgoing {
                flags,
                head,
                body: spliced.tail,
            }
        };
        let mut permit = None;
        let mut route = route(
            intake.class,
            self.proxy.read_mode(),
            self.proxy.primary(),
            || {
                permit = self.proxy.shadow().take();
                permit.is_some()
            },
        );
        if intake.off_target {
            route = Route {
                primary: Upstream::Source,
                secondary: None,
                mirror: Mirror::Apply,
            };
        }
        // Only the clusters the request goes to get a body: each is one more reference to the
        // client's bytes (an atomic increment, and a decrement when it is dropped).
        let [source_spliced, target_spliced] = intake.mapped;
        let (to_source, to_target) = (
            route.includes(Upstream::Source),
            route.includes(Upstream::Target),
        );
        let source_shares = to_source && source_spliced.is_none();
        let mut base = Some(base);
        let for_target = match (to_target, target_spliced) {
            (false, _) => None,
            (true, Some(spliced)) => Some(rebuilt(spliced)),
            (true, None) if source_shares => base.clone(),
            (true, None) => base.take(),
        };
        let for_source = match (to_source, source_spliced) {
            (false, _) => None,
            (true, Some(spliced)) => Some(rebuilt(spliced)),
            (true, None) => base.take(),
        };
        let bodies = [for_source, for_target];
        let (seen, serial) = (self.order.answered, self.next_serial());
        let mut request = self.requests.boxed(Request::new(
            &header,
            intake.kind,
            route,
            intake.write,
            intake.barrier,
            seen,
            serial,
            now,
        ));
        request.schema_change = intake.schema_change;
        if route.mirror != Mirror::Apply {
            let mut compare = intake
                .compare
                .unwrap_or_else(|| Box::new(Compared::unknown()));
            compare._permit = permit;
            request.compare = Some(compare);
        }
        if header.opcode == Opcode::QUERY && intake.write {
            // As the clusters get it (stamped, with generated values): the journal keeps it.
            request.query = Some(intake.message.clone().unwrap_or(message));
        }
        if self.proxy.config().journal
            && intake.write
            && matches!(header.opcode, Opcode::QUERY | Opcode::BATCH)
        {
            request.journal_keyspace.clone_from(&self.keyspace);
        }
        self.launch(request, bodies, prefix, now);
    }

    /// Classifies a request and prepares the rewrites it needs.
    fn inspect(
        &mut self,
        opcode: Opcode,
        message: &Bytes,
        version: ProtocolVersion,
        now: Instant,
    ) -> Result<Inspected, DecodeError> {
        match opcode {
            Opcode::QUERY => {
                let text = Query::peek_text(message)?;
                let statement = Statement::classify(text);
                if let Some(query) = SystemQuery::of(&statement, text, self.keyspace.as_deref()) {
                    let params = Query::decode(message, version)?.params;
                    return Ok(Inspected::TopologyRead {
                        query,
                        bound: bound(params.values),
                        skip_metadata: params.skip_metadata,
                    });
                }
                let stamp = statement.kind.is_data_write() && !statement.conditional;
                let mapped = if statement.kind == StatementKind::Schema {
                    self.replication_for_each(message, version)?
                        .map(|m| m.map(Spliced::whole))
                } else {
                    [None, None]
                };
                if statement.kind == StatementKind::Use {
                    // Statements the client sends after it, before the answer, are in that
                    // keyspace (it is set again from the primary's SET_KEYSPACE answer).
                    self.keyspace.clone_from(&statement.keyspace);
                }
                let off_target = self.filtered(&statement, text, self.keyspace.as_deref());
                // Calls of now(), uuid(), ...: one value each, the same for both clusters.
                let replaced = if statement.calls_functions && self.proxy.config().replace_functions
                {
                    self.query_with_values(message, text, version, now)?
                } else {
                    None
                };
                let class = crate::routing::class_of(&statement, self.keyspace.as_deref());
                let compare = self.compares(class).then(|| Compared {
                    table: statement
                        .table
                        .clone()
                        .map(|t| t.in_keyspace(self.keyspace.as_deref())),
                    ordered: has_order_by(text),
                    statement: Some(crate::session::compare::cut_statement(text)),
                    prepared: None,
                    _permit: None,
                });
                let compare = compare.map(Box::new);
                Ok(Inspected::Request(Intake {
                    class,
                    off_target,
                    compare,
                    write: !statement.kind.is_read(),
                    barrier: is_barrier(&statement),
                    kind: if statement.kind == StatementKind::Use {
                        Kind::Use
                    } else {
                        Kind::Plain
                    },
                    message: if stamp {
                        let base = replaced.as_ref().unwrap_or(message);
                        self.stamped(opcode, base, version, now)?.or(replaced)
                    } else {
                        replaced
                    },
                    mapped,
                    schema_change: statement.kind == StatementKind::Schema,
                }))
            }
            Opcode::PREPARE => {
                let prepare = Prepare::decode(message, version)?;
                // A write calling now(), uuid(), ... is prepared with markers in their place,
                // which each EXECUTE binds to values the proxy generates.
                let markers =
                    functions::markers_for(self.proxy.config().replace_functions, prepare.query);
                let (query, message, generated) = match markers {
                    Some(w) => {
                        let body = Prepare {
                            query: &w.text,
                            keyspace: prepare.keyspace,
                        }
                        .to_bytes(version);
                        (w.text, Some(body), Some(functions::shared(w.markers)))
                    }
                    None => (prepare.query.to_owned(), None, None),
                };
                Ok(Inspected::Request(Intake {
                    class: RequestClass::Prepare,
                    write: false,
                    // An EXECUTE that overtakes its PREPARE on the secondary gets UNPREPARED,
                    // which the proxy repairs: no need to hold anything back for it.
                    barrier: false,
                    kind: Kind::Prepare {
                        query,
                        keyspace: prepare
                            .keyspace
                            .map(str::to_owned)
                            .or_else(|| self.keyspace.clone()),
                        client_id: None,
                        early: None,
                        generated,
                    },
                    message,
                    mapped: [None, None],
                    compare: None,
                    schema_change: false,
                    off_target: false,
                }))
            }
            Opcode::EXECUTE => {
                let id = Execute::peek_id(message)?;
                // One look under the lock: what is decided from the statement (nothing of it
                // is copied but for a compared read), and the ids of clusters that know it by
                // another id than the client's (none, usually).
                let (decided, own, system, generated, compare) = {
                    let cache = self.proxy.prepared();
                    let Some(p) = cache.get(id) else {
                        return Ok(Inspected::Unknown(Bytes::copy_from_slice(id)));
                    };
                    let own = Upstream::BOTH.map(|upstream| {
                        p.ids(upstream)
                            // Another id (the cluster prepared it anew, perhaps from a
                            // qualified text), or in v5 the other cluster's own result
                            // metadata id.
                            .filter(|own| {
                                own.id.as_ref() != id
                                    || (p.origin != upstream && version >= ProtocolVersion::V5)
                            })
                            .cloned()
                    });
                    let statement = &p.statement;
                    let decided = Decided {
                        class: crate::routing::class_of(statement, p.keyspace.as_deref()),
                        write: !statement.kind.is_read(),
                        stamp: statement.kind.is_data_write() && !statement.conditional,
                        barrier: is_barrier(statement),
                        schema_change: statement.kind == StatementKind::Schema,
                        off_target: p.off_target,
                    };
                    let compare = self.compares(decided.class).then(|| Compared {
                        table: statement
                            .table
                            .clone()
                            .map(|t| t.in_keyspace(p.keyspace.as_deref())),
                        ordered: has_order_by(&p.query),
                        statement: Some(crate::session::compare::cut_statement(&p.query)),
                        prepared: Some(Bytes::copy_from_slice(id)),
                        _permit: None,
                    });
                    let compare = compare.map(Box::new);
                    (decided, own, p.system.clone(), p.generated.clone(), compare)
                };
                if let Some(query) = system {
                    let params = Execute::decode(message, version)?.params;
                    return Ok(Inspected::TopologyRead {
                        query,
                        bound: bound(params.values),
                        skip_metadata: params.skip_metadata,
                    });
                }
                let Decided {
                    class,
                    write,
                    stamp,
                    barrier,
                    schema_change,
                    off_target,
                } = decided;
                // Fresh values for the markers the proxy put in place of function calls.
                let with_values = match generated.as_deref() {
                    Some(markers) => {
                        Some(self.execute_with_values(message, version, markers, now)?)
                    }
                    None => None,
                };
                let stamped = if stamp {
                    let base = with_values.as_ref().unwrap_or(message);
                    self.stamped(opcode, base, version, now)?.or(with_values)
                } else {
                    with_values
                };
                let with_client_ids = stamped.clone().unwrap_or_else(|| message.clone());
                // The cluster the client's ids come from needs nothing; another needs its own
                // id, and in v5 its own result metadata id too: a new head, the parameters
                // shared.
                let mut mapped = [None, None];
                for (slot, own) in mapped.iter_mut().zip(own) {
                    if let Some(own) = own {
                        *slot = Some(Execute::with_ids(
                            &with_client_ids,
                            version,
                            &own.id,
                            own.result_metadata_id.as_deref(),
                        )?);
                    }
                }
                Ok(Inspected::Request(Intake {
                    class,
                    barrier,
                    write,
                    kind: Kind::Prepared(Repair::new(with_client_ids)),
                    message: stamped,
                    mapped,
                    compare,
                    schema_change,
                    off_target,
                }))
            }
            Opcode::BATCH => {
                // Decoded once: the statements are walked again from this for the clusters'
                // own ids, and the layout places a timestamp.
                let (batch, layout) = Batch::decode_with_layout(message, version)?;
                // A client timestamp only when no statement is conditional, as far as known;
                // a cluster's own ids only for a cluster that knows a statement by another id.
                let mut stamp = true;
                let mut ordered = false;
                let mut calls = false;
                // Per prepared id that a cluster knows by another: that cluster's own ids.
                let mut remaps: Vec<(&[u8], [Option<Bytes>; 2])> = Vec::new();
                {
                    let cache = self.proxy.prepared();
                    for entry in batch.statements.iter() {
                        let known = match entry.statement {
                            BatchEntry::Query(text) => {
                                let statement = Statement::classify(text);
                                calls |= statement.calls_functions;
                                Some((statement.conditional, statement.order_sensitive))
                            }
                            BatchEntry::Prepared(id) => {
                                let Some(p) = cache.get(id) else {
                                    return Ok(Inspected::Unknown(Bytes::copy_from_slice(id)));
                                };
                                let own = Upstream::BOTH.map(|upstream| {
                                    p.ids(upstream)
                                        .filter(|own| own.id.as_ref() != id)
                                        .map(|own| own.id.clone())
                                });
                                if own.iter().any(Option::is_some)
                                    && !remaps.iter().any(|(seen, _)| *seen == id)
                                {
                                    remaps.push((id, own));
                                }
                                calls |= p.generated.is_some();
                                Some((p.statement.conditional, p.statement.order_sensitive))
                            }
                        };
                        stamp &= known.is_some_and(|(conditional, _)| !conditional);
                        ordered |= known.is_some_and(|(_, order_sensitive)| order_sensitive);
                    }
                }
                // Calls in text entries and markers of prepared ones: one value each.
                let with_values = if calls && self.proxy.config().replace_functions {
                    self.batch_with_values(message, version, now)?
                } else {
                    None
                };
                // Without new values the statements are the message's, byte for byte (a
                // timestamp goes after them): the decoded ones are walked for the ids.
                let same_statements = with_values.is_none();
                let stamped = match (stamp, &with_values) {
                    (false, _) => with_values,
                    (true, Some(changed)) => {
                        self.stamped(opcode, changed, version, now)?.or(with_values)
                    }
                    (true, None) => {
                        let micros = self.proxy.write_timestamp(now);
                        let (timestamp, now_in_seconds) = (batch.timestamp, batch.now_in_seconds);
                        match stamp_decoded(
                            message,
                            version,
                            timestamp,
                            now_in_seconds,
                            layout,
                            micros,
                        )? {
                            DefaultTimestamp::Inserted(body) => Some(body),
                            DefaultTimestamp::AlreadySet(_) => None,
                        }
                    }
                };
                let with_client_ids = stamped.clone().unwrap_or_else(|| message.clone());
                // `--filter-tables`: the target gets the batch without the statements of
                // filtered tables, or nothing when they all are.
                let (off_target, for_target) =
                    match self.filtered_batch(&with_client_ids, version)? {
                        BatchFilter::Unfiltered => (false, None),
                        BatchFilter::All => (true, None),
                        BatchFilter::Some(rest) => (false, Some(rest)),
                    };
                let mut mapped = [None, None];
                for upstream in Upstream::BOTH {
                    let i = upstream.index();
                    let base = match (&for_target, upstream) {
                        (Some(rest), Upstream::Target) => Some(rest),
                        _ => None,
                    };
                    if remaps.iter().any(|(_, own)| own[i].is_some()) {
                        let own = |id: &[u8]| {
                            remaps
                                .iter()
                                .find(|(seen, _)| *seen == id)
                                .and_then(|(_, own)| own[i].clone())
                        };
                        mapped[i] = match base {
                            Some(rest) => self.map_batch_ids(rest, version, upstream)?,
                            None if same_statements => {
                                let body =
                                    Batch::map_ids_of(&with_client_ids, &batch.statements, own)?;
                                Some(body)
                            }
                            None => self.map_batch_ids(&with_client_ids, version, upstream)?,
                        };
                    }
                    if mapped[i].is_none() && upstream == Upstream::Target {
                        mapped[i] = for_target.clone();
                    }
                }
                Ok(Inspected::Request(Intake {
                    class: RequestClass::Write,
                    write: true,
                    // Unordered only when every statement is a known unconditional write
                    // that is not order-sensitive.
                    barrier: !stamp || ordered,
                    kind: Kind::Prepared(Repair::new(with_client_ids)),
                    message: stamped,
                    mapped: mapped.map(|m| m.map(Spliced::whole)),
                    compare: None,
                    schema_change: false,
                    off_target,
                }))
            }
            _ => {
                // Checked here: relayed, a garbage body got the clusters' errors merged into
                // something the client could take for READY.
                crate::message::Register::decode(message, version)?;
                Ok(Inspected::Request(Intake {
                    class: RequestClass::Register,
                    write: false,
                    barrier: false,
                    kind: Kind::Plain,
                    message: None,
                    mapped: [None, None],
                    compare: None,
                    schema_change: false,
                    off_target: false,
                }))
            }
        }
    }

    /// Whether `--filter-tables` keeps a statement off the target (see [`off_target`]).
    fn filtered(&self, statement: &Statement, text: &str, keyspace: Option<&str>) -> bool {
        off_target(
            self.proxy.config().filter_tables.as_ref(),
            statement,
            text,
            keyspace,
        )
    }

    /// What `--filter-tables` leaves of a BATCH for the target.
    pub(super) fn filtered_batch(
        &self,
        body: &Bytes,
        version: ProtocolVersion,
    ) -> Result<BatchFilter, DecodeError> {
        if self.proxy.config().filter_tables.is_none() {
            return Ok(BatchFilter::Unfiltered);
        }
        let batch = Batch::decode(body, version)?;
        let keyspace = batch.keyspace.or(self.keyspace.as_deref());
        let mut kept = Vec::new();
        {
            let cache = self.proxy.prepared();
            for entry in batch.statements.iter() {
                let filtered = match entry.statement {
                    BatchEntry::Query(text) => {
                        self.filtered(&Statement::classify(text), text, keyspace)
                    }
                    BatchEntry::Prepared(id) => cache.get(id).is_some_and(|p| p.off_target),
                };
                if !filtered {
                    kept.push(entry);
                }
            }
        }
        Ok(if kept.len() == batch.statements.len() {
            BatchFilter::Unfiltered
        } else if kept.is_empty() {
            BatchFilter::All
        } else {
            let rest = Batch {
                statements: crate::message::batch::Statements::new(&kept),
                ..batch
            };
            BatchFilter::Some(rest.to_bytes(version))
        })
    }

    /// Whether the read mode may compare the answers to a request of `class` (see
    /// [`route`]): what comparing needs is then gathered while the request is inspected.
    fn compares(&self, class: RequestClass) -> bool {
        class == RequestClass::Read && self.proxy.read_mode() != ReadMode::Primary
    }

    /// A keyspace statement (QUERY) with each cluster's own data-center names in its
    /// replication (`--dc-map`), by [`Upstream::index`]; `None` where nothing changes.
    fn replication_for_each(
        &self,
        message: &Bytes,
        version: ProtocolVersion,
    ) -> Result<[Option<Bytes>; 2], DecodeError> {
        let pairs = &self.proxy.config().dc_map;
        if pairs.is_empty() {
            return Ok([None, None]);
        }
        let query = Query::decode(message, version)?;
        let to_target: Vec<(String, String)> = pairs.clone();
        let to_source: Vec<(String, String)> =
            pairs.iter().map(|(s, t)| (t.clone(), s.clone())).collect();
        let mut out = [None, None];
        for (upstream, map) in [
            (Upstream::Source, &to_source),
            (Upstream::Target, &to_target),
        ] {
            if let Some(text) = map_datacenters(query.text, map) {
                out[upstream.index()] = Some(
                    Query {
                        text: &text,
                        params: query.params,
                    }
                    .to_bytes(version),
                );
            }
        }
        Ok(out)
    }

    /// The body with a client-side write timestamp, or `None` if it already has one.
    fn stamped(
        &self,
        opcode: Opcode,
        message: &Bytes,
        version: ProtocolVersion,
        now: Instant,
    ) -> Result<Option<Bytes>, DecodeError> {
        let micros = self.proxy.write_timestamp(now);
        Ok(
            match ensure_default_timestamp(opcode, message, version, micros)? {
                DefaultTimestamp::Inserted(body) => Some(body),
                DefaultTimestamp::AlreadySet(_) => None,
            },
        )
    }

    /// A BATCH body with `upstream`'s own prepared ids, or `None` when they are all the
    /// client's.
    pub(super) fn map_batch_ids(
        &self,
        body: &Bytes,
        version: ProtocolVersion,
        upstream: Upstream,
    ) -> Result<Option<Bytes>, DecodeError> {
        let cache = self.proxy.prepared();
        let mapped = Batch::map_prepared_ids(body, version, |id| {
            cache
                .get(id)
                .and_then(|p| p.ids(upstream))
                .filter(|own| own.id.as_ref() != id)
                .map(|own| own.id.clone())
        })?;
        let same = mapped.as_ptr() == body.as_ptr() && mapped.len() == body.len();
        Ok((!same).then_some(mapped))
    }

    /// Records a request and sends it to the clusters of its route, primary first. `bodies`
    /// holds what each cluster gets, indexed by [`Upstream::index`]. A cluster that is still
    /// in its handshake, or still runs something this request must come after, gets it later
    /// (see `order.rs`); so does the secondary of a write with `--write-order primary-first`,
    /// once the primary accepted it.
    pub(super) fn launch(
        &mut self,
        request: Box<Request>,
        bodies: [Option<Outgoing>; 2],
        prefix: Bytes,
        now: Instant,
    ) -> RequestId {
        let Route {
            primary,
            secondary,
            mirror,
        } = request.route;
        let steady = self.phase == Phase::Ready;
        let defer = steady
            && request.write
            && mirror == Mirror::Apply
            && self.proxy.write_order() == WriteOrder::PrimaryFirst;
        let id = self.requests.insert(request);
        if let Some(Request {
            kind: Kind::Prepared(repair),
            ..
        }) = self.requests.get_mut(id)
        {
            // The custom payload, if any, goes with a retry after a re-prepare too.
            repair.prefix = prefix;
        }
        // Whether the primary has the request (sent or held): the secondary gets it only then.
        let mut primary_has = false;
        for upstream in std::iter::once(primary).chain(secondary) {
            let leg = match bodies[upstream.index()].as_ref() {
                None => Leg::Unused,
                Some(_) if upstream != primary && !primary_has => Leg::Unused,
                Some(out)
                    if upstream != primary
                        && defer
                        && self.upstreams[upstream.index()].is_usable() =>
                {
                    // Sent once the primary accepted it (see `order.rs`). A secondary that
                    // failed already misses it now, as with `parallel`.
                    if let Some(request) = self.requests.get_mut(id) {
                        request.deferred = Some(Box::new(out.clone()));
                    }
                    Leg::Waiting
                }
                Some(out) => self.dispatch(id, upstream, out, now),
            };
            primary_has |= upstream == primary && leg.is_pending();
            if upstream != primary && leg.is_pending() {
                let bytes = bodies[upstream.index()].as_ref().map_or(0, Outgoing::len);
                if let Some(request) = self.requests.get_mut(id) {
                    *request.leg_mut(upstream) = leg;
                }
                self.lag_add(id, bytes, now);
            } else if let Some(request) = self.requests.get_mut(id) {
                *request.leg_mut(upstream) = leg;
            }
        }
        self.progress(id, now);
        id
    }

    /// Sends request `id` to `upstream` now, or holds it there (see `order.rs`); the leg it
    /// then has on that cluster.
    pub(super) fn dispatch(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        out: &Outgoing,
        now: Instant,
    ) -> Leg {
        let Some(request) = self.requests.get(id) else {
            return Leg::Unused;
        };
        let (opcode, version) = (request.opcode, request.version);
        let (barrier, seen) = (request.barrier, request.seen);
        let primary = upstream == request.route.primary;
        let steady = self.phase == Phase::Ready;
        let leg = &self.upstreams[upstream.index()];
        if steady
            && leg.is_usable()
            && !leg.rejoining
            && (!leg.is_ready()
                || self.order.must_wait(upstream, barrier, seen)
                || (!primary && leg.streams.is_full()))
        {
            // The cluster is still in its handshake, or this request must come after
            // something the client saw answered, or (the secondary) has no free stream id:
            // it waits (see `order.rs`). The client waits for its primary: that one keeps the
            // deadline it got now.
            let deadline = primary.then(|| now + self.request_timeout());
            self.hold(
                upstream,
                Held {
                    id,
                    opcode,
                    version,
                    out: out.clone(),
                    barrier,
                    seen,
                    deadline,
                },
            );
            return Leg::Waiting;
        }
        let usable = if steady {
            leg.is_ready()
        } else {
            leg.is_usable()
        };
        let sent = if usable {
            self.send_request(upstream, Purpose::Request(id), opcode, version, out, now)
        } else {
            Err(leg.failure())
        };
        match sent {
            Ok(()) => Leg::Waiting,
            Err(kind) => {
                if let Some(request) = self.requests.get_mut(id) {
                    request.unsent[upstream.index()] = true;
                }
                Leg::Done(Outcome::Failed(kind))
            }
        }
    }

    /// Sends one request to a cluster under a fresh stream id and arms its timeout.
    pub(super) fn send_request(
        &mut self,
        upstream: Upstream,
        purpose: Purpose,
        opcode: Opcode,
        version: ProtocolVersion,
        out: &Outgoing,
        now: Instant,
    ) -> Result<(), FailureKind> {
        let deadline = now + self.request_timeout();
        self.send_request_until(upstream, purpose, opcode, version, out, deadline)
    }

    /// Like [`Session::send_request`], with the deadline given (a held request keeps the one
    /// it got when it arrived).
    pub(super) fn send_request_until(
        &mut self,
        upstream: Upstream,
        purpose: Purpose,
        opcode: Opcode,
        version: ProtocolVersion,
        out: &Outgoing,
        deadline: Instant,
    ) -> Result<(), FailureKind> {
        let leg = &mut self.upstreams[upstream.index()];
        if !leg.is_usable() {
            return Err(leg.failure());
        }
        let length = u32::try_from(out.len()).map_err(|_| FailureKind::Protocol)?;
        let in_flight = crate::session::leg::InFlight {
            purpose,
            deadline,
            timed_out: false,
        };
        let stream = leg
            .streams
            .insert(in_flight)
            .map_err(|_| FailureKind::Overloaded)?;
        let header = Header {
            version,
            direction: Direction::Request,
            flags: out.flags,
            stream,
            opcode,
            length,
        };
        leg.send(header, &out.head, &out.body);
        self.stream_check = Some(self.stream_check.map_or(deadline, |at| at.min(deadline)));
        Ok(())
    }

    /// Answers the client's `stream` with an ERROR.
    pub(super) fn error_to_client(
        &mut self,
        stream: StreamId,
        version: ProtocolVersion,
        error: &ErrorMessage<'_>,
    ) {
        let body = error.to_bytes(version);
        let header = Header {
            version,
            direction: Direction::Response,
            flags: Flags::empty(),
            stream,
            opcode: Opcode::ERROR,
            length: body.len() as u32,
        };
        self.client.send(header, &body);
    }

    /// The version of an ERROR the proxy writes itself: the connection's once STARTUP fixed
    /// it, else the version of the client's last valid frame (as Cassandra answers in the
    /// version it was spoken to), else the highest the proxy accepts (what drivers that probe
    /// from a version too high expect, see protocol.md).
    fn answer_version(&self) -> ProtocolVersion {
        self.version
            .or(self.spoken)
            .or_else(|| self.proxy.accepted_versions().last().copied())
            .unwrap_or(ProtocolVersion::V4)
    }

    /// A protocol ERROR for a broken frame, then the connection is closed.
    pub(super) fn fatal_client_error(&mut self, stream: StreamId, why: String, now: Instant) {
        let version = self.answer_version();
        self.error_to_client(stream, version, &ErrorMessage::protocol_error(why.clone()));
        self.client_error(why, now);
        self.close_client(now);
    }

    /// Refuses a protocol version in the words drivers parse to step down, then closes.
    pub(super) fn refuse_version(&mut self, requested: u8, stream: StreamId, now: Instant) {
        let accepted = self.proxy.accepted_versions();
        let version = self.answer_version();
        self.error_to_client(
            stream,
            version,
            &ErrorMessage::version_refusal(requested, &accepted),
        );
        let detail = format!("refused protocol version {requested}; offered {accepted:?}");
        self.client_error(detail, now);
        self.close_client(now);
    }
}

/// Statements whose effect depends on what ran before them on the same cluster: they keep
/// their order on the secondary (see `order.rs`).
fn is_barrier(statement: &Statement) -> bool {
    statement.conditional
        || statement.order_sensitive
        || !matches!(
            statement.kind,
            StatementKind::Select
                | StatementKind::ListOrDescribe
                | StatementKind::Insert
                | StatementKind::Update
                | StatementKind::Delete
                | StatementKind::Batch
        )
}

/// What routing and rewriting decide from a prepared statement.
#[derive(Clone, Copy)]
struct Decided {
    class: RequestClass,
    write: bool,
    stamp: bool,
    barrier: bool,
    schema_change: bool,
    off_target: bool,
}

/// Whether `filter` keeps a statement off the target: every table it touches matches (a
/// text batch that mixes filtered and other tables goes to both: its statements cannot be
/// told apart without rewriting its text).
pub(super) fn off_target(
    filter: Option<&crate::filter::TableFilter>,
    statement: &Statement,
    text: &str,
    keyspace: Option<&str>,
) -> bool {
    let Some(filter) = filter else {
        return false;
    };
    let tables = match &statement.table {
        Some(table) => vec![table.clone()],
        None => tables::written_tables(text),
    };
    !tables.is_empty()
        && tables
            .into_iter()
            .all(|t| filter.matches(&t.in_keyspace(keyspace)))
}

/// What `--filter-tables` leaves of a BATCH for the target.
pub(super) enum BatchFilter {
    /// Everything: no statement is filtered.
    Unfiltered,
    /// Nothing: every statement is.
    All,
    /// The batch without the filtered statements.
    Some(Bytes),
}

/// The values bound to a statement, for a topology read's restrictions.
fn bound(values: Option<crate::message::Values<'_>>) -> Bound {
    Bound {
        values: values
            .map(|v| {
                v.iter()
                    .map(|(name, value)| {
                        let value = match value {
                            crate::wire::Value::Bytes(b) => Some(Bytes::copy_from_slice(b)),
                            crate::wire::Value::Null | crate::wire::Value::Unset => None,
                        };
                        (name.map(str::to_owned), value)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Splits a plain (decompressed) request body into its custom-payload prefix and message.
fn split_prefix(plain: &Envelope) -> Result<(Bytes, Bytes), DecodeError> {
    let body = plain.body();
    let (_, offset) = Prefix::parse(plain.header().flags, Direction::Request, body)?;
    Ok((body.slice(..offset), body.slice(offset..)))
}

/// `prefix` followed by `message`, copying only when there is a prefix.
pub(super) fn join(prefix: &Bytes, message: &Bytes) -> Bytes {
    if prefix.is_empty() {
        return message.clone();
    }
    let mut out = BytesMut::with_capacity(prefix.len() + message.len());
    out.put_slice(prefix);
    out.put_slice(message);
    out.freeze()
}
