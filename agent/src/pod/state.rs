//! The pod reconciler's persistent record of one pod
//! (`Paths::pod_state_file`): which incarnation (uid) runs, what its network
//! driver made, and per container the instance that runs, its restart count
//! and back-off. It is written (atomically, mode 0600) *before* the action
//! that depends on it: a container id before that container is created. A
//! new incarnation's network and sandbox are recorded in the same write as
//! its first container's intent (one write per new pod, not one per step);
//! an agent killed before that write leaves them to recovery, which finds
//! network state and sandboxes by enumerating them and removes those of
//! pods it has no record of. So an agent killed at any point finds
//! everything it made, here or in the runtime's and drivers' own records.
//!
//! Never a secret value: env and volume contents appear only as hashes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use netplugins::driver::{NetworkStatus, PodNetwork};
use serde::{Deserialize, Serialize};

use super::action::Action;
use super::versions::Rollout;
use crate::paths::Paths;
use crate::runtime::ExitStatus;
use crate::status::ContainerState;

/// Bump when the format changes incompatibly.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading pod state {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod state {path} is not valid")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing pod state {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing pod state {path}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One pod as the reconciler made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub version: u32,
    pub namespace: String,
    pub name: String,
    /// The current incarnation. A pod-level change makes a new one.
    pub incarnation: Incarnation,
    /// Earlier incarnations still being torn down (a pod-level change or a
    /// lost sandbox interrupted by a crash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Incarnation>,
    /// Log instance numbers continue across incarnations, so a new pod's
    /// first log never overwrites the previous pod's.
    #[serde(default)]
    pub next_instance: BTreeMap<String, u32>,
    /// The stable version, an update on probation, a refused one
    /// (`pod::rollout`).
    #[serde(default, skip_serializing_if = "Rollout::is_empty")]
    pub rollout: Rollout,
    /// Unix ms since when an update waits for a container's update lock
    /// (`super::update`): the wait's timeout survives an agent restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_held_since_ms: Option<u64>,
    /// The pod was evicted (its ephemeral storage went over a limit): it
    /// stays down until its manifest changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted: Option<Evicted>,
}

/// An eviction, as the kubelet's eviction manager makes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evicted {
    /// The generation of the manifest that was evicted.
    pub generation: u64,
    pub message: String,
}

/// One incarnation of a pod: its sandbox, network and containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incarnation {
    pub uid: String,
    /// Hash of the pod-level fields this incarnation was made for.
    pub pod_hash: String,
    pub host_network: bool,
    /// Seconds between the stop signal and SIGKILL, kept so the pod can be
    /// stopped properly after its manifest is gone.
    pub grace_seconds: u64,
    /// What the network driver was asked to set up (written before setup,
    /// so teardown knows what to remove after a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_request: Option<PodNetwork>,
    /// What it set up; `None` until setup succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
    /// The IPC/UTS namespaces, /dev/shm and /etc files exist.
    #[serde(default)]
    pub sandbox_ready: bool,
    /// Hash of each configMap/secret volume's files as last written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_hashes: BTreeMap<String, String>,
    /// Every init container has completed; app containers may run.
    #[serde(default)]
    pub init_done: bool,
    pub created_at: String,
    /// By container name (init and app containers share one name space).
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerSlot>,
}

/// One container of the pod across its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSlot {
    #[serde(default)]
    pub init: bool,
    /// The instance that runs (or ran last); `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Instance>,
    /// Instances started after the first one in this incarnation.
    #[serde(default)]
    pub restart_count: u32,
    /// Exits since the back-off was last reset; sets the next delay.
    #[serde(default)]
    pub crash_count: u32,
    /// Unix time (ms) before which a crashed container is not restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at_ms: Option<u64>,
    /// The delay that `restart_at_ms` came from (for status and events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// How the previous instance ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
    /// Why the next instance could not be made (image pull, config,
    /// runtime): a Waiting reason and its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<(String, String)>,
    /// Consecutive failures to make an instance (pull, create): spaces the
    /// retries like crashes.
    #[serde(default)]
    pub failures: u32,
    /// The container spec (hash) whose crashes or failures set the
    /// back-off: a new spec starts afresh, as the kubelet keys its back-off
    /// by the container's spec hash (a fixed typo is not held by the
    /// minutes the broken version earned). `None` in older records: the
    /// back-off applies to any spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_hash: Option<String>,
}

/// One container instance: a runtime container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// The runtime's container id (also names its cgroup and bundle).
    pub id: String,
    /// Its log file number (`<instance>.log`).
    pub instance: u32,
    /// Hash of the container-level spec it was made from.
    pub spec_hash: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// False while only intended: the runtime may or may not have it.
    #[serde(default)]
    pub created: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// What the container did not get as asked (clamped rlimits, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// How it ended, once the reconciler has seen it (so one exit is
    /// counted once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Its preStop hook, kept so it runs even after the manifest is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<Action>,
    /// Unix ms at which to check again whether its image's tag still points
    /// to `image_digest`: set while it runs from a stored copy because no
    /// host of its registry answered (`[images] offline-fallback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_at_ms: Option<u64>,
}

impl PodState {
    pub fn new(namespace: &str, name: &str, incarnation: Incarnation) -> Self {
        Self {
            version: STATE_VERSION,
            namespace: namespace.to_string(),
            name: name.to_string(),
            incarnation,
            retired: Vec::new(),
            next_instance: BTreeMap::new(),
            rollout: Rollout::default(),
            update_held_since_ms: None,
            evicted: None,
        }
    }

    /// Reads the record of `namespace/name`; `None` if there is none.
    pub fn load(paths: &Paths, namespace: &str, name: &str) -> Result<Option<Self>, StateError> {
        read(&paths.pod_state_file(namespace, name))
    }

    /// Writes the record atomically.
    pub fn save(&self, paths: &Paths) -> Result<(), StateError> {
        let path = paths.pod_state_file(&self.namespace, &self.name);
        let write_err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        crate::fsutil::create_dir_all_with_mode(&paths.pod_states(), 0o700).map_err(write_err)?;
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|err| write_err(std::io::Error::other(err)))?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(&path, &bytes, 0o600).map_err(write_err)
    }

    /// Forgets the pod (after everything it had is gone).
    pub fn remove(paths: &Paths, namespace: &str, name: &str) -> Result<(), StateError> {
        let path = paths.pod_state_file(namespace, name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Remove { path, source }),
        }
    }

    /// Every pod record on this host; unreadable ones are returned as errors
    /// next to the good ones.
    pub fn list(paths: &Paths) -> (Vec<Self>, Vec<StateError>) {
        let mut states = Vec::new();
        let mut errors = Vec::new();
        let Ok(entries) = std::fs::read_dir(paths.pod_states()) else {
            return (states, errors);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read(&path) {
                Ok(Some(state)) => states.push(state),
                Ok(None) => {}
                Err(err) => errors.push(err),
            }
        }
        states.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        (states, errors)
    }

    /// The next log instance number of container `name` (and reserves it).
    pub fn take_instance(&mut self, name: &str) -> u32 {
        let next = self.next_instance.entry(name.to_string()).or_insert(0);
        let instance = *next;
        *next += 1;
        instance
    }

    /// Every incarnation, current first.
    pub fn incarnations(&self) -> impl Iterator<Item = &Incarnation> {
        std::iter::once(&self.incarnation).chain(&self.retired)
    }
}

impl Incarnation {
    /// A new incarnation of a pod with `spec` (pod-level hash `pod_hash`):
    /// a fresh uid, one empty slot per container.
    pub fn new(spec: &manifests::types::PodSpec, pod_hash: &str, created_at: String) -> Self {
        let mut containers = BTreeMap::new();
        for c in &spec.init_containers {
            containers.insert(
                c.name.clone(),
                ContainerSlot {
                    init: true,
                    ..Default::default()
                },
            );
        }
        for c in &spec.containers {
            containers.insert(c.name.clone(), ContainerSlot::default());
        }
        Self {
            uid: format!("{:016x}", fastrand::u64(..)),
            pod_hash: pod_hash.to_string(),
            host_network: spec.host_network,
            grace_seconds: grace_seconds(spec),
            network_request: None,
            network: None,
            sandbox_ready: false,
            volume_hashes: BTreeMap::new(),
            init_done: spec.init_containers.is_empty(),
            created_at,
            containers,
        }
    }

    /// The address probes and hooks reach the pod at: its first IP over
    /// the bridge, the host's loopback for a hostNetwork pod (or one
    /// without an address yet).
    pub fn pod_ip(&self) -> IpAddr {
        if self.host_network {
            return IpAddr::V4(Ipv4Addr::LOCALHOST);
        }
        self.network
            .as_ref()
            .and_then(|n| n.pod_ips().first().copied())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Ids of every container instance this incarnation knows.
    pub fn container_ids(&self) -> Vec<String> {
        self.containers
            .values()
            .filter_map(|slot| slot.current.as_ref().map(|i| i.id.clone()))
            .collect()
    }
}

/// `terminationGracePeriodSeconds`, or Kubernetes' default of 30.
pub fn grace_seconds(spec: &manifests::types::PodSpec) -> u64 {
    u64::try_from(spec.termination_grace_period_seconds_or_default().max(0)).unwrap_or(30)
}

fn read(path: &Path) -> Result<Option<PodState>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incarnation(uid: &str) -> Incarnation {
        Incarnation {
            uid: uid.into(),
            pod_hash: "h".into(),
            host_network: true,
            grace_seconds: 30,
            network_request: None,
            network: None,
            sandbox_ready: false,
            volume_hashes: BTreeMap::new(),
            init_done: false,
            created_at: "now".into(),
            containers: BTreeMap::new(),
        }
    }

    #[test]
    fn round_trips_and_lists_with_tight_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths::new(&dir.path().join("root"), &dir.path().join("run"));
        assert_eq!(
            PodState::load(&paths, "default", "web").expect("load"),
            None
        );
        let mut state = PodState::new("default", "web", incarnation("u1"));
        assert_eq!(state.take_instance("app"), 0);
        assert_eq!(state.take_instance("app"), 1);
        state.save(&paths).expect("save");
        let loaded = PodState::load(&paths, "default", "web")
            .expect("load")
            .expect("present");
        assert_eq!(loaded, state);
        let mode = std::fs::metadata(paths.pod_state_file("default", "web"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(paths.pod_states().join("bad_x.json"), "{").expect("write");
        let (states, errors) = PodState::list(&paths);
        assert_eq!(states.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("bad_x.json"),
            "{}",
            errors[0]
        );
        PodState::remove(&paths, "default", "web").expect("remove");
        PodState::remove(&paths, "default", "web").expect("idempotent");
    }
}
