//! Where a request goes: a pure policy of what the request is and how the proxy is set up.
//!
//! Keeping this a function of values (no session state) makes the policy easy to test and to
//! change: today every request goes to both clusters, as in the older proxy; read modes that
//! send reads to the primary only plug in here.

use crate::config::Upstream;

/// What a client request is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// OPTIONS, STARTUP, AUTH_RESPONSE before the connection is ready.
    Handshake,
    /// OPTIONS after the handshake: drivers' heartbeats.
    Heartbeat,
    /// SELECT and other statements that change nothing.
    Read,
    /// Data and schema writes, USE, access control: anything that changes a cluster or the
    /// connection's state.
    Write,
    /// PREPARE: both clusters must know every statement.
    Prepare,
    /// REGISTER for events.
    Register,
}

/// How reads are served. Writes always go to both clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReadMode {
    /// Reads go to both clusters; the client gets the primary's answer.
    #[default]
    Both,
}

/// The clusters a request is sent to and the one whose answer the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub primary: Upstream,
    pub secondary: Option<Upstream>,
}

impl Route {
    /// Whether the request goes to `upstream`.
    pub fn includes(&self, upstream: Upstream) -> bool {
        self.primary == upstream || self.secondary == Some(upstream)
    }
}

/// The routing policy.
pub fn route(class: RequestClass, mode: ReadMode, primary: Upstream) -> Route {
    let both = Route {
        primary,
        secondary: Some(primary.other()),
    };
    match (class, mode) {
        (
            RequestClass::Handshake
            | RequestClass::Heartbeat
            | RequestClass::Write
            | RequestClass::Prepare
            | RequestClass::Register
            | RequestClass::Read,
            ReadMode::Both,
        ) => both,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_goes_to_both_with_the_primary_answering() {
        for class in [
            RequestClass::Handshake,
            RequestClass::Heartbeat,
            RequestClass::Read,
            RequestClass::Write,
            RequestClass::Prepare,
            RequestClass::Register,
        ] {
            for primary in Upstream::BOTH {
                let r = route(class, ReadMode::Both, primary);
                assert_eq!(r.primary, primary);
                assert!(r.includes(Upstream::Source) && r.includes(Upstream::Target));
            }
        }
    }
}
