//! Crash recovery, run once when the agent starts, before the first sync.
//! Containers keep running while the agent is down; here the agent finds
//! them again without touching the ones its pods know (their pods' next
//! sync adopts them, or reads the exit status of those that ended
//! meanwhile), and removes whatever belongs to no pod: containers made by
//! a sync cut short — or running on after their records were lost (a
//! deleted or corrupted state directory): those are stopped first, so
//! their cgroups and mounts can go — sandboxes and pod cgroups, network
//! state (veths, leases, netns files, host-port claims) and image holds of
//! containers that are gone. Every pod with a record is returned, so the
//! caller queues it: a pod whose manifest vanished while the agent was
//! down is removed with its grace period.

use std::collections::HashSet;
use std::time::Duration;

use manifests::{Kind, ObjectKey};

use super::containers::{self, Stopping};
use super::executor::Executor;
use super::host::Host;
use super::limits::{Limits, StopTracker};
use super::state::Instance;

/// How long a container that belongs to no pod gets to stop before
/// SIGKILL: its pod's grace period was lost with its record, and the node's
/// pods wait for recovery.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(5);

/// What recovery did, for the agent's start-up event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Every pod with a record.
    pub pods: Vec<ObjectKey>,
    pub adopted: usize,
    pub removed_containers: Vec<String>,
    pub removed_pods: Vec<String>,
    pub problems: Vec<String>,
}

/// Runs the recovery (see the module docs).
pub async fn run(host: &Host) -> Recovered {
    let mut recovered = Recovered::default();
    let (states, errors) = host.records.list().await;
    recovered.problems.extend(errors);
    recovered.pods = states
        .iter()
        .map(|s| ObjectKey::new(Kind::Pod, s.namespace.clone(), s.name.clone()))
        .collect();
    let known_uids: HashSet<String> = states
        .iter()
        .flat_map(|s| s.incarnations().map(|i| i.uid.clone()))
        .collect();
    let known_ids: HashSet<String> = states
        .iter()
        .flat_map(|s| s.incarnations().flat_map(|i| i.container_ids()))
        .collect();

    let on_host = host.runtime.list().await;
    let orphans: Vec<&String> = on_host
        .iter()
        .filter(|id| !known_ids.contains(*id))
        .collect();
    recovered.adopted = on_host.len() - orphans.len();
    let limits = Limits::new(&host.config);
    let stops = StopTracker::default();
    let agent = ObjectKey::new(Kind::Pod, "", "agent");
    let ex = Executor {
        host,
        limits: &limits,
        stops: &stops,
        key: &agent,
    };
    let removed = futures::future::join_all(orphans.iter().map(|id| remove_orphan(&ex, id))).await;
    for (id, result) in orphans.into_iter().zip(removed) {
        match result {
            Ok(()) => recovered.removed_containers.push(id.clone()),
            Err(problem) => recovered.problems.push(problem),
        }
    }
    for uid in host.sandboxes.list().await {
        if known_uids.contains(&uid) {
            continue;
        }
        match host.sandboxes.remove(&uid).await {
            Ok(()) => recovered.removed_pods.push(uid),
            Err(err) => recovered.problems.push(format!(
                "removing sandbox {uid}: {}",
                crate::status::chain(&*err)
            )),
        }
    }
    recovered
        .problems
        .extend(host.networks.cleanup_orphans(&known_uids).await);

    // Holds of containers that are gone (the hold was taken, the container
    // never made it into a record or onto the host).
    let on_host: HashSet<&String> = on_host.iter().collect();
    match host.images.held().await {
        Ok(held) => {
            for id in held {
                if !on_host.contains(&id) && !known_ids.contains(&id) {
                    host.images.release(&id).await;
                }
            }
        }
        Err(err) => recovered.problems.push(format!(
            "listing the image holds of containers: {}",
            crate::status::chain(&*err)
        )),
    }
    recovered
}

/// Stops (with [`ORPHAN_GRACE`]) and removes a container no pod knows.
async fn remove_orphan(ex: &Executor<'_>, id: &str) -> Result<(), String> {
    let instance = Instance {
        id: id.to_string(),
        instance: 0,
        spec_hash: String::new(),
        image: String::new(),
        image_digest: None,
        handler: None,
        created: true,
        pid: None,
        started_at: None,
        warnings: Vec::new(),
        exit: None,
        pre_stop: None,
        recheck_at_ms: None,
    };
    let stopping = Stopping {
        name: id,
        instance: &instance,
        pod_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        grace: ORPHAN_GRACE,
        why: "it belongs to no pod the agent knows",
    };
    containers::stop(ex, stopping)
        .await
        .map_err(|err| err.message())?;
    containers::remove(ex, id)
        .await
        .map_err(|err| err.message())
}
