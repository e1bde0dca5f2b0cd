//! Learning of container exits without polling: a pidfd of each running
//! container's shim, registered with tokio's reactor. The shim writes the
//! exit file and then exits, so the pidfd turning readable means the exit
//! status is on disk; the watcher then asks for the pod to be reconciled
//! (an [`ObservedEvent`] for its key).
//!
//! A container whose shim is gone (killed) is watched through the
//! container's own pid instead; its exit status is lost then and the
//! reconciler reports it as unknown.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use manifests::ObjectKey;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::host::Exits;
use crate::controller::ObservedEvent;
use crate::runtime::shim::{CONTAINER_PID_FILE, ProcessRef, SHIM_PID_FILE};

/// Container ids being watched, with their watch tasks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExitWatcher {
    watched: Arc<Mutex<HashMap<String, JoinHandle<()>>>>,
    /// Where each container's shim keeps its state (`<shims>/<id>/`).
    shims: PathBuf,
    observed: mpsc::Sender<ObservedEvent>,
}

impl ExitWatcher {
    /// Watches containers whose shims keep their state under `shims`, and
    /// sends their pods' keys on `observed`.
    pub fn new(shims: PathBuf, observed: mpsc::Sender<ObservedEvent>) -> Self {
        Self {
            watched: Arc::default(),
            shims,
            observed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches container `id` until it exits, then sends `key`.
    /// Idempotent: a container already watched is left alone. A container
    /// that is already gone is reported right away.
    pub fn watch(&self, id: &str, key: &ObjectKey) {
        let shim_dir = self.shims.join(id);
        let mut watched = self.lock();
        watched.retain(|_, task| !task.is_finished());
        if watched.contains_key(id) {
            return;
        }
        let pidfd = [SHIM_PID_FILE, CONTAINER_PID_FILE]
            .iter()
            .filter_map(|file| ProcessRef::read(&shim_dir.join(file)))
            .find_map(|process| process.pidfd());
        let event = ObservedEvent {
            key: key.clone(),
            reason: format!("container {id} exited"),
        };
        let observed = self.observed.clone();
        let span = tracing::info_span!("exit-watch", pod = %key, container = %id);
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Some(pidfd) = pidfd
                    && let Err(err) = wait_readable(pidfd).await
                {
                    tracing::warn!(error = %err, "cannot watch a container's process; it is checked at the next relist");
                    return;
                }
                let _ = observed.send(event).await;
            },
            span,
        ));
        watched.insert(id.to_string(), task);
    }

    /// Stops watching `id` (it is being removed).
    pub fn forget(&self, id: &str) {
        if let Some(task) = self.lock().remove(id) {
            task.abort();
        }
    }

    /// How many containers are watched (for tests and diagnostics).
    pub fn len(&self) -> usize {
        let mut watched = self.lock();
        watched.retain(|_, task| !task.is_finished());
        watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Exits for ExitWatcher {
    fn watch(&self, id: &str, key: &ObjectKey) {
        ExitWatcher::watch(self, id, key);
    }

    fn forget(&self, id: &str) {
        ExitWatcher::forget(self, id);
    }
}

/// A pidfd becomes readable when its process exits.
#[allow(unsafe_code)]
async fn wait_readable(pidfd: OwnedFd) -> std::io::Result<()> {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and returns the
    // same descriptor from as_raw_fd until the AsyncFd drops it.
    let fd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    let _ready = fd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn reports_when_the_watched_process_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let start_time = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(19))
            .expect("start time");
        std::fs::create_dir(dir.path().join("c1")).expect("shim dir");
        std::fs::write(
            dir.path().join("c1").join(SHIM_PID_FILE),
            format!("{pid} {start_time}"),
        )
        .expect("pid file");
        let key = ObjectKey::new(manifests::Kind::Pod, "default", "p");
        let (tx, mut rx) = mpsc::channel(4);
        let watcher = ExitWatcher::new(dir.path().to_path_buf(), tx);
        watcher.watch("c1", &key);
        watcher.watch("c1", &key);
        assert_eq!(watcher.len(), 1, "watched once");
        // A pidfd is readable once the process exits (zombie or not).
        let reaper = std::thread::spawn(move || child.wait());
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event in time")
            .expect("an event");
        assert_eq!(event.key, key);
        assert!(event.reason.contains("c1"), "{}", event.reason);
        reaper.join().expect("reaper").expect("wait");

        // A container whose processes are gone is reported at once.
        watcher.watch("c2", &key);
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
            .expect("an event");
        assert!(event.reason.contains("c2"));
    }
}
