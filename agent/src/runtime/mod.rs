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

pub mod bundle;
pub mod cgroups;
pub mod from_pod;
pub mod logs;
pub mod mountinfo;
pub mod oci;
pub mod process;
pub mod rlimits;
pub mod sandbox;
pub mod seccomp;
pub mod seccomp_bpf;
pub mod security;
pub mod shim;
pub mod spec;
pub mod user;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use oci_spec::image::Config as ImageConfig;

use crate::config::RuntimeConfig;
use crate::paths::Paths;
pub use bundle::{BundleError, HostFacts, ResolvedMount};
pub use cgroups::{CgroupError, CgroupLayout, CgroupMode};
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
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
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
    #[error("{source}; cleaning up the half-made container then failed too: {cleanup}")]
    CreateFailed {
        source: Box<RuntimeError>,
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

/// A command to run inside a running container (`berth exec`, probes).
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// A real pty (`-t`).
    pub tty: bool,
    /// Extra `NAME=value` variables.
    pub env: Vec<String>,
}

/// `RUNTIME exec` ready to run; the process file is removed on drop.
pub struct ExecCommand {
    pub command: std::process::Command,
    _process_file: tempfile::TempPath,
}

pub struct Runtime {
    paths: Paths,
    config: RuntimeConfig,
    shim_binary: PathBuf,
    handlers: BTreeMap<String, Handler>,
    /// Handlers that could not even be identified, and why.
    broken: BTreeMap<String, String>,
    layout: CgroupLayout,
    host: HostFacts,
    /// Seccomp filters crun compiled, reused for later containers.
    seccomp_bpf: seccomp_bpf::BpfCache,
}

impl Runtime {
    /// Looks at the host (cgroups, runtime binaries, the shim) once.
    pub fn new(paths: Paths, config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let layout = CgroupLayout::detect()?;
        let shim_binary = find_shim(&config)?;
        let mut candidates: BTreeMap<String, (PathBuf, Vec<String>)> = config
            .handlers
            .iter()
            .map(|(name, h)| (name.clone(), (h.path.clone(), h.args.clone())))
            .collect();
        for name in ["runc", "crun"] {
            if !candidates.contains_key(name)
                && let Some(path) = find_in_path(name)
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
                    broken.insert(name, err.to_string());
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
        };
        Ok(Self {
            paths,
            config,
            shim_binary,
            handlers,
            broken,
            layout,
            host,
            seccomp_bpf: seccomp_bpf::BpfCache::default(),
        })
    }

    /// Uses `layout` instead of the detected cgroup layout (to show what
    /// happens on another kind of host).
    pub fn with_cgroup_layout(mut self, layout: CgroupLayout) -> Self {
        self.host.cgroup_mode = layout.mode;
        self.layout = layout;
        self
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    pub fn handlers(&self) -> impl Iterator<Item = &Handler> {
        self.handlers.values()
    }

    /// Why `handler` cannot run containers on this host, if it cannot.
    pub fn unsupported_reason(&self, handler: &Handler) -> Option<String> {
        match handler.kind {
            RuntimeKind::Crun => self.layout.crun_blocker(),
            RuntimeKind::Runc | RuntimeKind::Other => None,
        }
    }

    /// The handler for `runtime_class`, or the default one: the configured
    /// `default-handler`, else crun where it can work (it starts faster),
    /// else runc, else any usable handler.
    pub fn handler_for(&self, runtime_class: Option<&str>) -> Result<&Handler, RuntimeError> {
        let name = match runtime_class.or(self.config.default_handler.as_deref()) {
            Some(name) => name.to_string(),
            None => return self.auto_handler(),
        };
        let handler = self
            .handlers
            .get(&name)
            .ok_or_else(|| match self.broken.get(&name) {
                Some(reason) => RuntimeError::Unsupported {
                    handler: name.clone(),
                    version: "unknown".into(),
                    reason: reason.clone(),
                },
                None => RuntimeError::UnknownHandler {
                    name: name.clone(),
                    known: self.handlers.keys().cloned().collect::<Vec<_>>().join(", "),
                },
            })?;
        match self.unsupported_reason(handler) {
            Some(reason) => Err(RuntimeError::Unsupported {
                handler: handler.name.clone(),
                version: handler.version.clone(),
                reason,
            }),
            None => Ok(handler),
        }
    }

    fn auto_handler(&self) -> Result<&Handler, RuntimeError> {
        let preferred = ["crun", "runc"]
            .into_iter()
            .filter_map(|n| self.handlers.get(n))
            .chain(self.handlers.values());
        let mut reasons = Vec::new();
        for handler in preferred {
            match self.unsupported_reason(handler) {
                None => return Ok(handler),
                Some(reason) => reasons.push(format!("{}: {reason}", handler.name)),
            }
        }
        reasons.extend(self.broken.iter().map(|(n, r)| format!("{n}: {r}")));
        if reasons.is_empty() {
            reasons.push("neither runc nor crun is installed (apt-get install runc)".into());
        }
        Err(RuntimeError::NoHandler {
            reasons: reasons.join("; "),
        })
    }

    /// The pod's sandbox: IPC/UTS namespaces (hostname set), /dev/shm and
    /// /etc files. `net_ns` is the namespace file from netplugins, `None`
    /// for hostNetwork. Idempotent.
    pub fn create_sandbox(
        &self,
        pod: &PodInfo,
        net_ns: Option<PathBuf>,
        etc: &EtcFiles,
    ) -> Result<PodSandbox, RuntimeError> {
        // The UID names directories and cgroups.
        validate_id(&pod.uid)?;
        Ok(PodSandbox::create(
            &self.paths,
            pod,
            net_ns,
            self.config.shm_size,
            etc,
        )?)
    }

    /// Makes the pod's volumes exist (hostPath checks, emptyDirs). Idempotent.
    pub fn prepare_volumes(
        &self,
        pod_uid: &str,
        volumes: &[Volume],
    ) -> Result<BTreeMap<String, PreparedVolume>, RuntimeError> {
        validate_id(pod_uid)?;
        volumes
            .iter()
            .map(|v| Ok((v.name.clone(), volumes::prepare(&self.paths, pod_uid, v)?)))
            .collect()
    }

    /// Removes the pod's sandbox, volumes and cgroup (after its containers).
    pub fn remove_pod(&self, pod_uid: &str) -> Result<(), CleanupErrors> {
        validate_id(pod_uid).map_err(|e| CleanupErrors {
            what: format!("pod {pod_uid}"),
            errors: vec![e.to_string()],
        })?;
        let mut errors: Vec<String> = PodSandbox::remove(&self.paths, pod_uid)
            .iter()
            .map(ToString::to_string)
            .collect();
        let pod_cgroup = cgroups::pod_cgroup(&self.config.cgroup_parent, pod_uid);
        errors.extend(
            self.layout
                .remove_tree(&pod_cgroup)
                .iter()
                .map(ToString::to_string),
        );
        CleanupErrors::into_result(format!("pod {pod_uid}"), errors)
    }

    /// UIDs of the pods that have anything on this host: a sandbox
    /// directory or a cgroup under the configured parent. After a restart
    /// the agent removes those no manifest wants ([`Runtime::remove_pod`]).
    pub fn pods_on_host(&self) -> Vec<String> {
        let parent = format!("/{}", self.config.cgroup_parent.trim_matches('/'));
        let from_cgroups = self
            .layout
            .hierarchy_dirs(&parent)
            .into_iter()
            .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("pod-")
                    .map(str::to_string)
            });
        let from_sandboxes = std::fs::read_dir(self.paths.pods())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string));
        let mut uids: Vec<String> = from_cgroups.chain(from_sandboxes).collect();
        uids.sort();
        uids.dedup();
        uids
    }

    /// Mounts the rootfs, writes the bundle and starts the container
    /// through a new shim. On failure nothing is left behind (or the error
    /// says what could not be removed).
    pub async fn create_container(
        &self,
        req: CreateContainer<'_>,
    ) -> Result<CreatedContainer, RuntimeError> {
        validate_id(req.id)?;
        let handler = self.handler_for(req.runtime_class)?;
        let state_dir = self.paths.shim_dir(req.id);
        if state_dir.exists() {
            return Err(RuntimeError::AlreadyExists {
                id: req.id.to_string(),
                dir: state_dir,
            });
        }
        match self.try_create(&req, handler).await {
            Ok(created) => {
                tracing::info!(
                    container = req.id,
                    pod = %format!("{}/{}", req.pod.namespace, req.pod.name),
                    name = %req.container.name,
                    pid = created.pid,
                    handler = %handler.name,
                    "container started"
                );
                Ok(created)
            }
            Err(err) => {
                tracing::warn!(container = req.id, error = %err, "container could not start");
                let errors = self.cleanup(req.id, Some(handler)).await;
                match CleanupErrors::into_result(format!("container {}", req.id), errors) {
                    Ok(()) => Err(err),
                    Err(cleanup) => Err(RuntimeError::CreateFailed {
                        source: Box::new(err),
                        cleanup,
                    }),
                }
            }
        }
    }

    async fn try_create(
        &self,
        req: &CreateContainer<'_>,
        handler: &Handler,
    ) -> Result<CreatedContainer, RuntimeError> {
        let id = req.id;
        let state_dir = self.paths.shim_dir(id);
        let bundle_dir = self.paths.bundle(id);
        make_dir(&state_dir, 0o711)?;
        make_dir(&bundle_dir, 0o700)?;
        make_dir(&handler.root, 0o700)?;
        if let Some(parent) = req.log_path.parent() {
            make_dir(parent, 0o750)?;
        }
        let rootfs_dir = bundle_dir.join("rootfs");
        let cgroups_path = cgroups::container_cgroup(&self.config.cgroup_parent, &req.pod.uid, id);
        // The record first: whatever happens next, cleanup can find it all.
        let mut record = ContainerRecord {
            id: id.to_string(),
            pod_uid: req.pod.uid.clone(),
            pod_namespace: req.pod.namespace.clone(),
            pod_name: req.pod.name.clone(),
            container_name: req.container.name.clone(),
            handler: handler.name.clone(),
            bundle: bundle_dir.clone(),
            rootfs: rootfs_dir.clone(),
            cgroups_path: cgroups_path.clone(),
            log_path: req.log_path.clone(),
            stop_signal: "SIGTERM".into(),
            tty: req.container.tty,
            created_at_ns: now_ns(),
            labels: req.labels.clone(),
        };
        shim::write_record(&state_dir, &record)?;

        crate::rootfs::create(&self.paths, id, req.lowerdirs, &rootfs_dir)?;
        tracing::debug!(container = id, "rootfs mounted");
        let mounts = self.resolve_mounts(req, &bundle_dir)?;
        let accounts = user::AccountFiles::read(&rootfs_dir)?;
        let host_limits = rlimits::AgentLimits {
            has_sys_resource: security::host_has_sys_resource(),
        };
        let mut built = bundle::build(&bundle::BundleRequest {
            pod: req.pod,
            sandbox: req.sandbox,
            container: req.container,
            image: req.image,
            accounts: &accounts,
            mounts: &mounts,
            cgroups_path: &cgroups_path,
            rlimits: &self.config.rlimits,
            host: &self.host,
            host_limits: &host_limits,
        })?;
        let uncompiled = self.seccomp_bpf.apply(handler, &mut built.spec);
        bundle::write(&bundle_dir, &built.spec)?;
        tracing::debug!(
            container = id,
            seccomp_compiled = uncompiled.is_none(),
            "bundle written"
        );
        record.stop_signal = built.stop_signal.clone();
        shim::write_record(&state_dir, &record)?;

        let started = shim::launch(&shim::ShimLaunch {
            shim_binary: self.shim_binary.clone(),
            id: id.to_string(),
            bundle: bundle_dir,
            state_dir,
            runtime: handler.binary.clone(),
            runtime_args: handler.args.clone(),
            runtime_root: handler.root.clone(),
            log_file: req.log_path.clone(),
            log_max_size: self.config.log_max_size,
            log_max_files: self.config.log_max_files,
            tty: req.container.tty,
            oom_file: self.layout.oom_file(&cgroups_path),
            timeout: Duration::from_secs(self.config.start_timeout_secs),
        })
        .await?;
        if let Some(pending) = uncompiled {
            self.seccomp_bpf.learn(pending, handler, id);
        }
        Ok(CreatedContainer {
            id: id.to_string(),
            pid: started.container_pid,
            handler: handler.name.clone(),
            warnings: built.warnings,
        })
    }

    /// Volume mounts → host sources; subPaths are bind-mounted into the
    /// bundle first so they cannot be redirected.
    fn resolve_mounts(
        &self,
        req: &CreateContainer<'_>,
        bundle_dir: &Path,
    ) -> Result<Vec<ResolvedMount>, RuntimeError> {
        let mut mounts = Vec::new();
        for (n, mount) in req.container.volume_mounts.iter().enumerate() {
            let volume = req.volumes.get(&mount.name).ok_or_else(|| {
                RuntimeError::Volume(VolumeError::SubPath {
                    volume: mount.name.clone(),
                    sub_path: mount.sub_path.clone().unwrap_or_default(),
                    problem: format!(
                        "is mounted by container {:?} at {} but is not a volume of the pod",
                        req.container.name, mount.mount_path
                    ),
                })
            })?;
            let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                None => volume.host_path.clone(),
                Some(sub_path) => volumes::mount_sub_path(
                    &mount.name,
                    &volume.host_path,
                    sub_path,
                    &bundle_dir.join("subpaths").join(n.to_string()),
                )?,
            };
            mounts.push(ResolvedMount {
                source,
                destination: mount.mount_path.clone(),
                read_only: mount.read_only || volume.always_read_only,
            });
        }
        Ok(mounts)
    }

    /// The container `id` as found on disk.
    pub fn container(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let dir = self.paths.shim_dir(id);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound {
                id: id.to_string(),
                dir,
            });
        }
        Ok(self.inspect(id, &dir))
    }

    /// Every container on this host (the shim state directories): what a
    /// restarted agent adopts. Running containers are left alone.
    pub fn list(&self) -> Vec<ContainerInfo> {
        let mut found: Vec<ContainerInfo> = std::fs::read_dir(self.paths.shims())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let id = e.file_name().to_str()?.to_string();
                Some(self.inspect(&id, &e.path()))
            })
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    fn inspect(&self, id: &str, dir: &Path) -> ContainerInfo {
        let record = shim::read_record(dir).ok();
        let state = match shim::read_exit(dir) {
            Ok(Some(exit)) => ContainerState::Exited(exit),
            Err(err) => ContainerState::Unknown {
                reason: err.to_string(),
            },
            Ok(None) => {
                let shim = shim::ProcessRef::read(&dir.join(shim::SHIM_PID_FILE));
                let shim_alive = shim.is_some_and(|s| s.is_alive());
                let container = shim::ProcessRef::read(&dir.join(shim::CONTAINER_PID_FILE));
                match (container, shim) {
                    (Some(c), _) if c.is_alive() => ContainerState::Running {
                        pid: c.pid,
                        shim_pid: shim.map(|s| s.pid),
                        shim_alive,
                    },
                    (None, Some(s)) if shim_alive => ContainerState::Creating { shim_pid: s.pid },
                    // The shim may have written the exit file just now.
                    _ => match shim::read_exit(dir) {
                        Ok(Some(exit)) => ContainerState::Exited(exit),
                        _ => ContainerState::Unknown {
                            reason: if container.is_some() {
                                "the container's process is gone and its shim died without recording how it ended".into()
                            } else {
                                "the container never started and its shim is gone".into()
                            },
                        },
                    },
                }
            }
        };
        ContainerInfo {
            id: id.to_string(),
            record,
            state,
        }
    }

    fn record(&self, id: &str) -> Result<ContainerRecord, RuntimeError> {
        let dir = self.paths.shim_dir(id);
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound {
                id: id.to_string(),
                dir,
            });
        }
        Ok(shim::read_record(&dir)?)
    }

    fn handler_of(&self, record: &ContainerRecord) -> Result<&Handler, RuntimeError> {
        self.handlers
            .get(&record.handler)
            .ok_or_else(|| RuntimeError::UnknownHandler {
                name: record.handler.clone(),
                known: self.handlers.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Sends `signal` (e.g. `SIGHUP`, `9`) to the container's init.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        let record = self.record(id)?;
        let handler = self.handler_of(&record)?;
        match handler.kill(id, signal).await {
            Ok(()) => Ok(()),
            Err(err) => match self.container(id)?.state {
                ContainerState::Running { .. } | ContainerState::Creating { .. } => Err(err.into()),
                _ => Err(RuntimeError::NotRunning { id: id.to_string() }),
            },
        }
    }

    /// Waits up to `timeout` for the container to exit.
    pub async fn wait(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>, RuntimeError> {
        Ok(shim::wait_exit(&self.paths.shim_dir(id), timeout).await?)
    }

    /// Graceful stop: the image's StopSignal (else SIGTERM), then SIGKILL
    /// once `grace` has passed. Returns when the exit file exists.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let record = self.record(id)?;
        let handler = self.handler_of(&record)?;
        let dir = self.paths.shim_dir(id);
        if let Some(exit) = shim::read_exit(&dir)? {
            return Ok(StopOutcome {
                exit,
                signal_sent_at: None,
                killed: false,
            });
        }
        let sent_at = SystemTime::now();
        tracing::info!(container = id, signal = %record.stop_signal, ?grace, "stopping container");
        if let Err(err) = handler.kill(id, &record.stop_signal).await {
            // It may have exited just before the signal.
            if let Some(exit) = shim::wait_exit(&dir, Duration::from_secs(1)).await? {
                return Ok(StopOutcome {
                    exit,
                    signal_sent_at: Some(sent_at),
                    killed: false,
                });
            }
            return Err(err.into());
        }
        if let Some(exit) = shim::wait_exit(&dir, grace).await? {
            return Ok(StopOutcome {
                exit,
                signal_sent_at: Some(sent_at),
                killed: false,
            });
        }
        tracing::info!(container = id, ?grace, "grace period over, sending SIGKILL");
        let _ = handler.kill(id, "SIGKILL").await;
        let timeout = Duration::from_secs(30);
        match shim::wait_exit(&dir, timeout).await? {
            Some(exit) => Ok(StopOutcome {
                exit,
                signal_sent_at: Some(sent_at),
                killed: true,
            }),
            None => Err(RuntimeError::StopTimeout {
                id: id.to_string(),
                timeout,
            }),
        }
    }

    /// Removes the container and everything it had: the runtime's state,
    /// its rootfs mount and writable layer, cgroup, bundle and shim state.
    /// A running container is killed first. Keeps its log (for
    /// `--previous`). Goes on past failures and reports them all.
    pub async fn remove_container(&self, id: &str) -> Result<(), CleanupErrors> {
        validate_id(id).map_err(|e| CleanupErrors {
            what: format!("container {id}"),
            errors: vec![e.to_string()],
        })?;
        let record = shim::read_record(&self.paths.shim_dir(id)).ok();
        let handler = record.as_ref().and_then(|r| self.handlers.get(&r.handler));
        let errors = self.cleanup(id, handler).await;
        if errors.is_empty() {
            tracing::info!(container = id, "container removed");
        } else {
            tracing::warn!(
                container = id,
                ?errors,
                "container removal left something behind"
            );
        }
        CleanupErrors::into_result(format!("container {id}"), errors)
    }

    async fn cleanup(&self, id: &str, handler: Option<&Handler>) -> Vec<String> {
        let mut errors = Vec::new();
        let dir = self.paths.shim_dir(id);
        let record = shim::read_record(&dir).ok();
        if let ContainerState::Running { .. } | ContainerState::Creating { .. } =
            self.inspect(id, &dir).state
            && let Some(handler) = handler
        {
            let _ = handler.kill(id, "SIGKILL").await;
            if let Ok(None) = shim::wait_exit(&dir, Duration::from_secs(10)).await {
                errors.push(format!("container {id} did not exit after SIGKILL"));
            }
        }
        // The shim exits right after writing the exit file; one that
        // lingers (it should not) is killed, so no process is left.
        if let Some(shim) = shim::ProcessRef::read(&dir.join(shim::SHIM_PID_FILE))
            && !wait_gone(shim, Duration::from_secs(5)).await
        {
            let pid = nix::unistd::Pid::from_raw(shim.pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            if !wait_gone(shim, Duration::from_secs(5)).await {
                errors.push(format!("shim {} of container {id} does not exit", shim.pid));
            }
        }
        if let Some(handler) = handler
            && let Err(err) = handler.delete(id).await
        {
            errors.push(err.to_string());
        }
        let bundle_dir = self.paths.bundle(id);
        let before_unmount = errors.len();
        errors.extend(
            volumes::unmount_under(&bundle_dir)
                .iter()
                .map(ToString::to_string),
        );
        errors.extend(
            crate::rootfs::remove(&self.paths, id, &bundle_dir.join("rootfs"))
                .iter()
                .map(ToString::to_string),
        );
        if let Some(record) = &record {
            errors.extend(
                self.layout
                    .remove(&record.cgroups_path)
                    .iter()
                    .map(ToString::to_string),
            );
        }
        // After a failed unmount something may still be mounted in the
        // bundle (a hostPath subPath): it stays for a later cleanup.
        let unmounted = errors.len() == before_unmount;
        for path in [&bundle_dir, &dir] {
            if path == &bundle_dir && !unmounted {
                continue;
            }
            if let Err(err) = crate::rootfs::remove_dir_all_if_exists(path) {
                errors.push(format!("removing {}: {err}", path.display()));
            }
        }
        errors
    }

    /// `RUNTIME exec` of `req` in container `id`, to be run by the caller
    /// with its own stdio (so `-t` gets a real terminal). The process
    /// inherits the container's user, capabilities, no_new_privs and
    /// environment (the runtime applies its seccomp profile).
    pub fn exec_command(&self, id: &str, req: &ExecRequest) -> Result<ExecCommand, RuntimeError> {
        let record = self.record(id)?;
        let handler = self.handler_of(&record)?;
        if !matches!(self.container(id)?.state, ContainerState::Running { .. }) {
            return Err(RuntimeError::NotRunning { id: id.to_string() });
        }
        let config_path = record.bundle.join("config.json");
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Io {
                action,
                path,
                source,
            }
        };
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&config_path).map_err(io("reading", &config_path))?,
        )
        .map_err(|e| RuntimeError::Io {
            action: "parsing",
            path: config_path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut process = config["process"].clone();
        process["args"] = serde_json::json!(req.argv);
        process["terminal"] = serde_json::json!(req.tty);
        if let Some(env) = process["env"].as_array_mut() {
            env.extend(req.env.iter().map(|e| serde_json::json!(e)));
        }
        let file = tempfile::Builder::new()
            .prefix("exec-")
            .suffix(".json")
            .tempfile_in(&record.bundle)
            .map_err(io("creating a process file in", &record.bundle))?;
        serde_json::to_writer(file.as_file(), &process).map_err(|e| RuntimeError::Io {
            action: "writing",
            path: file.path().to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let process_file = file.into_temp_path();
        let mut command = handler.std_command();
        command
            .arg("exec")
            .arg("--process")
            .arg(&process_file)
            .arg(id);
        Ok(ExecCommand {
            command,
            _process_file: process_file,
        })
    }

    /// Runs `argv` in container `id` and returns (exit code, stdout,
    /// stderr); for probes and tests.
    pub async fn exec_output(
        &self,
        id: &str,
        argv: &[&str],
    ) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError> {
        let exec = self.exec_command(
            id,
            &ExecRequest {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )?;
        let mut command = tokio::process::Command::from(exec.command);
        command.stdin(std::process::Stdio::null());
        let out = command.output().await.map_err(|source| RuntimeError::Io {
            action: "running exec in",
            path: PathBuf::from(id),
            source,
        })?;
        Ok((exit_code(out.status), out.stdout, out.stderr))
    }
}

/// The exit code of a finished process, 128 + signal for a signal death.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Waits until `process` has exited (a zombie counts as gone: its parent,
/// not berth, reaps it).
async fn wait_gone(process: shim::ProcessRef, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while process.is_alive() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
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
    crate::rootfs::create_dir_all_with_mode(path, mode).map_err(|source| RuntimeError::Io {
        action: "creating",
        path: path.to_path_buf(),
        source,
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn find_shim(config: &RuntimeConfig) -> Result<PathBuf, RuntimeError> {
    let mut looked = Vec::new();
    let candidates = config.shim.clone().into_iter().chain(
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("berth-shim"))),
    );
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
        if config.shim.is_some() {
            // An explicit setting is not second-guessed.
            break;
        }
    }
    if config.shim.is_none()
        && let Some(path) = find_in_path("berth-shim")
    {
        return Ok(path);
    }
    looked.push("$PATH".into());
    Err(RuntimeError::NoShim {
        looked: looked.join(", "),
    })
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
}
