//! What a simulated cluster received and answered: the facts the reference model checks.

use std::time::Duration;

use bytes::Bytes;

use cqlmirror_core::frame::Opcode;

/// A write carried by a request: the write's id (the value up to `#`), its key, and the
/// default timestamp of the request that carried it (`None` if the request had none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub id: String,
    pub key: i64,
    pub timestamp: Option<i64>,
}

/// What became of a request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerState {
    /// Scheduled, not sent yet.
    Pending,
    /// Sent at `at`; `delivered` is when the proxy read its last byte, if it did.
    Sent {
        at: Duration,
        opcode: Opcode,
        /// The message (decompressed, no prefix).
        message: Bytes,
        delivered: Option<Duration>,
    },
    /// Never to be sent (a fault, or the cluster went silent).
    Withheld,
    /// The connection closed before it was sent.
    Lost,
}

/// One request a cluster received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The simulated session (client slot) whose backend connection carried it.
    pub slot: usize,
    /// The stream id on that backend connection.
    pub stream: i16,
    pub opcode: Opcode,
    /// The client request it belongs to, when it carries one (custom payload `sim-tag`, a
    /// written value, a SELECT alias); requests the proxy makes itself carry none.
    pub tag: Option<String>,
    pub at: Duration,
    /// The writes it carries.
    pub writes: Vec<WriteRecord>,
    /// The writes were applied to the table.
    pub applied: bool,
    pub answer: AnswerState,
}

impl Received {
    /// Answered with something other than an ERROR.
    pub fn succeeded(&self) -> bool {
        matches!(&self.answer, AnswerState::Sent { opcode, .. } if *opcode != Opcode::ERROR)
    }

    /// When the proxy read the answer, if it did.
    pub fn delivered(&self) -> Option<Duration> {
        match &self.answer {
            AnswerState::Sent { delivered, .. } => *delivered,
            _ => None,
        }
    }

    /// The error code of an ERROR answer.
    pub fn error_code(&self) -> Option<i32> {
        match &self.answer {
            AnswerState::Sent {
                opcode, message, ..
            } if *opcode == Opcode::ERROR => message
                .get(..4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            _ => None,
        }
    }
}

/// An EVENT a cluster pushed to a connection that REGISTERed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub slot: usize,
    pub at: Duration,
    /// The EVENT message (unique per cluster and push).
    pub message: Bytes,
    /// When the proxy read it.
    pub delivered: Option<Duration>,
}
