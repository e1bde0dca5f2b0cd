//! Lifecycle hooks as kubelet runs them. `postStart` runs right after the
//! container started and before it counts as running; if it fails, the
//! container is stopped (event `FailedPostStartHook`) and restarts by the
//! restart policy. `preStop` runs whenever berth stops a container (pod
//! removed or recreated, container replaced or removed, a failed liveness
//! probe), before the stop signal, once per container; its time counts
//! against the grace period, and the signal still gets at least
//! [`MIN_GRACE_AFTER_HOOK`].
//!
//! The preStop action is kept in the pod's record with the instance
//! ([`super::state::Instance::pre_stop`]), so it also runs when the pod's
//! manifest is already gone.

use std::net::IpAddr;
use std::time::Duration;

use super::action::Action;
use super::executor::Executor;
use crate::status::EventType;

/// kubelet's minimum grace period left for the stop signal after a preStop
/// hook used up the rest.
pub const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);

/// How long a postStart hook may take. kubelet sets none; berth bounds it
/// so a hook that hangs cannot hold its pod forever.
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the preStop hook `action` of container `name` (`id`) within
/// `grace`; returns the grace period left for the stop signal.
pub async fn pre_stop(
    ex: &Executor<'_>,
    name: &str,
    id: &str,
    action: &Action,
    pod_ip: IpAddr,
    grace: Duration,
) -> Duration {
    let began = tokio::time::Instant::now();
    tracing::info!(container = %name, hook = %action.describe(), "running the preStop hook");
    if let Err(message) = ex.host.handlers.run(action, id, pod_ip, grace).await.result {
        ex.event(
            EventType::Warning,
            "FailedPreStopHook",
            format!(
                "container {name}: preStop hook ({}) failed: {message}",
                action.describe()
            ),
        );
    }
    grace
        .saturating_sub(began.elapsed())
        .max(MIN_GRACE_AFTER_HOOK)
}

/// Runs the postStart hook `action` of container `name` (`id`); on failure
/// records `FailedPostStartHook` and returns the message.
pub async fn post_start(
    ex: &Executor<'_>,
    name: &str,
    id: &str,
    action: &Action,
    pod_ip: IpAddr,
) -> Result<(), String> {
    ex.host
        .handlers
        .run(action, id, pod_ip, POST_START_TIMEOUT)
        .await
        .result
        .map(drop)
        .map_err(|message| {
            let message = format!(
                "container {name}: postStart hook ({}) failed: {message}",
                action.describe()
            );
            ex.event(EventType::Warning, "FailedPostStartHook", message.clone());
            message
        })
}
