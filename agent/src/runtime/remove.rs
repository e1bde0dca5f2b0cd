//! Removing a container and everything it had.

use std::time::Duration;

use super::{CleanupErrors, ContainerState, Handler, Runtime, shim, validate_id, volumes};

impl Runtime {
    /// Removes the container and everything it had: the runtime's state,
    /// its rootfs mount and writable layer, cgroup, bundle and shim state.
    /// A running container is killed first. Keeps its log (for
    /// `--previous`). Goes on past failures and reports them all.
    pub async fn remove_container(&self, id: &str) -> Result<(), CleanupErrors> {
        validate_id(id).map_err(|e| CleanupErrors {
            what: format!("container {id}"),
            errors: vec![e.to_string()],
        })?;
        let record = shim::read_record(&self.paths.shim_dir(id)).ok();
        let handler = record.as_ref().and_then(|r| self.handlers.get(&r.handler));
        let errors = self.cleanup(id, handler).await;
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
        let dir = self.paths.shim_dir(id);
        let record = shim::read_record(&dir).ok();
        if let ContainerState::Running { .. } | ContainerState::Creating { .. } =
            self.inspect(id, &dir).state
            && let Some(handler) = handler
        {
            let _ = handler.kill(id, "SIGKILL").await;
            if let Ok(None) = shim::wait_exit(&dir, Duration::from_secs(10)).await {
                errors.push(format!("container {id} did not exit after SIGKILL"));
            }
        }
        // The shim exits right after writing the exit file; one that
        // lingers (it should not) is killed, so no process is left.
        if let Some(shim) = shim::ProcessRef::read(&dir.join(shim::SHIM_PID_FILE))
            && !wait_gone(shim, Duration::from_secs(5)).await
        {
            let pid = nix::unistd::Pid::from_raw(shim.pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            if !wait_gone(shim, Duration::from_secs(5)).await {
                errors.push(format!("shim {} of container {id} does not exit", shim.pid));
            }
        }
        if let Some(handler) = handler
            && let Err(err) = handler.delete(id).await
        {
            errors.push(err.to_string());
        }
        let bundle_dir = self.paths.bundle(id);
        errors.extend(
            volumes::unmount_under(&bundle_dir)
                .iter()
                .map(ToString::to_string),
        );
        errors.extend(
            super::rootfs::remove(&self.paths, id, &bundle_dir.join("rootfs"))
                .iter()
                .map(ToString::to_string),
        );
        if let Some(record) = &record {
            errors.extend(
                self.layout
                    .remove(&record.cgroups_path)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        for path in [&bundle_dir, &dir] {
            if let Err(err) = crate::fsutil::remove_dir_all_if_exists(path) {
                errors.push(format!("removing {}: {err}", path.display()));
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
