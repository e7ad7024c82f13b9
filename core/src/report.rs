//! How often something that can happen thousands of times a second gets a log line: a few
//! lines per interval, then a count, so that an attack or an outage cannot flood the log
//! and nothing is left uncounted.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The length of a reporting window.
pub const REPORT_WINDOW: Duration = Duration::from_secs(10);

/// Counts occurrences of one kind and says which deserve a log line: the first
/// `per_window` of each [`REPORT_WINDOW`]; the rest are counted, and the count is due once
/// the window is over (from the next occurrence, or from [`Reporter::flush`]).
#[derive(Debug)]
pub struct Reporter {
    per_window: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    window: Option<Instant>,
    lines: u64,
    unreported: u64,
}

impl Reporter {
    pub fn new(per_window: u64) -> Self {
        Self {
            per_window,
            state: Mutex::new(State::default()),
        }
    }

    /// One occurrence. `Some(n)` when it gets a log line now, `n` being the occurrences since
    /// the last line, this one included.
    pub fn note(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.unreported += 1;
        if state
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= REPORT_WINDOW)
        {
            state.window = Some(now);
            state.lines = 0;
        }
        if state.lines >= self.per_window {
            return None;
        }
        state.lines += 1;
        Some(std::mem::take(&mut state.unreported))
    }

    /// The occurrences that got no line, once their window is over: call it now and then, so
    /// that the count of a burst is logged even if nothing follows it.
    pub fn flush(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let over = state
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= REPORT_WINDOW);
        if state.unreported == 0 || !over {
            return None;
        }
        state.window = Some(now);
        state.lines = 1;
        Some(std::mem::take(&mut state.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_window_then_the_count() {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let reporter = Reporter::new(3);
        let at = |ms: u64| start + Duration::from_millis(ms);
        let logged: Vec<_> = (0..100).filter_map(|i| reporter.note(at(i * 10))).collect();
        assert_eq!(logged, vec![1, 1, 1]);
        assert_eq!(reporter.flush(at(5_000)), None, "the window is not over");
        assert_eq!(reporter.flush(at(10_000)), Some(97));
        assert_eq!(reporter.flush(at(30_000)), None, "nothing left");
        // A new window: lines again.
        assert_eq!(reporter.note(at(40_000)), Some(1));
    }
}
