//! Running containers: pod sandboxes, OCI bundles with Kubernetes
//! semantics, the runtime binary (runc or crun), one berth-shim per
//! container, cgroups and logs. [`Runtime`] is the API the pod reconciler
//! uses; the submodules are its parts.
//!
//! A pod's life through this API:
//!
//! 1. [`Runtime::create_sandbox`] (IPC/UTS namespaces, /dev/shm, /etc
//!    files; the network namespace comes from netplugins) and
//!    [`Runtime::prepare_volumes`];
//! 2. per container: [`Runtime::create_container`] mounts the rootfs,
//!    writes the bundle and starts it through a shim, which outlives the
//!    agent; [`Runtime::stop`] (stop signal, grace, SIGKILL),
//!    [`Runtime::remove_container`];
//! 3. [`Runtime::remove_pod`]: the sandbox, volumes and the pod's cgroup.
//!
//! After an agent restart, [`Runtime::list`] finds every container again
//! from the shim state directories, with its real exit status if it ended
//! meanwhile.
//!
//! One file per operation of [`Runtime`]: `handlers.rs` (which OCI runtime
//! runs a container), `pods.rs` (sandbox, volumes, pod removal),
//! `create.rs`, `inspect.rs` (container, list), `stop.rs` (kill, wait,
//! stop), `remove.rs`, `exec.rs`; `rootfs.rs` mounts a container's overlay.

pub mod atomic_writer;
pub mod bundle;
pub mod cgroups;
pub mod config;
mod create;
pub mod disk_usage;
mod exec;
pub mod flavor;
pub mod from_pod;
mod handlers;
mod idmap;
mod inspect;
mod isolation;
pub mod logs;
pub mod mountinfo;
pub mod oci;
pub mod oom;
mod pod_init;
mod pods;
pub mod probe;
pub mod process;
mod remove;
pub mod rlimits;
pub mod rootfs;
pub mod sandbox;
pub mod seccomp;
pub mod seccomp_bpf;
mod seccomp_localhost;
pub mod security;
pub mod shim;
pub mod spec;
mod stop;
mod sysctls;
mod traverse;
pub mod user;
mod userns;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oci_spec::image::Config as ImageConfig;

use crate::paths::Paths;
pub use bundle::{BundleError, HostFacts, ResolvedMount};
pub use cgroups::{CgroupError, CgroupLayout, CgroupMode};
pub use config::RuntimeConfig;
pub use exec::{CappedOutput, EXEC_OUTPUT_LIMIT, ExecCommand, ExecRequest, exit_code, run_capped};
pub use handlers::{DefaultChoice, HandlerReport};
pub use oci::{Handler, OciError, RuntimeKind};
pub use sandbox::{EtcFiles, PodSandbox, SandboxError};
pub use shim::{ContainerRecord, ExitStatus, ShimError};
pub use spec::{ContainerSpec, PodInfo, Volume};
pub use volumes::{PreparedVolume, VolumeError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no usable OCI runtime handler on this host: {reasons}")]
    NoHandler { reasons: String },
    #[error(
        "runtimeClassName {name:?} names no runtime handler (configured: {known}); add [runtime.handlers.{name}] to the agent config"
    )]
    UnknownHandler { name: String, known: String },
    #[error("runtime handler {handler} ({version}) cannot run containers on this host: {reason}")]
    Unsupported {
        handler: String,
        version: String,
        reason: String,
    },
    /// The handler cannot honour something the container asks for (see
    /// `flavor::check`).
    #[error("{reason}")]
    NotHonoured { reason: String },
    #[error(
        "berth-shim not found (looked at {looked}); set `shim` in the agent's [runtime] config"
    )]
    NoShim { looked: String },
    #[error(
        "invalid container id or pod UID {id:?}: use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    InvalidId { id: String },
    #[error("container {id} already exists (its state is in {dir})")]
    AlreadyExists { id: String, dir: PathBuf },
    #[error("container {id} does not exist (no state in {dir})")]
    NotFound { id: String, dir: PathBuf },
    #[error("container {id} is not running")]
    NotRunning { id: String },
    #[error("container {id} did not exit within {timeout:?} after SIGKILL")]
    StopTimeout { id: String, timeout: Duration },
    #[error("the agent is shutting down: {what} did not run")]
    ShuttingDown { what: &'static str },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Shim(#[from] ShimError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Traverse(#[from] traverse::TraverseError),
    /// Both failures, the creation's with its causes first; neither is
    /// a `source()`, since a chain has room for one cause only.
    #[error(
        "{}; cleaning up the half-made container then failed too: {cleanup}",
        crate::status::chain(error.as_ref())
    )]
    CreateFailed {
        error: Box<RuntimeError>,
        cleanup: CleanupErrors,
    },
}

/// Every failure of a teardown: cleanup goes on past the first one.
#[derive(Debug, thiserror::Error)]
#[error("cleaning up {what}: {}", .errors.join("; "))]
pub struct CleanupErrors {
    pub what: String,
    pub errors: Vec<String>,
}

impl CleanupErrors {
    fn into_result(what: String, errors: Vec<String>) -> Result<(), CleanupErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CleanupErrors { what, errors })
        }
    }
}

/// A container as found on disk.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    /// `None` if the record is missing or unreadable (a half-made container
    /// the agent should remove).
    pub record: Option<ContainerRecord>,
    pub state: ContainerState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// The shim runs and the runtime is still creating or starting it.
    Creating {
        shim_pid: i32,
    },
    /// `shim_alive` false: the container runs but nobody supervises it
    /// (the shim was killed); its logs and exit status are lost.
    Running {
        pid: i32,
        shim_pid: Option<i32>,
        shim_alive: bool,
    },
    Exited(ExitStatus),
    /// Neither running nor with an exit file: the shim died before the
    /// container ended, or the container never started.
    Unknown {
        reason: String,
    },
}

/// Everything [`Runtime::create_container`] needs.
pub struct CreateContainer<'a> {
    /// Unique among the host's containers (see [`RuntimeError::InvalidId`]).
    pub id: &'a str,
    pub pod: &'a PodInfo,
    pub sandbox: &'a PodSandbox,
    pub container: &'a ContainerSpec,
    pub image: Option<&'a ImageConfig>,
    /// The image's layer directories, top first.
    pub lowerdirs: &'a [PathBuf],
    /// The pod's volumes, from [`Runtime::prepare_volumes`].
    pub volumes: &'a BTreeMap<String, PreparedVolume>,
    /// `runtimeClassName`; `None` for the default handler.
    pub runtime_class: Option<&'a str>,
    /// Where the log goes: `logs::instance_log(Paths::container_logs(…),
    /// restart_count)`.
    pub log_path: PathBuf,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct CreatedContainer {
    pub id: String,
    pub pid: i32,
    pub handler: String,
    /// What the container did not get as asked (for the pod's status).
    pub warnings: Vec<String>,
}

/// How a stop went.
#[derive(Debug, Clone)]
pub struct StopOutcome {
    pub exit: ExitStatus,
    /// When the stop signal was sent (`None`: it had already exited).
    pub signal_sent_at: Option<SystemTime>,
    /// Whether the grace period ran out and SIGKILL was needed.
    pub killed: bool,
}

/// The container API. Cheap to clone (one `Arc`): async methods move a
/// clone onto tokio's blocking pool for their file system and mount work,
/// and callers can do the same around the sync ones.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    paths: Paths,
    config: RuntimeConfig,
    shim_binary: PathBuf,
    handlers: BTreeMap<String, Handler>,
    /// Handlers that could not even be identified, and why.
    broken: BTreeMap<String, String>,
    layout: CgroupLayout,
    host: HostFacts,
    /// Seccomp filters crun compiled, reused for later containers.
    seccomp_bpf: Arc<seccomp_bpf::BpfCache>,
}

impl Runtime {
    /// Looks at the host (cgroups, runtime binaries, the shim) once.
    pub fn new(paths: Paths, config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let layout = CgroupLayout::detect()?;
        let shim_binary = handlers::find_shim(&config)?;
        let mut candidates: BTreeMap<String, (PathBuf, Vec<String>)> = config
            .handlers
            .iter()
            .map(|(name, h)| (name.clone(), (h.path.clone(), h.args.clone())))
            .collect();
        for name in ["runc", "crun"] {
            if !candidates.contains_key(name)
                && let Some(path) = handlers::find_in_path(name)
            {
                candidates.insert(name.to_string(), (path, Vec::new()));
            }
        }
        let mut handlers = BTreeMap::new();
        let mut broken = BTreeMap::new();
        for (name, (binary, args)) in candidates {
            match Handler::detect(&name, &binary, &args, paths.runtime_state(&name)) {
                Ok(handler) => {
                    handlers.insert(name, handler);
                }
                Err(err) => {
                    broken.insert(name, crate::status::chain(&err));
                }
            }
        }
        let swap_accounting = layout.controller_dir("memory", "/").is_some_and(|dir| {
            !layout.is_v2("memory") && dir.join("memory.memsw.limit_in_bytes").exists()
        });
        let host = HostFacts {
            cap_bounding: security::host_bounding_set(),
            cgroup_mode: layout.mode,
            swap_accounting,
            memory_total: oom::memory_total(),
            agent_oom_score_adj: oom::own_score(),
            apparmor_enabled: isolation::apparmor_enabled(),
            seccomp_profile_root: config
                .seccomp_profile_root
                .clone()
                .unwrap_or_else(|| paths.root.join("seccomp")),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                paths,
                config,
                shim_binary,
                handlers,
                broken,
                layout,
                host,
                seccomp_bpf: Arc::default(),
            }),
        })
    }

    /// Uses `layout` instead of the detected cgroup layout (to show what
    /// happens on another kind of host).
    pub fn with_cgroup_layout(mut self, layout: CgroupLayout) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.host.cgroup_mode = layout.mode;
        inner.layout = layout;
        self
    }

    pub fn paths(&self) -> &Paths {
        &self.inner.paths
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.inner.layout
    }

    /// Runs `work` on tokio's blocking pool, in the caller's tracing span:
    /// mounts and file system work (which an image or a stuck mount can
    /// make slow or hang) never occupy, let alone wedge, an async worker.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&Runtime) -> T + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let runtime = self.clone();
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| work(&runtime))).await {
            Ok(value) => Ok(value),
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only a runtime shutting down cancels a blocking task.
                Err(_) => Err(RuntimeError::ShuttingDown { what }),
            },
        }
    }
}

fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidId { id: id.to_string() })
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), RuntimeError> {
    crate::fsutil::create_dir_all_with_mode(path, mode).map_err(|source| RuntimeError::Io {
        action: "creating",
        path: path.to_path_buf(),
        source,
    })
}

fn now_ns() -> u64 {
    crate::status::time::unix_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_checked() {
        for good in ["c1", "pod-uid_app.0", &"a".repeat(128)] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a/b", "../x", "a b", &"a".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_create_whose_cleanup_failed_says_both_with_their_causes_once() {
        let err = RuntimeError::CreateFailed {
            error: Box::new(RuntimeError::Io {
                action: "writing",
                path: "/run/berth/bundles/c1/config.json".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            }),
            cleanup: CleanupErrors {
                what: "container c1".into(),
                errors: vec!["removing /run/berth/bundles/c1: busy".into()],
            },
        };
        assert_eq!(
            crate::status::chain(&err),
            "writing /run/berth/bundles/c1/config.json: No space left on device (os error 28); \
             cleaning up the half-made container then failed too: \
             cleaning up container c1: removing /run/berth/bundles/c1: busy"
        );
    }
}
