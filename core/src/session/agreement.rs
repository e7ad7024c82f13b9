//! Schema agreement: a schema change counts as done on a cluster once all its nodes report
//! the same schema version.
//!
//! Drivers wait for that themselves after a schema change, by comparing `schema_version` in
//! `system.local` and `system.peers`. Behind the proxy they cannot: those tables describe proxy
//! instances (see [`crate::topology`]). So the proxy waits instead: when a cluster answers a
//! schema change, the session reads the versions of that cluster's nodes over the same
//! connection, again every [`POLL`], until they agree or `--schema-agreement-timeout` passes;
//! only then is the cluster's part of the request done (and the client answered, as the wait
//! policy says). A statement sent next, on any connection, then finds the schema on every node
//! of both clusters, as it would have without the proxy.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Upstream;
use crate::frame::{Envelope, Flags, Opcode};
use crate::message::{Body, Query, QueryParams};
use crate::session::leg::Purpose;
use crate::session::request::{Outcome, Outgoing, RequestId};
use crate::session::{Event, Session, Timer};
use crate::topology::view::{TableData, inet};
use crate::wire::Consistency;

/// How often the versions are read again while they differ.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Which of the two reads an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionRead {
    Local,
    Peers,
}

/// A schema change waiting for one cluster's nodes to agree.
#[derive(Debug)]
pub(crate) struct Agreement {
    id: RequestId,
    upstream: Upstream,
    /// The cluster's answer to the schema change, recorded once the nodes agree.
    answer: Envelope,
    started: Instant,
    deadline: Instant,
    local: Option<Vec<Bytes>>,
    peers: Option<Vec<Bytes>>,
    /// Reads of the current round still out.
    pending: u8,
}

impl Session {
    /// `upstream` answered the schema change `id` with `answer`: wait for its nodes to agree
    /// before the request counts as done there. False when there is nothing to wait for.
    pub(super) fn start_agreement(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        answer: Envelope,
        now: Instant,
    ) -> Result<(), Envelope> {
        let timeout = self.proxy.config().schema_agreement_timeout;
        if timeout.is_zero() || answer.opcode() != Opcode::RESULT {
            return Err(answer);
        }
        self.agreements.push(Agreement {
            id,
            upstream,
            answer,
            started: now,
            deadline: now + timeout,
            local: None,
            peers: None,
            pending: 0,
        });
        self.read_versions(id, upstream, now);
        Ok(())
    }

    /// Sends one round of reads of the versions.
    fn read_versions(&mut self, id: RequestId, upstream: Upstream, now: Instant) {
        let Some(version) = self.version else {
            return self.end_agreement(id, upstream, false, now);
        };
        let mut sent = 0;
        for (read, text) in [
            (
                VersionRead::Local,
                "SELECT schema_version FROM system.local WHERE key = 'local'",
            ),
            (
                VersionRead::Peers,
                "SELECT peer, rpc_address, schema_version FROM system.peers",
            ),
        ] {
            let out = Outgoing {
                flags: Flags::empty(),
                head: bytes::Bytes::new(),
                body: Query {
                    text,
                    params: QueryParams::new(Consistency::ONE),
                }
                .to_bytes(version),
            };
            let purpose = Purpose::Agreement(id, read);
            if self
                .send_request(upstream, purpose, Opcode::QUERY, version, &out, now)
                .is_ok()
            {
                sent += 1;
            }
        }
        match self.agreement_mut(id, upstream) {
            Some(a) if sent == 2 => {
                a.pending = 2;
                a.local = None;
                a.peers = None;
            }
            // The connection cannot take the reads: the change is done as far as the proxy
            // can tell.
            _ => self.end_agreement(id, upstream, false, now),
        }
    }

    fn agreement_mut(&mut self, id: RequestId, upstream: Upstream) -> Option<&mut Agreement> {
        self.agreements
            .iter_mut()
            .find(|a| a.id == id && a.upstream == upstream)
    }

    /// A cluster answered one of the version reads.
    pub(super) fn on_versions(
        &mut self,
        id: RequestId,
        upstream: Upstream,
        read: VersionRead,
        envelope: Envelope,
        now: Instant,
    ) {
        let versions = self.versions_of(upstream, &envelope);
        let Some(agreement) = self.agreement_mut(id, upstream) else {
            return;
        };
        agreement.pending = agreement.pending.saturating_sub(1);
        let Some(versions) = versions else {
            // The cluster would not tell: do not hold the client for it.
            return self.end_agreement(id, upstream, false, now);
        };
        match read {
            VersionRead::Local => agreement.local = Some(versions),
            VersionRead::Peers => agreement.peers = Some(versions),
        }
        if agreement.pending > 0 {
            return;
        }
        let mut all = agreement.local.take().unwrap_or_default();
        all.extend(agreement.peers.take().unwrap_or_default());
        let agreed = all.windows(2).all(|w| w[0] == w[1]);
        if agreed {
            self.end_agreement(id, upstream, true, now);
        } else if now + POLL >= agreement.deadline {
            self.end_agreement(id, upstream, false, now);
        } else {
            self.timers
                .insert((now + POLL, Timer::Agreement(upstream, id)));
        }
    }

    /// The schema versions in a version read's answer (nulls, and nodes reported down, left
    /// out), or `None` when the answer is not rows.
    fn versions_of(&self, upstream: Upstream, envelope: &Envelope) -> Option<Vec<Bytes>> {
        if envelope.opcode() != Opcode::RESULT {
            return None;
        }
        let version = self.version?;
        let message = self.response_message(envelope).ok()?;
        let table = TableData::from_result(&message, version).ok()?;
        let at = table.position("schema_version")?;
        // A node reported down keeps its old version until it is back: drivers leave it out
        // of their agreement, and so does the proxy.
        let down = |row: &[Option<Bytes>], name: &str| {
            table
                .position(name)
                .and_then(|i| inet(row.get(i)?.as_ref()))
                .is_some_and(|ip| self.proxy.is_node_down(upstream, ip))
        };
        Some(
            table
                .rows
                .iter()
                .filter(|row| !down(row, "rpc_address") && !down(row, "peer"))
                .filter_map(|row| row.get(at).cloned().flatten())
                .collect(),
        )
    }

    /// The poll timer of an agreement fired: read the versions again.
    pub(super) fn agreement_poll(&mut self, upstream: Upstream, id: RequestId, now: Instant) {
        if self
            .agreement_mut(id, upstream)
            .is_some_and(|a| a.pending == 0)
        {
            self.read_versions(id, upstream, now);
        }
    }

    /// A version read could not be answered (the connection failed, or it timed out).
    pub(super) fn agreement_failed(&mut self, id: RequestId, upstream: Upstream, now: Instant) {
        if self.agreement_mut(id, upstream).is_some() {
            self.end_agreement(id, upstream, false, now);
        }
    }

    /// The wait is over: the schema change is done on `upstream`.
    fn end_agreement(&mut self, id: RequestId, upstream: Upstream, reached: bool, now: Instant) {
        let Some(at) = self
            .agreements
            .iter()
            .position(|a| a.id == id && a.upstream == upstream)
        else {
            return;
        };
        let agreement = self.agreements.swap_remove(at);
        self.events.push_back(Event::SchemaAgreement {
            upstream,
            reached,
            waited: now.saturating_duration_since(agreement.started),
        });
        self.leg_done(id, upstream, Outcome::Answer(agreement.answer), now);
    }
}
