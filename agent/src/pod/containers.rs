//! One container instance through the host: what the runtime reports
//! about it, making it (image hold, bundle, shim), stopping it with its
//! grace period (preStop hook first), and removing it with its image hold.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use manifests::ObjectKey;

use super::error::{PodError, Reason};
use super::executor::Executor;
use super::hooks;
use super::host::Host;
use super::plan::Observed;
use super::state::Instance;
use crate::image::meta::ImageRecord;
use crate::runtime::{
    ContainerSpec, ContainerState as RuntimeState, CreateContainer, ExitStatus, PodInfo,
    PodSandbox, PreparedVolume, logs,
};
use crate::status::{EventType, time};

/// The exit code reported for a container whose runtime state vanished:
/// its real exit status is lost (the shim died, or the host rebooted).
pub const LOST_EXIT_CODE: i32 = 137;

/// What the runtime says about `instance` (adopting one a cut-short sync
/// made), and the reason to report when the runtime lost it.
pub async fn observe(
    host: &Host,
    instance: &mut Instance,
    now_ms: u64,
) -> (Observed, Option<String>) {
    let state = match host.runtime.inspect(&instance.id).await {
        Ok(state) => state,
        Err(_) if !instance.created => return (Observed::Absent, None),
        Err(_) => {
            return lost(
                instance,
                "its runtime state is gone (was the host rebooted?)",
                now_ms,
            );
        }
    };
    match state {
        RuntimeState::Running { pid, .. } => {
            // Made by a sync that was cut short after the runtime started
            // it: adopt it.
            instance.created = true;
            instance.pid = Some(pid);
            (Observed::Running, None)
        }
        RuntimeState::Creating { .. } => (Observed::Creating, None),
        RuntimeState::Exited(exit) => {
            instance.created = true;
            (Observed::Exited(exit), None)
        }
        // The runtime has state of it, so it was (partly) made: a create
        // cut short by a crash left a rootfs and a bundle to remove.
        RuntimeState::Unknown { reason } => {
            instance.created = true;
            lost(instance, &reason, now_ms)
        }
    }
}

fn lost(instance: &Instance, reason: &str, now_ms: u64) -> (Observed, Option<String>) {
    if let Some(exit) = &instance.exit {
        return (Observed::Exited(exit.clone()), None);
    }
    let now = std::time::UNIX_EPOCH + Duration::from_millis(now_ms);
    let exit = ExitStatus {
        pid: instance.pid,
        exit_code: LOST_EXIT_CODE,
        signal: None,
        oom_killed: false,
        started_at: instance.started_at.clone(),
        started_at_ns: None,
        finished_at: time::rfc3339(now),
        finished_at_ns: now_ms.saturating_mul(1_000_000),
        start_error: Some(format!("container {}: {reason}", instance.id)),
    };
    (
        Observed::Exited(exit),
        Some("ContainerStatusUnknown".to_string()),
    )
}

/// Everything the pod's containers share, from its sandbox.
pub struct PodEnvironment<'a> {
    pub key: &'a ObjectKey,
    pub pod: &'a PodInfo,
    pub sandbox: &'a PodSandbox,
    pub volumes: &'a BTreeMap<String, PreparedVolume>,
    pub runtime_class: Option<&'a str>,
    pub source: String,
    pub generation: u64,
}

/// Makes and starts `instance` (its id and log number already recorded in
/// the pod's record) from image `record`, whose layers the caller holds
/// (`lowerdirs`). Fills in what the runtime made; the caller releases the
/// hold on failure.
pub async fn create(
    ex: &Executor<'_>,
    env: &PodEnvironment<'_>,
    spec: &ContainerSpec,
    record: &ImageRecord,
    lowerdirs: &[PathBuf],
    instance: &mut Instance,
) -> Result<(), PodError> {
    let host = ex.host;
    let failed = |context: &str, source| {
        PodError::caused(
            Reason::CreateContainerError,
            format!("container {}: {context}", spec.name),
            source,
        )
    };
    let image_config = host
        .images
        .config(record)
        .await
        .map_err(|err| failed("reading its image's configuration", err))?;
    let log_dir = host
        .runtime
        .log_dir(&env.pod.namespace, &env.pod.name, &spec.name);
    let labels = BTreeMap::from([
        ("berth.source".to_string(), env.source.clone()),
        ("berth.object".to_string(), env.key.to_string()),
        ("berth.generation".to_string(), env.generation.to_string()),
        ("berth.pod-uid".to_string(), env.pod.uid.clone()),
        ("berth.container".to_string(), spec.name.clone()),
        ("berth.instance".to_string(), instance.instance.to_string()),
    ]);
    let created = host
        .runtime
        .create(CreateContainer {
            id: &instance.id,
            pod: env.pod,
            sandbox: env.sandbox,
            container: spec,
            image: image_config.config().as_ref(),
            lowerdirs,
            volumes: env.volumes,
            runtime_class: env.runtime_class,
            log_path: logs::instance_log(&log_dir, instance.instance),
            labels,
        })
        .await
        .map_err(|err| failed("creating it", err))?;
    // The current and the previous instance's logs are kept.
    if let Err(err) = host.runtime.prune_logs(log_dir.clone(), 2).await {
        tracing::warn!(dir = %log_dir.display(), error = %crate::status::chain(&*err), "could not prune old container logs");
    }
    instance.created = true;
    instance.pid = Some(created.pid);
    instance.handler = Some(created.handler);
    instance.warnings = created.warnings;
    instance.started_at = Some(time::now());
    ex.event(
        EventType::Normal,
        "Started",
        format!(
            "container {} started (id {}, pid {})",
            spec.name, instance.id, created.pid
        ),
    );
    Ok(())
}

/// One container to stop.
pub struct Stopping<'a> {
    pub name: &'a str,
    pub instance: &'a Instance,
    /// The pod's address, for an httpGet preStop hook without a host.
    pub pod_ip: IpAddr,
    pub grace: Duration,
    /// For the Killing event: `its spec changed`.
    pub why: &'a str,
}

/// Stops a container with its grace period: its probes end, its preStop
/// hook runs (once, within the grace period), then the stop signal and
/// SIGKILL when the grace period is over. A container that is gone or has
/// exited is left alone.
pub async fn stop(ex: &Executor<'_>, stopping: Stopping<'_>) -> Result<(), PodError> {
    let Executor {
        host,
        limits,
        stops,
        ..
    } = *ex;
    let Stopping {
        name,
        instance,
        pod_ip,
        grace,
        why,
    } = stopping;
    let id = instance.id.as_str();
    host.probes.forget(id);
    match host.runtime.inspect(id).await {
        Err(_) | Ok(RuntimeState::Exited(_)) => return Ok(()),
        Ok(_) => {}
    }
    let grace = stops.begin(id, ex.now_ms(), grace);
    let _permit = limits.stop().await;
    ex.event(
        EventType::Normal,
        "Killing",
        format!("stopping container {name} ({why}; grace period {grace:?})"),
    );
    let left = match instance.pre_stop.as_ref() {
        Some(action) if stops.take_pre_stop(id) => {
            hooks::pre_stop(ex, name, id, action, pod_ip, grace).await
        }
        _ => grace,
    };
    let outcome = host.runtime.stop(id, left).await.map_err(|err| {
        PodError::caused(
            Reason::KillContainerError,
            format!("stopping container {name}"),
            err,
        )
    })?;
    if outcome.killed {
        ex.event(
            EventType::Warning,
            "Killed",
            format!("container {name} did not stop within {left:?}: sent SIGKILL"),
        );
    }
    Ok(())
}

/// Removes container `id` (after it stopped) and its image hold.
pub async fn remove(ex: &Executor<'_>, id: &str) -> Result<(), PodError> {
    let host = ex.host;
    host.exits.forget(id);
    host.probes.forget(id);
    host.runtime.remove(id).await.map_err(|err| {
        PodError::caused(
            Reason::TeardownError,
            format!("removing container {id}"),
            err,
        )
    })?;
    ex.stops.forget(id);
    host.images.release(id).await;
    Ok(())
}
