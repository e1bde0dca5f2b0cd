//! Where berth keeps things on disk. Every other module asks this one for
//! paths, so the layout is written down once.
//!
//! Both roots are 0700 and the database files 0600 (`agent::layout` makes
//! them so at start, or the agent refuses to start): below them are Secret
//! volumes, container layers and logs, leases and sockets.
//!
//! Persistent, under `--root` (layout version [`LAYOUT_VERSION`], stored in
//! `<root>/layout-version`):
//!
//! ```text
//! berth.db (-wal, -shm)         SQLite metadata: images, leases, IPAM, containers
//! content/sha256/<hex>          verified blobs (manifests, configs, layers)
//! content/ingest/<hex>.partial  downloads in progress, resumable
//! snapshots/<chain-id-hex>/     one unpacked layer each: an overlay lowerdir
//! snapshots/.staging/           layers being unpacked (never read as snapshots)
//! containers/<id>/{upper,work}  a container's writable layer
//! pods/<pod-uid>/volumes/<name> emptyDir volumes (disk medium)
//! logs/<ns>_<pod>/<container>/  CRI-format container logs: <instance>.log,
//!                               rotated to <instance>.log.1, .2, …
//! cni-cache/results/            CNI results per pod, for DEL after a restart
//! pod-state/<ns>_<name>.json    the pod reconciler's record of each pod: its
//!                               uid, network, container instances, restarts
//! ```
//!
//! Volatile, under `--run-root` (gone after a reboot, by design):
//!
//! ```text
//! agent.lock                    held by the running agent
//! status.json                   object status, written atomically by the agent
//! events.jsonl                  bounded event log
//! events.jsonl.1                the previous, rotated event log
//! bundles/<id>/                 OCI bundle: config.json, rootfs/ (overlay mountpoint)
//! shims/<id>/                   shim state: shim.pid, container.pid, exit.json
//! netns/<pod-id>                bind-mounted network namespaces
//! runtime/<handler>/            the OCI runtime's --root
//! pods/<pod-uid>/               pod sandbox: ns/{ipc,uts}, shm/ (tmpfs),
//!                               etc/{hosts,hostname,resolv.conf}, volumes/
//!                               (memory-medium emptyDirs, secret tmpfs)
//! ```

use std::path::{Path, PathBuf};

/// Bump when the persistent layout changes incompatibly.
pub const LAYOUT_VERSION: u32 = 1;

#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub run_root: PathBuf,
}

impl Paths {
    pub fn new(root: &Path, run_root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            run_root: run_root.to_path_buf(),
        }
    }

    /// `berth update --force` overrides, one file per pod, consumed by the
    /// agent (`pod::update`).
    pub fn update_force(&self) -> PathBuf {
        self.run_root.join("update-force")
    }

    pub fn layout_version_file(&self) -> PathBuf {
        self.root.join("layout-version")
    }

    pub fn database(&self) -> PathBuf {
        self.root.join("berth.db")
    }

    pub fn content(&self) -> PathBuf {
        self.root.join("content")
    }

    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// The cni driver's result cache (persistent: DEL after a reboot still
    /// needs what ADD returned, to release IPAM leases kept on disk).
    pub fn cni_cache(&self) -> PathBuf {
        self.root.join("cni-cache")
    }

    pub fn agent_lock(&self) -> PathBuf {
        self.run_root.join("agent.lock")
    }

    pub fn status_file(&self) -> PathBuf {
        self.run_root.join("status.json")
    }

    pub fn events_file(&self) -> PathBuf {
        self.run_root.join("events.jsonl")
    }

    pub fn bundles(&self) -> PathBuf {
        self.run_root.join("bundles")
    }

    pub fn shims(&self) -> PathBuf {
        self.run_root.join("shims")
    }

    pub fn netns(&self) -> PathBuf {
        self.run_root.join("netns")
    }

    pub fn runtime_state(&self, handler: &str) -> PathBuf {
        self.run_root.join("runtime").join(handler)
    }

    /// One container's writable layer: `upper/` and `work/` for overlayfs.
    pub fn container_layer(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }

    /// One container's OCI bundle; its `rootfs/` is the overlay mountpoint.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.bundles().join(id)
    }

    /// One container's shim state (pids, exit file, the agent's record).
    pub fn shim_dir(&self, id: &str) -> PathBuf {
        self.shims().join(id)
    }

    /// Volatile pod sandbox state: namespace files, /dev/shm, /etc files.
    pub fn pods(&self) -> PathBuf {
        self.run_root.join("pods")
    }

    pub fn pod_run_dir(&self, pod_uid: &str) -> PathBuf {
        self.pods().join(pod_uid)
    }

    /// Persistent per-pod state: disk-backed emptyDir volumes.
    pub fn pod_state_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join("pods").join(pod_uid)
    }

    /// The log directory of one container of a pod; files are named by
    /// instance (restart count), so a restart keeps the previous log.
    pub fn container_logs(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.logs()
            .join(format!("{namespace}_{pod}"))
            .join(container)
    }

    /// The pod reconciler's records, one file per pod.
    pub fn pod_states(&self) -> PathBuf {
        self.root.join("pod-state")
    }

    /// The record of pod `namespace/name` (both DNS labels, so `_` cannot
    /// appear in either and the name is unambiguous).
    pub fn pod_state_file(&self, namespace: &str, name: &str) -> PathBuf {
        self.pod_states().join(format!("{namespace}_{name}.json"))
    }
}
