//! The host as the pod layer sees it: small traits for the container
//! runtime, pod sandboxes, images, networks, pod records, probes, exits,
//! events and status. The real services implement them
//! (`crate::services::pod_host`); unit tests implement them with fakes
//! (`super::fake`), so every path of the lifecycle, teardown and recovery
//! is tested without root.
//!
//! Every method that touches the file system or a mount does its blocking
//! work off the async runtime's worker threads (the real implementations
//! use `spawn_blocking`), so no single syscall stalls other pods, status or
//! shutdown. Methods that only read memory are plain functions.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use manifests::ObjectKey;
use manifests::types as api;
use netplugins::driver::{NetworkStatus, PodNetwork};
use oci_spec::image::ImageConfiguration;

use super::action::{Action, Outcome};
use super::config::PodsConfig;
use super::error::PodError;
use super::state::PodState;
use crate::image::auth::Credentials;
use crate::image::manager::EnsuredImage;
use crate::image::meta::ImageRecord;
use crate::image::policy::ImagePullPolicy;
use crate::runtime::volumes::{FileOptions, VolumeFile};
use crate::runtime::{
    ContainerState, CreateContainer, CreatedContainer, EtcFiles, PodInfo, PodSandbox,
    PreparedVolume, StopOutcome, Volume,
};
use crate::status::{Details, Event, Phase, SourceRef};

pub use super::error::HostError;

pub type HostResult<T> = Result<T, HostError>;

/// What an exec inside a container printed (each stream capped) and how it
/// ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The containers of every pod.
pub trait ContainerRuntime: Send + Sync {
    /// What the runtime knows of container `id`; an error when it has no
    /// record of it.
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, HostResult<ContainerState>>;

    /// Ids of every container on the host, made by any pod or none.
    fn list(&self) -> BoxFuture<'_, Vec<String>>;

    /// Makes and starts a container (rootfs, bundle, shim, runtime).
    fn create<'a>(
        &'a self,
        request: CreateContainer<'a>,
    ) -> BoxFuture<'a, HostResult<CreatedContainer>>;

    /// The stop signal, then SIGKILL once `grace` is over. Returns once the
    /// container has exited.
    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, HostResult<StopOutcome>>;

    /// Removes a stopped container: its runtime state, rootfs, bundle and
    /// cgroup. Idempotent.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, HostResult<()>>;

    /// Runs `argv` in the running container `id`.
    fn exec<'a>(
        &'a self,
        id: &'a str,
        argv: &'a [String],
        limit: usize,
    ) -> BoxFuture<'a, HostResult<ExecOutput>>;

    /// Where container `name` of a pod logs (`Paths::container_logs`).
    fn log_dir(&self, namespace: &str, pod: &str, container: &str) -> PathBuf;

    /// Keeps the newest `keep` instance logs in `dir`.
    fn prune_logs(&self, dir: PathBuf, keep: usize) -> BoxFuture<'_, HostResult<()>>;

    /// Removes every log of pod `namespace/name`.
    fn remove_pod_logs<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, HostResult<()>>;
}

/// A pod's sandbox: the namespaces its containers share, its /etc files
/// and its volumes.
pub trait Sandboxes: Send + Sync {
    /// Where the sandbox of `pod` is (or would be); touches nothing.
    fn locate(&self, pod: &PodInfo, netns: Option<PathBuf>) -> PodSandbox;

    /// Whether every namespace of `sandbox` still exists (not after a
    /// reboot).
    fn alive<'a>(&'a self, sandbox: &'a PodSandbox) -> BoxFuture<'a, bool>;

    fn create<'a>(
        &'a self,
        pod: &'a PodInfo,
        netns: Option<PathBuf>,
        etc: &'a EtcFiles,
    ) -> BoxFuture<'a, HostResult<PodSandbox>>;

    /// `hostUsers: false`: makes the pod's user namespace and, owned by
    /// it, the network namespace its driver then adopts. Before the
    /// network is set up; idempotent. (Nothing to do elsewhere.)
    fn create_user_namespace<'a>(&'a self, _pod: &'a PodInfo) -> BoxFuture<'a, HostResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// The directory a configMap, secret, downwardAPI or projected
    /// volume's files go to.
    fn volume_dir(&self, pod_uid: &str, volume: &str) -> PathBuf;

    /// Whether `dir` exists (the files of a volume written earlier).
    fn exists<'a>(&'a self, dir: &'a std::path::Path) -> BoxFuture<'a, bool>;

    /// Writes the files of a configMap, secret, downwardAPI or projected
    /// volume, swapped in atomically over the earlier ones (`..data`).
    fn write_files<'a>(
        &'a self,
        volume: &'a str,
        dir: &'a std::path::Path,
        files: &'a [VolumeFile],
        options: FileOptions,
    ) -> BoxFuture<'a, HostResult<()>>;

    /// Makes the pod's volumes exist (emptyDirs, tmpfs mounts); with
    /// `fs_group`, its emptyDirs are owned by that group.
    fn prepare_volumes<'a>(
        &'a self,
        pod_uid: &'a str,
        volumes: &'a [Volume],
        fs_group: Option<u32>,
    ) -> BoxFuture<'a, HostResult<BTreeMap<String, PreparedVolume>>>;

    /// Removes the sandbox, volumes and pod cgroup of `pod_uid`.
    fn remove<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, HostResult<()>>;

    /// UIDs of every pod sandbox on the host.
    fn list(&self) -> BoxFuture<'_, Vec<String>>;

    /// Bytes the pod's disk emptyDirs use, and each container's writable
    /// layer plus logs.
    fn storage_usage<'a>(
        &'a self,
        query: &'a super::storage::StorageQuery,
    ) -> BoxFuture<'a, HostResult<super::storage::Usage>>;

    /// Bytes free for berth on the file system of its state (container
    /// layers, disk emptyDirs, logs): what a new pod's ephemeral-storage
    /// request is checked against.
    fn free_space(&self) -> BoxFuture<'_, HostResult<u64>>;
}

/// Images, through the image manager.
pub trait Images: Send + Sync {
    /// Makes `image` present as `policy` says; the error carries
    /// `ErrImageNeverPull`, `InvalidImageName` or `ImagePullBackOff`.
    fn ensure<'a>(
        &'a self,
        image: &'a str,
        policy: ImagePullPolicy,
        secrets: Option<Credentials>,
    ) -> BoxFuture<'a, Result<EnsuredImage, PodError>>;

    /// Where `image`'s tag points now, pulling what is new
    /// (`ImageManager::refresh`: no earlier pull answers it): the tag
    /// re-checks of offline fallback and auto-update.
    fn refresh<'a>(
        &'a self,
        image: &'a str,
        secrets: Option<Credentials>,
    ) -> BoxFuture<'a, Result<EnsuredImage, PodError>>;

    /// Whether [`Images::ensure`] would download `image` (for a status
    /// that says so while it runs).
    fn would_pull<'a>(&'a self, image: &'a str, policy: ImagePullPolicy) -> BoxFuture<'a, bool>;

    /// Records that container `id` runs `image` (so neither rmi nor GC takes
    /// its layers) and unpacks what is missing; returns the layer
    /// directories, top first. On failure nothing stays held.
    fn hold<'a>(&'a self, id: &'a str, image: &'a str) -> BoxFuture<'a, HostResult<Vec<PathBuf>>>;

    /// Gives up container `id`'s hold. Failures are logged.
    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()>;

    /// Keeps the stored image `image` (`repo:tag@sha256:…`) by that name for
    /// `owner` — a pod's rollback target — so neither GC nor prune takes it
    /// while its tag moves on; false when it is not stored.
    fn keep<'a>(&'a self, owner: &'a str, image: &'a str) -> BoxFuture<'a, HostResult<bool>>;

    /// Drops what `owner` kept. Failures are logged.
    fn unkeep<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, ()>;

    /// The image's configuration (entrypoint, env, user, …).
    fn config<'a>(
        &'a self,
        record: &'a ImageRecord,
    ) -> BoxFuture<'a, HostResult<ImageConfiguration>>;

    /// Ids of every container holding an image.
    fn held(&self) -> BoxFuture<'_, HostResult<Vec<String>>>;

    /// Deletes image `image` and frees its content, unless a container
    /// uses it or an Image object pins it (then false; an update's
    /// `delete-then-download` strategy).
    fn delete_unused<'a>(&'a self, image: &'a str) -> BoxFuture<'a, HostResult<bool>>;
}

/// A pod network the driver found broken and set up again.
#[derive(Debug, Clone)]
pub struct Repaired {
    pub problem: String,
    pub status: NetworkStatus,
}

/// Pod networks, through the configured drivers (`host` for
/// `hostNetwork: true` pods).
pub trait Networks: Send + Sync {
    fn setup<'a>(
        &'a self,
        request: &'a PodNetwork,
        host_network: bool,
    ) -> BoxFuture<'a, HostResult<NetworkStatus>>;

    /// Checks a network set up earlier; repairs it in place when broken.
    fn verify<'a>(
        &'a self,
        request: &'a PodNetwork,
        host_network: bool,
    ) -> BoxFuture<'a, HostResult<Option<Repaired>>>;

    fn teardown<'a>(
        &'a self,
        request: &'a PodNetwork,
        host_network: bool,
    ) -> BoxFuture<'a, HostResult<()>>;

    /// Removes the network state of every pod not in `alive`; returns the
    /// problems.
    fn cleanup_orphans<'a>(&'a self, alive: &'a HashSet<String>) -> BoxFuture<'a, Vec<String>>;
}

/// The pods' records ([`PodState`]), written before the actions they
/// describe.
pub trait PodRecords: Send + Sync {
    fn load<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, HostResult<Option<PodState>>>;
    fn save<'a>(&'a self, state: &'a PodState) -> BoxFuture<'a, HostResult<()>>;
    fn remove<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, HostResult<()>>;
    /// Every record, and the ones that could not be read.
    fn list(&self) -> BoxFuture<'_, (Vec<PodState>, Vec<String>)>;
}

/// Why a container must be stopped: a failed liveness or startup probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillRequest {
    /// For the Killing event: `it failed its liveness probe`.
    pub why: String,
    /// The probe's `terminationGracePeriodSeconds`, if set.
    pub grace: Option<Duration>,
}

/// The probes of running containers.
pub trait Probes: Send + Sync {
    /// Starts the probes of `container` running as `id` (once).
    fn watch(&self, key: &ObjectKey, container: &api::Container, id: &str, host: IpAddr);
    /// Ready as far as its probes say (true without a readiness probe).
    fn ready(&self, id: &str) -> bool;
    /// A failed liveness or startup probe asks for `id` to be stopped.
    fn kill_request(&self, id: &str) -> Option<KillRequest>;
    fn forget(&self, id: &str);
}

/// Container exits, turned into syncs of their pods.
pub trait Exits: Send + Sync {
    fn watch(&self, id: &str, key: &ObjectKey);
    fn forget(&self, id: &str);
}

/// Runs the action of a probe or lifecycle hook (exec, httpGet,
/// tcpSocket, sleep) against a container.
pub trait Handlers: Send + Sync {
    fn run<'a>(
        &'a self,
        action: &'a Action,
        container_id: &'a str,
        pod_host: IpAddr,
        timeout: Duration,
    ) -> BoxFuture<'a, Outcome>;
}

pub trait Events: Send + Sync {
    fn record(&self, event: Event);
}

/// The wall clock, in Unix ms (restart back-offs are wall-clock times in
/// the pod's record, so they survive an agent restart).
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// Which desired object a status is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: SourceRef,
    pub generation: u64,
}

/// The pods' status (`berth status`, `ps`, `inspect`).
pub trait StatusSink: Send + Sync {
    fn report(
        &self,
        key: &ObjectKey,
        origin: &Origin,
        phase: Phase,
        message: String,
        details: Option<Details>,
    );
    /// A sync failed: the error stays in the status until the next success.
    fn report_error(&self, key: &ObjectKey, origin: Option<&Origin>, error: &str);
    /// The pod is being removed.
    fn terminating(&self, key: &ObjectKey, message: &str);
    /// The pod is gone and everything it had is removed.
    fn remove(&self, key: &ObjectKey);
}

/// A lock taken on behalf of an update: released when dropped (after the
/// container stopped, or when the update gives up).
pub struct TakenLock(#[allow(dead_code, reason = "held for its Drop")] pub std::fs::File);

/// A container's update lock, as berth tried to take it.
pub enum Lock {
    /// No lock file (or not a regular file, or the container is gone).
    Absent,
    Taken(TakenLock),
    /// Someone in the container holds it.
    Held,
}

/// The update locks of running containers (`super::update`), and the
/// one-time overrides `berth update --force` leaves.
pub trait UpdateLocks: Send + Sync {
    /// Tries to take the update lock of the container whose first process
    /// is `pid`, without waiting.
    fn take(&self, pid: i32) -> BoxFuture<'_, Lock>;

    /// Consumes a `berth update --force` for pod `key`: true once per
    /// override.
    fn take_force<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, bool>;
}

/// Everything the pod layer acts through. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub sandboxes: Arc<dyn Sandboxes>,
    pub images: Arc<dyn Images>,
    pub networks: Arc<dyn Networks>,
    pub records: Arc<dyn PodRecords>,
    pub probes: Arc<dyn Probes>,
    pub exits: Arc<dyn Exits>,
    pub handlers: Arc<dyn Handlers>,
    pub events: Arc<dyn Events>,
    pub status: Arc<dyn StatusSink>,
    pub clock: Arc<dyn Clock>,
    /// Containers' update locks.
    pub locks: Arc<dyn UpdateLocks>,
    pub config: PodsConfig,
    /// The node's name (the `spec.nodeName` field pods see) and labels
    /// (which pods it runs).
    pub node: Arc<crate::node::Node>,
}
