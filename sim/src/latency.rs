//! Delays drawn from a seeded generator: network latency per direction, and how long a
//! simulated cluster takes to answer.

use std::time::Duration;

use crate::rng::SimRng;

/// A delay: uniform between `min` and `max`, and with probability `spike_chance` a spike of
/// `spike` on top (a garbage-collection pause, a retransmission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub min: Duration,
    pub max: Duration,
    /// In millionths: 10_000 is one percent.
    pub spike_ppm: u32,
    pub spike: Duration,
}

impl Latency {
    pub const ZERO: Self = Self::fixed(Duration::ZERO);

    /// Always `d`.
    pub const fn fixed(d: Duration) -> Self {
        Self::between(d, d)
    }

    /// Uniform in `min..=max`.
    pub const fn between(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            spike_ppm: 0,
            spike: Duration::ZERO,
        }
    }

    /// Uniform in `min_ms..=max_ms` milliseconds.
    pub const fn millis(min_ms: u64, max_ms: u64) -> Self {
        Self::between(Duration::from_millis(min_ms), Duration::from_millis(max_ms))
    }

    /// The same, with an occasional spike.
    #[must_use]
    pub const fn with_spikes(mut self, ppm: u32, spike: Duration) -> Self {
        self.spike_ppm = ppm;
        self.spike = spike;
        self
    }

    /// The largest delay this can produce.
    pub fn upper_bound(&self) -> Duration {
        let spike = if self.spike_ppm > 0 {
            self.spike
        } else {
            Duration::ZERO
        };
        self.max.max(self.min) + spike
    }

    pub fn sample(&self, rng: &mut SimRng) -> Duration {
        let mut d = rng.duration(self.min, self.max.max(self.min));
        if self.spike_ppm > 0 && rng.below(1_000_000) < u64::from(self.spike_ppm) {
            d += self.spike;
        }
        d
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::ZERO
    }
}
