//! Where a request goes: a pure policy of what the request is and how the proxy is set up.
//!
//! Keeping this a function of values (no session state) makes the policy easy to test and to
//! change: today every request goes to both clusters, as in the older proxy; read modes that
//! send reads to the primary only plug in here.
//!
//! Clusters have an identity ([`Upstream`]: source or target) and, per request, a [`Role`]:
//! the primary answers the client, the secondary mirrors it. Which cluster is primary is a
//! proxy-level setting that can change at run time; a request keeps the [`Route`] it got when
//! it arrived.

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

/// What a cluster is to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Its answer is the client's.
    Primary,
    /// It mirrors the request; its answer is compared, counted and otherwise dropped.
    Secondary,
}

impl Role {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
        self.role_of(upstream).is_some()
    }

    /// What `upstream` is to this request, if the request goes there.
    pub fn role_of(&self, upstream: Upstream) -> Option<Role> {
        if upstream == self.primary {
            Some(Role::Primary)
        } else if self.secondary == Some(upstream) {
            Some(Role::Secondary)
        } else {
            None
        }
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
                assert_eq!(r.role_of(primary), Some(Role::Primary));
                assert_eq!(r.role_of(primary.other()), Some(Role::Secondary));
            }
        }
    }
}
