//! The pod's status as `berth ps` and `berth inspect` show it: phase, a
//! one-line message, and [`PodDetails`] with every container's state, last
//! state, restarts, exit code, reason, ids and image digest — built from
//! the plan of the sync's last round ([`build`]), a pure function.

use std::collections::BTreeMap;
use std::time::Duration;

use manifests::types as api;

use super::plan::{ContainerView, Observed, PodActions, Step};
use super::state::{ContainerSlot, PodState};
use crate::status::{ContainerDetails, ContainerState, Phase, PodDetails};

/// What a sync reports for its pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodReport {
    pub phase: Phase,
    /// One line for `berth status`; never a secret value.
    pub message: String,
    /// `None` keeps the details reported before (nothing is known yet).
    pub details: Option<PodDetails>,
    /// Unix ms of the earliest scheduled restart: sync again then.
    pub wake_at_ms: Option<u64>,
    /// The image that stopped the sync because it could not be had before
    /// the pod has a sandbox to run in: the pod worker retries after a
    /// back-off that grows while the same image keeps failing (the
    /// kubelet's ImagePullBackOff, keyed by pod and image), not after
    /// `wake_at_ms`.
    pub pull_failed: Option<String>,
}

/// Container states gathered from a plan.
#[derive(Debug, Default)]
struct Report {
    init_containers: Vec<ContainerDetails>,
    containers: Vec<ContainerDetails>,
    /// The first container that needs the user's attention, as a message.
    problem: Option<String>,
}

fn details(
    slot: Option<&ContainerSlot>,
    container: &api::Container,
    state: ContainerState,
    ready: bool,
) -> ContainerDetails {
    let current = slot.and_then(|s| s.current.as_ref());
    let running = matches!(state, ContainerState::Running { .. });
    let last_state = slot
        .and_then(|s| s.last_state.clone())
        .filter(|last| !matches!(state, ContainerState::Terminated { .. }) || last != &state);
    ContainerDetails {
        name: container.name.clone(),
        image: container.image.clone(),
        image_digest: current.and_then(|i| i.image_digest.clone()),
        container_id: current.filter(|i| i.created).map(|i| i.id.clone()),
        runtime: current.and_then(|i| i.handler.clone()),
        state,
        last_state: if matches!(
            last_state,
            Some(ContainerState::Terminated { .. }) if !running
        ) && slot.is_some_and(|s| s.restart_count == 0)
        {
            None
        } else {
            last_state
        },
        restart_count: slot.map_or(0, |s| s.restart_count),
        // As its probes say (see `pod::probes`); only a running one.
        ready: running && ready,
    }
}

fn waiting(reason: &str, message: String) -> ContainerState {
    ContainerState::Waiting {
        reason: reason.to_string(),
        message,
    }
}

/// The report of a sync whose last plan was `actions`, for the pod with
/// `spec` whose record is `state`; `views` are what the runtime and probes
/// said of each container in that round.
pub fn build(
    state: &PodState,
    spec: &api::PodSpec,
    actions: &PodActions,
    views: &BTreeMap<String, ContainerView>,
    now_ms: u64,
) -> PodReport {
    let mut report = Report::default();
    let absent = ContainerView::absent();
    let by_name: BTreeMap<&str, (&api::Container, bool)> = spec
        .init_containers
        .iter()
        .map(|c| (c.name.as_str(), (c, true)))
        .chain(
            spec.containers
                .iter()
                .map(|c| (c.name.as_str(), (c, false))),
        )
        .collect();
    for (name, step) in &actions.steps {
        let Some(&(container, init)) = by_name.get(name.as_str()) else {
            continue;
        };
        let slot = state.incarnation.containers.get(name);
        let view = views.get(name).unwrap_or(&absent);
        report.add(container, init, slot, step, view, now_ms);
    }
    let phase = actions.phase;
    let running = report
        .containers
        .iter()
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .count();
    let total = spec.containers.len();
    let message = match (&report.problem, phase) {
        (Some(problem), _) => problem.clone(),
        (None, Phase::Succeeded) => "completed".to_string(),
        (None, Phase::Failed) => failure_message(&report.init_containers, &report.containers),
        (None, _) if !state.incarnation.init_done => {
            init_message(&report.init_containers, spec.init_containers.len())
        }
        (None, _) => running_message(&report.containers, running, total),
    };
    PodReport {
        phase,
        message,
        details: Some(pod_details(state, report)),
        wake_at_ms: actions.wake_at_ms,
        pull_failed: None,
    }
}

impl Report {
    fn add(
        &mut self,
        container: &api::Container,
        init: bool,
        slot: Option<&ContainerSlot>,
        step: &Step,
        view: &ContainerView,
        now_ms: u64,
    ) {
        let state = match step {
            Step::Keep | Step::Wait | Step::Kill { .. } | Step::Replace => {
                match (&view.observed, slot.and_then(|s| s.current.as_ref())) {
                    (Observed::Running, Some(instance)) => ContainerState::Running {
                        started_at: instance.started_at.clone().unwrap_or_default(),
                        pid: instance.pid.unwrap_or(0),
                    },
                    _ => waiting("ContainerCreating", String::new()),
                }
            }
            Step::Done => slot
                .and_then(|s| s.current.as_ref())
                .and_then(|i| i.exit.as_ref())
                .map(|exit| super::plan::terminated(exit, None))
                .or_else(|| slot.and_then(|s| s.last_state.clone()))
                .unwrap_or_else(|| waiting("Unknown", String::new())),
            Step::Completed => slot
                .and_then(|s| s.current.as_ref())
                .and_then(|i| i.exit.as_ref())
                .map(|exit| super::plan::terminated(exit, None))
                .unwrap_or_else(|| waiting("Completed", String::new())),
            Step::Blocked { reason } => waiting(reason, String::new()),
            Step::Backoff { at_ms } => {
                let waiting = self.backoff(container, slot, *at_ms, now_ms);
                // A replacement that failed: the old instance still runs.
                match (&view.observed, slot.and_then(|s| s.current.as_ref())) {
                    (Observed::Running, Some(instance)) => ContainerState::Running {
                        started_at: instance.started_at.clone().unwrap_or_default(),
                        pid: instance.pid.unwrap_or(0),
                    },
                    _ => waiting,
                }
            }
            Step::Start | Step::Restart => match slot.and_then(|s| s.waiting.clone()) {
                Some((reason, message)) => {
                    self.problem(format!("{}: {reason}: {message}", container.name));
                    waiting(&reason, message)
                }
                None => waiting("ContainerCreating", String::new()),
            },
        };
        let entry = details(slot, container, state, view.ready);
        if init {
            self.init_containers.push(entry);
        } else {
            self.containers.push(entry);
        }
    }

    fn problem(&mut self, message: String) {
        self.problem.get_or_insert(message);
    }

    fn backoff(
        &mut self,
        container: &api::Container,
        slot: Option<&ContainerSlot>,
        at_ms: u64,
        now_ms: u64,
    ) -> ContainerState {
        let left = Duration::from_millis(at_ms.saturating_sub(now_ms));
        let delay = Duration::from_millis(slot.and_then(|s| s.backoff_ms).unwrap_or(0));
        let in_words = manifests::duration::format(round(left));
        let (reason, message) = match slot.and_then(|s| s.waiting.clone()) {
            Some((reason, message)) => (reason, message),
            None => (
                "CrashLoopBackOff".to_string(),
                format!(
                    "back-off {} restarting failed container {}",
                    manifests::duration::format(delay),
                    container.name
                ),
            ),
        };
        if reason == "CrashLoopBackOff" {
            self.problem(format!(
                "{}: CrashLoopBackOff, restart in {in_words}",
                container.name
            ));
        } else {
            self.problem(format!("{}: {reason}: {message}", container.name));
        }
        waiting(&reason, message)
    }
}

/// Whole seconds for long waits, so messages do not churn every reconcile.
fn round(d: Duration) -> Duration {
    if d >= Duration::from_secs(10) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX) / 100 * 100)
    }
}

/// `2/2 running`, or `2/2 running, not ready: web` while a readiness or
/// startup probe holds a running container back.
fn running_message(containers: &[ContainerDetails], running: usize, total: usize) -> String {
    let not_ready: Vec<&str> = containers
        .iter()
        .filter(|c| matches!(c.state, ContainerState::Running { .. }) && !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    if not_ready.is_empty() {
        format!("{running}/{total} running")
    } else {
        format!(
            "{running}/{total} running, not ready: {}",
            not_ready.join(", ")
        )
    }
}

fn init_message(inits: &[ContainerDetails], total: usize) -> String {
    let done = inits
        .iter()
        .filter(|c| matches!(&c.state, ContainerState::Terminated { exit_code: 0, .. }))
        .count();
    match inits
        .iter()
        .find(|c| matches!(c.state, ContainerState::Running { .. }))
    {
        Some(running) => format!("init {}/{total}: {} running", done + 1, running.name),
        None => format!("init {done}/{total} done"),
    }
}

fn failure_message(inits: &[ContainerDetails], containers: &[ContainerDetails]) -> String {
    inits
        .iter()
        .chain(containers)
        .find_map(|c| match &c.state {
            ContainerState::Terminated {
                exit_code, reason, ..
            } if *exit_code != 0 => Some(format!(
                "{} failed: exit code {exit_code} ({reason})",
                c.name
            )),
            _ => None,
        })
        .unwrap_or_else(|| "failed".to_string())
}

fn pod_details(state: &PodState, report: Report) -> PodDetails {
    let incarnation = &state.incarnation;
    let network = incarnation.network.as_ref();
    let mut warnings: Vec<String> = network.map(|n| n.warnings.clone()).unwrap_or_default();
    for (name, slot) in &incarnation.containers {
        if let Some(instance) = &slot.current {
            warnings.extend(instance.warnings.iter().map(|w| format!("{name}: {w}")));
        }
    }
    PodDetails {
        uid: incarnation.uid.clone(),
        pod_ips: network
            .map(|n| n.pod_ips().iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        host_network: incarnation.host_network,
        network: network.map(|n| n.driver.clone()),
        ports: network
            .map(|n| n.ports.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        started_at: Some(incarnation.created_at.clone()),
        init_containers: report.init_containers,
        containers: report.containers,
        warnings,
        rollout: None,
    }
}

/// Status when nothing can change now (a missing ConfigMap key, a pull
/// secret that is not there, an image that cannot be pulled yet, a pull in
/// progress): whatever runs keeps running, `message` says why nothing
/// else happens.
pub fn blocked(state: Option<&PodState>, message: String, wake_at_ms: Option<u64>) -> PodReport {
    let phase = if state.is_some_and(|s| {
        s.incarnation
            .containers
            .values()
            .any(|c| c.current.is_some())
    }) {
        Phase::Running
    } else {
        Phase::Pending
    };
    PodReport {
        phase,
        message,
        details: None,
        wake_at_ms,
        pull_failed: None,
    }
}
