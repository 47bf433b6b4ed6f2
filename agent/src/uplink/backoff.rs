//! Reconnect delays: exponential, capped, with jitter, reset after a healthy connection.
//!
//! The n-th consecutive failure waits `d/2 + uniform(0, d/2)` with `d = min(max, min × 2^n)`
//! ("equal jitter"): never less than half the step, so a fleet of agents that lost the
//! controller together comes back spread out instead of all at once, and never hammers it.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The reconnect schedule of one uplink.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    rng: StdRng,
}

impl Backoff {
    /// Steps from `min` doubling up to `max`; `seed` drives the jitter.
    #[must_use]
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min: min.max(Duration::from_millis(1)),
            max: max.max(min),
            failures: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The step before jitter after `failures` consecutive failures.
    #[must_use]
    pub fn ceiling(&self, failures: u32) -> Duration {
        let factor = 2u32.checked_pow(failures.min(31)).unwrap_or(u32::MAX);
        self.min
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before the next attempt; counts a failure.
    pub fn next_delay(&mut self) -> Duration {
        let step = u64::try_from(self.ceiling(self.failures).as_millis()).unwrap_or(u64::MAX);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        Duration::from_millis(half + self.rng.random_range(0..=step - half))
    }

    /// A connection was healthy: start again from `min`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 7);
        for n in 0..12u32 {
            let ceiling = b.ceiling(n);
            assert_eq!(
                ceiling,
                Duration::from_secs(1 << n.min(6)).min(Duration::from_secs(60))
            );
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{n}: {d:?} vs {ceiling:?}"
            );
        }
        assert_eq!(b.failures(), 12);
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        // Different seeds spread agents out.
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|seed| {
                let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(60), seed);
                b.next_delay()
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
