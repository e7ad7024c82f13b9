//! The process's file-descriptor limit: raised to the hard limit at start-up, since every
//! client connection holds up to three descriptors (its own and one per cluster) and the
//! usual soft limit of 1024 would cap the proxy at a few hundred clients.

use cqlmirror_core::admission::max_connections_for;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// What start-up did with the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// The soft limit found at start-up (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit in force now (`None`: unlimited).
    pub now: Option<u64>,
}

impl Descriptors {
    /// The `--max-connections` default this limit allows.
    pub fn max_connections(&self) -> usize {
        self.now.map_or(usize::MAX, max_connections_for)
    }

    /// A line for the start-up log.
    pub fn describe(&self) -> String {
        let show = |limit: Option<u64>| limit.map_or("unlimited".to_owned(), |n| n.to_string());
        if self.before == self.now {
            format!("descriptor limit {}", show(self.now))
        } else {
            format!(
                "descriptor limit raised from {} to {}",
                show(self.before),
                show(self.now)
            )
        }
    }
}

/// Raises the soft descriptor limit to the hard limit. A failure leaves the limit as it was
/// (and the default `--max-connections` follows it).
pub fn raise_limit() -> Descriptors {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return Descriptors {
            before: current,
            now: current,
        };
    }
    let raised = Rlimit {
        current: maximum,
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Descriptors {
            before: current,
            now: maximum,
        },
        Err(e) => {
            log::warn!(
                "cannot raise the descriptor limit from {current:?} to {maximum:?}: {e}; --max-connections defaults to what {current:?} allows"
            );
            Descriptors {
                before: current,
                now: current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_at_its_hard_value_after_start_up() {
        let descriptors = raise_limit();
        let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
        assert_eq!(current, maximum);
        assert_eq!(descriptors.now, current);
        assert!(descriptors.max_connections() >= 1);
    }
}
