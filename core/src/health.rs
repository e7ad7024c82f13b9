//! Whether the proxy can serve: each cluster's reachability as its control connection last
//! found it, and the readiness a load balancer or an orchestrator asks for.
//!
//! The control connections report here ([`Reachability::note`]); the runtime's health
//! endpoint asks [`crate::proxy::Proxy::readiness`]. Ready means clients get answers: the
//! primary is reachable, and so is the secondary unless the operator accepts a degraded one
//! (`--ready-without-secondary`: writes it misses are counted, and journaled once the journal
//! lands).

use std::sync::Mutex;

use crate::config::Upstream;

/// What the control connection of one cluster last found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClusterState {
    /// Not connected yet since the start.
    #[default]
    Unknown,
    /// The topology was read: the cluster answers.
    Reachable,
    /// The last attempt failed; the detail says why.
    Unreachable(String),
}

impl ClusterState {
    pub fn is_reachable(&self) -> bool {
        matches!(self, Self::Reachable)
    }

    /// A word for the health body and gauges.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Reachable => "reachable",
            Self::Unreachable(_) => "unreachable",
        }
    }
}

/// Each cluster's [`ClusterState`], by [`Upstream::index`].
#[derive(Debug, Default)]
pub struct Reachability([Mutex<ClusterState>; 2]);

impl Reachability {
    pub fn note(&self, upstream: Upstream, state: ClusterState) {
        *self.0[upstream.index()]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    pub fn get(&self, upstream: Upstream) -> ClusterState {
        self.0[upstream.index()]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The answer to "can this proxy serve?", with the reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub primary: Upstream,
    /// Each cluster's state, by [`Upstream::index`].
    pub clusters: [ClusterState; 2],
    /// Why not ready, or why ready although degraded; empty when all is well.
    pub reasons: Vec<String>,
}

impl Readiness {
    /// Decides from the clusters' states: the primary must be reachable; the secondary too,
    /// unless `degraded_ok`.
    pub fn assess(primary: Upstream, clusters: [ClusterState; 2], degraded_ok: bool) -> Self {
        let mut reasons = Vec::new();
        let mut ready = true;
        for (upstream, role) in [(primary, "primary"), (primary.other(), "secondary")] {
            let why = match &clusters[upstream.index()] {
                ClusterState::Reachable => continue,
                ClusterState::Unknown => "not connected yet".to_owned(),
                ClusterState::Unreachable(detail) => format!("unreachable: {detail}"),
            };
            let mut reason = format!("the {upstream} cluster ({role}) is {why}");
            if role == "secondary" && degraded_ok {
                reason.push_str(
                    "; ready anyway (--ready-without-secondary): its missed writes are counted",
                );
            } else {
                ready = false;
            }
            reasons.push(reason);
        }
        Self {
            ready,
            primary,
            clusters,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(source: ClusterState, target: ClusterState) -> [ClusterState; 2] {
        [source, target]
    }

    #[test]
    fn ready_when_both_clusters_answer() {
        let r = Readiness::assess(
            Upstream::Source,
            states(ClusterState::Reachable, ClusterState::Reachable),
            false,
        );
        assert!(r.ready && r.reasons.is_empty());
    }

    #[test]
    fn a_secondary_down_is_ready_only_when_degraded_is_accepted() {
        let down = || ClusterState::Unreachable("connection refused \"x\"".into());
        let r = Readiness::assess(
            Upstream::Source,
            states(ClusterState::Reachable, down()),
            false,
        );
        assert!(!r.ready);
        assert_eq!(
            r.reasons,
            ["the target cluster (secondary) is unreachable: connection refused \"x\""]
        );
        let r = Readiness::assess(
            Upstream::Source,
            states(ClusterState::Reachable, down()),
            true,
        );
        assert!(r.ready);
        assert!(r.reasons[0].contains("ready anyway"), "{:?}", r.reasons);
    }

    #[test]
    fn the_primary_down_is_never_ready() {
        // Roles, not names: with the target primary, the source is the one that may degrade.
        let r = Readiness::assess(
            Upstream::Target,
            states(ClusterState::Reachable, ClusterState::Unknown),
            true,
        );
        assert!(!r.ready);
        assert_eq!(
            r.reasons,
            ["the target cluster (primary) is not connected yet"]
        );
    }
}
