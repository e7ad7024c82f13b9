//! A simulated Cassandra cluster: the real codec on the wire, a tiny key-value table behind
//! it, and faults on demand.
//!
//! It speaks protocol v3 to v5 (v5 with segments after the handshake, lz4 or not), answers
//! OPTIONS, STARTUP (READY, or AUTHENTICATE then AUTH_SUCCESS when it has credentials),
//! QUERY, PREPARE, EXECUTE, BATCH and REGISTER, and logs every request it receives with the
//! writes it carried and what became of its answer ([`Received`]). Prepared ids hash the
//! statement with a per-cluster salt, so that source and target ids differ.
//!
//! Faults: a latency per request, [`FaultRule`]s that delay, fail, forget, swallow or cut a
//! connection on chosen requests, and [`ClusterEvent`]s at fixed times (forget all prepared
//! statements, drop every connection, go silent, refuse connections).

mod conn;
pub mod faults;
pub mod log;
mod replay;
mod serve;
pub mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;

use crate::latency::Latency;
use crate::pipe::{Link, Read};
use crate::rng::SimRng;
use cqlmirror_core::config::Upstream;
use cqlmirror_core::frame::{Compression, Envelope, Opcode, ProtocolVersion};
use cqlmirror_core::message::{Body, ErrorCode};

use conn::{ClusterConn, Reply};
pub use faults::{ClusterEvent, Fault, FaultRule, Match};
pub use log::{AnswerState, Pushed, Received, WriteRecord};
pub use replay::writes_of_request;
use serve::{ConnView, Plan};
pub use serve::{TAG_KEY, tag_of_write, write_id};
pub use store::{Cell, PreparedEntry, Store, id_of};

/// What happens when the proxy connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectMode {
    /// The connection is established after the connect latency.
    Accept,
    /// Refused after the connect latency.
    Refuse,
    /// No answer at all (a firewall dropping packets).
    Hang,
}

/// How a simulated cluster behaves.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Mixed into prepared ids: clusters with different salts give different ids.
    pub salt: u64,
    pub versions: Vec<ProtocolVersion>,
    pub compressions: Vec<Compression>,
    /// PasswordAuthenticator with this user name and password.
    pub credentials: Option<(String, String)>,
    /// How long a request takes to be answered.
    pub latency: Latency,
    pub connect: ConnectMode,
    pub connect_latency: Latency,
    pub faults: Vec<FaultRule>,
    /// Events at run times, in any order.
    pub events: Vec<(Duration, ClusterEvent)>,
    /// Chance in millionths that a v3/v4 answer is compressed when compression was negotiated.
    pub compress_ppm: u32,
    /// Stop reading requests while this many answer bytes wait for the network.
    pub out_limit: usize,
    /// Push a SCHEMA_CHANGE EVENT this often to each connection that REGISTERed.
    pub event_every: Option<Duration>,
}

impl ClusterSpec {
    /// A healthy cluster with a few milliseconds of latency.
    pub fn healthy(salt: u64) -> Self {
        Self {
            salt,
            versions: ProtocolVersion::ALL.to_vec(),
            compressions: Compression::ALL.to_vec(),
            credentials: None,
            latency: Latency::millis(1, 5),
            connect: ConnectMode::Accept,
            connect_latency: Latency::millis(1, 3),
            faults: Vec::new(),
            events: Vec::new(),
            compress_ppm: 500_000,
            out_limit: 256 * 1024,
            event_every: None,
        }
    }

    /// Whether anything can go wrong with it: faults, events, refused or hanging connects,
    /// protocol versions it refuses, or a login it may refuse.
    pub fn has_faults(&self) -> bool {
        !self.faults.is_empty()
            || !self.events.is_empty()
            || self.connect != ConnectMode::Accept
            || self.versions.len() < ProtocolVersion::ALL.len()
            || self.credentials.is_some()
    }
}

/// Marker ids of answers: the harness learns when the proxy read each one.
pub(crate) fn answer_marker(which: Upstream, record: usize) -> u64 {
    (2 << 56) | ((which.index() as u64) << 40) | record as u64
}

/// Marker ids of pushed EVENTs.
pub(crate) fn push_marker(which: Upstream, push: usize) -> u64 {
    (3 << 56) | ((which.index() as u64) << 40) | push as u64
}

/// A simulated cluster.
#[derive(Debug)]
pub struct SimCluster {
    which: Upstream,
    spec: ClusterSpec,
    rng: SimRng,
    store: Store,
    conns: BTreeMap<usize, ClusterConn>,
    log: Vec<Received>,
    pushes: Vec<Pushed>,
    rule_counts: Vec<u64>,
    events: Vec<(Duration, ClusterEvent)>,
    latency: Latency,
    silent: bool,
    refusing: bool,
    seq: u64,
    /// Wall-clock microseconds at run time zero, for writes without a timestamp.
    epoch_micros: i64,
    violations: Vec<String>,
}

impl SimCluster {
    pub fn new(which: Upstream, spec: ClusterSpec, rng: SimRng, epoch_micros: i64) -> Self {
        let mut events = spec.events.clone();
        events.sort_by_key(|(at, _)| *at);
        events.reverse();
        Self {
            which,
            latency: spec.latency,
            rule_counts: vec![0; spec.faults.len()],
            spec,
            rng,
            store: Store::default(),
            conns: BTreeMap::new(),
            log: Vec::new(),
            pushes: Vec::new(),
            events,
            silent: false,
            refusing: false,
            seq: 0,
            epoch_micros,
            violations: Vec::new(),
        }
    }

    pub fn which(&self) -> Upstream {
        self.which
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Every request received so far, in order.
    pub fn log(&self) -> &[Received] {
        &self.log
    }

    /// Every EVENT pushed so far, in order.
    pub fn pushes(&self) -> &[Pushed] {
        &self.pushes
    }

    /// The table and the prepared statements.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Protocol misbehaviour the cluster saw from the proxy (reused stream ids, undecodable
    /// frames).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Open connections, by session slot.
    pub fn open_connections(&self) -> impl Iterator<Item = usize> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| !c.closed)
            .map(|(slot, _)| *slot)
    }

    /// What a connection attempt meets now, and after how long.
    pub fn connect(&mut self) -> (ConnectMode, Duration) {
        let after = self.spec.connect_latency.sample(&mut self.rng);
        let mode = if self.refusing {
            ConnectMode::Refuse
        } else {
            self.spec.connect
        };
        (mode, after)
    }

    /// A connection for session `slot` was established.
    pub fn accept(&mut self, slot: usize) {
        self.conns.insert(slot, ClusterConn::new());
    }

    /// When something is next due: an answer or an event.
    pub fn next_wakeup(&self) -> Option<Duration> {
        let answers = self
            .conns
            .values()
            .filter(|c| !c.closed)
            .filter_map(ClusterConn::next_due)
            .min();
        let event = self.events.last().map(|(at, _)| *at);
        match (answers, event) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies the events due at `now`; returns those the harness must carry out (dropping
    /// connections).
    pub fn take_due_events(&mut self, now: Duration) -> Vec<ClusterEvent> {
        let mut out = Vec::new();
        while self.events.last().is_some_and(|(at, _)| *at <= now) {
            let Some((_, event)) = self.events.pop() else {
                break;
            };
            match &event {
                ClusterEvent::ForgetPrepared => self.store.forget_all(),
                ClusterEvent::Silence(on) => self.silent = *on,
                ClusterEvent::RefuseConnections(on) => self.refusing = *on,
                ClusterEvent::Latency(l) => self.latency = *l,
                ClusterEvent::DropConnections => {}
            }
            out.push(event);
        }
        out
    }

    /// The connection of `slot` is gone (reset or closed): its pending answers are lost.
    pub fn connection_lost(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(&slot) else {
            return;
        };
        if conn.closed {
            return;
        }
        conn.closed = true;
        conn.out.clear();
        for reply in std::mem::take(&mut conn.pending).into_values() {
            if let Some(r) = self.log.get_mut(reply.record) {
                r.answer = AnswerState::Lost;
            }
        }
    }

    /// Records that the proxy read pushed EVENT `push` at `at`.
    pub(crate) fn push_delivered(&mut self, push: usize, at: Duration) {
        if let Some(p) = self.pushes.get_mut(push) {
            p.delivered.get_or_insert(at);
        }
    }

    /// Records that the proxy read the answer to log entry `record` at `at`.
    pub(crate) fn answer_delivered(&mut self, record: usize, at: Duration) {
        if let Some(Received {
            answer: AnswerState::Sent { delivered, .. },
            ..
        }) = self.log.get_mut(record)
        {
            delivered.get_or_insert(at);
        }
    }

    /// Moves the connection of `slot` on: sends the answers due, reads and serves requests
    /// while its answers are not piling up, and writes what the network takes. True if
    /// anything happened.
    pub fn pump(&mut self, slot: usize, link: &mut Link, now: Duration) -> bool {
        let mut progress = false;
        if self.conns.get(&slot).is_none_or(|c| c.closed) {
            return false;
        }
        if link.up.take_reset() || link.down.is_reset() {
            self.connection_lost(slot);
            return true;
        }
        // Answers due.
        loop {
            let Some(conn) = self.conns.get_mut(&slot) else {
                return progress;
            };
            let Some((&key, _)) = conn.pending.iter().next() else {
                break;
            };
            if key.0 > now {
                break;
            }
            let Some(reply) = conn.pending.remove(&key) else {
                break;
            };
            if let Some(keyspace) = &reply.use_keyspace {
                conn.keyspace = Some(keyspace.clone());
            }
            let end = conn.send(&reply);
            link.down
                .mark(end, answer_marker(self.which, reply.record), now);
            if let Some(r) = self.log.get_mut(reply.record) {
                r.answer = AnswerState::Sent {
                    at: now,
                    opcode: reply.opcode,
                    message: reply.message.clone(),
                    delivered: None,
                };
            }
            progress = true;
        }
        // EVENTs due.
        if let (Some(every), Some(conn)) = (self.spec.event_every, self.conns.get_mut(&slot)) {
            while let Some(at) = conn.next_push.filter(|&at| at <= now) {
                conn.next_push = Some(at + every.max(Duration::from_millis(1)));
                let n = self.pushes.len();
                let name = format!("{}_{n}", self.which);
                let message = cqlmirror_core::message::Event::SchemaChange(
                    cqlmirror_core::message::SchemaChange {
                        change: cqlmirror_core::message::SchemaChange::CREATED,
                        target: cqlmirror_core::message::SchemaTarget::Table {
                            keyspace: crate::cql::KEYSPACE,
                            name: &name,
                        },
                    },
                )
                .to_bytes(ProtocolVersion::V4);
                let version = conn.version.unwrap_or(ProtocolVersion::V4);
                let end = conn.push_event(version, message.clone());
                link.down.mark(end, push_marker(self.which, n), now);
                self.pushes.push(Pushed {
                    slot,
                    at: now,
                    message,
                    delivered: None,
                });
                progress = true;
            }
        }
        // Requests.
        loop {
            let Some(conn) = self.conns.get_mut(&slot) else {
                return progress;
            };
            if conn.closed || conn.out.len() >= self.spec.out_limit {
                break;
            }
            match link.up.read(64 * 1024, now) {
                Read::Data(bytes) => {
                    conn.recv.extend_from_slice(&bytes);
                    progress = true;
                    if !self.serve_buffered(slot, link, now) {
                        return true;
                    }
                }
                Read::Eof => {
                    // The proxy closed: close our side too.
                    self.connection_lost(slot);
                    link.down.finish(now);
                    return true;
                }
                Read::Reset => {
                    self.connection_lost(slot);
                    return true;
                }
                Read::WouldBlock => break,
            }
        }
        if let Some(conn) = self.conns.get_mut(&slot) {
            if !conn.closed {
                progress |= conn.out.flush(&mut link.down, now);
            }
        }
        progress
    }

    /// Serves every whole request in the connection's buffer; false if the connection died.
    fn serve_buffered(&mut self, slot: usize, link: &mut Link, now: Duration) -> bool {
        loop {
            let Some(conn) = self.conns.get_mut(&slot) else {
                return false;
            };
            if conn.closed {
                return false;
            }
            match conn.decode() {
                Ok(Some(envelope)) => {
                    if !self.serve(slot, &envelope, link, now) {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    self.violations.push(format!(
                        "{} cluster, session {slot}: undecodable bytes from the proxy at {now:?}: {e}",
                        self.which
                    ));
                    link.reset(now);
                    self.connection_lost(slot);
                    return false;
                }
            }
        }
    }

    /// Serves one request; false if it cost the connection.
    fn serve(&mut self, slot: usize, envelope: &Envelope, link: &mut Link, now: Duration) -> bool {
        let version = envelope.version();
        let stream = envelope.stream().0;
        let opcode = envelope.opcode();
        let Some(conn) = self.conns.get_mut(&slot) else {
            return false;
        };
        if stream < 0 {
            self.violations.push(format!(
                "{} cluster, session {slot}: request {opcode} on negative stream {stream}",
                self.which
            ));
        }
        if !conn.in_flight.insert(stream) {
            self.violations.push(format!(
                "{} cluster, session {slot}: the proxy reused stream {stream} while it was in flight ({opcode} at {now:?})",
                self.which
            ));
        }
        let view = ConnView {
            compression: conn.compression,
            ready: conn.ready,
            keyspace: conn.keyspace.as_deref(),
        };
        let mut understood = serve::understand(envelope, view, &self.store);
        if let Some(why) = understood.malformed.take() {
            self.violations.push(format!(
                "{} cluster, session {slot}: {why} (at {now:?})",
                self.which
            ));
        }
        let writes: Vec<WriteRecord> = match &understood.plan {
            Plan::Writes { writes, timestamp } => writes
                .iter()
                .map(|(key, _, id)| WriteRecord {
                    id: id.clone(),
                    key: *key,
                    timestamp: *timestamp,
                })
                .collect(),
            _ => Vec::new(),
        };
        let record = self.log.len();
        self.log.push(Received {
            slot,
            stream,
            opcode,
            tag: understood.tag.clone(),
            at: now,
            writes,
            applied: false,
            answer: AnswerState::Pending,
        });
        let fault = self.fault_for(opcode, &understood.plan, now);
        let mut delay = None;
        match fault {
            Some(Fault::DropConnection) => {
                self.log[record].answer = AnswerState::Lost;
                link.reset(now);
                self.connection_lost(slot);
                return false;
            }
            Some(Fault::Ignore) => {
                self.log[record].answer = AnswerState::Withheld;
                return true;
            }
            Some(Fault::Error(code)) => {
                understood.plan = Plan::Fail {
                    code,
                    message: format!("injected {code} by the simulated {} cluster", self.which),
                };
            }
            Some(Fault::Unprepared) => {
                for id in &understood.prepared_ids {
                    self.store.forget(id);
                }
                if let Some(id) = understood.prepared_ids.first() {
                    understood.plan = Plan::Unprepared { id: id.clone() };
                }
            }
            Some(Fault::Delay(latency)) => delay = Some(latency.sample(&mut self.rng)),
            Some(Fault::NoAnswer) | None => {}
        }
        let (reply_opcode, message, ends_handshake) =
            self.carry_out(slot, record, &understood.plan, version, now);
        if matches!(fault, Some(Fault::NoAnswer)) || self.silent {
            self.log[record].answer = AnswerState::Withheld;
            return true;
        }
        let handshake_reply = matches!(
            reply_opcode,
            Opcode::READY | Opcode::AUTHENTICATE | Opcode::SUPPORTED
        );
        let compress = !handshake_reply
            && version < ProtocolVersion::V5
            && self.rng.below(1_000_000) < u64::from(self.spec.compress_ppm);
        let delay = delay.unwrap_or_else(|| self.latency.sample(&mut self.rng));
        self.seq += 1;
        let seq = self.seq;
        if let Some(conn) = self.conns.get_mut(&slot) {
            conn.pending.insert(
                (now + delay, seq),
                Reply {
                    stream,
                    version,
                    opcode: reply_opcode,
                    message,
                    record,
                    ends_handshake: ends_handshake && version >= ProtocolVersion::V5,
                    compress,
                    use_keyspace: match &understood.plan {
                        Plan::Use { keyspace } => Some(keyspace.clone()),
                        _ => None,
                    },
                },
            );
        }
        true
    }

    /// The first fault rule that hits this request, if any.
    fn fault_for(&mut self, opcode: Opcode, plan: &Plan, now: Duration) -> Option<Fault> {
        let write = matches!(plan, Plan::Writes { .. });
        for (i, rule) in self.spec.faults.iter().enumerate() {
            let m = &rule.when;
            let opcode_ok = if m.opcodes.is_empty() {
                matches!(
                    opcode,
                    Opcode::QUERY | Opcode::PREPARE | Opcode::EXECUTE | Opcode::BATCH
                )
            } else {
                m.opcodes.contains(&opcode)
            };
            if !opcode_ok || (m.writes_only && !write) || now < m.from || now >= m.until {
                continue;
            }
            let n = self.rule_counts[i];
            self.rule_counts[i] += 1;
            if let Some((start, end)) = m.nth {
                if n < start || n >= end {
                    continue;
                }
            }
            if self.rng.below(1_000_000) < u64::from(m.chance_ppm) {
                return Some(rule.then.clone());
            }
        }
        None
    }

    /// Applies a plan; returns the answer's opcode and message, and whether it ends a
    /// handshake.
    fn carry_out(
        &mut self,
        slot: usize,
        record: usize,
        plan: &Plan,
        version: ProtocolVersion,
        now: Duration,
    ) -> (Opcode, Bytes, bool) {
        let Some(conn) = self.conns.get_mut(&slot) else {
            return (Opcode::ERROR, Bytes::new(), false);
        };
        let error = |code: ErrorCode, message: &str| {
            (Opcode::ERROR, serve::error(code, message, version), false)
        };
        match plan {
            Plan::Options => (
                Opcode::SUPPORTED,
                serve::supported(&self.spec.versions, &self.spec.compressions),
                false,
            ),
            Plan::Startup { compression } => {
                if !self.spec.versions.contains(&version) {
                    let list = self
                        .spec
                        .versions
                        .iter()
                        .map(|v| format!("{0}/v{0}", v.number()))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return error(
                        ErrorCode::PROTOCOL_ERROR,
                        &format!(
                            "Invalid or unsupported protocol version ({}); supported versions are ({list})",
                            version.number()
                        ),
                    );
                }
                if let Some(c) = compression {
                    if !self.spec.compressions.contains(c) {
                        return error(
                            ErrorCode::PROTOCOL_ERROR,
                            &format!("Unsupported compression algorithm {}", c.name()),
                        );
                    }
                }
                conn.compression = *compression;
                conn.version = Some(version);
                if self.spec.credentials.is_some() {
                    (Opcode::AUTHENTICATE, serve::authenticate(), true)
                } else {
                    conn.ready = true;
                    (Opcode::READY, Bytes::new(), true)
                }
            }
            Plan::AuthResponse { username, password } => match &self.spec.credentials {
                Some((u, p)) if u == username && p == password => {
                    conn.ready = true;
                    (
                        Opcode::AUTH_SUCCESS,
                        cqlmirror_core::message::Body::to_bytes(
                            &cqlmirror_core::message::AuthSuccess { token: None },
                            version,
                        ),
                        false,
                    )
                }
                _ => error(
                    ErrorCode::BAD_CREDENTIALS,
                    &format!("Provided username {username} and/or password are incorrect"),
                ),
            },
            Plan::Register => {
                if let Some(every) = self.spec.event_every {
                    conn.next_push.get_or_insert(now + every);
                }
                (Opcode::READY, Bytes::new(), false)
            }
            Plan::Writes { writes, timestamp } => {
                let at = timestamp.unwrap_or_else(|| {
                    self.epoch_micros + i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
                });
                for (key, value, _) in writes {
                    self.store.put(*key, value.clone(), at);
                }
                if let Some(r) = self.log.get_mut(record) {
                    r.applied = true;
                }
                (Opcode::RESULT, serve::void(), false)
            }
            Plan::Topology { table } => (
                Opcode::RESULT,
                serve::topology_rows(self.which, table),
                false,
            ),
            Plan::Select { key, alias } => {
                let column = alias.as_deref().unwrap_or("v");
                let value = self.store.get(*key).map(|c| c.value.as_str());
                (Opcode::RESULT, serve::rows(column, value), false)
            }
            // Takes effect when the answer goes out (see `Reply::use_keyspace`).
            Plan::Use { keyspace } => (Opcode::RESULT, serve::set_keyspace(keyspace), false),
            Plan::Prepare {
                text,
                stmt,
                keyspace,
            } => {
                let ks = keyspace.as_deref().unwrap_or("");
                let id = id_of(self.spec.salt, &[ks, text]);
                let metadata_id = id_of(self.spec.salt, &["result metadata", ks, text]);
                let message = serve::prepared(stmt, &id, &metadata_id, version);
                self.store.prepare(
                    id,
                    PreparedEntry {
                        text: text.clone(),
                        stmt: stmt.clone(),
                        keyspace: keyspace.clone(),
                        result_metadata_id: metadata_id,
                    },
                );
                (Opcode::RESULT, message, false)
            }
            Plan::Unprepared { id } => (Opcode::ERROR, serve::unprepared(id, version), false),
            Plan::Fail { code, message } => error(*code, message),
        }
    }
}
