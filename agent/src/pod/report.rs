//! The pod's status as `berth ps` and `berth inspect` show it: phase, a
//! one-line message, and [`PodDetails`] with every container's state, last
//! state, restarts, exit code, reason, ids and image digest — collected
//! while a reconcile goes through the containers.

use std::time::Duration;

use manifests::types as api;

use super::plan::Observed;
use super::state::{ContainerSlot, PodState};
use crate::reconcile::Applied;
use crate::status::{ContainerDetails, ContainerState, Details, Phase, PodDetails};

/// Container states gathered during one reconcile.
#[derive(Debug, Default)]
pub struct Report {
    init_containers: Vec<ContainerDetails>,
    containers: Vec<ContainerDetails>,
    /// The first container that needs the user's attention, as a message.
    problem: Option<String>,
    /// Unix ms of the earliest scheduled restart.
    wake_at_ms: Option<u64>,
    now: bool,
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

impl Report {
    fn push(
        &mut self,
        slot: Option<&ContainerSlot>,
        container: &api::Container,
        state: ContainerState,
    ) {
        self.push_ready(slot, container, state, false);
    }

    fn push_ready(
        &mut self,
        slot: Option<&ContainerSlot>,
        container: &api::Container,
        state: ContainerState,
        ready: bool,
    ) {
        let init = slot.is_some_and(|s| s.init);
        let entry = details(slot, container, state, ready);
        if init {
            self.init_containers.push(entry);
        } else {
            self.containers.push(entry);
        }
    }

    fn problem(&mut self, message: String) {
        self.problem.get_or_insert(message);
    }

    /// An init container that completed earlier.
    pub fn keep_init(&mut self, state: &PodState, container: &api::Container) {
        let slot = state.incarnation.containers.get(&container.name);
        let done = slot
            .and_then(|s| s.current.as_ref())
            .and_then(|i| i.exit.as_ref())
            .map(|exit| super::plan::terminated(exit, None))
            .unwrap_or_else(|| waiting("Completed", String::new()));
        self.push(slot, container, done);
    }

    /// A container that waits for something else (init containers).
    pub fn waiting(&mut self, state: &PodState, container: &api::Container, reason: &str) {
        let slot = state.incarnation.containers.get(&container.name);
        self.push(slot, container, waiting(reason, String::new()));
    }

    /// A running (or starting) container; `ready` as its probes say.
    pub fn running(
        &mut self,
        slot: &ContainerSlot,
        container: &api::Container,
        observed: &Observed,
        ready: bool,
    ) {
        let state = match (observed, slot.current.as_ref()) {
            (Observed::Running, Some(instance)) => ContainerState::Running {
                started_at: instance.started_at.clone().unwrap_or_default(),
                pid: instance.pid.unwrap_or(0),
            },
            _ => waiting("ContainerCreating", String::new()),
        };
        self.push_ready(Some(slot), container, state, ready);
    }

    pub fn finished(&mut self, slot: &ContainerSlot, container: &api::Container) {
        let state = slot
            .current
            .as_ref()
            .and_then(|i| i.exit.as_ref())
            .map(|exit| super::plan::terminated(exit, None));
        let state = state
            .or_else(|| slot.last_state.clone())
            .unwrap_or_else(|| waiting("Unknown", String::new()));
        self.push(Some(slot), container, state);
    }

    pub fn backoff(
        &mut self,
        slot: &ContainerSlot,
        container: &api::Container,
        at_ms: u64,
        now_ms: u64,
    ) {
        self.wake(at_ms);
        let left = Duration::from_millis(at_ms.saturating_sub(now_ms));
        let delay = Duration::from_millis(slot.backoff_ms.unwrap_or(0));
        let in_words = crate::config::duration::format(round(left));
        let (reason, message) = match &slot.waiting {
            Some((reason, message)) => (reason.clone(), message.clone()),
            None => (
                "CrashLoopBackOff".to_string(),
                format!(
                    "back-off {} restarting failed container {}",
                    crate::config::duration::format(delay),
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
        self.push(Some(slot), container, waiting(&reason, message));
    }

    pub fn failed_start(&mut self, slot: &ContainerSlot, container: &api::Container) {
        if let Some(at) = slot.restart_at_ms {
            self.wake(at);
        }
        let (reason, message) = slot
            .waiting
            .clone()
            .unwrap_or_else(|| ("CreateContainerError".into(), String::new()));
        self.problem(format!("{}: {reason}: {message}", container.name));
        self.push(Some(slot), container, waiting(&reason, message));
    }

    fn wake(&mut self, at_ms: u64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at_ms, |t| t.min(at_ms)));
    }

    /// Reconcile again right away (the next step is ready now).
    pub fn requeue_now(&mut self) {
        self.now = true;
    }

    /// The result of the reconcile.
    pub fn finish(self, state: &PodState, spec: &api::PodSpec, phase: Phase) -> Applied {
        let running = self
            .containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
            .count();
        let total = spec.containers.len();
        let message = match (&self.problem, phase) {
            (Some(problem), _) => problem.clone(),
            (None, Phase::Succeeded) => "completed".to_string(),
            (None, Phase::Failed) => failure_message(&self.init_containers, &self.containers),
            (None, _) if !state.incarnation.init_done => {
                init_message(&self.init_containers, spec.init_containers.len())
            }
            (None, _) => running_message(&self.containers, running, total),
        };
        let wake = self.wake_at_ms;
        let now = self.now;
        let mut applied =
            Applied::new(phase, message).with_details(Details::Pod(pod_details(state, self)));
        if now {
            applied = applied.requeue_after(Duration::from_millis(10));
        } else if let Some(at) = wake {
            let left = at.saturating_sub(super::plan::millis(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            ));
            applied = applied.requeue_after(Duration::from_millis(left.max(10)));
        }
        applied
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
    }
}

/// Status while a pod-level change waits for its images: the old pod keeps
/// running.
pub fn pending_change(
    state: &PodState,
    container: &str,
    reason: &str,
    message: &str,
    retry: Duration,
) -> Applied {
    let mut applied = blocked(Some(state), reason, message);
    applied.message = format!("{container}: {reason}: {message}");
    applied.requeue_after(retry)
}

/// Status when nothing can change (a missing ConfigMap key, a pull secret
/// that is not there): whatever runs keeps running.
pub fn blocked(state: Option<&PodState>, reason: &str, message: &str) -> Applied {
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
    Applied::new(phase, format!("{reason}: {message}"))
}
