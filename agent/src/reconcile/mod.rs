//! Reconcilers, one per kind, behind one dispatcher the controller drives.
//!
//! The contract every kind implements ([`ObjectReconciler`]):
//! - `apply` is called while the object is in the desired state. It makes
//!   the host match and says which phase and message to report. It is
//!   idempotent (nothing changed → nothing touched) and may be cancelled at
//!   any `.await` and re-run.
//! - `cleanup` is called once the object is gone from the desired state,
//!   with only its key (the content is gone too): remove everything made
//!   for it. It must succeed when there is nothing to remove (it also runs
//!   after a restart for objects deleted while the agent was down, and
//!   again after a failed attempt). Only when it returns `Ok` does the
//!   object's status disappear; until then it shows `Terminating` and the
//!   error, and the controller retries with backoff.
//!
//! The dispatcher reads the desired state at reconcile time (never from the
//! trigger), records status and events, and never writes object content
//! into either: messages are the only thing reconcilers report, and they
//! must not contain secret values.
//!
//! Pods are the exception: their reconcile hands the pod its newest
//! desired state and returns ([`PodReconciler::hand_over`]); the pod's own
//! worker (`crate::pod::workers`) does the slow work and reports its status.

mod config;
mod image;
mod pod;
mod registry;

use std::future::Future;
use std::sync::Arc;

use manifests::{Kind, ObjectKey};
use tokio::sync::{mpsc, watch};

use crate::controller::{Action, ObservedEvent, Reconciler, Why};
use crate::desired::{DesiredObject, DesiredState};
use crate::pod::workers::PodWorkers;
use crate::services::Services;
use crate::status::{Details, EventLog, Phase, Reporter, StatusStore, chain};

pub use config::{ConfigMapReconciler, SecretReconciler};
pub use image::ImageReconciler;
pub use pod::PodReconciler;
pub use registry::RegistryReconciler;

/// What every reconciler may use.
#[derive(Debug, Clone)]
pub struct Context {
    pub desired: watch::Receiver<Arc<DesiredState>>,
    pub status: StatusStore,
    pub events: EventLog,
    /// For subsystems that watch the host (container exits, probes): send
    /// the key to have it reconciled.
    pub observed: mpsc::Sender<ObservedEvent>,
    /// The subsystems reconcilers act through (images, runtime, network).
    pub services: Arc<Services>,
    /// One worker per pod.
    pub pods: PodWorkers,
}

impl Context {
    /// The desired state as of now.
    pub fn desired(&self) -> Arc<DesiredState> {
        Arc::clone(&self.desired.borrow())
    }
}

/// The result of a successful apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub phase: Phase,
    /// Kind-specific status (a pod's containers); `None` keeps the last.
    pub details: Option<Details>,
    /// One line for `berth status`; never a secret value.
    pub message: String,
    pub action: Action,
}

impl Applied {
    pub fn new(phase: Phase, message: impl Into<String>) -> Self {
        Self {
            phase,
            details: None,
            message: message.into(),
            action: Action::await_change(),
        }
    }

    pub fn with_details(mut self, details: Details) -> Self {
        self.details = Some(details);
        self
    }

    pub fn requeue_after(mut self, after: std::time::Duration) -> Self {
        self.action = Action::requeue(after);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A failure described in one sentence.
    #[error("{0}")]
    Failed(String),
    /// A failure of a subsystem, with its causes.
    #[error(transparent)]
    Subsystem(Box<dyn std::error::Error + Send + Sync>),
}

impl ReconcileError {
    /// The dispatcher routed an object to the wrong kind's reconciler (a
    /// bug, reported rather than panicking).
    pub fn wrong_kind(desired: &DesiredObject) -> Self {
        Self::Failed(format!(
            "{} does not hold a {} object",
            desired.key, desired.key.kind
        ))
    }
}

/// The per-kind reconciler (see the module docs for the contract).
pub trait ObjectReconciler: Send + Sync + 'static {
    fn apply(
        &self,
        ctx: &Context,
        desired: &DesiredObject,
    ) -> impl Future<Output = Result<Applied, ReconcileError>> + Send;

    fn cleanup(
        &self,
        ctx: &Context,
        key: &ObjectKey,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;
}

/// All kinds' reconcilers: what the controller runs.
pub struct Reconcilers {
    ctx: Context,
    pod: PodReconciler,
    config_map: ConfigMapReconciler,
    secret: SecretReconciler,
    image: ImageReconciler,
    registry: RegistryReconciler,
}

impl Reconcilers {
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
            pod: PodReconciler,
            config_map: ConfigMapReconciler,
            secret: SecretReconciler,
            image: ImageReconciler,
            registry: RegistryReconciler,
        }
    }

    async fn apply(&self, desired: &DesiredObject) -> Result<Applied, ReconcileError> {
        let ctx = &self.ctx;
        match desired.key.kind {
            Kind::Pod => Err(ReconcileError::Failed(
                "pods are reconciled by their workers".into(),
            )),
            Kind::ConfigMap => self.config_map.apply(ctx, desired).await,
            Kind::Secret => self.secret.apply(ctx, desired).await,
            Kind::Image => self.image.apply(ctx, desired).await,
            Kind::Registry => self.registry.apply(ctx, desired).await,
        }
    }

    async fn cleanup(&self, key: &ObjectKey) -> Result<(), ReconcileError> {
        let ctx = &self.ctx;
        match key.kind {
            Kind::Pod => Err(ReconcileError::Failed(
                "pods are removed by their workers".into(),
            )),
            Kind::ConfigMap => self.config_map.cleanup(ctx, key).await,
            Kind::Secret => self.secret.cleanup(ctx, key).await,
            Kind::Image => self.image.cleanup(ctx, key).await,
            Kind::Registry => self.registry.cleanup(ctx, key).await,
        }
    }

    fn reporter(&self) -> Reporter {
        Reporter::new(self.ctx.status.clone(), self.ctx.events.clone())
    }
}

impl Reconciler for Reconcilers {
    type Key = ObjectKey;
    type Error = ReconcileError;

    async fn reconcile(&self, key: &ObjectKey, why: &Why) -> Result<Action, ReconcileError> {
        let desired = self.ctx.desired().get(key).cloned();
        if key.kind == Kind::Pod {
            // The pod's worker counts its syncs, the real work.
            self.pod.hand_over(&self.ctx, key, desired, why).await;
            return Ok(Action::await_change());
        }
        let started = std::time::Instant::now();
        let result = self.reconcile_object(key, desired).await;
        crate::activity::reconciled(&key.kind.to_string(), result.is_ok(), started.elapsed());
        result
    }

    /// A burst of reconciles is over: hand the memory it used back.
    fn idle(&self) {
        crate::memory::trim();
    }

    /// Desired keys, plus keys with a status: those were applied once and
    /// may need cleanup (including after a restart).
    async fn relist(&self) -> Vec<ObjectKey> {
        let mut keys: Vec<ObjectKey> = self.ctx.desired().objects.keys().cloned().collect();
        keys.extend(self.ctx.status.keys());
        keys.sort();
        keys.dedup();
        keys
    }
}

impl Reconcilers {
    /// Applies or cleans up an object of a kind other than Pod.
    async fn reconcile_object(
        &self,
        key: &ObjectKey,
        desired: Option<DesiredObject>,
    ) -> Result<Action, ReconcileError> {
        let reporter = self.reporter();
        match desired {
            Some(desired) => match self.apply(&desired).await {
                Ok(applied) => {
                    reporter.applied(
                        key,
                        &desired.source,
                        desired.generation,
                        applied.phase,
                        applied.message,
                        applied.details,
                    );
                    Ok(applied.action)
                }
                Err(err) => {
                    reporter.failed(
                        key,
                        Some((&desired.source, desired.generation)),
                        &chain(&err),
                    );
                    Err(err)
                }
            },
            None => match self.cleanup(key).await {
                Ok(()) => {
                    reporter.removed(key);
                    Ok(Action::await_change())
                }
                Err(err) => {
                    reporter.failed(key, None, &chain(&err));
                    Err(err)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{AgentInfo, AgentState};

    const SECRET: &str =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2\n";

    #[tokio::test]
    async fn apply_reports_status_and_a_vanished_object_is_cleaned_up_and_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = crate::desired::testing::store();
        let state = store
            .update(vec![crate::desired::testing::file("s.yaml", SECRET)])
            .expect("state");
        let (publish, desired) = watch::channel(state);
        let status = StatusStore::new(
            AgentInfo {
                pid: 1,
                version: "test".into(),
                state: AgentState::Starting,
                started_at: String::new(),
                updated_at: String::new(),
                manifests: "/m".into(),
                resolved_manifests: None,
                desired_revision: 0,
                source_error: None,
            },
            None,
        );
        let events_path = dir.path().join("events.jsonl");
        let events = EventLog::open(events_path.clone(), 100);
        let (observed, _observed_rx) = mpsc::channel(1);
        let services = Arc::new(
            Services::open(
                &crate::paths::Paths::new(&dir.path().join("root"), &dir.path().join("run")),
                &crate::config::AgentConfig::default(),
            )
            .await
            .expect("services"),
        );
        let host = crate::services::pod_host::build(
            &services,
            status.clone(),
            events.clone(),
            observed.clone(),
            Arc::new(crate::node::Node::fixed("node1", Default::default())),
        );
        let reconcilers = Reconcilers::new(Context {
            desired,
            status: status.clone(),
            events,
            observed,
            services,
            pods: PodWorkers::new(host, Default::default()),
        });
        let key = ObjectKey::new(Kind::Secret, "default", "db");

        let action = reconcilers
            .reconcile(&key, &Why::Changed)
            .await
            .expect("apply");
        assert_eq!(action, Action::await_change());
        let reported = status.get(&key).expect("status");
        assert_eq!(
            (reported.phase, reported.message.as_str()),
            (Phase::Ready, "1 key")
        );
        assert_eq!(reconcilers.relist().await, vec![key.clone()]);

        publish.send_replace(store.update(Vec::new()).expect("file deleted"));
        assert_eq!(
            reconcilers.relist().await,
            vec![key.clone()],
            "still has a status"
        );
        reconcilers
            .reconcile(&key, &Why::Changed)
            .await
            .expect("cleanup");
        assert!(status.get(&key).is_none());
        assert!(reconcilers.relist().await.is_empty());

        let saved = dir.path().join("status.json");
        status.save(&saved).expect("save");
        reconcilers.ctx.events.flush();
        let log = std::fs::read_to_string(&events_path).expect("events");
        assert!(log.contains("\"Deleted\""), "{log}");
        for text in [log, std::fs::read_to_string(&saved).expect("status")] {
            assert!(
                !text.contains("hunter2") && !text.contains("password"),
                "{text}"
            );
        }
    }
}
