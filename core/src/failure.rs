//! Why a request to one cluster, or the connection to it, failed: the kinds the proxy counts
//! and reports once per run of failures.

use std::fmt;

/// Why a request to one cluster, or the connection to it, failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FailureKind {
    /// The connection could not be established.
    Unreachable,
    /// The connection was lost.
    Closed,
    /// No answer within the request timeout.
    Timeout,
    /// The cluster answered with an ERROR where the other succeeded.
    Error,
    /// All 32768 stream ids of the connection are in flight.
    Overloaded,
    /// The handshake was refused (authentication, protocol version).
    Refused,
    /// The cluster sent bytes that are not valid protocol.
    Protocol,
}

impl FailureKind {
    pub(crate) const COUNT: usize = 7;

    /// Every kind, for metrics that start at zero.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Unreachable,
        Self::Closed,
        Self::Timeout,
        Self::Error,
        Self::Overloaded,
        Self::Refused,
        Self::Protocol,
    ];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Closed => "connection lost",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::Overloaded => "out of stream ids",
            Self::Refused => "handshake refused",
            Self::Protocol => "protocol violation",
        }
    }

    /// One word for metrics labels.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Closed => "closed",
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::Overloaded => "overloaded",
            Self::Refused => "refused",
            Self::Protocol => "protocol",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
