//! `[pods]` in the agent config: kubelet's CrashLoopBackOff — a container
//! that keeps exiting is restarted after a delay that starts at `initial`
//! and doubles up to `max`; a container that ran for at least `reset`
//! before exiting starts over — and how many pods may start and stop at
//! once (each pod has its own worker; these bound the slow work; pulls are
//! bounded by `[images] parallel-pulls`).

use std::time::Duration;

use serde::Deserialize;

/// `[images] auto-update-interval` when not set.
pub const DEFAULT_AUTO_UPDATE_INTERVAL: Duration = Duration::from_secs(3600);

/// `[pods]` in the agent config.
///
/// ```toml
/// [pods]
/// backoff-initial = "10s"   # first restart delay of a crashed container
/// backoff-max = "5m"        # the delay doubles up to this
/// backoff-reset = "10m"     # running this long forgets earlier crashes
/// image-recheck = "30s"     # a container run from a stored image (registry out
///                           # of reach) checks its registry again this often
/// parallel-starts = 8       # pods making sandboxes and starting containers at once
/// parallel-stops = 32       # containers in their grace period at once
/// storage-check-interval = "10s"  # ephemeral-storage limits and emptyDir
///                           # sizeLimit measured this often (eviction)
/// probation = "0s"          # health-gated rollout for every pod (berth.dev/probation
///                           # overrides per pod); 0s: off
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PodsConfig {
    #[serde(with = "manifests::duration::config")]
    pub backoff_initial: Duration,
    #[serde(with = "manifests::duration::config")]
    pub backoff_max: Duration,
    #[serde(with = "manifests::duration::config")]
    pub backoff_reset: Duration,
    /// How often a container that runs a stored image, because no host of
    /// its registry answered, asks the registry again; a tag that moved
    /// meanwhile replaces it (`[images] offline-fallback`).
    #[serde(with = "manifests::duration::config")]
    pub image_recheck: Duration,
    /// Pods whose worker may set up a sandbox or start containers at the
    /// same time.
    pub parallel_starts: usize,
    /// Containers that may be stopping (preStop hook, grace period) at the
    /// same time. High by default: a stop mostly waits.
    pub parallel_stops: usize,
    /// How often the ephemeral storage of a pod with `ephemeral-storage`
    /// limits or a disk `emptyDir.sizeLimit` is measured (the kubelet's
    /// eviction manager checks every 10 s).
    #[serde(with = "manifests::duration::config")]
    pub storage_check_interval: Duration,
    /// How long an update is on probation when its pod has no
    /// `berth.dev/probation` annotation (`pod::rollout`); zero is off.
    #[serde(with = "manifests::duration::config")]
    pub probation: Duration,
    /// How often pods with `berth.dev/auto-update` re-resolve their tags
    /// (`[images] auto-update-interval`, jittered per check).
    #[serde(skip)]
    pub auto_update_interval: Duration,
}

impl Default for PodsConfig {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
            image_recheck: Duration::from_secs(30),
            parallel_starts: 8,
            parallel_stops: 32,
            storage_check_interval: Duration::from_secs(10),
            probation: Duration::ZERO,
            auto_update_interval: DEFAULT_AUTO_UPDATE_INTERVAL,
        }
    }
}

impl PodsConfig {
    /// The delay before restart number `crashes` (1 = after the first
    /// exit): `initial · 2^(crashes-1)`, at most `max`.
    pub fn delay(&self, crashes: u32) -> Duration {
        let doublings = crashes.saturating_sub(1).min(31);
        self.backoff_initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    /// The crash count after an instance that ran for `ran_for` exited:
    /// one more, or 1 again when it ran long enough to reset the back-off.
    pub fn crashes_after(&self, previous: u32, ran_for: Option<Duration>) -> u32 {
        match ran_for {
            Some(ran) if ran >= self.backoff_reset => 1,
            _ => previous.saturating_add(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PodsConfig {
        PodsConfig {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_millis(1600),
            backoff_reset: Duration::from_secs(10),
            ..PodsConfig::default()
        }
    }

    #[test]
    fn delays_double_then_cap() {
        let c = config();
        let delays: Vec<u128> = (1..=7).map(|n| c.delay(n).as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 1600, 1600, 1600]);
        assert_eq!(c.delay(1000), Duration::from_millis(1600), "no overflow");
        let kubelet = PodsConfig::default();
        assert_eq!(kubelet.delay(1), Duration::from_secs(10));
        assert_eq!(kubelet.delay(6), Duration::from_secs(300));
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let c = config();
        assert_eq!(c.crashes_after(4, Some(Duration::from_secs(1))), 5);
        assert_eq!(c.crashes_after(4, Some(Duration::from_secs(10))), 1);
        assert_eq!(c.crashes_after(0, None), 1);
    }
}
