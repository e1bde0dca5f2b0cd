//! Where berth keeps things on disk. Every other module asks this one for
//! paths, so the layout is written down once.
//!
//! Persistent, under `--root` (layout version [`LAYOUT_VERSION`], stored in
//! `<root>/layout-version`):
//!
//! ```text
//! berth.db                      SQLite metadata: images, leases, IPAM, containers
//! content/sha256/<hex>          verified blobs (manifests, configs, layers)
//! content/ingest/<hex>.partial  downloads in progress, resumable
//! snapshots/<chain-id-hex>/     one unpacked layer each: an overlay lowerdir
//! snapshots/.staging/           layers being unpacked (never read as snapshots)
//! containers/<id>/{upper,work}  a container's writable layer
//! logs/<ns>_<pod>/<container>/  CRI-format container logs
//! cni-cache/results/            CNI results per pod, for DEL after a restart
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
}
