//! Signalling and stopping a container.

use std::time::{Duration, SystemTime};

use super::{ContainerState, ExitStatus, Runtime, RuntimeError, StopOutcome, shim};

impl Runtime {
    /// Sends `signal` (e.g. `SIGHUP`, `9`) to the container's init.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let handler = self.handler_of_container(id).await?;
        match handler.kill(id, signal).await {
            Ok(()) => Ok(()),
            Err(err) => match self.container_async(id).await?.state {
                ContainerState::Running { .. } | ContainerState::Creating { .. } => Err(err.into()),
                _ => Err(RuntimeError::NotRunning { id: id.to_string() }),
            },
        }
    }

    /// Waits up to `timeout` for the container to exit.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>, RuntimeError> {
        Ok(shim::wait_exit(&self.inner.paths.shim_dir(id), timeout).await?)
    }

    /// Graceful stop: the image's StopSignal (else SIGTERM), then SIGKILL
    /// once `grace` has passed. Returns when the exit file exists.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let record = self.record_async(id).await?;
        let handler = self.handler_of(&record)?;
        let dir = self.inner.paths.shim_dir(id);
        if let Some(exit) = shim::read_exit_async(&dir).await? {
            return Ok(StopOutcome {
                exit,
                signal_sent_at: None,
                killed: false,
            });
        }
        let sent_at = SystemTime::now();
        tracing::info!(container = id, signal = %record.stop_signal, ?grace, "stopping container");
        if let Err(err) = handler.kill(id, &record.stop_signal).await {
            // It may have exited just before the signal.
            if let Some(exit) = shim::wait_exit(&dir, Duration::from_secs(1)).await? {
                return Ok(StopOutcome {
                    exit,
                    signal_sent_at: Some(sent_at),
                    killed: false,
                });
            }
            return Err(err.into());
        }
        if let Some(exit) = shim::wait_exit(&dir, grace).await? {
            return Ok(StopOutcome {
                exit,
                signal_sent_at: Some(sent_at),
                killed: false,
            });
        }
        tracing::info!(container = id, ?grace, "grace period over, sending SIGKILL");
        let _ = handler.kill(id, "SIGKILL").await;
        let timeout = Duration::from_secs(30);
        match shim::wait_exit(&dir, timeout).await? {
            Some(exit) => Ok(StopOutcome {
                exit,
                signal_sent_at: Some(sent_at),
                killed: true,
            }),
            None => Err(RuntimeError::StopTimeout {
                id: id.to_string(),
                timeout,
            }),
        }
    }
}
