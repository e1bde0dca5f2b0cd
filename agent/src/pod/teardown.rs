//! Removing an incarnation of a pod: every container stopped at once with
//! its grace period (its preStop hook first), then removed with its image
//! hold; the network torn down through its driver; the sandbox, volumes
//! and pod cgroup removed. Goes on past failures and returns them all;
//! running it again after a partial failure (or a crash) finishes the job.

use std::collections::BTreeMap;
use std::time::Duration;

use super::containers::{self, Stopping};
use super::error::Failures;
use super::executor::Executor;
use super::state::{Incarnation, Instance};

/// Tears down `incarnation` of pod `key`. Each container stops with its
/// entry in `grace` (by container id), else the incarnation's grace
/// period; `why` goes into the events.
pub async fn incarnation(
    ex: &Executor<'_>,
    incarnation: &Incarnation,
    grace: &BTreeMap<String, Duration>,
    why: &str,
) -> Failures {
    let host = ex.host;
    let default_grace = Duration::from_secs(incarnation.grace_seconds);
    let pod_ip = incarnation.pod_ip();
    let instances: Vec<(&String, &Instance)> = incarnation
        .containers
        .iter()
        .filter_map(|(name, slot)| slot.current.as_ref().map(|i| (name, i)))
        .collect();
    let stopped = futures::future::join_all(instances.iter().map(|(name, instance)| {
        let stopping = Stopping {
            name,
            instance,
            pod_ip,
            grace: grace.get(&instance.id).copied().unwrap_or(default_grace),
            why,
        };
        containers::stop(ex, stopping)
    }))
    .await;
    let mut failures = Failures::default();
    for err in stopped.into_iter().filter_map(Result::err) {
        failures.push("stopping", &err);
    }
    for (_, instance) in &instances {
        if let Err(err) = containers::remove(ex, &instance.id).await {
            failures.push("removing", &err);
        }
    }
    if let Some(request) = &incarnation.network_request
        && let Err(err) = host
            .networks
            .teardown(request, incarnation.host_network)
            .await
    {
        failures.push("tearing down the network", &*err);
    }
    if let Err(err) = host.sandboxes.remove(&incarnation.uid).await {
        failures.push(format!("removing sandbox {}", incarnation.uid), &*err);
    }
    failures
}
