//! Liveness, readiness and startup probes with kubelet's semantics: one
//! tokio task per probe of a running container, each asleep between its
//! periods (nothing runs for a container without probes). A task never
//! acts on the container itself: it records what the pod reconciler must
//! know ([`ProbeManager::ready`], [`ProbeManager::kill_request`]) and sends
//! the pod's key on the controller's observed-event channel, as container
//! exits do ([`super::exits`]); the reconciler then publishes readiness or
//! stops the container, which restarts by the restart policy.
//!
//! - startup: liveness and readiness wait until it succeeds once (then it
//!   stops); `failureThreshold` consecutive failures kill the container;
//! - liveness: `failureThreshold` consecutive failures kill the container
//!   (grace: the probe's `terminationGracePeriodSeconds`, else the pod's);
//! - readiness: not ready until `successThreshold` consecutive successes,
//!   not ready again after `failureThreshold` consecutive failures; never
//!   restarts anything. A container without one is ready once running
//!   (and started).
//!
//! Probes start when a reconcile finds the container running (just
//! started, or adopted after an agent restart: `initialDelaySeconds` then
//! counts from the adoption) and stop when it is stopped or removed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use manifests::ObjectKey;
use manifests::types as api;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::action::Action;
use super::host::{Events, Handlers, KillRequest, Probes};
use crate::controller::ObservedEvent;
use crate::status::{Event, EventType};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    fn title(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        }
    }
}

/// Consecutive results turned into a verdict, with the thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    healthy: bool,
    successes: u32,
    failures: u32,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Counter {
    /// Liveness starts healthy (so it needs failures to kill), readiness
    /// and startup not (they need a success).
    pub fn new(kind: Kind, probe: &api::Probe) -> Self {
        let threshold = |value: i32| u32::try_from(value.max(1)).unwrap_or(1);
        Self {
            healthy: kind == Kind::Liveness,
            successes: 0,
            failures: 0,
            success_threshold: threshold(probe.success_threshold_or_default()),
            failure_threshold: threshold(probe.failure_threshold_or_default()),
        }
    }

    /// Counts one result; returns the new verdict when it changed.
    pub fn record(&mut self, success: bool) -> Option<bool> {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if !self.healthy && self.successes >= self.success_threshold {
                self.healthy = true;
                return Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            // Reported once per run of failures, also for a readiness or
            // startup probe that never succeeded.
            if self.failures == self.failure_threshold {
                self.healthy = false;
                return Some(false);
            }
        }
        None
    }
}

#[derive(Debug, Default)]
struct Verdicts {
    ready: bool,
    kill: Option<KillRequest>,
}

struct Watched {
    verdicts: Arc<Mutex<Verdicts>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The probes of every running container, by container id. Cheap to clone.
#[derive(Clone)]
pub struct ProbeManager {
    watched: Arc<Mutex<HashMap<String, Watched>>>,
    reporting: Reporting,
}

impl std::fmt::Debug for ProbeManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeManager")
            .field("containers", &self.len())
            .finish()
    }
}

/// What probe tasks act and report through.
#[derive(Clone)]
struct Reporting {
    handlers: Arc<dyn Handlers>,
    events: Arc<dyn Events>,
    observed: mpsc::Sender<ObservedEvent>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ProbeManager {
    /// Probes run their actions through `handlers`; verdicts that change
    /// are events, and the pod's key goes out on `observed`.
    pub fn new(
        handlers: Arc<dyn Handlers>,
        events: Arc<dyn Events>,
        observed: mpsc::Sender<ObservedEvent>,
    ) -> Self {
        Self {
            watched: Arc::default(),
            reporting: Reporting {
                handlers,
                events,
                observed,
            },
        }
    }

    /// Starts the probes of `container` running as `id` (reached at
    /// `host`), unless they already run. Nothing for a container without
    /// probes.
    pub fn ensure(&self, key: &ObjectKey, container: &api::Container, id: &str, host: IpAddr) {
        let mut watched = lock(&self.watched);
        if watched.contains_key(id) {
            return;
        }
        let probes: Vec<(Kind, &api::Probe, Action)> = [
            (Kind::Startup, &container.startup_probe),
            (Kind::Liveness, &container.liveness_probe),
            (Kind::Readiness, &container.readiness_probe),
        ]
        .into_iter()
        .filter_map(|(kind, probe)| {
            let probe = probe.as_ref()?;
            Some((kind, probe, Action::of_probe(probe, container)?))
        })
        .collect();
        if probes.is_empty() {
            return;
        }
        let has = |kind: Kind| probes.iter().any(|(k, _, _)| *k == kind);
        let started = !has(Kind::Startup);
        let readiness_probe = has(Kind::Readiness);
        let verdicts = Arc::new(Mutex::new(Verdicts {
            ready: started && !readiness_probe,
            kill: None,
        }));
        let (started_tx, started_rx) = watch::channel(started);
        let started_tx = Arc::new(started_tx);
        let tasks = probes
            .into_iter()
            .map(|(kind, probe, action)| {
                let worker = Worker {
                    reporting: self.reporting.clone(),
                    key: key.clone(),
                    kind,
                    container: container.name.clone(),
                    id: id.to_string(),
                    host,
                    action,
                    probe: probe.clone(),
                    verdicts: Arc::clone(&verdicts),
                    started_tx: Arc::clone(&started_tx),
                    started_rx: started_rx.clone(),
                    readiness_probe,
                };
                let span = tracing::info_span!("probe", pod = %key, container = %container.name, probe = ?kind);
                tokio::spawn(tracing::Instrument::instrument(worker.run(), span))
            })
            .collect();
        watched.insert(id.to_string(), Watched { verdicts, tasks });
    }

    /// Whether container `id` is ready as far as its probes say (true for
    /// one without probes).
    pub fn ready(&self, id: &str) -> bool {
        lock(&self.watched)
            .get(id)
            .is_none_or(|w| lock(&w.verdicts).ready)
    }

    /// Whether a failed liveness or startup probe asks for `id` to be
    /// stopped.
    pub fn kill_request(&self, id: &str) -> Option<KillRequest> {
        lock(&self.watched)
            .get(id)
            .and_then(|w| lock(&w.verdicts).kill.clone())
    }

    /// Stops probing `id` (it stopped, or is being stopped).
    pub fn forget(&self, id: &str) {
        let removed = lock(&self.watched).remove(id);
        drop(removed);
    }

    /// How many containers are probed.
    pub fn len(&self) -> usize {
        lock(&self.watched).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Probes for ProbeManager {
    fn watch(&self, key: &ObjectKey, container: &api::Container, id: &str, host: IpAddr) {
        self.ensure(key, container, id, host);
    }

    fn ready(&self, id: &str) -> bool {
        ProbeManager::ready(self, id)
    }

    fn kill_request(&self, id: &str) -> Option<KillRequest> {
        ProbeManager::kill_request(self, id)
    }

    fn forget(&self, id: &str) {
        ProbeManager::forget(self, id);
    }
}

fn seconds(value: i32) -> Duration {
    Duration::from_secs(u64::try_from(value.max(0)).unwrap_or(0))
}

struct Worker {
    reporting: Reporting,
    key: ObjectKey,
    kind: Kind,
    container: String,
    id: String,
    host: IpAddr,
    action: Action,
    probe: api::Probe,
    verdicts: Arc<Mutex<Verdicts>>,
    started_tx: Arc<watch::Sender<bool>>,
    started_rx: watch::Receiver<bool>,
    readiness_probe: bool,
}

impl Worker {
    async fn run(mut self) {
        tokio::time::sleep(seconds(self.probe.initial_delay_seconds.unwrap_or(0))).await;
        if self.kind != Kind::Startup && self.started_rx.wait_for(|s| *s).await.is_err() {
            return;
        }
        let period = seconds(self.probe.period_seconds_or_default()).max(Duration::from_secs(1));
        let timeout = seconds(self.probe.timeout_seconds_or_default()).max(Duration::from_secs(1));
        let mut counter = Counter::new(self.kind, &self.probe);
        let mut last_warning = None;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let outcome = self
                .reporting
                .handlers
                .run(&self.action, &self.id, self.host, timeout)
                .await;
            // kubelet warns at every period; once per change is enough for
            // a bounded event log.
            if outcome.warning != last_warning {
                if let Some(warning) = &outcome.warning {
                    self.event(
                        EventType::Warning,
                        "ProbeWarning",
                        format!(
                            "container {}: {} probe warning: {warning}",
                            self.container,
                            self.kind.title()
                        ),
                    );
                }
                last_warning = outcome.warning;
            }
            let result = outcome.result;
            tracing::trace!(container = %self.id, probe = ?self.kind, ?result, "probe");
            let Some(healthy) = counter.record(result.is_ok()) else {
                continue;
            };
            let done = self.verdict(healthy, &result);
            self.notify().await;
            if done {
                return;
            }
        }
    }

    /// Applies a changed verdict; true when this probe is finished.
    fn verdict(&self, healthy: bool, result: &Result<String, String>) -> bool {
        let message = match result {
            Ok(text) | Err(text) => text.clone(),
        };
        if !healthy {
            self.event(
                EventType::Warning,
                "Unhealthy",
                format!(
                    "container {}: {} probe failed ({}): {message}",
                    self.container,
                    self.kind.title(),
                    self.action.describe()
                ),
            );
        }
        let mut verdicts = lock(&self.verdicts);
        match (self.kind, healthy) {
            (Kind::Readiness, ready) => {
                verdicts.ready = ready;
                false
            }
            (Kind::Startup, true) => {
                verdicts.ready = !self.readiness_probe;
                self.started_tx.send_replace(true);
                true
            }
            (Kind::Liveness, true) => false,
            (Kind::Liveness | Kind::Startup, false) => {
                verdicts.ready = false;
                verdicts.kill = Some(KillRequest {
                    why: format!("it failed its {} probe", self.kind.title().to_lowercase()),
                    grace: self
                        .probe
                        .termination_grace_period_seconds
                        .and_then(|s| u64::try_from(s).ok())
                        .map(Duration::from_secs),
                });
                true
            }
        }
    }

    fn event(&self, event_type: EventType, reason: &str, message: String) {
        self.reporting.events.record(Event::new(
            event_type,
            self.key.to_string(),
            reason,
            message,
        ));
    }

    /// Asks for the pod to be reconciled.
    async fn notify(&self) {
        let _ = self
            .reporting
            .observed
            .send(ObservedEvent {
                key: self.key.clone(),
                reason: format!(
                    "container {}: {} probe result changed",
                    self.container,
                    self.kind.title()
                ),
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> api::Probe {
        api::Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Default::default()
        }
    }

    #[test]
    fn liveness_needs_consecutive_failures() {
        let mut c = Counter::new(Kind::Liveness, &probe(1, 3));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None, "a success resets the failures");
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(false), None, "reported once");
    }

    #[test]
    fn readiness_flips_both_ways_with_its_thresholds() {
        let mut c = Counter::new(Kind::Readiness, &probe(2, 2));
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(true));
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(true), Some(true));
    }

    #[test]
    fn startup_succeeds_once_or_fails_at_the_threshold() {
        let mut c = Counter::new(Kind::Startup, &probe(1, 3));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(true), Some(true));
        let mut c = Counter::new(Kind::Startup, &probe(1, 2));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(false));
        assert_eq!(c.record(false), None);
    }
}
