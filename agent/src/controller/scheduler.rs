//! The keyed work queue: which keys are due now and which later.
//!
//! A key is in the queue at most once. Scheduling a key that is already
//! queued keeps the earlier of the two times, so a burst of triggers for one
//! key becomes one reconcile, and a trigger for a key that waits in backoff
//! or for a requeue brings it forward.

use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::Hash;

use indexmap::IndexSet;
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};

#[derive(Debug)]
pub struct Scheduler<K> {
    /// Due now, in the order they became due.
    ready: IndexSet<K>,
    /// Due later.
    delayed: DelayQueue<K>,
    /// Where each delayed key sits in `delayed`, and when it is due.
    delayed_index: HashMap<K, (delay_queue::Key, Instant)>,
}

impl<K: Clone + Eq + Hash> Scheduler<K> {
    pub fn new() -> Self {
        Self {
            ready: IndexSet::new(),
            delayed: DelayQueue::new(),
            delayed_index: HashMap::new(),
        }
    }

    /// Queues `key` to run at `at` (or now, if `at` has passed), unless it is
    /// already queued for an earlier time.
    pub fn schedule(&mut self, key: K, at: Instant) {
        if self.ready.contains(&key) {
            return;
        }
        if at <= Instant::now() {
            if let Some((slot, _)) = self.delayed_index.remove(&key) {
                self.delayed.remove(&slot);
            }
            self.ready.insert(key);
            return;
        }
        match self.delayed_index.get_mut(&key) {
            Some((_, due)) if *due <= at => {}
            Some((slot, due)) => {
                self.delayed.reset_at(slot, at);
                *due = at;
            }
            None => {
                let slot = self.delayed.insert_at(key.clone(), at);
                self.delayed_index.insert(key, (slot, at));
            }
        }
    }

    /// Takes the key that has been due the longest.
    pub fn pop_ready(&mut self) -> Option<K> {
        self.ready.shift_remove_index(0)
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub fn has_delayed(&self) -> bool {
        !self.delayed.is_empty()
    }

    /// Waits until the next delayed key is due and moves it to the ready
    /// set. Only call this when [`Self::has_delayed`] is true: an empty
    /// `DelayQueue` resolves at once with nothing.
    pub async fn wait_delayed(&mut self) {
        if let Some(expired) = poll_fn(|cx| self.delayed.poll_expired(cx)).await {
            let key = expired.into_inner();
            self.delayed_index.remove(&key);
            self.ready.insert(key);
        }
    }

    /// How many keys are queued (ready or delayed).
    pub fn len(&self) -> usize {
        self.ready.len() + self.delayed_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Clone + Eq + Hash> Default for Scheduler<K> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_is_queued_once_at_its_earliest_time() {
        let mut scheduler = Scheduler::new();
        let now = Instant::now();
        scheduler.schedule("a", now + Duration::from_secs(30));
        scheduler.schedule("a", now + Duration::from_secs(10));
        scheduler.schedule("a", now + Duration::from_secs(20));
        assert_eq!(scheduler.len(), 1);
        assert!(!scheduler.has_ready());
        scheduler.wait_delayed().await;
        assert_eq!(Instant::now() - now, Duration::from_secs(10));
        assert_eq!(scheduler.pop_ready(), Some("a"));
        assert!(scheduler.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn scheduling_now_overrides_a_later_time_and_keeps_fifo_order() {
        let mut scheduler = Scheduler::new();
        let now = Instant::now();
        scheduler.schedule("b", now + Duration::from_secs(60));
        scheduler.schedule("a", now);
        scheduler.schedule("b", now);
        scheduler.schedule("a", now);
        assert_eq!(scheduler.len(), 2);
        assert!(!scheduler.has_delayed());
        assert_eq!(scheduler.pop_ready(), Some("a"));
        assert_eq!(scheduler.pop_ready(), Some("b"));
        assert_eq!(scheduler.pop_ready(), None);
    }
}
