//! One container instance through the runtime: what the runtime reports
//! about it, making it (image hold, bundle, shim), stopping it with the
//! pod's grace period, and removing it with its image hold.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use manifests::ObjectKey;

use super::hooks::{self, PreStop};
use super::plan::Observed;
use super::state::Instance;
use crate::image::meta::ImageRecord;
use crate::reconcile::Context;
use crate::runtime::spec::PodInfo;
use crate::runtime::{
    ContainerState as RuntimeState, CreateContainer, ExitStatus, PodSandbox, PreparedVolume,
    Runtime, RuntimeError, StopOutcome, logs,
};
use crate::status::{Event, EventType, time};

/// How long a container whose runtime state vanished is reported to have
/// run for; its real exit status is lost (the shim died, or the host
/// rebooted).
pub const LOST_EXIT_CODE: i32 = 137;

/// What the runtime says about `instance`, and the reason to report when
/// the runtime lost it.
pub fn observe(runtime: &Runtime, instance: Option<&mut Instance>) -> (Observed, Option<String>) {
    let Some(instance) = instance else {
        return (Observed::Absent, None);
    };
    let info = match runtime.container(&instance.id) {
        Ok(info) => info,
        Err(_) if !instance.created => return (Observed::Absent, None),
        Err(_) => {
            return match &instance.exit {
                Some(exit) => (Observed::Exited(exit.clone()), None),
                None => lost(
                    instance,
                    "its runtime state is gone (was the host rebooted?)",
                ),
            };
        }
    };
    match info.state {
        RuntimeState::Running { pid, .. } => {
            // Made by a reconcile that was cut short after the runtime
            // started it: adopt it.
            instance.created = true;
            instance.pid = Some(pid);
            (Observed::Running, None)
        }
        RuntimeState::Creating { .. } => (Observed::Creating, None),
        RuntimeState::Exited(exit) => {
            instance.created = true;
            (Observed::Exited(exit), None)
        }
        RuntimeState::Unknown { reason } => lost(instance, &reason),
    }
}

fn lost(instance: &Instance, reason: &str) -> (Observed, Option<String>) {
    if let Some(exit) = &instance.exit {
        return (Observed::Exited(exit.clone()), None);
    }
    let now = SystemTime::now();
    let now_ns = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let exit = ExitStatus {
        pid: instance.pid,
        exit_code: LOST_EXIT_CODE,
        signal: None,
        oom_killed: false,
        started_at: instance.started_at.clone(),
        started_at_ns: None,
        finished_at: time::rfc3339(now),
        finished_at_ns: now_ns,
        start_error: Some(format!("container {}: {reason}", instance.id)),
    };
    (
        Observed::Exited(exit),
        Some("ContainerStatusUnknown".to_string()),
    )
}

/// Everything the pod's containers share.
pub struct PodEnvironment<'a> {
    pub key: &'a ObjectKey,
    pub pod: &'a PodInfo,
    pub sandbox: &'a PodSandbox,
    pub volumes: &'a BTreeMap<String, PreparedVolume>,
    pub runtime_class: Option<&'a str>,
    pub source: String,
    pub generation: u64,
}

/// An image hold being taken on a blocking thread ([`hold_image`]).
pub struct PendingHold {
    id: String,
    task: tokio::task::JoinHandle<Result<Vec<PathBuf>, String>>,
}

/// Starts recording that instance `id` runs `image` (so neither rmi nor GC
/// takes its layers away) and unpacking what is missing, on a blocking
/// thread: the caller records its intent meanwhile. A hold whose container
/// is never recorded is released by recovery after a crash.
pub fn hold_image(ctx: &Context, image: &str, id: &str) -> PendingHold {
    let images = ctx.services.images.service().clone();
    let reference = crate::image::remote::ImageReference::parse(image)
        .map_err(|err| format!("image {image:?}: {err}"));
    let task_id = id.to_string();
    let task = tokio::task::spawn_blocking(move || {
        images
            .hold_for_container(&task_id, &reference?)
            .map_err(|err| crate::status::chain(&err))
    });
    PendingHold {
        id: id.to_string(),
        task,
    }
}

impl PendingHold {
    /// The image's layer directories, top first. On failure nothing stays
    /// held.
    pub async fn layers(self, ctx: &Context) -> Result<Vec<PathBuf>, String> {
        let held = self
            .task
            .await
            .map_err(|err| format!("the image task stopped: {err}"))
            .and_then(|held| held);
        match held {
            Ok(lowerdirs) => {
                tracing::debug!(container = %self.id, "image layers held");
                Ok(lowerdirs)
            }
            Err(message) => {
                release_image(ctx, &self.id).await;
                Err(message)
            }
        }
    }

    /// Gives the hold up: the container will not be made.
    pub async fn release(self, ctx: &Context) {
        let _ = self.task.await;
        release_image(ctx, &self.id).await;
    }
}

/// Makes and starts instance `instance` (id and log number already
/// recorded in the pod's state) from image `record`, whose layers
/// ([`hold_image`]) are `lowerdirs`. On failure the image hold is released.
pub async fn start(
    ctx: &Context,
    runtime: &Runtime,
    env: &PodEnvironment<'_>,
    spec: crate::runtime::spec::ContainerSpec,
    record: &ImageRecord,
    lowerdirs: &[PathBuf],
    instance: &mut Instance,
) -> Result<(), String> {
    let result = create(ctx, runtime, env, spec, record, lowerdirs, instance).await;
    if result.is_err() {
        release_image(ctx, &instance.id).await;
    }
    result
}

async fn create(
    ctx: &Context,
    runtime: &Runtime,
    env: &PodEnvironment<'_>,
    spec: crate::runtime::spec::ContainerSpec,
    record: &ImageRecord,
    lowerdirs: &[std::path::PathBuf],
    instance: &mut Instance,
) -> Result<(), String> {
    let image_config = ctx
        .services
        .images
        .config(record)
        .await
        .map_err(|err| crate::status::chain(&err))?;
    let log_dir = runtime
        .paths()
        .container_logs(&env.pod.namespace, &env.pod.name, &spec.name);
    let labels = BTreeMap::from([
        ("berth.source".to_string(), env.source.clone()),
        ("berth.object".to_string(), env.key.to_string()),
        ("berth.generation".to_string(), env.generation.to_string()),
        ("berth.pod-uid".to_string(), env.pod.uid.clone()),
        ("berth.container".to_string(), spec.name.clone()),
        ("berth.instance".to_string(), instance.instance.to_string()),
    ]);
    let created = runtime
        .create_container(CreateContainer {
            id: &instance.id,
            pod: env.pod,
            sandbox: env.sandbox,
            container: &spec,
            image: image_config.config().as_ref(),
            lowerdirs,
            volumes: env.volumes,
            runtime_class: env.runtime_class,
            log_path: logs::instance_log(&log_dir, instance.instance),
            labels,
        })
        .await
        .map_err(|err: RuntimeError| crate::status::chain(&err))?;
    // The current and the previous instance's logs are kept.
    if let Err(err) = logs::prune_instances(&log_dir, 2) {
        tracing::warn!(dir = %log_dir.display(), error = %err, "could not prune old container logs");
    }
    instance.created = true;
    instance.pid = Some(created.pid);
    instance.handler = Some(created.handler);
    instance.warnings = created.warnings;
    instance.started_at = Some(time::now());
    ctx.events.record(Event::new(
        EventType::Normal,
        env.key.to_string(),
        "Started",
        format!(
            "container {} started (id {}, pid {})",
            spec.name, instance.id, created.pid
        ),
    ));
    Ok(())
}

/// Stops container `id` with the grace period and records it: its probes
/// end, its preStop hook runs (within the grace period), then the stop
/// signal.
#[allow(clippy::too_many_arguments)]
pub async fn stop(
    ctx: &Context,
    runtime: &Runtime,
    key: &ObjectKey,
    name: &str,
    id: &str,
    pre_stop: Option<PreStop<'_>>,
    grace: Duration,
    why: &str,
) -> Result<Option<StopOutcome>, String> {
    ctx.services.probes.forget(id);
    match runtime.container(id) {
        Err(_) => return Ok(None),
        Ok(info) if matches!(info.state, RuntimeState::Exited(_)) => return Ok(None),
        Ok(_) => {}
    }
    ctx.events.record(Event::new(
        EventType::Normal,
        key.to_string(),
        "Killing",
        format!("stopping container {name} ({why}; grace period {grace:?})"),
    ));
    let grace = match pre_stop {
        Some(hook) => hooks::pre_stop(ctx, runtime, key, name, id, hook, grace).await,
        None => grace,
    };
    let outcome = runtime
        .stop(id, grace)
        .await
        .map_err(|err| crate::status::chain(&err))?;
    if outcome.killed {
        ctx.events.record(Event::new(
            EventType::Warning,
            key.to_string(),
            "Killed",
            format!("container {name} did not stop within {grace:?}: sent SIGKILL"),
        ));
    }
    Ok(Some(outcome))
}

/// Removes container `id` (after it stopped) and its image hold.
pub async fn remove(ctx: &Context, runtime: &Runtime, id: &str) -> Result<(), String> {
    ctx.services.exits.forget(id);
    ctx.services.probes.forget(id);
    runtime
        .remove_container(id)
        .await
        .map_err(|err| err.to_string())?;
    release_image(ctx, id).await;
    Ok(())
}

async fn release_image(ctx: &Context, id: &str) {
    let images = ctx.services.images.service().clone();
    let id = id.to_string();
    let result = tokio::task::spawn_blocking(move || images.release_container(&id)).await;
    if let Ok(Err(err)) = result {
        tracing::warn!(error = %crate::status::chain(&err), "could not release a container's image hold");
    }
}
