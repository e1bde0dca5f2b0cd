//! Per-key exponential backoff with jitter, for reconciles that fail.
//!
//! The n-th consecutive failure waits a random duration in
//! `[d/2, d]` where `d = min(initial * 2^n, max)` ("equal jitter"): retries
//! of many keys that failed together spread out, yet a retry never comes
//! sooner than half the nominal delay. A success resets the count.

use std::time::Duration;

use serde::Deserialize;

/// How retries after errors are spaced. Part of `[controller]` in the agent
/// config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackoffConfig {
    /// Nominal delay after the first failure.
    #[serde(with = "manifests::duration::config")]
    pub initial: Duration,
    /// The nominal delay never grows beyond this.
    #[serde(with = "manifests::duration::config")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5 * 60),
        }
    }
}

/// The failure count of one key.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            failures: 0,
        }
    }

    /// The nominal (un-jittered) delay for the next retry.
    pub fn nominal(&self) -> Duration {
        // 2^31 * any sensible initial delay overflows Duration's range long
        // before that exponent; saturate instead.
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.config
            .initial
            .checked_mul(factor)
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }

    /// Records one more failure and returns how long to wait before the
    /// retry. `unit` is a uniform random number in `[0, 1)`; the controller
    /// passes `fastrand::f64()`, tests pass fixed values.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let nominal = self.nominal();
        self.failures = self.failures.saturating_add(1);
        let half = nominal / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn nominal_delay_doubles_until_the_cap() {
        let mut backoff = Backoff::new(config());
        let nominal: Vec<u64> = (0..9)
            .map(|_| {
                let n = backoff.nominal().as_secs();
                backoff.next_delay(0.5);
                n
            })
            .collect();
        assert_eq!(nominal, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn jitter_stays_between_half_and_full_nominal_delay() {
        let mut backoff = Backoff::new(config());
        for _ in 0..40 {
            let nominal = backoff.nominal();
            let delay = backoff.next_delay(fastrand::f64());
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "{delay:?} vs {nominal:?}"
            );
        }
        let mut low = Backoff::new(config());
        assert_eq!(low.next_delay(0.0), Duration::from_millis(500));
        let mut high = Backoff::new(config());
        assert_eq!(high.next_delay(1.0), Duration::from_secs(1));
    }

    #[test]
    fn huge_failure_counts_saturate_at_the_cap() {
        let mut backoff = Backoff::new(config());
        for _ in 0..1000 {
            backoff.next_delay(1.0);
        }
        assert_eq!(backoff.nominal(), Duration::from_secs(60));
        assert_eq!(backoff.failures(), 1000);
    }
}
