//! How much slow work the pod workers do at once (`[pods] parallel-*`):
//! each pod has its own worker, and these bound how many of them start or
//! stop at the same time, separately from the controller's workers (which
//! only hand pods their desired state and never wait). Stops have their
//! own, larger bound, so pods in their grace periods never hold back new
//! pods. Pulls are bounded by the image manager (`[images]
//! parallel-pulls`), where pods waiting on one image share one pull.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::PodsConfig;

/// The node-wide bounds, shared by every pod worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Limits {
    starts: Arc<Semaphore>,
    stops: Arc<Semaphore>,
}

impl Limits {
    pub fn new(config: &PodsConfig) -> Self {
        let bound = |n: usize| Arc::new(Semaphore::new(n.max(1)));
        Self {
            starts: bound(config.parallel_starts),
            stops: bound(config.parallel_stops),
        }
    }

    pub async fn start(&self) -> OwnedSemaphorePermit {
        acquire(&self.starts).await
    }

    pub async fn stop(&self) -> OwnedSemaphorePermit {
        acquire(&self.stops).await
    }
}

async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    Arc::clone(semaphore)
        .acquire_owned()
        .await
        .expect("the pod limits' semaphores are never closed")
}

/// What a pod worker remembers about its stops across syncs: a sync can be
/// cancelled in the middle of a grace period (the pod was deleted or edited
/// again), and the next stop of that container must neither wait longer
/// than the first one would have nor run its preStop hook again.
#[derive(Debug, Clone, Default)]
pub struct StopTracker {
    stops: Arc<Mutex<BTreeMap<String, StopInProgress>>>,
}

#[derive(Debug, Clone, Copy)]
struct StopInProgress {
    /// Unix ms at which SIGKILL is due.
    deadline_ms: u64,
    pre_stop_ran: bool,
}

impl StopTracker {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, StopInProgress>> {
        self.stops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that container `id` is being stopped with `grace` from
    /// `now_ms`; returns the grace left, which is shorter if an earlier stop
    /// of it set a nearer deadline.
    pub fn begin(&self, id: &str, now_ms: u64, grace: Duration) -> Duration {
        let wanted = now_ms.saturating_add(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        let mut stops = self.lock();
        let entry = stops.entry(id.to_string()).or_insert(StopInProgress {
            deadline_ms: wanted,
            pre_stop_ran: false,
        });
        entry.deadline_ms = entry.deadline_ms.min(wanted);
        Duration::from_millis(entry.deadline_ms.saturating_sub(now_ms))
    }

    /// Whether the preStop hook of `id` still has to run (and marks it as
    /// run).
    pub fn take_pre_stop(&self, id: &str) -> bool {
        let mut stops = self.lock();
        match stops.get_mut(id) {
            Some(stop) if stop.pre_stop_ran => false,
            Some(stop) => {
                stop.pre_stop_ran = true;
                true
            }
            None => true,
        }
    }

    /// The SIGKILL deadlines of stops in progress, by container id.
    pub fn deadlines(&self) -> BTreeMap<String, u64> {
        self.lock()
            .iter()
            .map(|(id, stop)| (id.clone(), stop.deadline_ms))
            .collect()
    }

    /// Container `id` is gone: forget its stop.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_stop_keeps_the_nearer_deadline_and_skips_the_hook() {
        let tracker = StopTracker::default();
        assert_eq!(
            tracker.begin("c", 1_000, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert!(tracker.take_pre_stop("c"));
        // 5 s later the pod is deleted with the same 30 s grace: 25 s left.
        assert_eq!(
            tracker.begin("c", 6_000, Duration::from_secs(30)),
            Duration::from_secs(25)
        );
        assert!(!tracker.take_pre_stop("c"), "the hook ran once");
        // A shorter grace wins.
        assert_eq!(
            tracker.begin("c", 7_000, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(tracker.deadlines().get("c"), Some(&9_000));
        tracker.forget("c");
        assert!(tracker.deadlines().is_empty());
        assert!(tracker.take_pre_stop("c"));
    }

    #[tokio::test]
    async fn limits_bound_each_kind_of_work_separately() {
        let limits = Limits::new(&PodsConfig {
            parallel_starts: 1,
            parallel_stops: 1,
            ..PodsConfig::default()
        });
        let _stopping = limits.stop().await;
        // A stop in progress never holds a start.
        let _starting = tokio::time::timeout(Duration::from_secs(5), limits.start())
            .await
            .expect("a start permit while a stop holds its own");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), limits.start())
                .await
                .is_err(),
            "the second start waits"
        );
    }
}
