//! How far the secondary may fall behind one client connection.
//!
//! With `--wait false` the client hears the primary's answer before the secondary is done, so
//! a client that writes as fast as the primary answers can run ahead of a slower secondary
//! without limit: its requests pile up on the secondary's connection until its stream ids run
//! out or its requests time out, and those writes are missed. Instead, the requests not
//! finished on the secondary (in flight there, queued, held for it, or waiting for the
//! primary's answer with `--write-order primary-first`) and their bytes are counted; at
//! `--max-secondary-lag` requests or `--max-secondary-lag-bytes` bytes the client is not read
//! ([`Session::wants_read`]) until the secondary has caught up by a quarter of the bound. The
//! client slows down to the secondary's pace; nothing is dropped.
//!
//! A secondary that stops answering must not stop clients for good. While the client is
//! paused, each request the secondary finishes shows it alive; when it finishes none within
//! `--wait-timeout`, it is marked stalled (as a client waiting for it with `--wait true` would
//! mark it): the bound stops pausing clients until it answers again, and the writes it then
//! misses (timeouts, exhausted stream ids, a failed connection) are counted as missed, as
//! without the bound. A secondary whose connection failed has nothing in flight: its
//! requests failed at once, so the bound does not hold the client either.

use std::time::{Duration, Instant};

use crate::config::Upstream;
use crate::failure::FailureKind;
use crate::session::request::RequestId;
use crate::session::{Event, Session};

/// The requests of one session not finished on the secondary.
#[derive(Debug, Default)]
pub(crate) struct Lag {
    requests: usize,
    bytes: usize,
    /// The client is not read until the lag falls under the resume mark.
    paused: bool,
    /// While paused: when the secondary counts as stalled if it finishes nothing before.
    deadline: Option<Instant>,
}

impl Lag {
    /// Uncounts a request that went away while counted (never expected).
    pub(crate) fn forget(&mut self, bytes: usize) {
        self.requests = self.requests.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Requests counted now.
    pub(crate) fn requests(&self) -> usize {
        self.requests
    }

    /// The deadline the session's timer must cover.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.paused)
    }
}

/// Whether `value` reached `bound` (0: no bound).
fn reached(value: usize, bound: usize) -> bool {
    bound != 0 && value >= bound
}

/// Whether `value` is under the mark where a paused client is read again: a quarter under
/// `bound`, so that one finished request does not resume the client for one more request.
fn under_resume_mark(value: usize, bound: usize) -> bool {
    bound == 0 || value < (bound - bound / 4).max(1)
}

impl Session {
    /// Whether the lag bound keeps the client from being read now.
    pub(super) fn lag_pauses(&self) -> bool {
        self.lag.paused && !self.proxy.is_stalled(self.proxy.primary().other())
    }

    /// Request `id` is now pending on its secondary with a message of `bytes`.
    pub(super) fn lag_add(&mut self, id: RequestId, bytes: usize, now: Instant) {
        let Some(request) = self.requests.get_mut(id) else {
            return;
        };
        if request.lag.is_some() {
            return;
        }
        request.lag = Some(bytes);
        let secondary = request.route.secondary;
        self.lag.requests += 1;
        self.lag.bytes += bytes;
        let config = self.proxy.config();
        let over = reached(self.lag.requests, config.max_secondary_lag)
            || reached(self.lag.bytes, config.max_secondary_lag_bytes);
        let Some(secondary) = secondary else { return };
        if over && !self.lag.paused && !self.proxy.is_stalled(secondary) {
            self.lag.paused = true;
            self.lag.deadline = Some(now + config.wait_timeout);
            self.events.push_back(Event::SecondaryLag {
                upstream: secondary,
                requests: self.lag.requests,
                bytes: self.lag.bytes,
            });
        }
    }

    /// Request `id` is no longer pending on its secondary (done, failed, or never sent).
    pub(super) fn lag_remove(&mut self, id: RequestId, now: Instant) {
        let Some(bytes) = self.requests.get_mut(id).and_then(|r| r.lag.take()) else {
            return;
        };
        self.lag.requests -= 1;
        self.lag.bytes -= bytes;
        if !self.lag.paused {
            return;
        }
        let config = self.proxy.config();
        if under_resume_mark(self.lag.requests, config.max_secondary_lag)
            && under_resume_mark(self.lag.bytes, config.max_secondary_lag_bytes)
        {
            self.lag.paused = false;
            self.lag.deadline = None;
        } else {
            // The secondary is making progress.
            self.lag.deadline = Some(now + config.wait_timeout);
        }
    }

    /// The client is paused and the secondary finished nothing within `--wait-timeout`: it
    /// stalls, and clients are no longer held for it.
    pub(super) fn lag_check(&mut self, now: Instant) {
        if self.lag.deadline().is_none_or(|d| d > now) {
            return;
        }
        self.lag.paused = false;
        self.lag.deadline = None;
        let secondary = self.proxy.primary().other();
        let requests = self.lag.requests;
        self.stall(secondary, |wait| {
            format!(
                "the {secondary} cluster finished none of a client's {requests} unfinished requests within --wait-timeout {wait:?}: clients are no longer slowed down for it (--max-secondary-lag) and get the {} cluster's answers without waiting for it until it answers again; writes it misses are counted",
                secondary.other()
            )
        });
    }

    /// Marks `secondary` stalled for every session (clients stop waiting for it until it
    /// answers again); the first session to do so reports why, `detail` given the
    /// `--wait-timeout`.
    pub(super) fn stall(&mut self, secondary: Upstream, detail: impl FnOnce(Duration) -> String) {
        if self.proxy.mark_stalled(secondary) {
            let wait = self.proxy.config().wait_timeout;
            self.events.push_back(Event::Failure {
                upstream: secondary,
                kind: FailureKind::Timeout,
                detail: detail(wait),
                first: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_resume_marks() {
        assert!(!reached(5, 0));
        assert!(reached(4, 4) && !reached(3, 4));
        assert!(under_resume_mark(1_000_000, 0));
        assert!(under_resume_mark(767, 1024) && !under_resume_mark(768, 1024));
        // A bound of one resumes once nothing is pending.
        assert!(under_resume_mark(0, 1) && !under_resume_mark(1, 1));
    }
}
