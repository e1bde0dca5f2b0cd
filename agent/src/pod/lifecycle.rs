//! One reconcile of a desired pod, in kubelet's order: images first (before
//! anything stops), a new incarnation if a pod-level field changed (the old
//! one torn down only once the new images are present), the sandbox, init
//! containers one at a time, then app containers — each kept, started,
//! restarted after its back-off, or replaced (new image pulled, old stopped
//! with its grace period, new started). The pod's state file records every
//! intent before it is acted on. A started container gets its postStart
//! hook and its probes; a container whose liveness or startup probe failed
//! is stopped here (preStop hook, grace period) and restarts like a crash.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use manifests::types as api;
use manifests::{Object, ObjectKey};

use super::containers::{self, PodEnvironment};
use super::handlers::{self, Action};
use super::hash;
use super::hooks::{self, PreStop};
use super::inputs::{self, InputError};
use super::plan::{self, AppState, Observed, Step};
use super::probes::ProbeContext;
use super::report::{self, Report};
use super::sandbox::{self, NotReady, Ready};
use super::state::{ContainerSlot, Incarnation, Instance, PodState};
use super::teardown;
use crate::desired::{DesiredObject, DesiredState};
use crate::image::auth::Credentials;
use crate::image::manager::{EnsureError, EnsuredImage};
use crate::image::remote::ImageReference;
use crate::reconcile::{Applied, Context, ReconcileError};
use crate::runtime::{Runtime, from_pod};
use crate::status::{ContainerState, Event, EventType, time};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(plan::millis)
        .unwrap_or(0)
}

fn failed(message: impl Into<String>) -> ReconcileError {
    ReconcileError::Failed(message.into())
}

/// The wanted spec hash of every container, init containers first.
struct Wanted<'a> {
    containers: Vec<(&'a api::Container, bool, String)>,
    pod_hash: String,
}

fn wanted<'a>(
    namespace: &str,
    name: &str,
    spec: &'a api::PodSpec,
    desired: &DesiredState,
) -> Result<Wanted<'a>, InputError> {
    let mut containers = Vec::new();
    for (container, init) in spec
        .init_containers
        .iter()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)))
    {
        let hash = hash::container_level(namespace, container, desired)?;
        containers.push((container, init, hash));
    }
    Ok(Wanted {
        containers,
        pod_hash: hash::pod_level(namespace, name, spec, desired)?,
    })
}

fn new_incarnation(spec: &api::PodSpec, pod_hash: &str) -> Incarnation {
    let mut containers = BTreeMap::new();
    for c in &spec.init_containers {
        containers.insert(
            c.name.clone(),
            ContainerSlot {
                init: true,
                ..Default::default()
            },
        );
    }
    for c in &spec.containers {
        containers.insert(c.name.clone(), ContainerSlot::default());
    }
    Incarnation {
        uid: format!("{:016x}", fastrand::u64(..)),
        pod_hash: pod_hash.to_string(),
        host_network: spec.host_network,
        grace_seconds: grace_seconds(spec),
        network_request: None,
        network: None,
        sandbox_ready: false,
        volume_hashes: BTreeMap::new(),
        init_done: spec.init_containers.is_empty(),
        created_at: time::now(),
        containers,
    }
}

fn grace_seconds(spec: &api::PodSpec) -> u64 {
    u64::try_from(spec.termination_grace_period_seconds_or_default().max(0)).unwrap_or(30)
}

/// The per-reconcile context of one pod.
struct PodRun<'a> {
    ctx: &'a Context,
    runtime: &'a Runtime,
    key: &'a ObjectKey,
    desired: &'a DesiredState,
    pull_secrets: Option<Credentials>,
    /// Images ensured in this reconcile (an `Always` image is pulled once
    /// per reconcile, not once per step).
    ensured: BTreeMap<String, EnsuredImage>,
    report: Report,
    /// The state changed (a new network and sandbox) and is not saved yet;
    /// the next save records it, and the reconcile saves it at the end in
    /// any case.
    unsaved: AtomicBool,
}

impl PodRun<'_> {
    fn save(&self, state: &PodState) -> Result<(), ReconcileError> {
        state
            .save(&self.ctx.services.paths)
            .map_err(|err| failed(err.to_string()))?;
        self.unsaved.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Starts the probes of `container` running as `id` (once).
    fn watch_probes(&self, state: &PodState, container: &api::Container, id: &str) {
        let ctx = ProbeContext {
            services: std::sync::Arc::clone(&self.ctx.services),
            events: self.ctx.events.clone(),
            observed: self.ctx.observed.clone(),
            key: self.key.clone(),
        };
        let host = handlers::pod_host(&state.incarnation);
        self.ctx.services.probes.ensure(&ctx, container, id, host);
    }

    /// Stops `instance` of container `name` with its preStop hook.
    async fn stop_instance(
        &self,
        state: &PodState,
        name: &str,
        instance: &Instance,
        grace: Duration,
        why: &str,
    ) -> Result<(), ReconcileError> {
        let hook = PreStop::of(instance, handlers::pod_host(&state.incarnation));
        containers::stop(
            self.ctx,
            self.runtime,
            self.key,
            name,
            &instance.id,
            hook,
            grace,
            why,
        )
        .await
        .map(drop)
        .map_err(failed)
    }

    fn event(&self, event_type: EventType, reason: &str, message: String) {
        self.ctx.events.record(Event::new(
            event_type,
            self.key.to_string(),
            reason,
            message,
        ));
    }

    /// Makes the container's image present as its pull policy says.
    async fn ensure_image(
        &mut self,
        container: &api::Container,
    ) -> Result<EnsuredImage, (&'static str, String)> {
        if let Some(ensured) = self.ensured.get(&container.image) {
            return Ok(ensured.clone());
        }
        let reference = ImageReference::parse(&container.image).map_err(|err| {
            (
                "InvalidImageName",
                format!("image {:?}: {err}", container.image),
            )
        })?;
        let ensured = self
            .ctx
            .services
            .images
            .ensure(
                &reference,
                container.image_pull_policy_or_default(),
                self.pull_secrets.clone(),
            )
            .await
            .map_err(|err| match err {
                EnsureError::NeverPull(message) => ("ErrImageNeverPull", message),
                // Its message already carries every host's failure.
                other => ("ImagePullBackOff", one_line(&other.to_string())),
            })?;
        if ensured.pulled {
            self.event(
                EventType::Normal,
                "Pulled",
                format!(
                    "container {}: pulled image {} ({})",
                    container.name, container.image, ensured.record.manifest_digest
                ),
            );
        }
        self.ensured
            .insert(container.image.clone(), ensured.clone());
        Ok(ensured)
    }

    /// Every image of the pod, before anything is made or stopped.
    async fn ensure_images(
        &mut self,
        state: &PodState,
        containers: &[(&api::Container, bool, String)],
    ) -> Result<(), Applied> {
        for (container, _, _) in containers {
            if let Err((reason, message)) = self.ensure_image(container).await {
                let retry = self.ctx.services.pods.backoff_initial;
                return Err(report::pending_change(
                    state,
                    &container.name,
                    reason,
                    &message,
                    retry,
                ));
            }
        }
        Ok(())
    }
}

/// Joins a multi-line error (one line per registry host tried) into the
/// one line a status message is.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies a desired pod (see the module docs).
pub async fn apply(ctx: &Context, object: &DesiredObject) -> Result<Applied, ReconcileError> {
    let Object::Pod(pod) = object.object.as_ref() else {
        return Err(ReconcileError::wrong_kind(object));
    };
    let runtime =
        ctx.services.runtime.as_ref().map_err(|reason| {
            failed(format!("the container runtime is not available: {reason}"))
        })?;
    let key = &object.key;
    let (namespace, name) = (key.namespace.as_str(), key.name.as_str());
    let desired = ctx.desired();
    let paths = &ctx.services.paths;
    let spec = &pod.spec;
    let mut state =
        PodState::load(paths, namespace, name).map_err(|err| failed(err.to_string()))?;

    let wanted = match wanted(namespace, name, spec, &desired) {
        Ok(wanted) => wanted,
        // Running containers keep running; a fixed manifest or a new
        // ConfigMap/Secret triggers the pod again.
        Err(err) => return Ok(config_error(state.as_ref(), err.to_string())),
    };
    let pull_secrets = match inputs::pull_credentials(namespace, spec, &desired) {
        Ok(credentials) => credentials,
        Err(err) => return Ok(config_error(state.as_ref(), err.to_string())),
    };
    let mut run = PodRun {
        ctx,
        runtime,
        key,
        desired: &desired,
        pull_secrets,
        ensured: BTreeMap::new(),
        report: Report::default(),
        unsaved: AtomicBool::new(false),
    };

    // A new pod is recorded once something exists for it (see
    // `sandbox::ensure`): nothing is made before that.
    let mut state = match state.take() {
        None => PodState::new(namespace, name, new_incarnation(spec, &wanted.pod_hash)),
        Some(state) => state,
    };
    // Settings that apply without recreating anything.
    state.incarnation.grace_seconds = grace_seconds(spec);

    let lost = !sandbox::alive(paths, &state);
    if state.incarnation.pod_hash != wanted.pod_hash || lost {
        // Download, then kill: every image of the new pod first.
        if let Err(pending) = run.ensure_images(&state, &wanted.containers).await {
            return Ok(pending);
        }
        let why = if lost {
            "its sandbox is gone"
        } else {
            "a pod-level field changed"
        };
        let fresh = new_incarnation(spec, &wanted.pod_hash);
        let old = std::mem::replace(&mut state.incarnation, fresh);
        run.event(
            EventType::Normal,
            "Recreating",
            format!(
                "{why}: replacing pod {} with {}",
                old.uid, state.incarnation.uid
            ),
        );
        state.retired.push(old);
        run.save(&state)?;
    }
    retire(&run, &mut state).await?;
    // Images first: no sandbox or network for a pod that cannot run yet.
    if !state.incarnation.sandbox_ready
        && let Err(pending) = run.ensure_images(&state, &wanted.containers).await
    {
        return Ok(pending);
    }

    tracing::debug!("images present");
    let mut unsaved = false;
    let ensured = sandbox::ensure(ctx, runtime, &mut state, spec, &desired, &mut unsaved).await;
    run.unsaved.store(unsaved, Ordering::Relaxed);
    let ready = match ensured {
        Ok(ready) => ready,
        Err(NotReady { reason, message }) => {
            if run.unsaved.load(Ordering::Relaxed) {
                run.save(&state)?;
            }
            run.event(EventType::Warning, reason, message.clone());
            return Err(failed(message));
        }
    };
    tracing::debug!(uid = %state.incarnation.uid, "sandbox ready");
    let outcome = run_containers(&mut run, &mut state, &ready, object, &wanted, spec).await;
    if run.unsaved.load(Ordering::Relaxed) {
        run.save(&state)?;
    }
    outcome
}

/// Everything after the sandbox: containers that left the spec, init
/// containers in order, then app containers; the pod's phase.
async fn run_containers(
    run: &mut PodRun<'_>,
    state: &mut PodState,
    ready: &Ready,
    object: &DesiredObject,
    wanted: &Wanted<'_>,
    spec: &api::PodSpec,
) -> Result<Applied, ReconcileError> {
    let key = run.key;
    let env = PodEnvironment {
        key,
        pod: &ready.pod,
        sandbox: &ready.sandbox,
        volumes: &ready.volumes,
        runtime_class: spec.runtime_class_name.as_deref(),
        source: object.source.to_string(),
        generation: object.generation,
    };

    // Containers that left the spec (init containers cannot: that is a
    // pod-level change).
    let gone: Vec<String> = state
        .incarnation
        .containers
        .keys()
        .filter(|n| !wanted.containers.iter().any(|(c, _, _)| &c.name == *n))
        .cloned()
        .collect();
    for name in gone {
        remove_slot(run, state, &name).await?;
    }

    let policy = spec.restart_policy_or_default();
    let mut init_failed = false;
    let mut apps = Vec::new();
    for (container, init, hash) in &wanted.containers {
        if *init && state.incarnation.init_done {
            run.report.keep_init(state, container);
            continue;
        }
        if !*init && !state.incarnation.init_done {
            run.report.waiting(state, container, "PodInitializing");
            apps.push(AppState::NotStarted);
            continue;
        }
        let outcome =
            reconcile_container(run, state, ready, &env, container, *init, hash, policy).await?;
        if *init {
            match outcome {
                AppState::Finished { success: true } => continue,
                AppState::Finished { success: false } => init_failed = true,
                _ => {}
            }
            // Later init containers and the app containers wait.
            for (later, later_init, _) in wanted
                .containers
                .iter()
                .skip_while(|(c, _, _)| c.name != container.name)
                .skip(1)
            {
                let reason = if *later_init {
                    "Waiting"
                } else {
                    "PodInitializing"
                };
                run.report.waiting(state, later, reason);
                if !*later_init {
                    apps.push(AppState::NotStarted);
                }
            }
            break;
        }
        apps.push(outcome);
    }
    if !state.incarnation.init_done
        && !init_failed
        && wanted
            .containers
            .iter()
            .filter(|(_, init, _)| *init)
            .all(|(c, _, _)| {
                state.incarnation.containers.get(&c.name).is_some_and(|s| {
                    s.current
                        .as_ref()
                        .and_then(|i| i.exit.as_ref())
                        .is_some_and(|e| e.exit_code == 0)
                })
            })
    {
        state.incarnation.init_done = true;
        run.save(state)?;
        // The app containers start in the next pass, right away.
        run.report.requeue_now();
    }
    let phase = plan::phase(init_failed, state.incarnation.init_done, &apps);
    Ok(std::mem::take(&mut run.report).finish(state, spec, phase))
}

/// Tears down retired incarnations (a pod-level change, possibly cut short
/// by a crash) before the new one is set up: they may hold its host ports.
async fn retire(run: &PodRun<'_>, state: &mut PodState) -> Result<(), ReconcileError> {
    while let Some(old) = state.retired.first().cloned() {
        let errors =
            teardown::incarnation(run.ctx, run.runtime, run.key, &old, "the pod is recreated")
                .await;
        if !errors.is_empty() {
            return Err(failed(format!(
                "removing the previous pod {}: {}",
                old.uid,
                errors.join("; ")
            )));
        }
        state.retired.remove(0);
        run.save(state)?;
    }
    Ok(())
}

/// Stops and removes a container that is no longer in the spec.
async fn remove_slot(
    run: &PodRun<'_>,
    state: &mut PodState,
    name: &str,
) -> Result<(), ReconcileError> {
    if let Some(instance) = state
        .incarnation
        .containers
        .get(name)
        .and_then(|s| s.current.clone())
    {
        let grace = Duration::from_secs(state.incarnation.grace_seconds);
        run.stop_instance(state, name, &instance, grace, "it was removed from the pod")
            .await?;
        containers::remove(run.ctx, run.runtime, &instance.id)
            .await
            .map_err(failed)?;
    }
    state.incarnation.containers.remove(name);
    run.save(state)
}

/// Brings one container to what is wanted; returns how the phase sees it.
#[allow(clippy::too_many_arguments)]
async fn reconcile_container(
    run: &mut PodRun<'_>,
    state: &mut PodState,
    ready: &Ready,
    env: &PodEnvironment<'_>,
    container: &api::Container,
    init: bool,
    hash: &str,
    policy: api::RestartPolicy,
) -> Result<AppState, ReconcileError> {
    let config = run.ctx.services.pods;
    let name = container.name.clone();
    kill_unhealthy(run, state, &name).await?;
    let slot = state
        .incarnation
        .containers
        .entry(name.clone())
        .or_insert_with(|| ContainerSlot {
            init,
            ..Default::default()
        });
    let (observed, lost_reason) = containers::observe(run.runtime, slot.current.as_mut());
    if let Observed::Exited(exit) = &observed
        && let Some(delay) = plan::record_exit(slot, exit, lost_reason.as_deref(), &config)
    {
        let restarting = plan::restarts(policy, init, exit.exit_code);
        run.event(
            if exit.exit_code == 0 {
                EventType::Normal
            } else {
                EventType::Warning
            },
            "Exited",
            format!(
                "container {name} exited with {} ({}){}",
                exit.exit_code,
                lost_reason.as_deref().unwrap_or(exit.reason()),
                if restarting {
                    format!("; back-off {}", crate::config::duration::format(delay))
                } else {
                    String::new()
                }
            ),
        );
        run.save(state)?;
    }
    let slot = state
        .incarnation
        .containers
        .get(&name)
        .expect("the slot exists")
        .clone();
    let step = plan::decide(&slot, hash, &observed, policy, now_ms());
    let mut probed_ready = false;
    match (&observed, &slot.current) {
        (Observed::Running, Some(instance)) => {
            run.ctx.services.exits.watch(
                &instance.id,
                &run.ctx.services.paths.shim_dir(&instance.id),
                run.key,
                &run.ctx.observed,
            );
            if step == Step::Keep {
                run.watch_probes(state, container, &instance.id);
                probed_ready = run.ctx.services.probes.ready(&instance.id);
            }
        }
        (Observed::Exited(_), Some(instance)) => run.ctx.services.probes.forget(&instance.id),
        _ => {}
    }
    match step {
        Step::Keep | Step::Wait => {
            run.report
                .running(&slot, container, &observed, probed_ready);
            Ok(AppState::Running)
        }
        Step::Done => {
            let success = matches!(&observed, Observed::Exited(e) if e.exit_code == 0);
            run.report.finished(&slot, container);
            Ok(AppState::Finished { success })
        }
        Step::Backoff { at_ms } => {
            run.report.backoff(&slot, container, at_ms, now_ms());
            Ok(if slot.current.is_some() || slot.restart_count > 0 {
                AppState::Restarting
            } else {
                AppState::NotStarted
            })
        }
        Step::Start | Step::Restart | Step::Replace => {
            // Download, then kill.
            let ensured = match run.ensure_image(container).await {
                Ok(ensured) => ensured,
                Err((reason, message)) => {
                    return fail_start(run, state, container, reason, message);
                }
            };
            let restart = slot.current.as_ref().is_some_and(|i| i.created);
            if let Some(old) = slot.current.as_ref().filter(|i| i.created) {
                if step == Step::Replace {
                    let grace = Duration::from_secs(state.incarnation.grace_seconds);
                    run.stop_instance(state, &name, old, grace, "its spec changed")
                        .await?;
                }
                containers::remove(run.ctx, run.runtime, &old.id)
                    .await
                    .map_err(failed)?;
                if let Some(slot) = state.incarnation.containers.get_mut(&name) {
                    if step == Step::Replace && slot.last_state.is_none() {
                        slot.last_state = Some(ContainerState::Terminated {
                            exit_code: 0,
                            signal: None,
                            reason: "Replaced".into(),
                            message: "its spec changed".into(),
                            started_at: old.started_at.clone(),
                            finished_at: time::now(),
                        });
                    }
                    slot.current = None;
                }
                run.save(state)?;
            }
            launch(run, state, ready, env, container, hash, &ensured, restart).await
        }
    }
}

/// Records why an instance could not be made, to retry after a back-off.
fn fail_start(
    run: &mut PodRun<'_>,
    state: &mut PodState,
    container: &api::Container,
    reason: &'static str,
    message: String,
) -> Result<AppState, ReconcileError> {
    let config = run.ctx.services.pods;
    let slot = state
        .incarnation
        .containers
        .get_mut(&container.name)
        .expect("the slot exists");
    plan::record_failure(slot, reason, message.clone(), &config, now_ms());
    let slot = slot.clone();
    run.save(state)?;
    run.event(
        EventType::Warning,
        reason,
        format!("container {}: {message}", container.name),
    );
    run.report.failed_start(&slot, container);
    Ok(if slot.restart_count > 0 || slot.last_state.is_some() {
        AppState::Restarting
    } else {
        AppState::NotStarted
    })
}

/// Makes a new instance of `container`: id and log number recorded first,
/// then the runtime creates and starts it.
#[allow(clippy::too_many_arguments)]
async fn launch(
    run: &mut PodRun<'_>,
    state: &mut PodState,
    ready: &Ready,
    env: &PodEnvironment<'_>,
    container: &api::Container,
    hash: &str,
    ensured: &EnsuredImage,
    restart: bool,
) -> Result<AppState, ReconcileError> {
    let resolved = inputs::resolve_env(&state.namespace, container, run.desired, &ready.fields)
        .map_err(|err| err.to_string())
        .and_then(|env| {
            from_pod::container_spec(container, env)
                .map(|mut spec| {
                    spec.security_context = spec
                        .security_context
                        .with_pod_defaults(&ready.pod.security_context);
                    spec
                })
                .map_err(|err| err.to_string())
        });
    let spec = match resolved {
        Ok(spec) => spec,
        Err(message) => {
            return fail_start(run, state, container, "CreateContainerConfigError", message);
        }
    };
    let number = state.take_instance(&container.name);
    let mut instance = Instance {
        id: format!("{}-{}-{number}", state.incarnation.uid, container.name),
        instance: number,
        spec_hash: hash.to_string(),
        image: container.image.clone(),
        image_digest: Some(ensured.record.manifest_digest.to_string()),
        handler: None,
        created: false,
        pid: None,
        started_at: None,
        warnings: Vec::new(),
        exit: None,
        pre_stop: container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|hook| Action::of_hook(hook, container)),
    };
    {
        let slot = state
            .incarnation
            .containers
            .get_mut(&container.name)
            .expect("the slot exists");
        slot.current = Some(instance.clone());
        if restart {
            slot.restart_count += 1;
        }
    }
    // The image hold is taken while the intent is recorded.
    let hold = containers::hold_image(run.ctx, &container.image, &instance.id);
    if let Err(err) = run.save(state) {
        hold.release(run.ctx).await;
        return Err(err);
    }
    let started = match hold.layers(run.ctx).await {
        Ok(lowerdirs) => {
            containers::start(
                run.ctx,
                run.runtime,
                env,
                spec,
                &ensured.record,
                &lowerdirs,
                &mut instance,
            )
            .await
        }
        Err(message) => Err(message),
    };
    if let Err(message) = started {
        if let Some(slot) = state.incarnation.containers.get_mut(&container.name) {
            slot.current = None;
        }
        return fail_start(run, state, container, "CreateContainerError", message);
    }
    let slot = state
        .incarnation
        .containers
        .get_mut(&container.name)
        .expect("the slot exists");
    slot.current = Some(instance.clone());
    slot.waiting = None;
    slot.failures = 0;
    slot.restart_at_ms = None;
    let slot = slot.clone();
    run.save(state)?;
    run.ctx.services.exits.watch(
        &instance.id,
        &run.ctx.services.paths.shim_dir(&instance.id),
        run.key,
        &run.ctx.observed,
    );
    if let Some(action) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
        .and_then(|hook| Action::of_hook(hook, container))
    {
        let host = handlers::pod_host(&state.incarnation);
        let id = &instance.id;
        let ran = hooks::post_start(
            run.ctx,
            run.runtime,
            run.key,
            &container.name,
            id,
            &action,
            host,
        );
        if ran.await.is_err() {
            let grace = Duration::from_secs(state.incarnation.grace_seconds);
            let why = "its postStart hook failed";
            run.stop_instance(state, &container.name, &instance, grace, why)
                .await?;
            // The next pass sees the exit and restarts it by the policy.
            run.report.requeue_now();
            run.report
                .running(&slot, container, &Observed::Creating, false);
            return Ok(AppState::Running);
        }
    }
    run.watch_probes(state, container, &instance.id);
    let ready = run.ctx.services.probes.ready(&instance.id);
    run.report
        .running(&slot, container, &Observed::Running, ready);
    Ok(AppState::Running)
}

/// Stops the container `name` whose liveness or startup probe failed; the
/// reconcile then sees it exited and restarts it by the restart policy.
async fn kill_unhealthy(
    run: &PodRun<'_>,
    state: &PodState,
    name: &str,
) -> Result<(), ReconcileError> {
    let Some(instance) = state
        .incarnation
        .containers
        .get(name)
        .and_then(|slot| slot.current.as_ref())
        .filter(|instance| instance.created && instance.exit.is_none())
    else {
        return Ok(());
    };
    let Some(kill) = run.ctx.services.probes.kill_request(&instance.id) else {
        return Ok(());
    };
    let grace = kill
        .grace
        .unwrap_or(Duration::from_secs(state.incarnation.grace_seconds));
    run.stop_instance(state, name, instance, grace, &kill.why)
        .await
}

/// The manifest asks for something the desired state cannot give (a
/// missing ConfigMap key): whatever runs keeps running, the status says
/// why nothing changes.
fn config_error(state: Option<&PodState>, message: String) -> Applied {
    report::blocked(state, "CreateContainerConfigError", &message)
}
