//! Removing a container and everything it had.

use std::time::Duration;

use crate::status::chain;

use super::{
    CleanupErrors, ContainerRecord, ContainerState, Handler, Runtime, shim, validate_id, volumes,
};

impl Runtime {
    /// Removes the container and everything it had: the runtime's state,
    /// its rootfs mount and writable layer, cgroup, bundle and shim state.
    /// A running container is killed first. Keeps its log (for
    /// `--previous`). Goes on past failures and reports them all.
    pub async fn remove_container(&self, id: &str) -> Result<(), CleanupErrors> {
        validate_id(id).map_err(|e| CleanupErrors {
            what: format!("container {id}"),
            errors: vec![chain(&e)],
        })?;
        let handler = self.handler_of_container(id).await.ok();
        let errors = self.cleanup(id, handler.as_ref()).await;
        if errors.is_empty() {
            tracing::info!(container = id, "container removed");
        } else {
            tracing::warn!(
                container = id,
                ?errors,
                "container removal left something behind"
            );
        }
        CleanupErrors::into_result(format!("container {id}"), errors)
    }

    pub(super) async fn cleanup(&self, id: &str, handler: Option<&Handler>) -> Vec<String> {
        let mut errors = Vec::new();
        let dir = self.inner.paths.shim_dir(id);
        let seen = {
            let (id, dir) = (id.to_string(), dir.clone());
            self.blocking("reading the container's state", move |rt| {
                let shim = shim::ProcessRef::read(&dir.join(shim::SHIM_PID_FILE));
                (
                    shim::read_record(&dir).ok(),
                    rt.inspect(&id, &dir).state,
                    shim,
                )
            })
            .await
        };
        let (record, state, shim) = match seen {
            Ok(seen) => seen,
            Err(err) => return vec![chain(&err)],
        };
        if let ContainerState::Running { .. } | ContainerState::Creating { .. } = state
            && let Some(handler) = handler
        {
            let _ = handler.kill(id, "SIGKILL").await;
            if let Ok(None) = shim::wait_exit(&dir, Duration::from_secs(10)).await {
                errors.push(format!("container {id} did not exit after SIGKILL"));
            }
        }
        // The shim exits right after writing the exit file; one that
        // lingers (it should not) is killed, so no process is left.
        if let Some(shim) = shim
            && !wait_gone(shim, Duration::from_secs(5)).await
        {
            let pid = nix::unistd::Pid::from_raw(shim.pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            if !wait_gone(shim, Duration::from_secs(5)).await {
                errors.push(format!("shim {} of container {id} does not exit", shim.pid));
            }
        }
        let mut runtime_forgot = true;
        if let Some(handler) = handler
            && let Err(err) = handler.delete(id).await
        {
            errors.push(chain(&err));
            runtime_forgot = false;
        }
        let id = id.to_string();
        match self
            .blocking("removing the container's files", move |rt| {
                rt.remove_files(&id, record.as_ref(), runtime_forgot)
            })
            .await
        {
            Ok(more) => errors.extend(more),
            Err(err) => errors.push(chain(&err)),
        }
        errors
    }

    /// The container's mounts, writable layer, cgroup, bundle and state
    /// directory; the state directory only once the runtime forgot the
    /// container (`runtime_forgot`): its record names the runtime that
    /// still holds it, and keeps the container known, so the removal is
    /// tried again rather than the container taken as gone. Blocking.
    fn remove_files(
        &self,
        id: &str,
        record: Option<&ContainerRecord>,
        runtime_forgot: bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let dir = self.inner.paths.shim_dir(id);
        let bundle_dir = self.inner.paths.bundle(id);
        let before_unmount = errors.len();
        errors.extend(
            volumes::unmount_under(&bundle_dir)
                .iter()
                .map(|err| chain(err)),
        );
        errors.extend(
            super::rootfs::remove(&self.inner.paths, id, &bundle_dir.join("rootfs"))
                .iter()
                .map(|err| chain(err)),
        );
        if let Some(record) = record {
            errors.extend(
                self.inner
                    .layout
                    .remove(&record.cgroups_path)
                    .iter()
                    .map(|err| chain(err)),
            );
        }
        // After a failed unmount something may still be mounted in the
        // bundle (a hostPath subPath): it stays for a later cleanup.
        let unmounted = errors.len() == before_unmount;
        for path in [&bundle_dir, &dir] {
            if (path == &bundle_dir && !unmounted) || (path == &dir && !runtime_forgot) {
                continue;
            }
            if let Err(err) = crate::fsutil::remove_dir_all_if_exists(path) {
                errors.push(chain(&err));
            }
        }
        errors
    }
}

/// Waits until `process` has exited (a zombie counts as gone: its parent,
/// not berth, reaps it).
async fn wait_gone(process: shim::ProcessRef, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while process.is_alive() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
