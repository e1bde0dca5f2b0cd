//! The pure part of the pod lifecycle, kubelet's `computePodActions`: from
//! the desired pod (its pod-level hash, each container's spec hash, the
//! restart policy) and the observed pod (its record, what the runtime and
//! the probes say about each container, in-progress stops), what to do now
//! ([`PodActions`]): recreate the pod, tear down retired incarnations, make
//! the sandbox, remove, kill, start, restart or replace containers — and
//! how each container and the pod stand for the status. Also how an exit
//! updates a container's restart bookkeeping. No I/O, no clock: `now_ms` is
//! passed in, so every rule is a row in a table of tests.
//!
//! The executor ([`super::sync`]) carries the actions out, observes again
//! and plans again until nothing is left to do now.

use std::collections::BTreeMap;
use std::time::Duration;

use manifests::types::RestartPolicy;

use super::config::PodsConfig;
use super::host::KillRequest;
use super::state::{ContainerSlot, PodState};
use crate::runtime::ExitStatus;
use crate::status::{ContainerState, Phase};

/// What the runtime says about a slot's current instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No instance yet (or it was removed).
    Absent,
    Running,
    /// The runtime is still creating it (after an agent crash mid-create).
    Creating,
    Exited(ExitStatus),
}

/// What to do with one container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Running as wanted.
    Keep,
    /// Wait for the runtime to finish creating it.
    Wait,
    /// No instance: make one.
    Start,
    /// Running an outdated spec: pull the new image, stop it, start anew.
    Replace,
    /// Exited and due for a restart now.
    Restart,
    /// Exited (or failed to start); restart at this Unix time in ms.
    Backoff { at_ms: u64 },
    /// Exited and stays so (restart policy).
    Done,
    /// An init container that completed in an earlier sync.
    Completed,
    /// Waits for an earlier init container (`Waiting` for a later init
    /// container, `PodInitializing` for an app container).
    Blocked { reason: &'static str },
    /// Running, but a liveness or startup probe failed: stop it; it then
    /// restarts by the restart policy.
    Kill {
        why: String,
        grace: Option<Duration>,
    },
}

/// How often a container a shim is still making is looked at again. Its
/// maker may be gone (a sync cut short by a newer version of the pod
/// while the runtime created it): no one then waits on that shim, and no
/// exit watch is set for an instance not known to be made, so the pod
/// polls, as the kubelet's PLEG relists every second.
pub const CREATING_RECHECK_MS: u64 = 1_000;

/// Whether a container that exited with `exit_code` is started again.
pub fn restarts(policy: RestartPolicy, init: bool, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Never => false,
        // Init containers run to completion: only a failure repeats them.
        RestartPolicy::Always if !init => true,
        RestartPolicy::Always | RestartPolicy::OnFailure => exit_code != 0,
    }
}

/// The step for one container.
pub fn decide(
    slot: &ContainerSlot,
    wanted_hash: &str,
    observed: &Observed,
    policy: RestartPolicy,
    now_ms: u64,
) -> Step {
    let outdated = slot
        .current
        .as_ref()
        .is_some_and(|i| i.spec_hash != wanted_hash);
    let backoff_applies = slot
        .backoff_hash
        .as_deref()
        .is_none_or(|hash| hash == wanted_hash);
    let after_backoff = |step: Step| match slot.restart_at_ms {
        Some(at_ms) if at_ms > now_ms && backoff_applies => Step::Backoff { at_ms },
        _ => step,
    };
    match observed {
        Observed::Absent => after_backoff(Step::Start),
        Observed::Creating => Step::Wait,
        // Its replacement failed (the new image could not be had: a pull
        // refused for disk space, a registry error): the old instance runs
        // on until the back-off ends, rather than retrying at once.
        Observed::Running if outdated => after_backoff(Step::Replace),
        Observed::Running => Step::Keep,
        // A new spec deserves a fresh start, whatever the old one did.
        Observed::Exited(_) if outdated => Step::Restart,
        Observed::Exited(exit) => {
            if restarts(policy, slot.init, exit.exit_code) {
                after_backoff(Step::Restart)
            } else {
                Step::Done
            }
        }
    }
}

/// Records the exit of the slot's current instance once: its last state,
/// the crash count and when it may restart. Returns the back-off delay if
/// the exit was new.
pub fn record_exit(
    slot: &mut ContainerSlot,
    exit: &ExitStatus,
    reason: Option<&str>,
    config: &PodsConfig,
) -> Option<Duration> {
    let instance = slot.current.as_mut()?;
    if instance.exit.is_some() {
        return None;
    }
    instance.exit = Some(exit.clone());
    if slot.backoff_hash.as_deref() != Some(instance.spec_hash.as_str()) {
        slot.crash_count = 0;
        slot.backoff_hash = Some(instance.spec_hash.clone());
    }
    let ran_for = exit
        .started_at_ns
        .map(|started| Duration::from_nanos(exit.finished_at_ns.saturating_sub(started)));
    slot.crash_count = config.crashes_after(slot.crash_count, ran_for);
    let delay = config.delay(slot.crash_count);
    slot.restart_at_ms = Some(exit.finished_at_ns / 1_000_000 + millis(delay));
    slot.backoff_ms = Some(millis(delay));
    slot.last_state = Some(terminated(exit, reason));
    Some(delay)
}

/// Records a failure to make an instance of spec `spec_hash` (image pull,
/// config, runtime): retried after a back-off like a crash. Returns the
/// delay.
pub fn record_failure(
    slot: &mut ContainerSlot,
    spec_hash: &str,
    reason: &str,
    message: String,
    config: &PodsConfig,
    now_ms: u64,
) -> Duration {
    if slot.backoff_hash.as_deref() != Some(spec_hash) {
        slot.failures = 0;
        slot.backoff_hash = Some(spec_hash.to_string());
    }
    slot.failures = slot.failures.saturating_add(1);
    let delay = config.delay(slot.failures);
    slot.restart_at_ms = Some(now_ms + millis(delay));
    slot.backoff_ms = Some(millis(delay));
    slot.waiting = Some((reason.to_string(), message));
    delay
}

/// A container state for an instance that ended.
pub fn terminated(exit: &ExitStatus, reason: Option<&str>) -> ContainerState {
    ContainerState::Terminated {
        exit_code: exit.exit_code,
        signal: exit.signal,
        reason: reason.unwrap_or(exit.reason()).to_string(),
        message: exit.start_error.clone().unwrap_or_default(),
        started_at: exit.started_at.clone(),
        finished_at: exit.finished_at.clone(),
    }
}

pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One app container as the phase sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    /// Never started in this incarnation.
    NotStarted,
    Running,
    /// Exited; will start again (back-off, or due now).
    Restarting,
    /// Exited for good.
    Finished {
        success: bool,
    },
}

/// The pod's phase, as Kubernetes defines it.
pub fn phase(init_failed_for_good: bool, init_done: bool, apps: &[AppState]) -> Phase {
    if init_failed_for_good {
        return Phase::Failed;
    }
    if !init_done || apps.is_empty() {
        return Phase::Pending;
    }
    if apps.iter().all(|a| matches!(a, AppState::Finished { .. })) {
        return if apps
            .iter()
            .all(|a| matches!(a, AppState::Finished { success: true }))
        {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
    }
    if apps.contains(&AppState::NotStarted) {
        Phase::Pending
    } else {
        Phase::Running
    }
}

/// One container the pod wants, in the order they run (init containers
/// first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub init: bool,
    /// Hash of its container-level spec ([`super::hash::container_level`]).
    pub hash: String,
}

/// The desired pod as the planner needs it.
#[derive(Debug, Clone, Copy)]
pub struct DesiredPod<'a> {
    /// Hash of the pod-level fields ([`super::hash::pod_level`]).
    pub pod_hash: &'a str,
    pub containers: &'a [Wanted],
    pub policy: RestartPolicy,
    /// `terminationGracePeriodSeconds`.
    pub grace: Duration,
}

/// What the runtime and the probes say about a container's current
/// instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub observed: Observed,
    /// As its probes say (true without a readiness probe).
    pub ready: bool,
    pub kill: Option<KillRequest>,
    /// It runs a stored image while its tag now points elsewhere (it was
    /// started while the registry was out of reach): replace it.
    pub superseded: bool,
}

impl ContainerView {
    pub fn absent() -> Self {
        Self {
            observed: Observed::Absent,
            ready: false,
            kill: None,
            superseded: false,
        }
    }
}

/// The observed pod: its record (exits already recorded in it), each
/// current instance by container name, and stops in progress.
#[derive(Debug, Clone, Copy)]
pub struct PodView<'a> {
    pub state: &'a PodState,
    /// Whether the current incarnation's namespaces still exist (only
    /// meaningful once its sandbox was made).
    pub sandbox_alive: bool,
    pub containers: &'a BTreeMap<String, ContainerView>,
    /// Container id → Unix ms at which its stop in progress sends SIGKILL:
    /// a later stop never waits longer.
    pub stop_deadlines: &'a BTreeMap<String, u64>,
    pub now_ms: u64,
}

/// The pod-level step of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStep {
    /// Make a new incarnation: every image first, then the current one is
    /// retired (a pod-level field changed).
    Recreate { why: &'static str },
    /// The incarnation's namespaces are gone (the host rebooted, someone
    /// removed them): make its sandbox again under the same uid — the same
    /// network lease, so the same address — and start its containers
    /// afresh, init containers first, without a back-off.
    RebuildSandbox,
    /// Tear down retired incarnations before the new one is set up: they
    /// may hold its host ports.
    TeardownRetired,
    /// Make (or refresh) the sandbox, then act on the containers.
    Run,
    /// The pod is no longer wanted: stop every container with these grace
    /// periods (by container id) and remove everything.
    Terminate { grace: BTreeMap<String, Duration> },
}

/// A container to stop while the pod runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub name: String,
    pub id: String,
    pub why: String,
    pub grace: Duration,
}

/// How a container gets its next instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// Its first instance in this incarnation.
    Start,
    /// After its previous instance exited.
    Restart,
    /// Its spec changed: pull the new image, stop the old instance, start.
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub name: String,
    pub kind: StartKind,
}

/// What a sync does now, and how the pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodActions {
    pub step: PodStep,
    /// Pull every image before the sandbox is made (none exists yet: a pod
    /// that cannot run gets no network).
    pub images_first: bool,
    /// Containers that left the spec: stop and remove.
    pub remove: Vec<Stop>,
    /// Containers whose liveness or startup probe failed.
    pub kill: Vec<Stop>,
    pub start: Vec<Start>,
    /// Every init container completed: app containers may start.
    pub init_done: bool,
    /// Every wanted container's step, in order (for the status).
    pub steps: Vec<(String, Step)>,
    pub phase: Phase,
    /// The earliest back-off that ends: sync again then.
    pub wake_at_ms: Option<u64>,
}

impl PodActions {
    fn new(step: PodStep) -> Self {
        Self {
            step,
            images_first: false,
            remove: Vec::new(),
            kill: Vec::new(),
            start: Vec::new(),
            init_done: false,
            steps: Vec::new(),
            phase: Phase::Pending,
            wake_at_ms: None,
        }
    }

    /// Nothing to do now: the sync reports and waits.
    pub fn is_idle(&self) -> bool {
        self.step == PodStep::Run
            && self.remove.is_empty()
            && self.kill.is_empty()
            && self.start.is_empty()
            && !self.init_done
    }
}

/// The grace period for stopping container `id`: `wanted`, but never past a
/// stop of it already in progress.
pub fn stop_grace(view: &PodView<'_>, id: &str, wanted: Duration) -> Duration {
    match view.stop_deadlines.get(id) {
        Some(deadline) => wanted.min(Duration::from_millis(deadline.saturating_sub(view.now_ms))),
        None => wanted,
    }
}

/// kubelet's `computePodActions` (see the module docs). `desired` is `None`
/// once the pod is deleted.
pub fn compute(desired: Option<&DesiredPod<'_>>, view: &PodView<'_>) -> PodActions {
    let state = view.state;
    let Some(desired) = desired else {
        let pod_grace = Duration::from_secs(state.incarnation.grace_seconds);
        let grace = state
            .incarnations()
            .flat_map(|incarnation| incarnation.container_ids())
            .map(|id| {
                let grace = stop_grace(view, &id, pod_grace);
                (id, grace)
            })
            .collect();
        return PodActions::new(PodStep::Terminate { grace });
    };
    let incarnation = &state.incarnation;
    if incarnation.pod_hash != desired.pod_hash {
        return PodActions::new(PodStep::Recreate {
            why: "a pod-level field changed",
        });
    }
    if incarnation.sandbox_ready && !view.sandbox_alive {
        return PodActions::new(PodStep::RebuildSandbox);
    }
    if !state.retired.is_empty() {
        return PodActions::new(PodStep::TeardownRetired);
    }
    let mut actions = PodActions::new(PodStep::Run);
    actions.images_first = !incarnation.sandbox_ready;
    let absent = ContainerView::absent();
    let view_of = |name: &str| view.containers.get(name).unwrap_or(&absent);

    // Containers that left the spec (init containers cannot: that changes
    // the pod-level hash).
    for (name, slot) in &incarnation.containers {
        if desired.containers.iter().any(|w| &w.name == name) {
            continue;
        }
        if let Some(instance) = &slot.current {
            actions.remove.push(Stop {
                name: name.clone(),
                id: instance.id.clone(),
                why: "it was removed from the pod".into(),
                grace: stop_grace(view, &instance.id, desired.grace),
            });
        }
    }

    let mut blocked: Option<(&'static str, &'static str)> = None;
    let mut init_failed = false;
    let mut all_init_succeeded = true;
    let mut apps = Vec::new();
    for wanted in desired.containers {
        let slot = incarnation.containers.get(&wanted.name);
        let container = view_of(&wanted.name);
        let step = if wanted.init && incarnation.init_done {
            Step::Completed
        } else if let Some((init_reason, app_reason)) = blocked {
            Step::Blocked {
                reason: if wanted.init { init_reason } else { app_reason },
            }
        } else if !wanted.init && !incarnation.init_done {
            // Every init container succeeded in this plan: the app
            // containers start once that is recorded.
            Step::Blocked {
                reason: "PodInitializing",
            }
        } else {
            container_step(desired, wanted, slot, container, view)
        };
        if wanted.init && !incarnation.init_done {
            let succeeded = matches!(&step, Step::Done)
                && matches!(&container.observed, Observed::Exited(e) if e.exit_code == 0);
            if !succeeded {
                all_init_succeeded = false;
                if blocked.is_none() {
                    init_failed = matches!(step, Step::Done);
                    blocked = Some(("Waiting", "PodInitializing"));
                }
            }
        }
        match &step {
            Step::Start | Step::Restart | Step::Replace => actions.start.push(Start {
                name: wanted.name.clone(),
                kind: match step {
                    Step::Start => StartKind::Start,
                    Step::Restart => StartKind::Restart,
                    _ => StartKind::Replace,
                },
            }),
            Step::Kill { why, grace } => {
                if let Some(instance) = slot.and_then(|s| s.current.as_ref()) {
                    actions.kill.push(Stop {
                        name: wanted.name.clone(),
                        id: instance.id.clone(),
                        why: why.clone(),
                        grace: stop_grace(view, &instance.id, grace.unwrap_or(desired.grace)),
                    });
                }
            }
            Step::Backoff { at_ms } => {
                actions.wake_at_ms = Some(actions.wake_at_ms.map_or(*at_ms, |t| t.min(*at_ms)));
            }
            Step::Wait => {
                let at_ms = view.now_ms + CREATING_RECHECK_MS;
                actions.wake_at_ms = Some(actions.wake_at_ms.map_or(at_ms, |t| t.min(at_ms)));
            }
            _ => {}
        }
        if !wanted.init {
            apps.push(app_state(&step, slot, container));
        }
        actions.steps.push((wanted.name.clone(), step));
    }
    let has_init = desired.containers.iter().any(|w| w.init);
    actions.init_done = !incarnation.init_done && (all_init_succeeded || !has_init);
    let init_done = incarnation.init_done || actions.init_done;
    actions.phase = phase(init_failed, init_done, &apps);
    actions
}

/// The step of one container whose turn it is.
fn container_step(
    desired: &DesiredPod<'_>,
    wanted: &Wanted,
    slot: Option<&ContainerSlot>,
    view: &ContainerView,
    pod: &PodView<'_>,
) -> Step {
    let empty = ContainerSlot {
        init: wanted.init,
        ..Default::default()
    };
    let slot = slot.unwrap_or(&empty);
    let step = decide(
        slot,
        &wanted.hash,
        &view.observed,
        desired.policy,
        pod.now_ms,
    );
    match (&step, &view.kill) {
        (Step::Keep, _) if view.superseded => Step::Replace,
        // A replacement stops it anyway; a kill would restart the old spec.
        (Step::Keep, Some(kill)) => Step::Kill {
            why: kill.why.clone(),
            grace: kill.grace,
        },
        _ => step,
    }
}

/// How the phase sees an app container.
fn app_state(step: &Step, slot: Option<&ContainerSlot>, view: &ContainerView) -> AppState {
    let ran_before = slot.is_some_and(|s| s.current.is_some() || s.restart_count > 0);
    match step {
        Step::Keep | Step::Wait | Step::Kill { .. } | Step::Replace => AppState::Running,
        Step::Done | Step::Completed => AppState::Finished {
            success: matches!(&view.observed, Observed::Exited(e) if e.exit_code == 0),
        },
        Step::Backoff { .. } | Step::Restart if ran_before => AppState::Restarting,
        Step::Backoff { .. } | Step::Restart | Step::Start | Step::Blocked { .. } => {
            AppState::NotStarted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::state::Instance;

    fn exit(code: i32, started_s: u64, finished_s: u64) -> ExitStatus {
        ExitStatus {
            pid: Some(1),
            exit_code: code,
            signal: None,
            oom_killed: false,
            started_at: Some("s".into()),
            started_at_ns: Some(started_s * 1_000_000_000),
            finished_at: "f".into(),
            finished_at_ns: finished_s * 1_000_000_000,
            start_error: None,
        }
    }

    fn slot(hash: &str, init: bool) -> ContainerSlot {
        ContainerSlot {
            init,
            current: Some(Instance {
                id: "c".into(),
                instance: 0,
                spec_hash: hash.into(),
                image: "i".into(),
                image_digest: None,
                handler: None,
                created: true,
                pid: Some(1),
                started_at: None,
                warnings: vec![],
                exit: None,
                pre_stop: None,
                recheck_at_ms: None,
            }),
            ..Default::default()
        }
    }

    fn config() -> PodsConfig {
        PodsConfig {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_millis(1600),
            backoff_reset: Duration::from_secs(600),
            ..PodsConfig::default()
        }
    }

    #[test]
    fn restart_policies() {
        use RestartPolicy::*;
        assert!(restarts(Always, false, 0));
        assert!(restarts(Always, false, 1));
        assert!(!restarts(OnFailure, false, 0));
        assert!(restarts(OnFailure, false, 2));
        assert!(!restarts(Never, false, 2));
        // Init containers repeat only failures, and never under Never.
        assert!(!restarts(Always, true, 0));
        assert!(restarts(Always, true, 1));
        assert!(!restarts(Never, true, 1));
    }

    #[test]
    fn a_failed_replacement_waits_for_its_back_off_while_the_old_one_runs() {
        let mut s = slot("h1", false);
        s.restart_at_ms = Some(5_000);
        let always = RestartPolicy::Always;
        assert_eq!(
            decide(&s, "h2", &Observed::Running, always, 1_000),
            Step::Backoff { at_ms: 5_000 }
        );
        assert_eq!(
            decide(&s, "h2", &Observed::Running, always, 5_000),
            Step::Replace
        );
        assert_eq!(
            decide(&s, "h1", &Observed::Running, always, 1_000),
            Step::Keep
        );
    }

    #[test]
    fn running_containers_are_kept_unless_their_spec_changed() {
        let s = slot("h1", false);
        let always = RestartPolicy::Always;
        assert_eq!(decide(&s, "h1", &Observed::Running, always, 0), Step::Keep);
        assert_eq!(
            decide(&s, "h2", &Observed::Running, always, 0),
            Step::Replace
        );
        assert_eq!(decide(&s, "h1", &Observed::Creating, always, 0), Step::Wait);
        let empty = ContainerSlot::default();
        assert_eq!(
            decide(&empty, "h1", &Observed::Absent, always, 0),
            Step::Start
        );
    }

    #[test]
    fn crashes_back_off_doubling_and_capping() {
        let c = config();
        let mut s = slot("h", false);
        let mut delays = Vec::new();
        let mut t = 100;
        for _ in 0..6 {
            if let Some(current) = s.current.as_mut() {
                current.exit = None;
            }
            let e = exit(1, t, t + 1);
            let delay = record_exit(&mut s, &e, None, &c).expect("new exit");
            assert_eq!(record_exit(&mut s, &e, None, &c), None, "counted once");
            delays.push(millis(delay));
            let at = s.restart_at_ms.expect("scheduled");
            assert_eq!(at, (t + 1) * 1000 + millis(delay));
            let observed = Observed::Exited(e);
            assert_eq!(
                decide(&s, "h", &observed, RestartPolicy::Always, at - 1),
                Step::Backoff { at_ms: at }
            );
            assert_eq!(
                decide(&s, "h", &observed, RestartPolicy::Always, at),
                Step::Restart
            );
            t += 10;
        }
        assert_eq!(delays, [200, 400, 800, 1600, 1600, 1600]);
        assert!(matches!(
            s.last_state,
            Some(ContainerState::Terminated { exit_code: 1, ref reason, .. }) if reason == "Error"
        ));
    }

    #[test]
    fn a_long_run_resets_the_back_off() {
        let c = config();
        let mut s = slot("h", false);
        s.crash_count = 5;
        record_exit(&mut s, &exit(1, 0, 601), None, &c);
        assert_eq!(s.crash_count, 1);
        assert_eq!(s.backoff_ms, Some(200));
    }

    #[test]
    fn exits_follow_the_restart_policy() {
        let s = slot("h", false);
        let ok = Observed::Exited(exit(0, 0, 1));
        let failed = Observed::Exited(exit(3, 0, 1));
        assert_eq!(
            decide(&s, "h", &ok, RestartPolicy::OnFailure, 0),
            Step::Done
        );
        assert_eq!(
            decide(&s, "h", &failed, RestartPolicy::OnFailure, 0),
            Step::Restart
        );
        assert_eq!(
            decide(&s, "h", &failed, RestartPolicy::Never, 0),
            Step::Done
        );
        assert_eq!(
            decide(&s, "h2", &ok, RestartPolicy::Never, 0),
            Step::Restart,
            "a new spec starts even a finished container"
        );
    }

    #[test]
    fn start_failures_are_retried_after_a_back_off() {
        let c = config();
        let mut s = ContainerSlot::default();
        let delay = record_failure(&mut s, "h", "ImagePullBackOff", "boom".into(), &c, 1000);
        assert_eq!(millis(delay), 200);
        assert_eq!(
            decide(&s, "h", &Observed::Absent, RestartPolicy::Always, 1100),
            Step::Backoff { at_ms: 1200 }
        );
        assert_eq!(
            decide(&s, "h", &Observed::Absent, RestartPolicy::Always, 1200),
            Step::Start
        );
        assert_eq!(
            millis(record_failure(&mut s, "h", "x", "y".into(), &c, 0)),
            400
        );
    }

    #[test]
    fn a_new_spec_is_not_held_by_the_back_off_an_older_one_earned() {
        let c = config();
        let always = RestartPolicy::Always;
        // Spec h1 failed to start four times (a typo in its image name).
        let mut failed = ContainerSlot::default();
        for _ in 0..4 {
            record_failure(&mut failed, "h1", "ErrImagePull", "not found".into(), &c, 0);
        }
        assert_eq!(failed.backoff_ms, Some(1600));
        assert_eq!(
            decide(&failed, "h1", &Observed::Absent, always, 100),
            Step::Backoff { at_ms: 1600 }
        );
        // The fix (h2) starts at once; its own first failure waits the
        // initial delay, not the fifth.
        assert_eq!(
            decide(&failed, "h2", &Observed::Absent, always, 100),
            Step::Start
        );
        let delay = record_failure(&mut failed, "h2", "ErrImagePull", "x".into(), &c, 100);
        assert_eq!(millis(delay), 200);

        // A replacement (h2) that failed holds h2, not the next edit (h3),
        // while the old instance runs on.
        let mut replacing = slot("h1", false);
        record_failure(&mut replacing, "h2", "ErrImagePull", "x".into(), &c, 0);
        let running = Observed::Running;
        assert_eq!(
            decide(&replacing, "h2", &running, always, 100),
            Step::Backoff { at_ms: 200 }
        );
        assert_eq!(
            decide(&replacing, "h3", &running, always, 100),
            Step::Replace
        );

        // Crashes of h1 do not count against h2's first crash.
        let mut crashed = slot("h1", false);
        crashed.crash_count = 4;
        crashed.backoff_hash = Some("h1".into());
        crashed.current.as_mut().expect("an instance").spec_hash = "h2".into();
        let delay = record_exit(&mut crashed, &exit(1, 0, 1), None, &c).expect("new exit");
        assert_eq!(millis(delay), 200);
        assert_eq!(crashed.backoff_hash.as_deref(), Some("h2"));
    }

    #[test]
    fn phases() {
        use AppState::*;
        assert_eq!(phase(false, false, &[NotStarted]), Phase::Pending);
        assert_eq!(phase(true, false, &[NotStarted]), Phase::Failed);
        assert_eq!(phase(false, true, &[Running, NotStarted]), Phase::Pending);
        assert_eq!(phase(false, true, &[Running, Restarting]), Phase::Running);
        assert_eq!(phase(false, true, &[Restarting]), Phase::Running);
        assert_eq!(
            phase(
                false,
                true,
                &[Finished { success: true }, Finished { success: true }]
            ),
            Phase::Succeeded
        );
        assert_eq!(
            phase(
                false,
                true,
                &[Finished { success: true }, Finished { success: false }]
            ),
            Phase::Failed
        );
        assert_eq!(
            phase(false, true, &[Finished { success: false }, Running]),
            Phase::Running
        );
    }
}

/// The pod-level planner as a table: each case is a pod as recorded and
/// observed, what is wanted, and what the plan must say.
#[cfg(test)]
mod compute_tests {
    use super::*;
    use crate::pod::state::{Incarnation, Instance};

    const NOW: u64 = 1_000_000;

    /// One container of the fixture: its name, whether it is an init
    /// container, the spec hash it runs (or ran), and what the runtime says.
    #[derive(Clone)]
    enum Seen {
        /// No instance yet.
        Absent,
        Running,
        Creating,
        Exited(i32),
    }

    #[derive(Clone)]
    struct C {
        name: &'static str,
        init: bool,
        hash: &'static str,
        seen: Seen,
    }

    fn app(name: &'static str, hash: &'static str, seen: Seen) -> C {
        C {
            name,
            init: false,
            hash,
            seen,
        }
    }

    fn init(name: &'static str, hash: &'static str, seen: Seen) -> C {
        C {
            name,
            init: true,
            hash,
            seen,
        }
    }

    struct Fixture {
        state: PodState,
        views: BTreeMap<String, ContainerView>,
        deadlines: BTreeMap<String, u64>,
        alive: bool,
        wanted: Vec<Wanted>,
        policy: RestartPolicy,
        pod_hash: &'static str,
    }

    fn exit(code: i32) -> ExitStatus {
        ExitStatus {
            pid: Some(1),
            exit_code: code,
            signal: None,
            oom_killed: false,
            started_at: None,
            started_at_ns: Some((NOW - 5_000) * 1_000_000),
            finished_at: "f".into(),
            finished_at_ns: (NOW - 1_000) * 1_000_000,
            start_error: None,
        }
    }

    /// A pod whose record holds `running` (names, init flags, hashes and
    /// runtime states), wanting `wanted` (same shape; hash = wanted hash).
    fn fixture(running: &[C], wanted: &[C]) -> Fixture {
        let mut incarnation =
            Incarnation::new(&manifests::types::PodSpec::default(), "pod1", "t".into());
        incarnation.uid = "u1".into();
        incarnation.sandbox_ready = true;
        incarnation.init_done = !wanted.iter().any(|c| c.init);
        let mut views = BTreeMap::new();
        for c in running {
            let current = match c.seen {
                Seen::Absent => None,
                _ => Some(Instance {
                    id: format!("u1-{}-0", c.name),
                    instance: 0,
                    spec_hash: c.hash.into(),
                    image: "i".into(),
                    image_digest: None,
                    handler: None,
                    created: true,
                    pid: Some(1),
                    started_at: None,
                    warnings: vec![],
                    exit: match c.seen {
                        Seen::Exited(code) => Some(exit(code)),
                        _ => None,
                    },
                    pre_stop: None,
                    recheck_at_ms: None,
                }),
            };
            incarnation.containers.insert(
                c.name.to_string(),
                ContainerSlot {
                    init: c.init,
                    current,
                    ..Default::default()
                },
            );
            let observed = match c.seen {
                Seen::Absent => continue,
                Seen::Running => Observed::Running,
                Seen::Creating => Observed::Creating,
                Seen::Exited(code) => Observed::Exited(exit(code)),
            };
            views.insert(
                c.name.to_string(),
                ContainerView {
                    observed,
                    ready: true,
                    kill: None,
                    superseded: false,
                },
            );
        }
        Fixture {
            state: PodState::new("default", "p", incarnation),
            views,
            deadlines: BTreeMap::new(),
            alive: true,
            wanted: wanted
                .iter()
                .map(|c| Wanted {
                    name: c.name.into(),
                    init: c.init,
                    hash: c.hash.into(),
                })
                .collect(),
            policy: RestartPolicy::Always,
            pod_hash: "pod1",
        }
    }

    impl Fixture {
        fn plan(&self) -> PodActions {
            let desired = DesiredPod {
                pod_hash: self.pod_hash,
                containers: &self.wanted,
                policy: self.policy,
                grace: Duration::from_secs(30),
            };
            compute(Some(&desired), &self.view())
        }

        fn deleted(&self) -> PodActions {
            compute(None, &self.view())
        }

        fn view(&self) -> PodView<'_> {
            PodView {
                state: &self.state,
                sandbox_alive: self.alive,
                containers: &self.views,
                stop_deadlines: &self.deadlines,
                now_ms: NOW,
            }
        }

        fn policy(mut self, policy: RestartPolicy) -> Self {
            self.policy = policy;
            self
        }

        fn slot(&mut self, name: &str) -> &mut ContainerSlot {
            self.state
                .incarnation
                .containers
                .get_mut(name)
                .expect("a slot")
        }
    }

    fn starts(actions: &PodActions) -> Vec<(String, StartKind)> {
        actions
            .start
            .iter()
            .map(|s| (s.name.clone(), s.kind))
            .collect()
    }

    fn step_of(actions: &PodActions, name: &str) -> Step {
        actions
            .steps
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .expect("a step")
    }

    type Case = (&'static str, Box<dyn Fn()>);

    fn cases() -> Vec<Case> {
        use RestartPolicy::*;
        use Seen::*;
        let s = |start: &str, kind| (start.to_string(), kind);
        vec![
            (
                "a new pod starts every app container",
                Box::new(move || {
                    let f = fixture(&[], &[app("web", "h1", Absent), app("side", "h2", Absent)]);
                    let a = f.plan();
                    assert_eq!(a.step, PodStep::Run);
                    assert_eq!(
                        starts(&a),
                        [s("web", StartKind::Start), s("side", StartKind::Start)]
                    );
                    assert_eq!(a.phase, Phase::Pending);
                }),
            ),
            (
                "a new pod pulls its images before its sandbox",
                Box::new(move || {
                    let mut f = fixture(&[], &[app("web", "h1", Absent)]);
                    f.state.incarnation.sandbox_ready = false;
                    assert!(f.plan().images_first);
                }),
            ),
            (
                "a running pod as wanted needs nothing",
                Box::new(move || {
                    let f = fixture(&[app("web", "h1", Running)], &[app("web", "h1", Absent)]);
                    let a = f.plan();
                    assert!(a.is_idle(), "{a:?}");
                    assert!(!a.images_first);
                    assert_eq!(a.phase, Phase::Running);
                    assert_eq!(step_of(&a, "web"), Step::Keep);
                }),
            ),
            (
                "a container still being created is waited for",
                Box::new(move || {
                    let f = fixture(&[app("web", "h1", Creating)], &[app("web", "h1", Absent)]);
                    let a = f.plan();
                    assert!(a.is_idle());
                    assert_eq!(step_of(&a, "web"), Step::Wait);
                    assert_eq!(a.phase, Phase::Running);
                    // Nothing else wakes the pod when that shim is done.
                    assert_eq!(a.wake_at_ms, Some(NOW + CREATING_RECHECK_MS));
                }),
            ),
            (
                "a container-level edit replaces only that container",
                Box::new(move || {
                    let f = fixture(
                        &[app("web", "h1", Running), app("side", "h2", Running)],
                        &[app("web", "h1b", Absent), app("side", "h2", Absent)],
                    );
                    let a = f.plan();
                    assert_eq!(a.step, PodStep::Run);
                    assert_eq!(starts(&a), [s("web", StartKind::Replace)]);
                    assert_eq!(step_of(&a, "side"), Step::Keep);
                }),
            ),
            (
                "a pod-level edit recreates the pod",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[app("web", "h1", Absent)]);
                    f.pod_hash = "pod2";
                    assert_eq!(
                        f.plan().step,
                        PodStep::Recreate {
                            why: "a pod-level field changed"
                        }
                    );
                }),
            ),
            (
                "a lost sandbox is made again for the same pod",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[app("web", "h1", Absent)]);
                    f.alive = false;
                    assert_eq!(f.plan().step, PodStep::RebuildSandbox);
                }),
            ),
            (
                "a sandbox not made yet is not lost",
                Box::new(move || {
                    let mut f = fixture(&[], &[app("web", "h1", Absent)]);
                    f.state.incarnation.sandbox_ready = false;
                    f.alive = false;
                    assert_eq!(f.plan().step, PodStep::Run);
                }),
            ),
            (
                "retired incarnations are torn down before anything else",
                Box::new(move || {
                    let mut f = fixture(&[], &[app("web", "h1", Absent)]);
                    let old = f.state.incarnation.clone();
                    f.state.retired.push(old);
                    let a = f.plan();
                    assert_eq!(a.step, PodStep::TeardownRetired);
                    assert!(a.start.is_empty());
                }),
            ),
            (
                "a container that left the spec is stopped with the pod's grace",
                Box::new(move || {
                    let f = fixture(
                        &[app("web", "h1", Running), app("old", "h9", Running)],
                        &[app("web", "h1", Absent)],
                    );
                    let a = f.plan();
                    assert_eq!(a.remove.len(), 1);
                    assert_eq!(a.remove[0].name, "old");
                    assert_eq!(a.remove[0].grace, Duration::from_secs(30));
                    assert!(!a.is_idle());
                }),
            ),
            (
                "Always restarts a container that exited with 0",
                Box::new(move || {
                    let f = fixture(&[app("web", "h1", Exited(0))], &[app("web", "h1", Absent)]);
                    assert_eq!(starts(&f.plan()), [s("web", StartKind::Restart)]);
                }),
            ),
            (
                "Always restarts a container that failed",
                Box::new(move || {
                    let f = fixture(&[app("web", "h1", Exited(2))], &[app("web", "h1", Absent)]);
                    let a = f.plan();
                    assert_eq!(starts(&a), [s("web", StartKind::Restart)]);
                    assert_eq!(a.phase, Phase::Running, "restarting counts as running");
                }),
            ),
            (
                "OnFailure leaves a success alone: Succeeded",
                Box::new(move || {
                    let f = fixture(&[app("web", "h1", Exited(0))], &[app("web", "h1", Absent)])
                        .policy(OnFailure);
                    let a = f.plan();
                    assert!(a.is_idle());
                    assert_eq!(step_of(&a, "web"), Step::Done);
                    assert_eq!(a.phase, Phase::Succeeded);
                }),
            ),
            (
                "OnFailure restarts a failure",
                Box::new(move || {
                    let f = fixture(&[app("web", "h1", Exited(1))], &[app("web", "h1", Absent)])
                        .policy(OnFailure);
                    assert_eq!(starts(&f.plan()), [s("web", StartKind::Restart)]);
                }),
            ),
            (
                "Never leaves a failure alone: Failed",
                Box::new(move || {
                    let f = fixture(&[app("web", "h1", Exited(1))], &[app("web", "h1", Absent)])
                        .policy(Never);
                    let a = f.plan();
                    assert!(a.is_idle());
                    assert_eq!(a.phase, Phase::Failed);
                }),
            ),
            (
                "one container done and one running: Running",
                Box::new(move || {
                    let f = fixture(
                        &[app("job", "h1", Exited(0)), app("web", "h2", Running)],
                        &[app("job", "h1", Absent), app("web", "h2", Absent)],
                    )
                    .policy(OnFailure);
                    assert_eq!(f.plan().phase, Phase::Running);
                }),
            ),
            (
                "a crash inside its back-off waits and wakes at its end",
                Box::new(move || {
                    let mut f =
                        fixture(&[app("web", "h1", Exited(1))], &[app("web", "h1", Absent)]);
                    f.slot("web").restart_at_ms = Some(NOW + 5_000);
                    let a = f.plan();
                    assert!(a.is_idle());
                    assert_eq!(step_of(&a, "web"), Step::Backoff { at_ms: NOW + 5_000 });
                    assert_eq!(a.wake_at_ms, Some(NOW + 5_000));
                }),
            ),
            (
                "a crash whose back-off ended restarts",
                Box::new(move || {
                    let mut f =
                        fixture(&[app("web", "h1", Exited(1))], &[app("web", "h1", Absent)]);
                    f.slot("web").restart_at_ms = Some(NOW);
                    assert_eq!(starts(&f.plan()), [s("web", StartKind::Restart)]);
                }),
            ),
            (
                "a failed start waits out its back-off and then starts",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Absent)], &[app("web", "h1", Absent)]);
                    f.slot("web").restart_at_ms = Some(NOW + 1);
                    assert!(f.plan().is_idle());
                    f.slot("web").restart_at_ms = Some(NOW - 1);
                    assert_eq!(starts(&f.plan()), [s("web", StartKind::Start)]);
                }),
            ),
            (
                "an edit of a container in back-off starts it at once",
                Box::new(move || {
                    let mut f =
                        fixture(&[app("web", "h1", Exited(1))], &[app("web", "h2", Absent)]);
                    f.slot("web").restart_at_ms = Some(NOW + 60_000);
                    assert_eq!(starts(&f.plan()), [s("web", StartKind::Restart)]);
                }),
            ),
            (
                "an edit starts a finished container under Never",
                Box::new(move || {
                    let f = fixture(&[app("web", "h1", Exited(0))], &[app("web", "h2", Absent)])
                        .policy(Never);
                    assert_eq!(starts(&f.plan()), [s("web", StartKind::Restart)]);
                }),
            ),
            (
                "init containers run one at a time, the first first",
                Box::new(move || {
                    let f = fixture(
                        &[],
                        &[
                            init("a", "i1", Absent),
                            init("b", "i2", Absent),
                            app("web", "h1", Absent),
                        ],
                    );
                    let a = f.plan();
                    assert_eq!(starts(&a), [s("a", StartKind::Start)]);
                    assert_eq!(step_of(&a, "b"), Step::Blocked { reason: "Waiting" });
                    assert_eq!(
                        step_of(&a, "web"),
                        Step::Blocked {
                            reason: "PodInitializing"
                        }
                    );
                    assert_eq!(a.phase, Phase::Pending);
                }),
            ),
            (
                "a running init container holds the next one",
                Box::new(move || {
                    let f = fixture(
                        &[init("a", "i1", Running)],
                        &[
                            init("a", "i1", Absent),
                            init("b", "i2", Absent),
                            app("web", "h1", Absent),
                        ],
                    );
                    let a = f.plan();
                    assert!(a.is_idle());
                    assert_eq!(step_of(&a, "b"), Step::Blocked { reason: "Waiting" });
                }),
            ),
            (
                "a completed init container lets the next one start",
                Box::new(move || {
                    let f = fixture(
                        &[init("a", "i1", Exited(0))],
                        &[
                            init("a", "i1", Absent),
                            init("b", "i2", Absent),
                            app("web", "h1", Absent),
                        ],
                    );
                    assert_eq!(starts(&f.plan()), [s("b", StartKind::Start)]);
                }),
            ),
            (
                "every init container done marks init done, apps wait one round",
                Box::new(move || {
                    let f = fixture(
                        &[init("a", "i1", Exited(0)), init("b", "i2", Exited(0))],
                        &[
                            init("a", "i1", Absent),
                            init("b", "i2", Absent),
                            app("web", "h1", Absent),
                        ],
                    );
                    let a = f.plan();
                    assert!(a.init_done);
                    assert!(a.start.is_empty());
                    assert!(!a.is_idle());
                }),
            ),
            (
                "after init, completed init containers stay completed and apps start",
                Box::new(move || {
                    let mut f = fixture(
                        &[init("a", "i1", Exited(0))],
                        &[init("a", "i1", Absent), app("web", "h1", Absent)],
                    );
                    f.state.incarnation.init_done = true;
                    let a = f.plan();
                    assert_eq!(step_of(&a, "a"), Step::Completed);
                    assert_eq!(starts(&a), [s("web", StartKind::Start)]);
                    assert!(!a.init_done);
                }),
            ),
            (
                "a failed init container is retried under Always",
                Box::new(move || {
                    let f = fixture(
                        &[init("a", "i1", Exited(1))],
                        &[init("a", "i1", Absent), app("web", "h1", Absent)],
                    );
                    let a = f.plan();
                    assert_eq!(starts(&a), [s("a", StartKind::Restart)]);
                    assert_eq!(a.phase, Phase::Pending);
                }),
            ),
            (
                "a failed init container under Never fails the pod",
                Box::new(move || {
                    let f = fixture(
                        &[init("a", "i1", Exited(1))],
                        &[init("a", "i1", Absent), app("web", "h1", Absent)],
                    )
                    .policy(Never);
                    let a = f.plan();
                    assert!(a.is_idle());
                    assert_eq!(a.phase, Phase::Failed);
                    assert_eq!(
                        step_of(&a, "web"),
                        Step::Blocked {
                            reason: "PodInitializing"
                        }
                    );
                }),
            ),
            (
                "a successful init container is not repeated under Always",
                Box::new(move || {
                    let f = fixture(
                        &[init("a", "i1", Exited(0)), init("b", "i2", Running)],
                        &[
                            init("a", "i1", Absent),
                            init("b", "i2", Absent),
                            app("web", "h1", Absent),
                        ],
                    );
                    let a = f.plan();
                    assert!(a.start.is_empty(), "{a:?}");
                    assert_eq!(step_of(&a, "a"), Step::Done);
                }),
            ),
            (
                "a failed liveness probe kills the container with the probe's grace",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[app("web", "h1", Absent)]);
                    f.views.get_mut("web").expect("view").kill = Some(KillRequest {
                        why: "it failed its liveness probe".into(),
                        grace: Some(Duration::from_secs(5)),
                    });
                    let a = f.plan();
                    assert_eq!(a.kill.len(), 1);
                    assert_eq!(a.kill[0].grace, Duration::from_secs(5));
                    assert_eq!(a.kill[0].why, "it failed its liveness probe");
                    assert!(a.start.is_empty());
                }),
            ),
            (
                "a kill without its own grace uses the pod's",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[app("web", "h1", Absent)]);
                    f.views.get_mut("web").expect("view").kill = Some(KillRequest {
                        why: "it failed its startup probe".into(),
                        grace: None,
                    });
                    assert_eq!(f.plan().kill[0].grace, Duration::from_secs(30));
                }),
            ),
            (
                "a kill request for a container being replaced is moot",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[app("web", "h2", Absent)]);
                    f.views.get_mut("web").expect("view").kill = Some(KillRequest {
                        why: "liveness".into(),
                        grace: None,
                    });
                    let a = f.plan();
                    assert!(a.kill.is_empty());
                    assert_eq!(starts(&a), [s("web", StartKind::Replace)]);
                }),
            ),
            (
                "a container that is not ready still runs",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[app("web", "h1", Absent)]);
                    f.views.get_mut("web").expect("view").ready = false;
                    let a = f.plan();
                    assert!(a.is_idle());
                    assert_eq!(a.phase, Phase::Running);
                }),
            ),
            (
                "deleting a running pod stops every container with the pod's grace",
                Box::new(move || {
                    let f = fixture(
                        &[app("web", "h1", Running), app("side", "h2", Running)],
                        &[],
                    );
                    let PodStep::Terminate { grace } = f.deleted().step else {
                        panic!("terminate")
                    };
                    assert_eq!(grace.len(), 2);
                    assert!(grace.values().all(|g| *g == Duration::from_secs(30)));
                }),
            ),
            (
                "deleting during a graceful stop keeps the shorter remaining grace",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[]);
                    f.deadlines.insert("u1-web-0".into(), NOW + 12_000);
                    let PodStep::Terminate { grace } = f.deleted().step else {
                        panic!("terminate")
                    };
                    assert_eq!(grace["u1-web-0"], Duration::from_secs(12));
                }),
            ),
            (
                "deleting while being recreated stops both incarnations",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[]);
                    let mut old = f.state.incarnation.clone();
                    old.uid = "u0".into();
                    for slot in old.containers.values_mut() {
                        if let Some(i) = slot.current.as_mut() {
                            i.id = "u0-web-0".into();
                        }
                    }
                    f.state.retired.push(old);
                    let PodStep::Terminate { grace } = f.deleted().step else {
                        panic!("terminate")
                    };
                    assert_eq!(grace.keys().collect::<Vec<_>>(), ["u0-web-0", "u1-web-0"]);
                }),
            ),
            (
                "deleting during a pull or before any container stops nothing",
                Box::new(move || {
                    let f = fixture(&[], &[]);
                    let PodStep::Terminate { grace } = f.deleted().step else {
                        panic!("terminate")
                    };
                    assert!(grace.is_empty());
                }),
            ),
            (
                "a replacement during a stop in progress keeps the nearer deadline",
                Box::new(move || {
                    let mut f = fixture(
                        &[app("web", "h1", Running), app("old", "h9", Running)],
                        &[app("web", "h1", Absent)],
                    );
                    f.deadlines.insert("u1-old-0".into(), NOW + 3_000);
                    assert_eq!(f.plan().remove[0].grace, Duration::from_secs(3));
                }),
            ),
            (
                "a deadline already passed leaves no grace",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[]);
                    f.deadlines.insert("u1-web-0".into(), NOW - 1);
                    let PodStep::Terminate { grace } = f.deleted().step else {
                        panic!("terminate")
                    };
                    assert_eq!(grace["u1-web-0"], Duration::ZERO);
                }),
            ),
            (
                "a container whose tag moved while offline is replaced",
                Box::new(move || {
                    let mut f = fixture(&[app("web", "h1", Running)], &[app("web", "h1", Absent)]);
                    f.views.get_mut("web").expect("view").superseded = true;
                    assert_eq!(starts(&f.plan()), [s("web", StartKind::Replace)]);
                }),
            ),
            (
                "the earliest back-off wakes the pod",
                Box::new(move || {
                    let mut f = fixture(
                        &[app("a", "h1", Exited(1)), app("b", "h2", Exited(1))],
                        &[app("a", "h1", Absent), app("b", "h2", Absent)],
                    );
                    f.slot("a").restart_at_ms = Some(NOW + 9_000);
                    f.slot("b").restart_at_ms = Some(NOW + 4_000);
                    assert_eq!(f.plan().wake_at_ms, Some(NOW + 4_000));
                }),
            ),
        ]
    }

    #[test]
    fn the_planner_table() {
        let cases = cases();
        assert!(cases.len() >= 30, "{} cases", cases.len());
        let mut failed = Vec::new();
        for (name, case) in cases {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)).is_err() {
                failed.push(name);
            }
        }
        assert!(failed.is_empty(), "failed cases: {failed:#?}");
    }
}
