//! Removing an incarnation of a pod: every container stopped at once with
//! the grace period (its preStop hook first), then removed with its image hold; the network torn
//! down through its driver; the sandbox, volumes and pod cgroup removed.
//! Goes on past failures and returns them all; running it again after a
//! partial failure (or a crash) finishes the job.

use std::time::Duration;

use manifests::ObjectKey;

use super::containers;
use super::handlers;
use super::hooks::PreStop;
use super::state::{Incarnation, Instance};
use crate::reconcile::Context;
use crate::runtime::Runtime;

/// Tears down `incarnation` of pod `key`; `why` goes into the events.
pub async fn incarnation(
    ctx: &Context,
    runtime: &Runtime,
    key: &ObjectKey,
    incarnation: &Incarnation,
    why: &str,
) -> Vec<String> {
    let grace = Duration::from_secs(incarnation.grace_seconds);
    let host = handlers::pod_host(incarnation);
    let instances: Vec<(&String, &Instance)> = incarnation
        .containers
        .iter()
        .filter_map(|(name, slot)| slot.current.as_ref().map(|i| (name, i)))
        .collect();
    let stops = instances.iter().map(|(name, instance)| async move {
        let hook = PreStop::of(instance, host);
        containers::stop(ctx, runtime, key, name, &instance.id, hook, grace, why)
            .await
            .map_err(|err| format!("stopping container {name}: {err}"))
    });
    let mut errors: Vec<String> = futures::future::join_all(stops)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    for (_, instance) in &instances {
        if let Err(err) = containers::remove(ctx, runtime, &instance.id).await {
            errors.push(err);
        }
    }
    if let Some(request) = &incarnation.network_request {
        match ctx.services.network.for_pod(incarnation.host_network) {
            Ok(driver) => {
                if let Err(err) = driver.teardown(request).await {
                    errors.push(crate::status::chain(&err));
                }
            }
            Err(err) => errors.push(err.to_string()),
        }
    }
    if let Err(err) = runtime.remove_pod(&incarnation.uid) {
        errors.push(err.to_string());
    }
    errors
}
