//! Lifecycle hooks as kubelet runs them. `postStart` runs right after the
//! container started and before it counts as running; if it fails, the
//! container is stopped (event `FailedPostStartHook`) and restarts by the
//! restart policy. `preStop` runs whenever berth stops a container (pod
//! removed or recreated, container replaced or removed, a failed liveness
//! probe), before the stop signal; its time counts against the grace
//! period, and the signal still gets at least [`MIN_GRACE_AFTER_HOOK`].
//!
//! The preStop action is kept in the pod's state with the instance
//! ([`super::state::Instance::pre_stop`]), so it also runs when the pod's
//! manifest is already gone.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use manifests::ObjectKey;

use super::handlers::{Action, Target};
use super::state::Instance;
use crate::reconcile::Context;
use crate::runtime::Runtime;
use crate::status::{Event, EventType};

/// kubelet's minimum grace period left for the stop signal after a preStop
/// hook used up the rest.
pub const MIN_GRACE_AFTER_HOOK: Duration = Duration::from_secs(2);

/// How long a postStart hook may take. kubelet sets none; berth bounds it
/// so a hook that hangs cannot hold the pod's reconcile forever.
pub const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// A preStop hook to run before stopping an instance.
#[derive(Clone, Copy)]
pub struct PreStop<'a> {
    pub action: &'a Action,
    /// The pod's address (for an httpGet without a host).
    pub host: IpAddr,
}

impl<'a> PreStop<'a> {
    /// The hook of `instance`, if it has one.
    pub fn of(instance: &'a Instance, host: IpAddr) -> Option<Self> {
        instance
            .pre_stop
            .as_ref()
            .map(|action| Self { action, host })
    }
}

fn event(ctx: &Context, key: &ObjectKey, reason: &str, message: String) {
    ctx.events.record(Event::new(
        EventType::Warning,
        key.to_string(),
        reason,
        message,
    ));
}

/// Runs `hook` in container `name` (`id`) within `grace`; returns the
/// grace period left for the stop signal.
pub async fn pre_stop(
    ctx: &Context,
    runtime: &Runtime,
    key: &ObjectKey,
    name: &str,
    id: &str,
    hook: PreStop<'_>,
    grace: Duration,
) -> Duration {
    let began = Instant::now();
    let target = Target {
        runtime,
        container_id: id,
        default_host: hook.host,
    };
    tracing::info!(container = id, hook = %hook.action.describe(), "running the preStop hook");
    if let Err(message) = hook.action.run(target, grace).await {
        event(
            ctx,
            key,
            "FailedPreStopHook",
            format!(
                "container {name}: preStop hook ({}) failed: {message}",
                hook.action.describe()
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
    ctx: &Context,
    runtime: &Runtime,
    key: &ObjectKey,
    name: &str,
    id: &str,
    action: &Action,
    host: IpAddr,
) -> Result<(), String> {
    let target = Target {
        runtime,
        container_id: id,
        default_host: host,
    };
    action
        .run(target, POST_START_TIMEOUT)
        .await
        .map(drop)
        .map_err(|message| {
            let message = format!(
                "container {name}: postStart hook ({}) failed: {message}",
                action.describe()
            );
            event(ctx, key, "FailedPostStartHook", message.clone());
            message
        })
}
