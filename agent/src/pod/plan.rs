//! The pure part of the pod lifecycle: from what is wanted (a container's
//! spec hash, the restart policy) and what the runtime reports about its
//! current instance, what to do with each container, how an exit updates
//! its restart bookkeeping, and which phase the pod is in. No I/O, no
//! clock: `now_ms` is passed in, so every rule is unit-tested.

use std::time::Duration;

use manifests::types::RestartPolicy;

use super::backoff::PodsConfig;
use super::state::ContainerSlot;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

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
    let after_backoff = |step: Step| match slot.restart_at_ms {
        Some(at_ms) if at_ms > now_ms => Step::Backoff { at_ms },
        _ => step,
    };
    match observed {
        Observed::Absent => after_backoff(Step::Start),
        Observed::Creating => Step::Wait,
        Observed::Running if outdated => Step::Replace,
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

/// Records a failure to make an instance (image pull, config, runtime):
/// retried after a back-off like a crash. Returns the delay.
pub fn record_failure(
    slot: &mut ContainerSlot,
    reason: &str,
    message: String,
    config: &PodsConfig,
    now_ms: u64,
) -> Duration {
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
            }),
            ..Default::default()
        }
    }

    fn config() -> PodsConfig {
        PodsConfig {
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_millis(1600),
            backoff_reset: Duration::from_secs(600),
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
        let delay = record_failure(&mut s, "ImagePullBackOff", "boom".into(), &c, 1000);
        assert_eq!(millis(delay), 200);
        assert_eq!(
            decide(&s, "h", &Observed::Absent, RestartPolicy::Always, 1100),
            Step::Backoff { at_ms: 1200 }
        );
        assert_eq!(
            decide(&s, "h", &Observed::Absent, RestartPolicy::Always, 1200),
            Step::Start
        );
        assert_eq!(millis(record_failure(&mut s, "x", "y".into(), &c, 0)), 400);
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
