//! One worker per pod, as the kubelet's `pod_workers.go`: the controller's
//! reconcile of a Pod only hands the pod its newest desired state
//! ([`PodWorkers::update`]) and returns; the pod's own task owns its slow
//! work — pulls, starts, graceful stops with their grace periods, hooks,
//! restarts after a back-off — so no pod waits behind another, and
//! Registry, ConfigMap, Secret and Image reconciles never wait behind pods.
//!
//! - A newer version of the pod (an edit that changes what it runs, or its
//!   deletion) reaches a busy worker at once: the sync in flight for the
//!   version no longer wanted is cancelled (dropped at its next `.await`;
//!   syncs record every intent first, so the next one carries on) and the
//!   newer version is synced. A deletion during a graceful stop keeps the
//!   shorter remaining grace period ([`StopTracker`]).
//! - Any other trigger (an exit, a probe verdict, a relist, an unrelated
//!   change) while a sync runs makes exactly one more sync after it.
//! - A removal runs to its end (a pod added again meanwhile starts after
//!   it); then the worker ends, unless the pod came back.
//! - Back-offs: the worker sleeps until the earliest restart its sync
//!   reported; failed syncs retry with the controller's jittered back-off.
//! - How many pods pull, start and stop at once is bounded ([`Limits`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use manifests::{Object, ObjectKey};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::executor::Executor;
use super::hash;
use super::host::{Host, Origin};
use super::limits::{Limits, StopTracker};
use super::sync;
use crate::controller::{Backoff, BackoffConfig};
use crate::desired::{DesiredObject, DesiredState};

/// The newest desired state of one pod, for its worker.
#[derive(Clone)]
pub struct PodUpdate {
    /// `None` once the pod is no longer wanted.
    pub object: Option<DesiredObject>,
    /// The desired state it came with (ConfigMaps, Secrets).
    pub desired: Arc<DesiredState>,
    /// Why (`file change`, `container web exited`, `relist`), for the
    /// sync's span.
    pub reason: String,
}

impl PodUpdate {
    /// What the pod runs in this version: a newer update with another
    /// version cancels a sync of this one. `None` once deleted.
    fn version(&self) -> Option<String> {
        let object = self.object.as_ref()?;
        let Object::Pod(pod) = object.object.as_ref() else {
            return Some(format!("not a pod: generation {}", object.generation));
        };
        let key = &object.key;
        Some(
            match hash::wanted(&key.namespace, &key.name, &pod.spec, &self.desired) {
                Ok((pod_hash, containers)) => hash::of(&(
                    pod_hash,
                    containers.iter().map(|c| &c.hash).collect::<Vec<_>>(),
                )),
                Err(err) => format!("unusable: {err}"),
            },
        )
    }
}

/// The pod workers of the node. Cheap to clone.
#[derive(Clone)]
pub struct PodWorkers {
    inner: Arc<Inner>,
}

struct Inner {
    host: Host,
    limits: Limits,
    errors: BackoffConfig,
    workers: Mutex<HashMap<ObjectKey, watch::Sender<PodUpdate>>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl PodWorkers {
    /// `errors` spaces the retries of failed syncs.
    pub fn new(host: Host, errors: BackoffConfig) -> Self {
        let limits = Limits::new(&host.config);
        Self {
            inner: Arc::new(Inner {
                host,
                limits,
                errors,
                workers: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Hands pod `key` its newest desired state and returns at once.
    pub fn update(&self, key: &ObjectKey, update: PodUpdate) {
        let mut workers = self.inner.lock();
        if let Some(worker) = workers.get(key) {
            worker.send_replace(update);
            return;
        }
        if self.inner.shutdown.is_cancelled() {
            return;
        }
        let (sender, receiver) = watch::channel(update);
        workers.insert(key.clone(), sender);
        let worker = Worker {
            inner: Arc::clone(&self.inner),
            key: key.clone(),
            updates: receiver,
            stops: StopTracker::default(),
            errors: Backoff::new(self.inner.errors),
            pull_failures: None,
        };
        let span = tracing::info_span!("pod-worker", pod = %key);
        self.inner.tasks.spawn(worker.run().instrument(span));
    }

    /// Pods with a worker (running or removing).
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops every worker (a sync in flight is dropped; containers keep
    /// running) and waits for them for at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(timeout, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("pod workers still running at the shutdown deadline");
        }
    }
}

impl std::fmt::Debug for PodWorkers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWorkers")
            .field("pods", &self.len())
            .finish()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<ObjectKey, watch::Sender<PodUpdate>>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Worker {
    inner: Arc<Inner>,
    key: ObjectKey,
    updates: watch::Receiver<PodUpdate>,
    stops: StopTracker,
    errors: Backoff,
    /// The image that could not be had in the syncs before this one, and
    /// how many in a row: each retry waits longer
    /// ([`super::report::PodReport::pull_failed`]).
    pull_failures: Option<(String, u32)>,
}

/// How one sync of a wanted pod ended.
enum Synced {
    /// Sync again at this instant (a back-off ends), or only on an update.
    Done {
        wake: Option<Instant>,
    },
    /// A newer version arrived: sync it now.
    Superseded,
    Shutdown,
}

impl Worker {
    async fn run(mut self) {
        let mut wake: Option<Instant> = None;
        let mut due = true;
        loop {
            if !due {
                tokio::select! {
                    changed = self.updates.changed() => if changed.is_err() { return },
                    () = sleep_until(wake) => {}
                    () = self.inner.shutdown.cancelled() => return,
                }
            }
            let update = self.updates.borrow_and_update().clone();
            wake = None;
            let outcome = match &update.object {
                None => self.remove().await,
                Some(object) => self.sync(object, &update).await,
            };
            match outcome {
                Synced::Shutdown => return,
                Synced::Superseded => due = true,
                Synced::Done { wake: next } => {
                    wake = next;
                    // A trigger that came during the sync syncs once more.
                    due = self.updates.has_changed().unwrap_or(false);
                    if update.object.is_none() && wake.is_none() && self.retire() {
                        return;
                    }
                }
            }
        }
    }

    async fn sync(&mut self, object: &DesiredObject, update: &PodUpdate) -> Synced {
        let version = update.version();
        let origin = Origin {
            source: object.source.clone(),
            generation: object.generation,
        };
        let span = tracing::info_span!(
            "sync",
            pod = %self.key,
            generation = object.generation,
            reason = %update.reason
        );
        let mut rerun = false;
        let started = std::time::Instant::now();
        let outcome = {
            let executor = Executor {
                host: &self.inner.host,
                limits: &self.inner.limits,
                stops: &self.stops,
                key: &self.key,
            };
            let sync = sync::sync(&executor, object, &update.desired).instrument(span);
            tokio::pin!(sync);
            loop {
                tokio::select! {
                    outcome = &mut sync => break Some(outcome),
                    changed = self.updates.changed() => {
                        if changed.is_err() {
                            return Synced::Shutdown;
                        }
                        let newer = self.updates.borrow().version();
                        if newer != version {
                            tracing::info!(pod = %self.key, "a newer version of the pod arrived: cancelling the sync in flight");
                            break None;
                        }
                        // Same version: one more sync after this one.
                        rerun = true;
                    }
                    () = self.inner.shutdown.cancelled() => return Synced::Shutdown,
                }
            }
        };
        if rerun {
            self.updates.mark_changed();
        }
        if let Some(result) = &outcome {
            crate::activity::reconciled("Pod", result.is_ok(), started.elapsed());
        }
        let status = &self.inner.host.status;
        match outcome {
            None => Synced::Superseded,
            Some(Ok(report)) => {
                self.errors = Backoff::new(self.inner.errors);
                status.report(
                    &self.key,
                    &origin,
                    report.phase,
                    report.message,
                    report.details.map(crate::status::Details::Pod),
                );
                let now_ms = self.inner.host.clock.now_ms();
                let wake_at_ms = match report.pull_failed {
                    Some(image) => {
                        let failures = match self.pull_failures.take() {
                            Some((last, failures)) if last == image => failures.saturating_add(1),
                            _ => 1,
                        };
                        let delay = self.inner.host.config.delay(failures);
                        self.pull_failures = Some((image, failures));
                        Some(now_ms.saturating_add(super::plan::millis(delay)))
                    }
                    None => {
                        self.pull_failures = None;
                        report.wake_at_ms
                    }
                };
                Synced::Done {
                    wake: wake_at_ms.map(|at| {
                        Instant::now() + Duration::from_millis(at.saturating_sub(now_ms).max(10))
                    }),
                }
            }
            Some(Err(err)) => {
                let delay = self.errors.next_delay(fastrand::f64());
                tracing::warn!(pod = %self.key, error = %err.message(), retry_in = ?delay, "pod sync failed");
                status.report_error(&self.key, Some(&origin), &err.message());
                Synced::Done {
                    wake: Some(Instant::now() + delay),
                }
            }
        }
    }

    /// Removes the pod; a newer update waits until this ends (a removal is
    /// never cut short by a re-add).
    async fn remove(&mut self) -> Synced {
        let host = &self.inner.host;
        host.status
            .terminating(&self.key, "stopping its containers and removing the pod");
        let span = tracing::info_span!("remove", pod = %self.key);
        let started = std::time::Instant::now();
        let result = {
            let executor = Executor {
                host: &self.inner.host,
                limits: &self.inner.limits,
                stops: &self.stops,
                key: &self.key,
            };
            let removal = sync::terminate(&executor).instrument(span);
            tokio::select! {
                result = removal => result,
                () = self.inner.shutdown.cancelled() => return Synced::Shutdown,
            }
        };
        crate::activity::reconciled("Pod", result.is_ok(), started.elapsed());
        match result {
            Ok(()) => {
                self.errors = Backoff::new(self.inner.errors);
                host.status.remove(&self.key);
                Synced::Done { wake: None }
            }
            Err(err) => {
                let delay = self.errors.next_delay(fastrand::f64());
                tracing::warn!(pod = %self.key, error = %err.message(), retry_in = ?delay, "pod removal failed");
                host.status.report_error(&self.key, None, &err.message());
                Synced::Done {
                    wake: Some(Instant::now() + delay),
                }
            }
        }
    }

    /// Ends this worker after its pod was removed, unless an update came
    /// meanwhile (checked under the lock [`PodWorkers::update`] sends
    /// under, so no update is lost).
    fn retire(&self) -> bool {
        let mut workers = self.inner.lock();
        if self.updates.has_changed().unwrap_or(true) {
            return false;
        }
        workers.remove(&self.key);
        true
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
