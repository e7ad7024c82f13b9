//! Reads of the topology tables, answered by the session itself (see [`crate::topology`]), and
//! the EVENTs that would name a node.
//!
//! A read is answered at once from the primary's view when the proxy has one (a control
//! connection keeps it current). When it has none yet, the session reads the primary's tables
//! itself, with its own connection to it (the client's login), publishes the view for every
//! session, and answers the reads that waited for it. Such reads never reach a cluster, so no
//! driver ever sees a node's address.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::config::Upstream;
use crate::failure::FailureKind;
use crate::frame::{Direction, Envelope, Flags, Header, Opcode, ProtocolVersion, StreamId};
use crate::message::{Body, ErrorCode, ErrorMessage, Event as EventMessage, Query, QueryParams};
use crate::session::leg::Purpose;
use crate::session::request::Outgoing;
use crate::session::{Event, Session};
use crate::topology::answer::{Bound, answer};
use crate::topology::events::{EventFate, fate};
use crate::topology::view::{ClusterView, TableData, TableError};
use crate::topology::{
    Advertised, Instance, Partitioner, SystemQuery, SystemTable, TopologyMode, VirtualNodes,
};
use crate::wire::Consistency;

/// A client's read of a topology table, waiting for the view or answered now.
#[derive(Debug, Clone)]
pub(crate) struct TopologyRead {
    pub(crate) stream: StreamId,
    pub(crate) version: ProtocolVersion,
    pub(crate) query: SystemQuery,
    pub(crate) bound: Bound,
    pub(crate) skip_metadata: bool,
}

/// The session's own read of a cluster's topology tables.
#[derive(Debug, Default)]
pub(crate) struct Fetch {
    upstream: Option<Upstream>,
    local: Option<Result<TableData, TableError>>,
    peers: Option<Result<TableData, TableError>>,
    peers_v2: Option<Result<TableData, TableError>>,
    /// Reads of clients waiting for the view.
    waiting: Vec<TopologyRead>,
}

impl Fetch {
    pub(crate) fn is_idle(&self) -> bool {
        self.upstream.is_none() && self.waiting.is_empty()
    }
}

impl Session {
    /// A client read a topology table: answer it from the primary's view, or read the view
    /// first.
    pub(super) fn topology_read(&mut self, read: TopologyRead, now: Instant) {
        self.proxy
            .stats()
            .topology_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let primary = self.proxy.primary();
        match self.proxy.view(primary) {
            Some(view) => self.answer_topology_read(&read, &view),
            None => {
                self.fetch.waiting.push(read);
                self.start_topology_fetch(primary, now);
            }
        }
    }

    /// Where this client reached the proxy, as drivers should see this instance.
    fn this_instance(&self) -> Instance {
        let local = self
            .local_address
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9042)));
        match &self.proxy.config().topology {
            TopologyMode::Virtual(v) => match v.instances.get(v.index) {
                Some(instance) => *instance,
                None => Instance {
                    address: v.advertise.unwrap_or(local.ip()),
                    port: local.port(),
                },
            },
            TopologyMode::Ghost(_) => Instance {
                address: local.ip(),
                port: local.port(),
            },
        }
    }

    /// The tables drivers see, from `view`.
    fn advertised(&mut self, view: &ClusterView) -> Advertised {
        let this = self.this_instance();
        match &self.proxy.config().topology {
            TopologyMode::Virtual(v) => {
                let instances = if v.instances.is_empty() {
                    vec![this]
                } else {
                    v.instances.clone()
                };
                let index = if v.instances.is_empty() { 0 } else { v.index };
                VirtualNodes::new(
                    &instances,
                    index,
                    v.num_tokens,
                    Partitioner::from_class(view.partitioner()),
                    v.data_center.clone(),
                )
                .advertise(view)
            }
            TopologyMode::Ghost(map) => {
                let (advertised, unmapped) = crate::topology::advertise::ghost(view, map, this);
                for address in unmapped {
                    let first = self.proxy.record_unmapped(address);
                    self.events
                        .push_back(Event::UnmappedNode { address, first });
                }
                advertised
            }
        }
    }

    fn answer_topology_read(&mut self, read: &TopologyRead, view: &ClusterView) {
        let advertised = self.advertised(view);
        match advertised.table(read.query.table) {
            Ok(table) => match answer(&read.query, &read.bound, table, read.skip_metadata) {
                Ok(body) => self.send_to_client(read.stream, read.version, Opcode::RESULT, body),
                Err(refusal) => self.error_to_client(
                    read.stream,
                    read.version,
                    &ErrorMessage::new(ErrorCode::INVALID, refusal.0),
                ),
            },
            // The cluster does not have that table (peers_v2 before Cassandra 4.0): its own
            // error, which drivers take as the cue to read system.peers.
            Err(error) => self.send_to_client(
                read.stream,
                read.version,
                Opcode::ERROR,
                error.message.clone(),
            ),
        }
    }

    fn send_to_client(
        &mut self,
        stream: StreamId,
        version: ProtocolVersion,
        opcode: Opcode,
        body: Bytes,
    ) {
        let header = Header {
            version,
            direction: Direction::Response,
            flags: Flags::empty(),
            stream,
            opcode,
            length: body.len() as u32,
        };
        self.client.send(header, &body);
    }

    /// Reads `upstream`'s topology tables over this session's connection to it, unless that
    /// is under way.
    fn start_topology_fetch(&mut self, upstream: Upstream, now: Instant) {
        if self.fetch.upstream.is_some() {
            return;
        }
        let Some(version) = self.version else {
            return self.topology_fetch_failed(
                upstream,
                "the connection has no protocol version yet",
                now,
            );
        };
        if !self.upstreams[upstream.index()].is_ready() {
            let reason = format!("the connection to the {upstream} cluster is not ready");
            return self.topology_fetch_failed(upstream, &reason, now);
        }
        self.fetch.upstream = Some(upstream);
        for table in [SystemTable::Local, SystemTable::Peers, SystemTable::PeersV2] {
            let body = Query {
                text: &format!("SELECT * FROM {}", table.name()),
                params: QueryParams::new(Consistency::ONE),
            }
            .to_bytes(version);
            let out = Outgoing::new(Flags::empty(), body);
            let sent = self.send_request(
                upstream,
                Purpose::Topology(table),
                Opcode::QUERY,
                version,
                &out,
                now,
            );
            if let Err(kind) = sent {
                let reason = format!("the {upstream} cluster could not be asked: {kind}");
                return self.topology_fetch_failed(upstream, &reason, now);
            }
        }
    }

    /// A cluster answered one of the session's reads of its topology tables.
    pub(super) fn on_topology_answer(
        &mut self,
        upstream: Upstream,
        table: SystemTable,
        envelope: Envelope,
        now: Instant,
    ) {
        if self.fetch.upstream != Some(upstream) {
            return;
        }
        let Some(version) = self.version else { return };
        let message = match self.response_message(&envelope) {
            Ok(message) => message,
            Err(e) => {
                let reason = format!("undecodable answer from the {upstream} cluster: {e}");
                return self.topology_fetch_failed(upstream, &reason, now);
            }
        };
        let result = if envelope.opcode() == Opcode::ERROR {
            // Only a table the cluster does not have is an answer to keep (peers_v2 before
            // Cassandra 4.0); any other error is a failure of this read.
            if !TableError::is_missing_table(&message, version) {
                let reason = format!(
                    "the {upstream} cluster failed a read of {}: {}",
                    table.name(),
                    error_text(&message, version)
                );
                return self.topology_fetch_failed(upstream, &reason, now);
            }
            Err(TableError { message })
        } else {
            match TableData::from_result(&message, version) {
                Ok(data) => Ok(data),
                Err(e) => {
                    let reason = format!("{} of the {upstream} cluster: {e}", table.name());
                    return self.topology_fetch_failed(upstream, &reason, now);
                }
            }
        };
        match table {
            SystemTable::Local => self.fetch.local = Some(result),
            SystemTable::Peers => self.fetch.peers = Some(result),
            SystemTable::PeersV2 => self.fetch.peers_v2 = Some(result),
        }
        let fetch = &mut self.fetch;
        if fetch.local.is_none() || fetch.peers.is_none() || fetch.peers_v2.is_none() {
            return;
        }
        let (Some(local), Some(peers), Some(peers_v2)) = (
            fetch.local.take(),
            fetch.peers.take(),
            fetch.peers_v2.take(),
        ) else {
            return;
        };
        fetch.upstream = None;
        let local = match local {
            Ok(local) if !local.rows.is_empty() => local,
            Ok(_) => {
                let reason = format!("system.local of the {upstream} cluster has no row");
                return self.topology_fetch_failed(upstream, &reason, now);
            }
            Err(error) => {
                let reason = format!(
                    "the {upstream} cluster refused to read system.local: {}",
                    error_text(&error.message, version)
                );
                return self.topology_fetch_failed(upstream, &reason, now);
            }
        };
        let view = ClusterView {
            local,
            peers,
            peers_v2,
            read_from: None,
        };
        self.proxy.handle_cluster_view(upstream, view.clone());
        for read in std::mem::take(&mut self.fetch.waiting) {
            self.answer_topology_read(&read, &view);
        }
        let _ = now;
    }

    /// The session's read of `upstream`'s topology failed: the reads waiting for it get an
    /// error that says why (never the cluster's own tables, which would send drivers around
    /// the proxy).
    pub(super) fn topology_fetch_failed(&mut self, upstream: Upstream, reason: &str, now: Instant) {
        self.fetch.upstream = None;
        self.fetch.local = None;
        self.fetch.peers = None;
        self.fetch.peers_v2 = None;
        let first = self.proxy.record_failure(upstream, FailureKind::Error, now);
        self.events.push_back(Event::Failure {
            upstream,
            kind: FailureKind::Error,
            detail: format!("cannot read the cluster's topology: {reason}"),
            first,
        });
        let message = format!(
            "cqlmirror: cannot answer a read of the cluster's topology: {reason}; check the {upstream} cluster, or give the proxy credentials for its control connection to it"
        );
        for read in std::mem::take(&mut self.fetch.waiting) {
            self.error_to_client(
                read.stream,
                read.version,
                &ErrorMessage::server_error(message.clone()),
            );
        }
    }

    /// What reaches the client of an EVENT the primary pushed, with its header flags: schema
    /// changes as they are, node events dropped or rewritten as the topology mode says.
    pub(super) fn event_for_client(&mut self, envelope: &Envelope) -> Option<(Flags, Bytes)> {
        let version = self.version?;
        let message = self.response_message(envelope).ok()?;
        let event = EventMessage::decode(&message, version).ok()?;
        let port = self.this_instance().port;
        match fate(&self.proxy.config().topology, &event, port) {
            EventFate::Pass => Some((envelope.header().flags, envelope.body().clone())),
            EventFate::Rewrite(event) => Some((Flags::empty(), event.to_bytes(version))),
            EventFate::Drop { unmapped } => {
                if let Some(address) = unmapped {
                    let first = self.proxy.record_unmapped(address);
                    self.events
                        .push_back(Event::UnmappedNode { address, first });
                }
                None
            }
        }
    }
}

/// The text of an ERROR message body.
fn error_text(message: &[u8], version: ProtocolVersion) -> String {
    ErrorMessage::decode(message, version).map_or_else(
        |_| "an undecodable error".to_owned(),
        |e| e.message.into_owned(),
    )
}
