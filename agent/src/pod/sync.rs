//! One sync of a pod, kubelet's `SyncPod`: observe the pod (its record,
//! the runtime, the probes), plan ([`plan::compute`]), carry the actions
//! out, and again, until the plan has nothing left to do now; then report.
//! Images come first (before anything stops, and before a new pod gets a
//! sandbox); every intent is recorded before it is acted on, so a sync may
//! be cancelled at any `.await` (its pod worker does that when a newer
//! version of the pod arrives) and the next one carries on.
//!
//! [`terminate`] removes a pod that is no longer wanted.

use std::collections::BTreeMap;
use std::time::Duration;

use manifests::Object;
use manifests::annotations::UpdateStrategy;
use manifests::types as api;

use super::action::Action;
use super::autoupdate;
use super::containers::{self, PodEnvironment, Stopping};
use super::error::{Failures, PodError, Reason};
use super::eviction;
use super::executor::Executor;
use super::hash;
use super::hooks;
use super::host::Origin;
use super::inputs;
use super::plan::{
    self, ContainerView, DesiredPod, Observed, PodActions, PodStep, Start, StartKind,
};
use super::report::{self, PodReport};
use super::rollout::{self, Choice, Verdict};
use super::sandbox::{self, Ready};
use super::state::{ContainerSlot, Incarnation, Instance, PodState, grace_seconds};
use super::teardown;
use super::update::{self, Gate, TakenLock};
use crate::desired::{DesiredObject, DesiredState};
use crate::image::auth::Credentials;
use crate::image::manager::EnsuredImage;
use crate::runtime::from_pod;
use crate::status::{ContainerState, EventType, time};

/// Rounds of observe-plan-act in one sync; a pod that still has work after
/// that (a chain of init containers that finish at once) syncs again
/// right away.
const MAX_ROUNDS: usize = 16;

/// Syncs the desired pod `object` (see the module docs).
pub async fn sync(
    ex: &Executor<'_>,
    object: &DesiredObject,
    desired: &DesiredState,
) -> Result<PodReport, PodError> {
    let Object::Pod(manifest_pod) = object.object.as_ref() else {
        return Err(PodError::new(
            Reason::CreateContainerConfigError,
            format!("{} does not hold a Pod", object.key),
        ));
    };
    let (namespace, name) = (ex.key.namespace.as_str(), ex.key.name.as_str());
    let record = load(ex).await?;
    // Which version runs: the desired one, or the stable one while the
    // desired one is refused (`rollout`).
    let version = rollout::Desired {
        generation: object.generation,
        content: &object.content_hash,
        pod: manifest_pod,
    };
    let probation = rollout::probation_of(&manifest_pod.metadata, ex.host.config.probation);
    let mut versions = record
        .as_ref()
        .map(|s| s.rollout.clone())
        .unwrap_or_default();
    let (choice, versions_changed) = rollout::prepare(
        &mut versions,
        &version,
        probation,
        record.as_ref().map(|s| &s.incarnation),
    );
    let stable_pod = match choice {
        Choice::Stable => versions.stable.as_ref().and_then(rollout::pinned),
        Choice::Desired => None,
    };
    let pod = stable_pod.as_ref().unwrap_or(manifest_pod);
    let spec = &pod.spec;
    if let crate::node::Selection::NotSelected(why) = ex.host.node.select(spec) {
        return not_selected(ex, &why).await;
    }
    if record.is_none()
        && let Some(waiting) = eviction::admit(ex, spec).await
    {
        return Ok(waiting);
    }
    let (pod_hash, wanted) = match hash::wanted(namespace, name, spec, desired) {
        Ok(wanted) => wanted,
        // Running containers keep running; a fixed manifest or a new
        // ConfigMap/Secret syncs the pod again.
        Err(err) => return Ok(config_error(record.as_ref(), &err)),
    };
    let secrets = match inputs::pull_credentials(namespace, spec, desired) {
        Ok(credentials) => credentials,
        Err(err) => return Ok(config_error(record.as_ref(), &err)),
    };
    let mut state = record.unwrap_or_else(|| {
        PodState::new(
            namespace,
            name,
            Incarnation::new(spec, &pod_hash, time::now()),
        )
    });
    if let Some(evicted) = eviction::still_evicted(ex, &mut state, spec, object.generation).await? {
        return Ok(evicted);
    }
    // Applies to the next stop without recreating anything.
    state.incarnation.grace_seconds = grace_seconds(spec);
    state.rollout = versions;
    let auto_update = rollout::auto_update_of(&manifest_pod.metadata);
    let tags: BTreeMap<String, String> = manifest_pod
        .spec
        .init_containers
        .iter()
        .chain(&manifest_pod.spec.containers)
        .map(|c| (c.name.clone(), c.image.clone()))
        .collect();
    let checked_tags = if auto_update {
        tags.clone()
    } else {
        BTreeMap::new()
    };
    let mut unsaved = versions_changed;
    if state.rollout.auto_update != checked_tags {
        state.rollout.auto_update = checked_tags;
        unsaved = true;
    }
    let check_now = auto_update && autoupdate::requested_ms() > state.rollout.checked_request_ms;
    if let Some(candidate) = state.rollout.probation.as_mut()
        && candidate.containers.is_none()
        && choice == Choice::Desired
    {
        candidate.containers = Some(rollout::replaced(
            &state.incarnation,
            &pod_hash,
            &wanted,
            &candidate.digests,
        ));
    }
    let desired_pod = DesiredPod {
        pod_hash: &pod_hash,
        containers: &wanted,
        policy: spec.restart_policy_or_default(),
        grace: Duration::from_secs(state.incarnation.grace_seconds),
    };
    let mut run = Run {
        ex,
        metadata: &pod.metadata,
        spec,
        desired,
        origin: Origin {
            source: object.source.clone(),
            generation: object.generation,
        },
        source: object.source.to_string(),
        pod_hash: &pod_hash,
        wanted: &wanted,
        secrets,
        ensured: BTreeMap::new(),
        ready: None,
        unsaved,
        rechecked: false,
        update: update::Settings::of(&pod.metadata),
        held: None,
        locks: Vec::new(),
        choice,
        version,
        probation,
        auto_update,
        tags,
        auto_moved: Vec::new(),
        check_now,
    };
    let outcome = run.rounds(&mut state, &desired_pod).await;
    if run.unsaved {
        sandbox::save(ex.host, &state).await?;
    }
    let mut report = eviction::check(ex, &mut state, spec, object.generation, outcome?).await?;
    if choice == Choice::Stable
        && report.phase == crate::status::Phase::Running
        && let Some(message) = rollout::rolled_back_message(&state.rollout)
    {
        report.message = message;
    }
    if let Some(details) = report.details.as_mut() {
        details.rollout = rollout::details(&state.rollout);
    }
    Ok(report)
}

/// Removes pod `ex.key` and everything it had (every incarnation, its logs
/// and its record). Idempotent; every failure is reported, none stops the
/// rest.
pub async fn terminate(ex: &Executor<'_>) -> Result<(), PodError> {
    let Some(state) = load(ex).await? else {
        return Ok(());
    };
    let deadlines = ex.stops.deadlines();
    let no_views = BTreeMap::new();
    let view = plan::PodView {
        state: &state,
        sandbox_alive: true,
        containers: &no_views,
        stop_deadlines: &deadlines,
        now_ms: ex.now_ms(),
    };
    let PodStep::Terminate { grace } = plan::compute(None, &view).step else {
        unreachable!("a pod that is not wanted is terminated");
    };
    let mut failures = Failures::default();
    for incarnation in state.incarnations() {
        failures
            .extend(teardown::incarnation(ex, incarnation, &grace, "the pod was removed").await);
    }
    failures.into_result(format!("removing pod {}", ex.key))?;
    let host = ex.host;
    // Unconditionally: an agent killed between keeping and recording
    // leaves a kept image the record does not list.
    host.images
        .unkeep(&rollout::keeper(&state.namespace, &state.name))
        .await;
    if let Err(err) = host
        .runtime
        .remove_pod_logs(&state.namespace, &state.name)
        .await
    {
        tracing::warn!(error = %crate::status::chain(&*err), "could not remove the pod's logs");
    }
    host.records
        .remove(&state.namespace, &state.name)
        .await
        .map_err(|err| {
            PodError::caused(
                Reason::PodStateError,
                format!("forgetting pod {}", ex.key),
                err,
            )
        })
}

/// This node does not run the pod (its node name, labels or the pod's
/// selectors changed, or never matched): whatever ran of it is removed.
/// Unlike the scheduler's `IgnoredDuringExecution`, a running pod stops
/// too: the manifest directory, not history, says what runs here.
async fn not_selected(ex: &Executor<'_>, why: &str) -> Result<PodReport, PodError> {
    let message = format!("NotSelected: {why}");
    if load(ex).await?.is_some() {
        ex.event(
            EventType::Normal,
            "NotSelected",
            format!("{why}: removing the pod"),
        );
        terminate(ex).await?;
    }
    let mut report = report::blocked(None, message, None);
    report.details = Some(Default::default());
    Ok(report)
}

async fn load(ex: &Executor<'_>) -> Result<Option<PodState>, PodError> {
    let key = ex.key;
    ex.host
        .records
        .load(&key.namespace, &key.name)
        .await
        .map_err(|err| {
            PodError::caused(
                Reason::PodStateError,
                format!("reading the record of pod {key}"),
                err,
            )
        })
}

/// The manifest asks for something the desired state cannot give (a
/// missing ConfigMap key): whatever runs keeps running, the status says
/// why nothing changes.
fn config_error(state: Option<&PodState>, err: &inputs::InputError) -> PodReport {
    report::blocked(
        state,
        format!("{}: {err}", Reason::CreateContainerConfigError),
        None,
    )
}

/// Joins a multi-line error (one line per registry host tried) into the
/// one line a status message is.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The earlier of two optional times.
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When the first offline re-check of the pod's containers is due.
fn next_recheck(state: &PodState) -> Option<u64> {
    state
        .incarnation
        .containers
        .values()
        .filter_map(|slot| slot.current.as_ref()?.recheck_at_ms)
        .min()
}

/// Container `name` of `spec` (init or app).
fn container_of<'s>(spec: &'s api::PodSpec, name: &str) -> Option<&'s api::Container> {
    spec.init_containers
        .iter()
        .chain(&spec.containers)
        .find(|c| c.name == name)
}

/// One sync in progress.
struct Run<'a> {
    ex: &'a Executor<'a>,
    metadata: &'a manifests::types::ObjectMeta,
    spec: &'a api::PodSpec,
    desired: &'a DesiredState,
    origin: Origin,
    source: String,
    pod_hash: &'a str,
    wanted: &'a [plan::Wanted],
    secrets: Option<Credentials>,
    /// Images ensured in this sync (an `Always` image is pulled once per
    /// sync, not once per step).
    ensured: BTreeMap<String, EnsuredImage>,
    /// The sandbox, once made or refreshed in this sync.
    ready: Option<Ready>,
    /// The record changed (a new network and sandbox) and is not saved
    /// yet: the first container's intent saves it, the end of the sync at
    /// the latest.
    unsaved: bool,
    /// An offline re-check changed a record in this round.
    rechecked: bool,
    /// The pod's update strategy and lock timeout.
    update: update::Settings,
    /// An update waits for a container's update lock: the status message
    /// and when to try again.
    held: Option<(String, u64)>,
    /// Update locks taken for a pod-level change, kept until the old
    /// incarnation is torn down (the end of the sync at the latest).
    locks: Vec<TakenLock>,
    /// The version this sync runs (`rollout`).
    choice: Choice,
    /// The desired version (what a probation that passes makes stable).
    version: rollout::Desired<'a>,
    /// The desired version's probation.
    probation: Duration,
    /// `berth.dev/auto-update`: tags are checked again periodically.
    auto_update: bool,
    /// Each container's image as the manifest names it (the stable version
    /// may run it pinned to a digest; auto-update checks the tag).
    tags: BTreeMap<String, String>,
    /// Containers whose tag an auto-update check found at a new digest in
    /// this round.
    auto_moved: Vec<(String, String)>,
    /// `berth auto-update` asked for a check the pod has not made yet: the
    /// first round checks every tag.
    check_now: bool,
}

impl<'a> Run<'a> {
    async fn rounds(
        &mut self,
        state: &mut PodState,
        desired: &DesiredPod<'_>,
    ) -> Result<PodReport, PodError> {
        let mut last: Option<(PodActions, BTreeMap<String, ContainerView>)> = None;
        for _ in 0..MAX_ROUNDS {
            let mut views = self.observe(state, desired.policy).await?;
            if let Some(report) = self.auto_updates(state, &mut views).await? {
                return Ok(report);
            }
            if let Some(report) = self.judge(state, &views).await? {
                return Ok(report);
            }
            self.keep_target(state).await;
            let alive = sandbox::alive(self.ex.host, state).await;
            let deadlines = self.ex.stops.deadlines();
            let now_ms = self.ex.now_ms();
            let view = plan::PodView {
                state,
                sandbox_alive: alive,
                containers: &views,
                stop_deadlines: &deadlines,
                now_ms,
            };
            let actions = plan::compute(Some(desired), &view);
            tracing::debug!(step = ?actions.step, start = actions.start.len(), kill = actions.kill.len(), remove = actions.remove.len(), "planned");
            match &actions.step {
                PodStep::Recreate { why } => {
                    if let Some(pending) = self.recreate(state, why).await? {
                        return Ok(pending);
                    }
                    continue;
                }
                PodStep::RebuildSandbox => {
                    self.rebuild_sandbox(state).await?;
                    continue;
                }
                PodStep::TeardownRetired => {
                    self.teardown_retired(state).await?;
                    continue;
                }
                PodStep::Terminate { .. } => unreachable!("a wanted pod is never terminated"),
                PodStep::Run => {}
            }
            if self.ready.is_none() {
                // Images first: no sandbox or network for a pod that
                // cannot run yet.
                if actions.images_first
                    && let Some(pending) = self.ensure_images(state).await
                {
                    return Ok(pending);
                }
                let ready = sandbox::ensure(
                    self.ex,
                    state,
                    self.metadata,
                    self.spec,
                    self.desired,
                    &mut self.unsaved,
                )
                .await;
                match ready {
                    Ok(ready) => self.ready = Some(ready),
                    Err(err) => {
                        self.ex
                            .event(EventType::Warning, err.reason.as_str(), err.message());
                        return Err(err);
                    }
                }
            }
            self.watch(state);
            if actions.is_idle() {
                let mut report = report::build(state, self.spec, &actions, &views, now_ms);
                report.wake_at_ms = earliest(report.wake_at_ms, next_recheck(state));
                let probation_ends = state.rollout.probation.as_ref().and_then(|p| p.until_ms);
                report.wake_at_ms = earliest(report.wake_at_ms, probation_ends);
                return Ok(report);
            }
            self.act(state, &actions).await?;
            if let Some((message, retry_at_ms)) = self.held.take() {
                let mut report = report::build(state, self.spec, &actions, &views, now_ms);
                report.message = message;
                report.wake_at_ms = earliest(report.wake_at_ms, Some(retry_at_ms));
                return Ok(report);
            }
            last = Some((actions, views));
        }
        let (actions, views) = last.expect("at least one round acted");
        let now_ms = self.ex.now_ms();
        let mut report = report::build(state, self.spec, &actions, &views, now_ms);
        report.wake_at_ms = Some(now_ms);
        Ok(report)
    }

    /// What the runtime and the probes say about every current instance;
    /// new exits are recorded (restart bookkeeping, an event).
    async fn observe(
        &mut self,
        state: &mut PodState,
        policy: api::RestartPolicy,
    ) -> Result<BTreeMap<String, ContainerView>, PodError> {
        let host = self.ex.host;
        let now_ms = self.ex.now_ms();
        let pod_ip = state.incarnation.pod_ip();
        let mut views = BTreeMap::new();
        let mut exited = false;
        for (name, slot) in &mut state.incarnation.containers {
            let Some(instance) = slot.current.as_mut() else {
                continue;
            };
            let (observed, lost_reason) = containers::observe(host, instance, now_ms).await;
            let id = instance.id.clone();
            if let Observed::Exited(exit) = &observed {
                host.probes.forget(&id);
                if let Some(delay) =
                    plan::record_exit(slot, exit, lost_reason.as_deref(), &host.config)
                {
                    exited = true;
                    let restarting = plan::restarts(policy, slot.init, exit.exit_code);
                    self.ex.event(
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
                                format!("; back-off {}", manifests::duration::format(delay))
                            } else {
                                String::new()
                            }
                        ),
                    );
                }
            }
            let superseded =
                observed == Observed::Running && self.recheck_offline(name, slot, now_ms).await;
            // Probes run for a running container as its spec wants it
            // (started before its readiness is read: a container with a
            // readiness probe is not ready until the probe says so).
            let current = self.wanted.iter().any(|w| {
                &w.name == name && slot.current.as_ref().is_some_and(|i| i.spec_hash == w.hash)
            });
            if observed == Observed::Running
                && current
                && let Some(container) = container_of(self.spec, name)
            {
                host.probes.watch(self.ex.key, container, &id, pod_ip);
            }
            views.insert(
                name.clone(),
                ContainerView {
                    observed,
                    ready: host.probes.ready(&id),
                    kill: host.probes.kill_request(&id),
                    superseded,
                },
            );
        }
        if self.check_now {
            self.check_now = false;
            state.rollout.checked_request_ms = autoupdate::requested_ms();
            self.rechecked = true;
        }
        if exited || self.rechecked {
            self.rechecked = false;
            self.save(state).await?;
        }
        Ok(views)
    }

    /// For a container running from a stored image because its registry
    /// was out of reach, once its re-check is due: asks the registry again.
    /// Still out of reach: check later. Back, with the tag at the same
    /// image: done. Back, with the tag moved: true — the container is
    /// replaced as after an edit (the new image is pulled already).
    async fn recheck_offline(&mut self, name: &str, slot: &mut ContainerSlot, now_ms: u64) -> bool {
        let Some(instance) = slot.current.as_mut() else {
            return false;
        };
        let due = match instance.recheck_at_ms {
            Some(at) => at <= now_ms,
            // Started before the pod asked for auto-updates.
            None => self.auto_update,
        };
        if !due && !self.check_now {
            return false;
        }
        let tag = self
            .tags
            .get(name)
            .cloned()
            .unwrap_or_else(|| instance.image.clone());
        let checked = self
            .ex
            .host
            .images
            .refresh(&tag, self.secrets.clone())
            .await;
        self.rechecked = true;
        let interval = self.ex.host.config.auto_update_interval;
        match checked {
            Ok(ensured) if ensured.offline.is_none() => {
                instance.recheck_at_ms = self
                    .auto_update
                    .then(|| rollout::next_check_ms(now_ms, interval));
                let digest = ensured.record.manifest_digest.to_string();
                let moved = instance.image_digest.as_deref() != Some(digest.as_str());
                if moved && self.auto_update {
                    // `auto_updates` decides, with the pod's versions.
                    self.ensured.insert(tag, ensured);
                    self.auto_moved.push((name.to_owned(), digest));
                    return false;
                }
                if moved {
                    self.ex.event(
                        EventType::Normal,
                        "ImageChanged",
                        format!(
                            "container {name}: its registry answers again and image {} now points to {digest} (it runs {}): replacing it",
                            instance.image,
                            instance.image_digest.as_deref().unwrap_or("an unknown digest")
                        ),
                    );
                    self.ensured.insert(instance.image.clone(), ensured);
                }
                moved
            }
            Ok(_) => {
                instance.recheck_at_ms =
                    Some(now_ms + plan::millis(self.ex.host.config.image_recheck));
                false
            }
            Err(err) => {
                if self.auto_update {
                    self.ex.event(
                        EventType::Warning,
                        "AutoUpdateFailed",
                        format!(
                            "container {name}: checking image {tag}: {}",
                            one_line(&err.message())
                        ),
                    );
                }
                instance.recheck_at_ms =
                    Some(now_ms + plan::millis(self.ex.host.config.image_recheck));
                false
            }
        }
    }

    /// What the auto-update checks of this round found: a tag at a digest
    /// refused before stays where it is; another new digest rolls forward
    /// (replacing the container as an edit does), on probation when the
    /// pod has one. A rolled-back pod whose tag moved on syncs again at
    /// once, to run the desired version.
    async fn auto_updates(
        &mut self,
        state: &mut PodState,
        views: &mut BTreeMap<String, ContainerView>,
    ) -> Result<Option<PodReport>, PodError> {
        let moved = std::mem::take(&mut self.auto_moved);
        if moved.is_empty() {
            return Ok(None);
        }
        let mut resync = false;
        for (name, digest) in moved {
            let refused = state.rollout.refused.as_ref().filter(|r| r.auto_update);
            if refused.is_some_and(|r| r.digests.get(&name) == Some(&digest)) {
                continue;
            }
            if self.choice == Choice::Stable && refused.is_none() {
                // An edit is refused: the stable version stays until the
                // manifest changes.
                continue;
            }
            let tag = self.tags.get(&name).cloned().unwrap_or_default();
            let running = state
                .incarnation
                .containers
                .get(&name)
                .and_then(|slot| slot.current.as_ref())
                .and_then(|i| i.image_digest.clone())
                .unwrap_or_else(|| "an unknown digest".into());
            let on_probation = !self.probation.is_zero()
                && rollout::begin_auto_update(
                    &mut state.rollout,
                    &state.incarnation,
                    &name,
                    &digest,
                    self.probation,
                );
            if !on_probation {
                state.rollout.refused = None;
            }
            self.ex.event(
                EventType::Normal,
                "AutoUpdated",
                format!(
                    "container {name}: image {tag} now points to {digest} (it runs {running}): rolling forward{}",
                    if on_probation {
                        format!(
                            ", on probation for {}",
                            manifests::duration::format(self.probation)
                        )
                    } else {
                        String::new()
                    }
                ),
            );
            if self.choice == Choice::Stable {
                resync = true;
            } else if let Some(view) = views.get_mut(&name) {
                view.superseded = true;
            }
        }
        self.save(state).await?;
        if resync {
            let now_ms = self.ex.now_ms();
            return Ok(Some(report::blocked(
                Some(state),
                "auto-update: rolling forward".into(),
                Some(now_ms),
            )));
        }
        Ok(None)
    }

    /// Judges the update on probation, if any (`rollout::judge`): starts its
    /// clock, makes it stable when it passed, or refuses it and syncs again
    /// at once to roll back.
    async fn judge(
        &mut self,
        state: &mut PodState,
        views: &BTreeMap<String, ContainerView>,
    ) -> Result<Option<PodReport>, PodError> {
        if self.choice != Choice::Desired {
            return Ok(None);
        }
        let Some(probation) = state.rollout.probation.as_ref() else {
            return Ok(None);
        };
        let now_ms = self.ex.now_ms();
        match rollout::judge(probation, &state.incarnation, views, self.wanted, now_ms) {
            Verdict::Switching | Verdict::Watching { .. } => Ok(None),
            Verdict::Start { until_ms } => {
                let generation = probation.generation;
                let duration = Duration::from_millis(probation.duration_ms);
                if let Some(probation) = state.rollout.probation.as_mut() {
                    probation.until_ms = Some(until_ms);
                }
                self.save(state).await?;
                self.ex.event(
                    EventType::Normal,
                    "Probation",
                    format!(
                        "generation {generation} runs: on probation for {}",
                        manifests::duration::format(duration)
                    ),
                );
                Ok(None)
            }
            Verdict::Passed => {
                let generation = probation.generation;
                state.rollout.stable = Some(rollout::passed(&self.version, &state.incarnation));
                state.rollout.probation = None;
                self.save(state).await?;
                self.ex.event(
                    EventType::Normal,
                    "ProbationPassed",
                    format!("generation {generation} passed its probation: it is the version to come back to"),
                );
                Ok(None)
            }
            Verdict::Failed(reason) => {
                let refused = rollout::refuse(probation, reason, time::now());
                let (event, message) = rollout::rolled_back_event(&state.rollout, &refused);
                self.ex.event(EventType::Warning, event, message);
                state.rollout.refused = Some(refused);
                state.rollout.probation = None;
                self.save(state).await?;
                let message = rollout::rolled_back_message(&state.rollout).unwrap_or_default();
                Ok(Some(report::blocked(Some(state), message, Some(now_ms))))
            }
        }
    }

    /// While an update is on probation or refused, the stable version's
    /// images stay in the store by digest (pinned until probation ends and
    /// while the stable version runs instead); once neither, they go.
    async fn keep_target(&mut self, state: &mut PodState) {
        let images = &self.ex.host.images;
        let owner = rollout::keeper(&state.namespace, &state.name);
        if rollout::keeps_target(&state.rollout) {
            if !state.rollout.kept.is_empty() {
                return;
            }
            for image in rollout::target_images(&state.rollout) {
                match images.keep(&owner, &image).await {
                    Ok(true) => state.rollout.kept.push(image),
                    Ok(false) => {
                        tracing::info!(%image, "the rollback target is not stored; a rollback pulls it by digest");
                    }
                    Err(err) => {
                        tracing::warn!(%image, error = %crate::status::chain(&*err), "could not keep the rollback target");
                    }
                }
            }
            self.unsaved |= !state.rollout.kept.is_empty();
        } else if !state.rollout.kept.is_empty() {
            images.unkeep(&owner).await;
            state.rollout.kept.clear();
            self.unsaved = true;
        }
    }

    async fn save(&mut self, state: &PodState) -> Result<(), PodError> {
        sandbox::save(self.ex.host, state).await?;
        self.unsaved = false;
        Ok(())
    }

    /// Running containers are watched for their exit.
    fn watch(&self, state: &PodState) {
        for slot in state.incarnation.containers.values() {
            if let Some(instance) = slot
                .current
                .as_ref()
                .filter(|instance| instance.created && instance.exit.is_none())
            {
                self.ex.host.exits.watch(&instance.id, self.ex.key);
            }
        }
    }

    fn container(&self, name: &str) -> Option<&'a api::Container> {
        container_of(self.spec, name)
    }

    /// A pod-level change or a lost sandbox: every image of the new pod
    /// first (download, then kill), then the current incarnation is retired
    /// (and torn down by the next round). Returns a report when an image is
    /// missing: the old pod keeps running meanwhile.
    async fn recreate(
        &mut self,
        state: &mut PodState,
        why: &str,
    ) -> Result<Option<PodReport>, PodError> {
        let running: Vec<(String, Instance)> = state
            .incarnation
            .containers
            .iter()
            .filter_map(|(name, slot)| {
                let instance = slot.current.clone().filter(|i| i.created)?;
                Some((name.clone(), instance))
            })
            .collect();
        let stopping: Vec<(&str, &Instance)> =
            running.iter().map(|(n, i)| (n.as_str(), i)).collect();
        match self.may_stop(state, &stopping, None).await? {
            Some(locks) => self.locks = locks,
            None => {
                let (message, retry_at_ms) = self.held.take().expect("set when held");
                return Ok(Some(report::blocked(
                    Some(state),
                    message,
                    Some(retry_at_ms),
                )));
            }
        }
        // Other strategies pull once the old pod is torn down (the next
        // rounds: its sandbox is new, so images come first).
        if self.update.strategy.downloads_first()
            && let Some(pending) = self.ensure_images(state).await
        {
            return Ok(Some(pending));
        }
        let fresh = Incarnation::new(self.spec, self.pod_hash, time::now());
        let old = std::mem::replace(&mut state.incarnation, fresh);
        self.ex.event(
            EventType::Normal,
            "Recreating",
            format!(
                "{why}: replacing pod {} with {}",
                old.uid, state.incarnation.uid
            ),
        );
        state.retired.push(old);
        self.save(state).await?;
        Ok(None)
    }

    /// The sandbox of the current incarnation is gone (a reboot took the
    /// namespaces, or someone removed them): what is left of its containers
    /// is stopped and removed, and the incarnation starts over under the
    /// same uid — its network lease, and so its address, is kept — with its
    /// init containers first and no back-off (the exits were not crashes).
    /// Each container's restart count goes up, as the kubelet's does.
    async fn rebuild_sandbox(&mut self, state: &mut PodState) -> Result<(), PodError> {
        self.ex.event(
            EventType::Warning,
            "SandboxChanged",
            format!(
                "the namespaces of pod {} are gone (was the host rebooted?): making them again",
                state.incarnation.uid
            ),
        );
        let grace = Duration::from_secs(state.incarnation.grace_seconds);
        let names: Vec<String> = state.incarnation.containers.keys().cloned().collect();
        for name in names {
            let Some(instance) = state
                .incarnation
                .containers
                .get(&name)
                .and_then(|slot| slot.current.clone())
            else {
                continue;
            };
            let stop = plan::Stop {
                name: name.clone(),
                id: instance.id.clone(),
                why: "its pod's sandbox is gone".into(),
                grace,
            };
            self.stop(state, &stop).await?;
            containers::remove(self.ex, &instance.id).await?;
            if let Some(slot) = state.incarnation.containers.get_mut(&name) {
                if slot.last_state.is_none() || instance.exit.is_none() {
                    slot.last_state = Some(ContainerState::Terminated {
                        exit_code: instance
                            .exit
                            .as_ref()
                            .map_or(containers::LOST_EXIT_CODE, |e| e.exit_code),
                        signal: None,
                        reason: "SandboxChanged".into(),
                        message: "its pod's sandbox was gone".into(),
                        started_at: instance.started_at.clone(),
                        finished_at: time::now(),
                    });
                }
                if instance.created {
                    slot.restart_count += 1;
                }
                slot.current = None;
                slot.restart_at_ms = None;
                slot.backoff_ms = None;
                slot.crash_count = 0;
                slot.failures = 0;
                slot.backoff_hash = None;
                slot.waiting = None;
            }
        }
        let incarnation = &mut state.incarnation;
        incarnation.sandbox_ready = false;
        incarnation.network = None;
        incarnation.volume_hashes.clear();
        incarnation.init_done = !incarnation.containers.values().any(|slot| slot.init);
        self.ready = None;
        self.save(state).await
    }

    /// Tears down retired incarnations (a pod-level change, possibly cut
    /// short by a crash) before the new one is set up: they may hold its
    /// host ports.
    async fn teardown_retired(&mut self, state: &mut PodState) -> Result<(), PodError> {
        while let Some(old) = state.retired.first().cloned() {
            teardown::incarnation(self.ex, &old, &BTreeMap::new(), "the pod is recreated")
                .await
                .into_result(format!("removing the previous pod {}", old.uid))?;
            state.retired.remove(0);
            self.save(state).await?;
            let images = old
                .containers
                .values()
                .filter_map(|slot| slot.current.as_ref().map(|i| i.image.clone()));
            self.delete_old_images(images.collect()).await;
        }
        self.locks.clear();
        Ok(())
    }

    /// Whether the running containers `stopping` may be stopped for an
    /// update now (their update locks, [`update::gate`]): the locks taken,
    /// to hold until they have stopped; or `None` with `self.held` set and
    /// the record saved. When the wait begins under `download-then-kill`,
    /// the new image (`container`'s, or every image of the pod) is pulled
    /// meanwhile.
    async fn may_stop(
        &mut self,
        state: &mut PodState,
        stopping: &[(&str, &Instance)],
        container: Option<&api::Container>,
    ) -> Result<Option<Vec<TakenLock>>, PodError> {
        let (message, retry_at_ms, began) =
            match update::gate(self.ex, state, stopping, self.update).await {
                Gate::Go(locks) => return Ok(Some(locks)),
                Gate::Held {
                    message,
                    retry_at_ms,
                    began,
                } => (message, retry_at_ms, began),
            };
        if began && self.update.strategy.downloads_first() {
            // Ready for when the lock is released; a failure shows then.
            if let Some(container) = container {
                let _ = self.ensure_image(container, state).await;
            } else {
                let _ = self.ensure_images(state).await;
            }
        }
        self.save(state).await?;
        self.held = Some((message, retry_at_ms));
        Ok(None)
    }

    /// `delete-then-download`: the images the old version ran that the new
    /// one does not name are deleted before the new ones are pulled
    /// (unless something else uses them).
    async fn delete_old_images(&self, mut images: Vec<String>) {
        if self.update.strategy != UpdateStrategy::DeleteThenDownload {
            return;
        }
        images.sort();
        images.dedup();
        let spec = self.spec;
        for image in images {
            if spec
                .init_containers
                .iter()
                .chain(&spec.containers)
                .any(|c| c.image == image)
            {
                continue;
            }
            match self.ex.host.images.delete_unused(&image).await {
                Ok(true) => self.ex.event(
                    EventType::Normal,
                    "ImageDeleted",
                    format!(
                        "deleted image {image} before pulling the new version (update strategy {})",
                        self.update.strategy.as_str()
                    ),
                ),
                Ok(false) => tracing::info!(%image, "the old image is still in use: kept"),
                Err(err) => {
                    tracing::warn!(%image, error = %crate::status::chain(&*err), "could not delete the old image")
                }
            }
        }
    }

    /// Every image of the pod; a report of the first that cannot be had
    /// (`pull_failed`: the pod worker retries after a growing back-off).
    async fn ensure_images(&mut self, state: &PodState) -> Option<PodReport> {
        let spec: &'a api::PodSpec = self.spec;
        for container in spec.init_containers.iter().chain(&spec.containers) {
            if let Err(err) = self.ensure_image(container, state).await {
                let message = one_line(&err.message());
                // The status shows it only until the next try says
                // "pulling image" again: the event keeps why.
                self.ex.event(
                    EventType::Warning,
                    err.reason.as_str(),
                    format!("container {}: {message}", container.name),
                );
                let mut report = report::blocked(
                    Some(state),
                    format!("{}: {}: {message}", container.name, err.reason),
                    None,
                );
                report.pull_failed = Some(container.image.clone());
                return Some(report);
            }
        }
        None
    }

    /// Makes the container's image present as its pull policy says; the
    /// status says so while a pull runs.
    async fn ensure_image(
        &mut self,
        container: &api::Container,
        state: &PodState,
    ) -> Result<EnsuredImage, PodError> {
        if let Some(ensured) = self.ensured.get(&container.image) {
            return Ok(ensured.clone());
        }
        let host = self.ex.host;
        let policy = container.image_pull_policy_or_default();
        if host.images.would_pull(&container.image, policy).await {
            let pending = report::blocked(
                Some(state),
                format!(
                    "{}: ContainerCreating: pulling image {}",
                    container.name, container.image
                ),
                None,
            );
            host.status.report(
                self.ex.key,
                &self.origin,
                pending.phase,
                pending.message,
                None,
            );
        }
        let ensured = host
            .images
            .ensure(&container.image, policy, self.secrets.clone())
            .await?;
        if let Some(why) = &ensured.offline {
            self.ex.event(
                EventType::Warning,
                "PulledFromLocalStore",
                format!(
                    "container {}: image {}: {why}",
                    container.name, container.image
                ),
            );
        }
        if ensured.pulled {
            self.ex.event(
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

    /// Carries out the container actions of one round.
    async fn act(&mut self, state: &mut PodState, actions: &PodActions) -> Result<(), PodError> {
        for stop in &actions.remove {
            self.stop(state, stop).await?;
            containers::remove(self.ex, &stop.id).await?;
            state.incarnation.containers.remove(&stop.name);
            self.save(state).await?;
        }
        for kill in &actions.kill {
            self.stop(state, kill).await?;
        }
        if actions.init_done {
            state.incarnation.init_done = true;
            self.save(state).await?;
        }
        for start in &actions.start {
            self.start(state, start).await?;
        }
        Ok(())
    }

    async fn stop(&self, state: &PodState, stop: &plan::Stop) -> Result<(), PodError> {
        let Some(instance) = state
            .incarnation
            .containers
            .get(&stop.name)
            .and_then(|slot| slot.current.as_ref())
        else {
            return Ok(());
        };
        containers::stop(
            self.ex,
            Stopping {
                name: &stop.name,
                instance,
                pod_ip: state.incarnation.pod_ip(),
                grace: stop.grace,
                why: &stop.why,
            },
        )
        .await
    }

    /// Gives container `start.name` a new instance: its image first, then
    /// (for a replacement) the old instance stopped and removed, then the
    /// new one made.
    async fn start(&mut self, state: &mut PodState, start: &Start) -> Result<(), PodError> {
        let Some(container) = self.container(&start.name) else {
            return Ok(());
        };
        let all: &'a [plan::Wanted] = self.wanted;
        let Some(wanted) = all.iter().find(|w| w.name == start.name) else {
            return Ok(());
        };
        let old = state
            .incarnation
            .containers
            .get(&start.name)
            .and_then(|slot| slot.current.clone())
            .filter(|instance| instance.created);
        let replacing = start.kind == StartKind::Replace && old.is_some();
        let mut locks = Vec::new();
        if let Some(old) = old.as_ref().filter(|_| replacing) {
            match self
                .may_stop(state, &[(&start.name, old)], Some(container))
                .await?
            {
                Some(taken) => locks = taken,
                None => return Ok(()),
            }
        }
        let mut ensured = None;
        if !replacing || self.update.strategy.downloads_first() {
            match self.ensure_image(container, state).await {
                Ok(image) => ensured = Some(image),
                Err(err) => return self.fail_start(state, wanted, err).await,
            }
        }
        let restart = old.is_some();
        if let Some(old) = old {
            if start.kind == StartKind::Replace {
                let grace = Duration::from_secs(state.incarnation.grace_seconds);
                let stop = plan::Stop {
                    name: start.name.clone(),
                    id: old.id.clone(),
                    why: "its spec changed".into(),
                    grace,
                };
                self.stop(state, &stop).await?;
            }
            drop(locks);
            containers::remove(self.ex, &old.id).await?;
            if let Some(slot) = state.incarnation.containers.get_mut(&start.name) {
                if start.kind == StartKind::Replace && slot.last_state.is_none() {
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
            self.save(state).await?;
            if replacing {
                self.delete_old_images(vec![old.image.clone()]).await;
            }
        }
        let ensured = match ensured {
            Some(ensured) => ensured,
            None => match self.ensure_image(container, state).await {
                Ok(ensured) => ensured,
                Err(err) => return self.fail_start(state, wanted, err).await,
            },
        };
        self.launch(state, container, wanted, &ensured, restart)
            .await
    }

    /// Records why an instance could not be made, to retry after a
    /// back-off.
    async fn fail_start(
        &mut self,
        state: &mut PodState,
        wanted: &plan::Wanted,
        err: PodError,
    ) -> Result<(), PodError> {
        let message = one_line(&err.message());
        let now_ms = self.ex.now_ms();
        let config = self.ex.host.config;
        let slot = state
            .incarnation
            .containers
            .entry(wanted.name.clone())
            .or_default();
        plan::record_failure(
            slot,
            &wanted.hash,
            err.reason.as_str(),
            message.clone(),
            &config,
            now_ms,
        );
        self.save(state).await?;
        self.ex.event(
            EventType::Warning,
            err.reason.as_str(),
            format!("container {}: {message}", wanted.name),
        );
        Ok(())
    }

    /// Makes a new instance of `container`: id and log number recorded
    /// first (with the image hold taken meanwhile), then the runtime
    /// creates and starts it; then its postStart hook.
    async fn launch(
        &mut self,
        state: &mut PodState,
        container: &api::Container,
        wanted: &plan::Wanted,
        ensured: &EnsuredImage,
        restart: bool,
    ) -> Result<(), PodError> {
        let ex = self.ex;
        let ready = self
            .ready
            .as_ref()
            .expect("the sandbox is ready before containers start");
        let fields = inputs::FieldValues {
            labels: self.metadata.labels.clone(),
            annotations: self.metadata.annotations.clone(),
            ..ready.fields.clone()
        };
        let resolved = inputs::resolve_env(&state.namespace, container, self.desired, &fields)
            .map_err(|err| {
                PodError::caused(
                    Reason::CreateContainerConfigError,
                    format!("container {}", container.name),
                    err,
                )
            })
            .and_then(|env| {
                from_pod::container_spec(container, env)
                    .map(|mut spec| {
                        spec.security_context = spec
                            .security_context
                            .with_pod_defaults(&ready.pod.security_context);
                        spec
                    })
                    .map_err(|err| {
                        PodError::caused(
                            Reason::CreateContainerConfigError,
                            format!("container {}", container.name),
                            err,
                        )
                    })
            });
        let spec = match resolved {
            Ok(spec) => spec,
            Err(err) => return self.fail_start(state, wanted, err).await,
        };
        let number = state.take_instance(&container.name);
        let mut instance = Instance {
            id: format!("{}-{}-{number}", state.incarnation.uid, container.name),
            instance: number,
            spec_hash: wanted.hash.clone(),
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
            recheck_at_ms: match &ensured.offline {
                Some(_) => Some(ex.now_ms() + plan::millis(ex.host.config.image_recheck)),
                None => self.auto_update.then(|| {
                    rollout::next_check_ms(ex.now_ms(), ex.host.config.auto_update_interval)
                }),
            },
        };
        {
            let slot = state
                .incarnation
                .containers
                .entry(container.name.clone())
                .or_insert_with(|| ContainerSlot {
                    init: wanted.init,
                    ..Default::default()
                });
            slot.current = Some(instance.clone());
            if restart {
                slot.restart_count += 1;
            }
        }
        let _permit = ex.limits.start().await;
        // The image hold is taken while the intent is recorded.
        let (saved, held) = futures::join!(
            sandbox::save(ex.host, state),
            ex.host.images.hold(&instance.id, &container.image)
        );
        if let Err(err) = saved {
            if held.is_ok() {
                ex.host.images.release(&instance.id).await;
            }
            return Err(err);
        }
        self.unsaved = false;
        let env = PodEnvironment {
            key: ex.key,
            pod: &ready.pod,
            sandbox: &ready.sandbox,
            volumes: &ready.volumes,
            runtime_class: self.spec.runtime_class_name.as_deref(),
            source: self.source.clone(),
            generation: self.origin.generation,
        };
        let started = match held {
            Ok(lowerdirs) => {
                let created =
                    containers::create(ex, &env, &spec, &ensured.record, &lowerdirs, &mut instance)
                        .await;
                if created.is_err() {
                    ex.host.images.release(&instance.id).await;
                }
                created
            }
            Err(err) => Err(PodError::caused(
                Reason::CreateContainerError,
                format!("container {}: taking its image's layers", container.name),
                err,
            )),
        };
        if let Err(err) = started {
            if let Some(slot) = state.incarnation.containers.get_mut(&container.name) {
                slot.current = None;
            }
            return self.fail_start(state, wanted, err).await;
        }
        {
            let slot = state
                .incarnation
                .containers
                .get_mut(&container.name)
                .expect("the slot was made above");
            slot.current = Some(instance.clone());
            slot.waiting = None;
            slot.failures = 0;
            slot.restart_at_ms = None;
        }
        self.save(state).await?;
        ex.host.exits.watch(&instance.id, ex.key);
        let post_start = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|hook| Action::of_hook(hook, container));
        if let Some(action) = post_start {
            let pod_ip = state.incarnation.pod_ip();
            let ran = hooks::post_start(ex, &container.name, &instance.id, &action, pod_ip).await;
            if ran.is_err() {
                // The next round sees the exit and restarts it by the
                // restart policy.
                let stop = plan::Stop {
                    name: container.name.clone(),
                    id: instance.id.clone(),
                    why: "its postStart hook failed".into(),
                    grace: Duration::from_secs(state.incarnation.grace_seconds),
                };
                self.stop(state, &stop).await?;
            }
        }
        Ok(())
    }
}
