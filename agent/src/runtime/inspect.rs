//! What is on disk about containers: one, or all of them after a restart.

use std::path::Path;

use super::{ContainerInfo, ContainerRecord, ContainerState, Handler, Runtime, RuntimeError, shim};

impl Runtime {
    /// The container `id` as found on disk.
    pub fn container(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let dir = self.inner.paths.shim_dir(id);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound {
                id: id.to_string(),
                dir,
            });
        }
        Ok(self.inspect(id, &dir))
    }

    /// Every container on this host (the shim state directories): what a
    /// restarted agent adopts. Running containers are left alone.
    pub fn list(&self) -> Vec<ContainerInfo> {
        let mut found: Vec<ContainerInfo> = std::fs::read_dir(self.inner.paths.shims())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let id = e.file_name().to_str()?.to_string();
                Some(self.inspect(&id, &e.path()))
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    pub(super) fn inspect(&self, id: &str, dir: &Path) -> ContainerInfo {
        let record = shim::read_record(dir).ok();
        let state = match shim::read_exit(dir) {
            Ok(Some(exit)) => ContainerState::Exited(exit),
            Err(err) => ContainerState::Unknown {
                reason: crate::status::chain(&err),
            },
            Ok(None) => {
                let shim = shim::ProcessRef::read(&dir.join(shim::SHIM_PID_FILE));
                let shim_alive = shim.is_some_and(|s| s.is_alive());
                let container = shim::ProcessRef::read(&dir.join(shim::CONTAINER_PID_FILE));
                match (container, shim) {
                    (Some(c), _) if c.is_alive() => ContainerState::Running {
                        pid: c.pid,
                        shim_pid: shim.map(|s| s.pid),
                        shim_alive,
                    },
                    (None, Some(s)) if shim_alive => ContainerState::Creating { shim_pid: s.pid },
                    // The container ended and its shim is recording how:
                    // running until the exit file is there (the shim's
                    // exit then wakes whoever watches it).
                    (Some(c), Some(s)) if shim_alive => ContainerState::Running {
                        pid: c.pid,
                        shim_pid: Some(s.pid),
                        shim_alive,
                    },
                    // The shim may have written the exit file just now.
                    _ => match shim::read_exit(dir) {
                        Ok(Some(exit)) => ContainerState::Exited(exit),
                        _ => ContainerState::Unknown {
                            reason: if container.is_some() {
                                "the container's process is gone and its shim died without recording how it ended".into()
                            } else {
                                "the container never started and its shim is gone".into()
                            },
                        },
                    },
                }
            }
        };
        ContainerInfo {
            id: id.to_string(),
            record,
            state,
        }
    }

    pub(super) fn record(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let dir = self.inner.paths.shim_dir(id);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound {
                id: id.to_string(),
                dir,
            });
        }
        Ok(shim::read_record(&dir)?)
    }

    /// [`Self::container`], read on the blocking pool.
    pub(super) async fn container_async(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let id = id.to_string();
        self.blocking("reading the container's state", move |rt| rt.container(&id))
            .await?
    }

    /// [`Self::record`], read on the blocking pool.
    pub(super) async fn record_async(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let id = id.to_string();
        self.blocking("reading the container's record", move |rt| rt.record(&id))
            .await?
    }

    /// The handler that runs container `id`, from its record; without
    /// one, the handler that still knows the container. A removal whose
    /// runtime `delete` failed goes on to remove the record with the rest
    /// of the container's files: its retry must still find the runtime
    /// that holds the container's state, or that state is left for good.
    pub(super) async fn handler_of_container(&self, id: &str) -> Result<Handler, RuntimeError> {
        let missing = match self.record_async(id).await {
            Ok(record) => return self.handler_of(&record).cloned(),
            Err(err) => err,
        };
        for handler in self.inner.handlers.values() {
            if handler.knows(id).await {
                return Ok(handler.clone());
            }
        }
        Err(missing)
    }
}
