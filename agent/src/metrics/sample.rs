//! One reading of every running container (cgroup, writable layer) and
//! every pod's network, for a scrape or a `berth stats` refresh. Blocking
//! file reads only: callers run it on a blocking thread.
//!
//! Cost is bounded per container: a container record read once and kept,
//! a handful of small cgroup files, and a disk walk at most every
//! `disk_ttl` and of at most [`disk::MAX_ENTRIES`] entries.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::cgroup::{self, CgroupUsage};
use super::disk::{self, DiskUsage};
use super::netdev::{self, InterfaceCounters};
use crate::paths::Paths;
use crate::runtime::{CgroupLayout, shim};
use crate::status::{ContainerDetails, ContainerState, Details, ObjectStatus, StatusDocument};

/// A running container's figures.
#[derive(Debug, Clone)]
pub struct ContainerSample {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub id: String,
    pub usage: CgroupUsage,
    /// Bytes its writable layer takes on disk (`None`: not measured yet).
    pub disk_bytes: Option<u64>,
}

/// A pod's network, from its namespace.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub namespace: String,
    pub pod: String,
    pub interfaces: Vec<InterfaceCounters>,
}

#[derive(Debug, Clone)]
pub struct NodeSample {
    pub taken: Instant,
    pub containers: Vec<ContainerSample>,
    /// Pods with their own network namespace and a running container.
    pub pods: Vec<PodNetwork>,
}

/// Takes [`NodeSample`]s, remembering what does not change between them.
pub struct Sampler {
    paths: Paths,
    layout: Option<CgroupLayout>,
    disk_ttl: Duration,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// Container id → its cgroup path, from the container's record.
    cgroups: HashMap<String, String>,
    /// Container id → its writable layer's usage and when it was measured.
    disk: HashMap<String, (Instant, Option<DiskUsage>)>,
}

impl Sampler {
    /// `layout`: the host's cgroups (`None`: none found; containers then
    /// have no cgroup figures).
    pub fn new(paths: Paths, layout: Option<CgroupLayout>, disk_ttl: Duration) -> Self {
        Self {
            paths,
            layout,
            disk_ttl,
            cache: Mutex::default(),
        }
    }

    /// Every running container of the pods in `doc` that `wanted` picks.
    pub fn sample(
        &self,
        doc: &StatusDocument,
        wanted: impl Fn(&ObjectStatus, &ContainerDetails) -> bool,
    ) -> NodeSample {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen = HashSet::new();
        let mut sample = NodeSample {
            taken: Instant::now(),
            containers: Vec::new(),
            pods: Vec::new(),
        };
        for (pod, details) in doc
            .objects
            .iter()
            .filter_map(|o| o.details.as_ref().map(|Details::Pod(details)| (o, details)))
        {
            let mut pids = Vec::new();
            for container in details.init_containers.iter().chain(&details.containers) {
                let (ContainerState::Running { pid, .. }, Some(id)) =
                    (&container.state, &container.container_id)
                else {
                    continue;
                };
                if !wanted(pod, container) {
                    continue;
                }
                pids.push(*pid);
                seen.insert(id.clone());
                if let Some(found) = self.container(&mut cache, pod, container, id) {
                    sample.containers.push(found);
                }
            }
            if !details.host_network
                && let Some(interfaces) = pids.iter().find_map(|pid| netdev::read(*pid))
            {
                sample.pods.push(PodNetwork {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    interfaces,
                });
            }
        }
        cache.cgroups.retain(|id, _| seen.contains(id));
        cache.disk.retain(|id, _| seen.contains(id));
        sample
    }

    fn container(
        &self,
        cache: &mut Cache,
        pod: &ObjectStatus,
        container: &ContainerDetails,
        id: &str,
    ) -> Option<ContainerSample> {
        let cgroup_path = match cache.cgroups.get(id) {
            Some(path) => path.clone(),
            None => {
                let record = shim::read_record(&self.paths.shim_dir(id)).ok()?;
                cache
                    .cgroups
                    .insert(id.to_owned(), record.cgroups_path.clone());
                record.cgroups_path
            }
        };
        let usage = match &self.layout {
            Some(layout) => cgroup::read(layout, &cgroup_path).ok()?,
            None => CgroupUsage::default(),
        };
        let now = Instant::now();
        let disk = match cache.disk.get(id) {
            Some((at, usage)) if now.duration_since(*at) < self.disk_ttl => *usage,
            _ => {
                let upper = self.paths.container_layer(id).join("upper");
                let usage = disk::usage(&upper, disk::MAX_ENTRIES);
                cache.disk.insert(id.to_owned(), (now, usage));
                usage
            }
        };
        Some(ContainerSample {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: container.name.clone(),
            id: id.to_owned(),
            usage,
            disk_bytes: disk.map(|d| d.bytes),
        })
    }
}
