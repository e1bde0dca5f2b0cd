//! The controller loop: takes triggers, feeds the scheduler, runs due keys
//! on a bounded set of tasks, and turns outcomes into the next schedule.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::oneshot;
use tokio::task::{Id as TaskId, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::backoff::Backoff;
use super::scheduler::Scheduler;
use super::{Action, ControllerConfig, Reconciler, Why};

pub struct Controller<R: Reconciler> {
    reconciler: Arc<R>,
    config: ControllerConfig,
    scheduler: Scheduler<R::Key>,
    /// Keys whose reconcile is running now, by task.
    running: HashMap<TaskId, R::Key>,
    running_keys: HashSet<R::Key>,
    /// Keys triggered while they were running: they run once more after.
    rerun: HashSet<R::Key>,
    backoffs: HashMap<R::Key, Backoff>,
    /// Why each scheduled key was scheduled (the latest trigger).
    why: HashMap<R::Key, Why>,
    /// Keys of the first relist not yet reconciled once, and who to tell
    /// when none are left.
    initial_sync: Option<(HashSet<R::Key>, oneshot::Sender<()>)>,
    tasks: JoinSet<Result<Action, R::Error>>,
}

impl<R: Reconciler> Controller<R> {
    pub fn new(reconciler: Arc<R>, config: ControllerConfig) -> Self {
        Self {
            reconciler,
            config: ControllerConfig {
                workers: config.workers.max(1),
                ..config
            },
            scheduler: Scheduler::new(),
            running: HashMap::new(),
            running_keys: HashSet::new(),
            rerun: HashSet::new(),
            backoffs: HashMap::new(),
            why: HashMap::new(),
            initial_sync: None,
            tasks: JoinSet::new(),
        }
    }

    /// Runs until `shutdown` is cancelled, then lets running reconciles
    /// finish for up to `shutdown_timeout` and cancels the rest.
    /// `initial_sync` fires once every key of the first relist has been
    /// reconciled once (successfully or not).
    pub async fn run<S>(
        mut self,
        triggers: S,
        shutdown: CancellationToken,
        initial_sync: oneshot::Sender<()>,
    ) where
        S: Stream<Item = (R::Key, Why)> + Unpin,
    {
        let mut triggers = triggers.fuse();
        let first = self.reconciler.relist().await;
        self.initial_sync = Some((first.iter().cloned().collect(), initial_sync));
        self.check_initial_sync();
        self.schedule_all(first, Why::Relist);

        let period = self.config.relist_interval;
        let mut relist = tokio::time::interval_at(Instant::now() + period, period);
        relist.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            self.start_ready();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finish(joined);
                    if self.tasks.is_empty() && !self.scheduler.has_ready() {
                        self.reconciler.idle();
                    }
                }
                Some((key, why)) = triggers.next() => {
                    // Take the whole burst before starting work, so keys
                    // triggered together are deduped even when idle.
                    let now = Instant::now();
                    self.schedule(key, now, why);
                    while let Some(Some((key, why))) = triggers.next().now_or_never() {
                        self.schedule(key, now, why);
                    }
                }
                () = self.scheduler.wait_delayed(), if self.scheduler.has_delayed() => {}
                _ = relist.tick() => {
                    let keys = self.reconciler.relist().await;
                    debug!(keys = keys.len(), "periodic relist");
                    self.schedule_all(keys, Why::Relist);
                }
            }
        }
        self.drain().await;
    }

    fn schedule_all(&mut self, keys: Vec<R::Key>, why: Why) {
        let now = Instant::now();
        for key in keys {
            self.schedule(key, now, why.clone());
        }
    }

    fn schedule(&mut self, key: R::Key, at: Instant, why: Why) {
        self.why.insert(key.clone(), why);
        self.scheduler.schedule(key, at);
    }

    /// Starts due keys while workers are free. A due key that is already
    /// running is parked in `rerun` and queued again when it finishes.
    fn start_ready(&mut self) {
        while self.running.len() < self.config.workers {
            let Some(key) = self.scheduler.pop_ready() else {
                return;
            };
            if self.running_keys.contains(&key) {
                self.rerun.insert(key);
                continue;
            }
            let reconciler = Arc::clone(&self.reconciler);
            let why = self.why.remove(&key).unwrap_or(Why::Relist);
            let span = info_span!("reconcile", key = %key, why = %why);
            debug!(parent: &span, "reconcile starts");
            let task_key = key.clone();
            let handle = self
                .tasks
                .spawn(async move { reconciler.reconcile(&task_key, &why).await }.instrument(span));
            self.running.insert(handle.id(), key.clone());
            self.running_keys.insert(key);
        }
    }

    fn finish(
        &mut self,
        joined: Result<(TaskId, Result<Action, R::Error>), tokio::task::JoinError>,
    ) {
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, Ok(outcome)),
            Err(err) => (err.id(), Err(err)),
        };
        let Some(key) = self.running.remove(&id) else {
            return;
        };
        self.running_keys.remove(&key);
        let now = Instant::now();
        match outcome {
            Ok(Ok(action)) => {
                self.backoffs.remove(&key);
                if let Some(after) = action.requeue_after() {
                    self.schedule(key.clone(), now + after, Why::Requeue);
                }
            }
            Ok(Err(err)) => {
                let delay = self.next_backoff(&key);
                warn!(%key, error = %crate::status::chain(&err), retry_in = ?delay, "reconcile failed");
                self.schedule(key.clone(), now + delay, Why::Retry);
            }
            Err(join_error) => {
                // A panicking reconciler is a bug, but one object's bug must
                // not stop the agent from reconciling the rest.
                let delay = self.next_backoff(&key);
                warn!(%key, error = %join_error, retry_in = ?delay, "reconcile panicked");
                self.schedule(key.clone(), now + delay, Why::Retry);
            }
        }
        if self.rerun.remove(&key) {
            // Its `why` is the trigger's, kept while it ran.
            self.scheduler.schedule(key.clone(), now);
        }
        if let Some((pending, _)) = &mut self.initial_sync {
            pending.remove(&key);
        }
        self.check_initial_sync();
    }

    fn next_backoff(&mut self, key: &R::Key) -> std::time::Duration {
        let config = self.config.backoff;
        self.backoffs
            .entry(key.clone())
            .or_insert_with(|| Backoff::new(config))
            .next_delay(fastrand::f64())
    }

    fn check_initial_sync(&mut self) {
        if self
            .initial_sync
            .as_ref()
            .is_some_and(|(pending, _)| pending.is_empty())
            && let Some((_, done)) = self.initial_sync.take()
        {
            // The receiver may be gone (nobody waits for readiness).
            let _ = done.send(());
        }
    }

    async fn drain(&mut self) {
        if self.tasks.is_empty() {
            return;
        }
        debug!(running = self.tasks.len(), "waiting for running reconciles");
        let finished = tokio::time::timeout(self.config.shutdown_timeout, async {
            while let Some(joined) = self.tasks.join_next_with_id().await {
                self.finish(joined);
            }
        })
        .await;
        if finished.is_err() {
            warn!(
                running = self.tasks.len(),
                "reconciles still running at the shutdown deadline; cancelling them"
            );
            self.tasks.shutdown().await;
        }
    }
}
