//! What can go wrong in a simulated cluster: per-request faults chosen by rules, and events at
//! fixed times of the run.

use std::time::Duration;

use crate::latency::Latency;
use cqlmirror_core::frame::Opcode;
use cqlmirror_core::message::ErrorCode;

/// Which requests a [`FaultRule`] applies to. All given criteria must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Opcodes; empty means the data requests (QUERY, PREPARE, EXECUTE, BATCH).
    pub opcodes: Vec<Opcode>,
    /// Only requests that write (INSERT, BATCH, EXECUTE of an insert).
    pub writes_only: bool,
    /// Only requests received in `from..until` (run time).
    pub from: Duration,
    pub until: Duration,
    /// Only the `start..end`-th request (counting from 0) among those matching the criteria
    /// above, counted per rule across all connections.
    pub nth: Option<(u64, u64)>,
    /// Then with this probability, in millionths (1_000_000: always).
    pub chance_ppm: u32,
}

impl Default for Match {
    fn default() -> Self {
        Self {
            opcodes: Vec::new(),
            writes_only: false,
            from: Duration::ZERO,
            until: Duration::MAX,
            nth: None,
            chance_ppm: 1_000_000,
        }
    }
}

impl Match {
    /// Every data request.
    pub fn all() -> Self {
        Self::default()
    }

    /// Data requests that write.
    pub fn writes() -> Self {
        Self {
            writes_only: true,
            ..Self::default()
        }
    }

    /// Requests with this opcode.
    pub fn opcode(opcode: Opcode) -> Self {
        Self {
            opcodes: vec![opcode],
            ..Self::default()
        }
    }

    #[must_use]
    pub fn with_chance(mut self, ppm: u32) -> Self {
        self.chance_ppm = ppm;
        self
    }

    #[must_use]
    pub fn nth(mut self, start: u64, end: u64) -> Self {
        self.nth = Some((start, end));
        self
    }

    #[must_use]
    pub fn between(mut self, from: Duration, until: Duration) -> Self {
        self.from = from;
        self.until = until;
        self
    }
}

/// What happens to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answered after this delay instead of the cluster's usual latency.
    Delay(Latency),
    /// Answered with an ERROR of this code; nothing is applied.
    Error(ErrorCode),
    /// The prepared statements the request names are forgotten first (as after a restart of
    /// the coordinator), so it is answered UNPREPARED.
    Unprepared,
    /// Applied, but never answered (the answer is lost).
    NoAnswer,
    /// Neither applied nor answered (a hung coordinator).
    Ignore,
    /// The connection is reset when the request arrives; nothing is applied.
    DropConnection,
}

/// A fault and the requests it hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub when: Match,
    pub then: Fault,
}

impl FaultRule {
    pub fn new(when: Match, then: Fault) -> Self {
        Self { when, then }
    }
}

/// Something that happens to a cluster at a fixed time of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Every prepared statement is forgotten (a rolling restart of the nodes).
    ForgetPrepared,
    /// Every open connection is reset.
    DropConnections,
    /// From now on requests are applied or not but never answered (`true`), or answered
    /// again (`false`, for requests received after this).
    Silence(bool),
    /// New connections are refused (`true`) or accepted again (`false`).
    RefuseConnections(bool),
    /// The usual answer latency changes.
    Latency(Latency),
}
