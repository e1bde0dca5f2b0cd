//! `[images] max-download-rate`: one budget of bytes per second for every
//! blob download of the agent together (for metered or shared links). A
//! download takes its chunk's bytes from the budget after receiving it and
//! waits when it runs ahead; TCP flow control then slows the sender.
//!
//! The budget is a virtual clock (GCRA): each chunk moves the time at
//! which the link is free again by `bytes / rate`; a download waits until
//! that time, less a small burst so short pauses do not waste the link.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How far ahead of the rate a download may run before it waits.
const BURST: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct RateLimit {
    bytes_per_second: u64,
    /// When everything taken so far has been paid for.
    free_at: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// `None` for 0 (no limit).
    pub fn new(bytes_per_second: u64) -> Option<Self> {
        (bytes_per_second > 0).then(|| Self {
            bytes_per_second,
            free_at: Mutex::new(None),
        })
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// Accounts for `bytes` just received; returns once the rate allows
    /// more.
    pub async fn take(&self, bytes: usize) {
        let wait = self.account(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Moves the budget's clock by `bytes` at `now`; how long to wait.
    fn account(&self, bytes: usize, now: Instant) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second as f64);
        let mut free_at = self
            .free_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = free_at.filter(|at| *at > now).unwrap_or(now);
        let next = start + cost;
        *free_at = Some(next);
        next.saturating_duration_since(now + BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_together_are_held_to_the_rate() {
        let limit = RateLimit::new(1_000_000).expect("a limit");
        let now = Instant::now();
        // 50 ms worth: within the burst.
        assert_eq!(limit.account(50_000, now), Duration::ZERO);
        // Two downloads, 250 KB each, at the same instant: the second waits
        // for both (and the first) to be paid, less the burst.
        limit.account(250_000, now);
        let wait = limit.account(250_000, now);
        assert_eq!(wait, Duration::from_millis(500));
        // Idle time is not saved up beyond the burst.
        let later = now + Duration::from_secs(10);
        assert_eq!(limit.account(50_000, later), Duration::ZERO);
        assert_eq!(limit.account(100_000, later), Duration::from_millis(100));
        assert!(RateLimit::new(0).is_none());
    }
}
