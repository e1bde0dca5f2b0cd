//! The agent's in-memory status, shared by reconcilers and the source, and
//! the task that persists it whenever it changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use manifests::ObjectKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{
    AgentInfo, AgentState, Details, FileStatus, ObjectStatus, Phase, STATUS_FORMAT_VERSION,
    SourceRef, StatusDocument, time,
};

#[derive(Debug)]
struct Inner {
    agent: AgentInfo,
    objects: BTreeMap<ObjectKey, ObjectStatus>,
    files: Vec<FileStatus>,
}

/// Cheap to clone; every clone sees the same status.
#[derive(Debug, Clone)]
pub struct StatusStore {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

/// What a [`StatusStore::report`] changed, so the caller can emit events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOutcome {
    /// The phase before, if the object had a status.
    pub previous_phase: Option<Phase>,
    pub phase_changed: bool,
    /// This generation had not been observed before.
    pub generation_observed: bool,
    /// The report cleared a previous error.
    pub recovered: bool,
}

impl StatusStore {
    /// Starts from `previous` (the status file of the last run, if any), so
    /// objects whose cleanup is still due stay visible and relistable.
    pub fn new(agent: AgentInfo, previous: Option<StatusDocument>) -> Self {
        let objects = previous
            .map(|doc| doc.objects.into_iter().map(|s| (s.key(), s)).collect())
            .unwrap_or_default();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                agent,
                objects,
                files: Vec::new(),
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind, still
        // consistent field by field; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn mark_changed(&self, inner: &mut Inner) {
        inner.agent.updated_at = time::now();
        self.changed.notify_one();
    }

    /// Records a successful reconcile of the desired object `key` (defined
    /// at `source`, at `generation`): its phase and message, error cleared,
    /// and its details when given (otherwise the previous ones stay).
    pub fn report(
        &self,
        key: &ObjectKey,
        source: &SourceRef,
        generation: u64,
        phase: Phase,
        message: impl Into<String>,
        details: Option<Details>,
    ) -> ReportOutcome {
        let message = message.into();
        let mut inner = self.lock();
        let previous = inner.objects.get(key).cloned();
        let now = time::now();
        let next = ObjectStatus {
            kind: key.kind,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            phase,
            message,
            last_error: None,
            source: source.clone(),
            generation,
            observed_generation: Some(generation),
            last_transition_time: match &previous {
                Some(prev) if prev.phase == phase => prev.last_transition_time.clone(),
                _ => now,
            },
            details: details.or_else(|| previous.as_ref().and_then(|p| p.details.clone())),
        };
        let outcome = ReportOutcome {
            previous_phase: previous.as_ref().map(|p| p.phase),
            phase_changed: previous.as_ref().is_none_or(|p| p.phase != phase),
            generation_observed: previous
                .as_ref()
                .is_none_or(|p| p.observed_generation != Some(generation)),
            recovered: previous.as_ref().is_some_and(|p| p.last_error.is_some()),
        };
        if previous.as_ref() != Some(&next) {
            inner.objects.insert(key.clone(), next);
            self.mark_changed(&mut inner);
        }
        outcome
    }

    /// Publishes kind-specific details of `key` (a pod's containers). Only
    /// objects that already have a status get details: a reconciler cannot
    /// resurrect the status of an object whose cleanup finished.
    pub fn set_details(&self, key: &ObjectKey, details: Option<Details>) {
        let mut inner = self.lock();
        let Some(status) = inner.objects.get_mut(key) else {
            return;
        };
        if status.details != details {
            status.details = details;
            self.mark_changed(&mut inner);
        }
    }

    /// Records a failed reconcile: the phase stays, `last_error` is set.
    /// `desired` is where the object is defined, or `None` when it was
    /// deleted and its cleanup failed (the phase becomes `Terminating`).
    /// Returns true when the error differs from the one already recorded.
    pub fn report_error(
        &self,
        key: &ObjectKey,
        desired: Option<(&SourceRef, u64)>,
        error: &str,
    ) -> bool {
        let mut inner = self.lock();
        let now = time::now();
        let previous = inner.objects.get(key).cloned();
        let mut next = previous.clone().unwrap_or_else(|| ObjectStatus {
            details: None,
            kind: key.kind,
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            phase: Phase::Pending,
            message: String::new(),
            last_error: None,
            source: desired.map(|(s, _)| s.clone()).unwrap_or(SourceRef {
                file: PathBuf::new(),
                line: 0,
                column: 0,
            }),
            generation: desired.map_or(0, |(_, g)| g),
            observed_generation: None,
            last_transition_time: now.clone(),
        });
        match desired {
            Some((source, generation)) => {
                next.source = source.clone();
                next.generation = generation;
            }
            None if next.phase != Phase::Terminating => {
                next.phase = Phase::Terminating;
                next.last_transition_time = now;
            }
            None => {}
        }
        next.last_error = Some(error.to_owned());
        let new_error = previous.as_ref().and_then(|p| p.last_error.as_deref()) != Some(error);
        if previous.as_ref() != Some(&next) {
            inner.objects.insert(key.clone(), next);
            self.mark_changed(&mut inner);
        }
        new_error
    }

    /// `key` is being removed: phase `Terminating` with `message`; an error
    /// recorded earlier stays until the removal ends.
    pub fn terminating(&self, key: &ObjectKey, message: &str) {
        let mut inner = self.lock();
        let Some(status) = inner.objects.get_mut(key) else {
            return;
        };
        if status.phase == Phase::Terminating && status.message == message {
            return;
        }
        if status.phase != Phase::Terminating {
            status.last_transition_time = time::now();
        }
        status.phase = Phase::Terminating;
        status.message = message.to_string();
        self.mark_changed(&mut inner);
    }

    /// Forgets `key` after its cleanup finished. Returns whether it had a
    /// status.
    pub fn remove(&self, key: &ObjectKey) -> bool {
        let mut inner = self.lock();
        let removed = inner.objects.remove(key).is_some();
        if removed {
            self.mark_changed(&mut inner);
        }
        removed
    }

    pub fn get(&self, key: &ObjectKey) -> Option<ObjectStatus> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object with a status: what the relist must revisit even when
    /// it is no longer desired.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.lock().objects.keys().cloned().collect()
    }

    pub fn set_files(&self, files: Vec<FileStatus>) {
        let mut inner = self.lock();
        if inner.files != files {
            inner.files = files;
            self.mark_changed(&mut inner);
        }
    }

    /// Changes the agent section (state, revision, source error).
    pub fn update_agent(&self, update: impl FnOnce(&mut AgentInfo)) {
        let mut inner = self.lock();
        let before = inner.agent.clone();
        update(&mut inner.agent);
        if inner.agent != before {
            self.mark_changed(&mut inner);
        }
    }

    pub fn snapshot(&self) -> StatusDocument {
        let inner = self.lock();
        StatusDocument {
            format_version: STATUS_FORMAT_VERSION,
            agent: inner.agent.clone(),
            objects: inner.objects.values().cloned().collect(),
            files: inner.files.clone(),
        }
    }

    /// Writes the status file now.
    pub fn save(&self, path: &std::path::Path) -> Result<(), super::StatusError> {
        self.snapshot().save(path)
    }

    /// Persists the status to `path` after every change until `shutdown`,
    /// then writes it one last time with the agent `Stopped`. Changes that
    /// arrive during a write are coalesced into the next one.
    pub async fn persist_until(self, path: PathBuf, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = self.changed.notified() => {}
                () = shutdown.cancelled() => break,
            }
            self.save_in_background(&path).await;
        }
        self.update_agent(|agent| agent.state = AgentState::Stopped);
        self.save_in_background(&path).await;
    }

    async fn save_in_background(&self, path: &std::path::Path) {
        let doc = self.snapshot();
        let path = path.to_owned();
        let result = tokio::task::spawn_blocking(move || doc.save(&path)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => warn!(error = %crate::status::chain(&err), "could not persist status"),
            Err(err) => warn!(error = %err, "status writer task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use manifests::Kind;

    use super::*;

    pub(crate) fn agent_info() -> AgentInfo {
        AgentInfo {
            pid: 1,
            version: "test".into(),
            state: AgentState::Starting,
            started_at: time::now(),
            updated_at: time::now(),
            manifests: "/etc/agent.d".into(),
            resolved_manifests: None,
            desired_revision: 0,
            source_error: None,
        }
    }

    fn key() -> ObjectKey {
        ObjectKey::new(Kind::Pod, "default", "web")
    }

    fn source() -> SourceRef {
        SourceRef {
            file: "/etc/agent.d/web.yaml".into(),
            line: 1,
            column: 1,
        }
    }

    #[test]
    fn report_tracks_transitions_and_observed_generation() {
        let store = StatusStore::new(agent_info(), None);
        let first = store.report(&key(), &source(), 1, Phase::Pending, "waiting", None);
        assert!(first.phase_changed && first.generation_observed);
        assert_eq!(first.previous_phase, None);
        let since = store.get(&key()).expect("status").last_transition_time;

        let same = store.report(&key(), &source(), 1, Phase::Pending, "waiting", None);
        assert!(!same.phase_changed && !same.generation_observed);
        assert_eq!(
            store.get(&key()).expect("status").last_transition_time,
            since
        );

        let edited = store.report(&key(), &source(), 2, Phase::Pending, "waiting", None);
        assert!(edited.generation_observed && !edited.phase_changed);
        assert_eq!(
            store.get(&key()).expect("status").observed_generation,
            Some(2)
        );
    }

    #[test]
    fn errors_keep_the_phase_and_clear_on_success() {
        let store = StatusStore::new(agent_info(), None);
        store.report(&key(), &source(), 1, Phase::Ready, "ok", None);
        assert!(store.report_error(&key(), Some((&source(), 2)), "disk full"));
        assert!(
            !store.report_error(&key(), Some((&source(), 2)), "disk full"),
            "same error again"
        );
        let status = store.get(&key()).expect("status");
        assert_eq!(status.phase, Phase::Ready);
        assert_eq!(status.last_error.as_deref(), Some("disk full"));
        assert_eq!(
            (status.generation, status.observed_generation),
            (2, Some(1))
        );

        let outcome = store.report(&key(), &source(), 2, Phase::Ready, "ok", None);
        assert!(outcome.recovered);
        assert_eq!(store.get(&key()).expect("status").last_error, None);
    }

    #[test]
    fn details_are_kept_until_replaced_and_only_for_known_objects() {
        use crate::status::{Details, PodDetails};
        let store = StatusStore::new(agent_info(), None);
        let pod = |uid: &str| {
            Some(Details::Pod(PodDetails {
                uid: uid.into(),
                ..PodDetails::default()
            }))
        };
        store.set_details(&key(), pod("ignored"));
        assert!(store.get(&key()).is_none(), "no status, no details");

        store.report(&key(), &source(), 1, Phase::Running, "up", pod("a"));
        store.report(&key(), &source(), 1, Phase::Running, "up", None);
        assert_eq!(store.get(&key()).expect("status").details, pod("a"));
        store.set_details(&key(), pod("b"));
        assert_eq!(store.get(&key()).expect("status").details, pod("b"));
    }

    #[test]
    fn a_failed_cleanup_shows_terminating_until_removed() {
        let store = StatusStore::new(agent_info(), None);
        store.report(&key(), &source(), 1, Phase::Running, "up", None);
        store.report_error(&key(), None, "container will not stop");
        assert_eq!(store.get(&key()).expect("status").phase, Phase::Terminating);
        assert!(store.remove(&key()));
        assert!(!store.remove(&key()));
        assert!(store.keys().is_empty());
    }

    #[test]
    fn persisted_status_round_trips_and_seeds_the_next_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.json");
        let store = StatusStore::new(agent_info(), None);
        store.report(
            &key(),
            &source(),
            3,
            Phase::Pending,
            "runtime not built yet",
            None,
        );
        store.save(&path).expect("save");

        let loaded = StatusDocument::load(&path).expect("load").expect("present");
        assert_eq!(loaded, store.snapshot());
        let next_run = StatusStore::new(agent_info(), Some(loaded));
        assert_eq!(next_run.keys(), [key()]);
        assert_eq!(
            StatusDocument::load(&dir.path().join("missing.json")).expect("load"),
            None
        );
    }

    #[test]
    fn a_newer_status_format_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.json");
        std::fs::write(&path, r#"{"formatVersion": 99}"#).expect("write");
        let err = StatusDocument::load(&path).expect_err("newer format");
        assert!(err.to_string().contains("format version 99"), "{err}");
    }

    #[tokio::test]
    async fn the_persist_task_writes_changes_and_a_final_stopped_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.json");
        let store = StatusStore::new(agent_info(), None);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(store.clone().persist_until(path.clone(), shutdown.clone()));
        store.report(&key(), &source(), 1, Phase::Pending, "waiting", None);
        shutdown.cancel();
        task.await.expect("persist task");
        let saved = StatusDocument::load(&path).expect("load").expect("present");
        assert_eq!(saved.agent.state, AgentState::Stopped);
        assert_eq!(saved.objects.len(), 1);
    }
}
