//! Crash recovery, run once when the agent starts, before the first
//! reconcile. Containers keep running while the agent is down; here the
//! agent finds them again without touching the ones its pods know (their
//! pods' next reconcile adopts them, or reads the exit status of those that
//! ended meanwhile), and removes whatever belongs to no pod: containers
//! made by a reconcile cut short, sandboxes and pod cgroups, network state
//! (veths, leases, netns files, host-port claims) and image holds of
//! containers that are gone. Every pod with a record is then queued, so a
//! pod whose manifest vanished while the agent was down is removed with
//! its grace period.

use std::collections::HashSet;

use crate::controller::ObservedEvent;
use crate::reconcile::Context;

use super::state::PodState;

/// What recovery did, for the agent's start-up event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub pods: usize,
    pub adopted: usize,
    pub removed_containers: Vec<String>,
    pub removed_pods: Vec<String>,
    pub problems: Vec<String>,
}

/// Runs the recovery (see the module docs).
pub async fn run(ctx: &Context) -> Recovered {
    let mut recovered = Recovered::default();
    let paths = &ctx.services.paths;
    let (states, errors) = PodState::list(paths);
    recovered
        .problems
        .extend(errors.iter().map(ToString::to_string));
    recovered.pods = states.len();
    let Ok(runtime) = ctx.services.runtime.as_ref() else {
        return recovered;
    };
    let known_uids: HashSet<String> = states
        .iter()
        .flat_map(|s| s.incarnations().map(|i| i.uid.clone()))
        .collect();
    let known_ids: HashSet<String> = states
        .iter()
        .flat_map(|s| s.incarnations().flat_map(|i| i.container_ids()))
        .collect();

    let containers = runtime.list();
    for container in &containers {
        if known_ids.contains(&container.id) {
            recovered.adopted += 1;
            continue;
        }
        match super::containers::remove(ctx, runtime, &container.id).await {
            Ok(()) => recovered.removed_containers.push(container.id.clone()),
            Err(err) => recovered.problems.push(err),
        }
    }
    for uid in runtime.pods_on_host() {
        if known_uids.contains(&uid) {
            continue;
        }
        match runtime.remove_pod(&uid) {
            Ok(()) => recovered.removed_pods.push(uid),
            Err(err) => recovered.problems.push(err.to_string()),
        }
    }
    recovered
        .problems
        .extend(ctx.services.network.cleanup_orphans(&known_uids).await);

    let images = ctx.services.images.service().clone();
    let on_host: HashSet<String> = containers.iter().map(|c| c.id.clone()).collect();
    let released = tokio::task::spawn_blocking(move || -> Result<(), String> {
        for id in images.held_containers().map_err(|e| e.to_string())? {
            if !on_host.contains(&id) && !known_ids.contains(&id) {
                images.release_container(&id).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
    .await;
    match released {
        Ok(Ok(())) => {}
        Ok(Err(err)) => recovered.problems.push(err),
        Err(err) => recovered.problems.push(err.to_string()),
    }

    for state in &states {
        let key = manifests::ObjectKey::new(
            manifests::Kind::Pod,
            state.namespace.clone(),
            state.name.clone(),
        );
        let _ = ctx
            .observed
            .send(ObservedEvent {
                key,
                reason: "agent start: pod found on the host".into(),
            })
            .await;
    }
    recovered
}
