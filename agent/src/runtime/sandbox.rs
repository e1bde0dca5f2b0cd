//! The pod sandbox: what a pod's containers share, kept on the host with no
//! pause process, so it survives agent restarts:
//!
//! - IPC and UTS namespaces as bind-mounted namespace files (the UTS one
//!   carries the pod's hostname; hostNetwork pods keep the host's UTS
//!   namespace, as in Kubernetes), created with `netplugins::ns` on
//!   throw-away threads; the network namespace comes from the network
//!   plugin (or none for `hostNetwork`);
//! - with `shareProcessNamespace`, a PID namespace held by a tiny init
//!   (see `pod_init`);
//! - `/dev/shm`: one size-limited tmpfs per pod;
//! - `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, bind-mounted into
//!   every container.
//!
//! Everything lives under `Paths::pod_run_dir(uid)` and is derived from the
//! pod UID, so a restarted agent finds it again with [`PodSandbox::at`].

use std::path::{Path, PathBuf};

use netplugins::ns::{self, NsKind};
use nix::mount::MsFlags;

use super::mountinfo;
use super::pod_init::{PidNamespace, PodInitError};
use super::spec::PodInfo;
use super::userns::{IdRange, UserNamespace, UserNsError};
use super::volumes;
use crate::paths::Paths;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("pod {pod}")]
    Namespace {
        pod: String,
        source: netplugins::ns::NsError,
    },
    #[error("pod {pod}: setting hostname {hostname:?} in its UTS namespace")]
    Hostname {
        pod: String,
        hostname: String,
        source: nix::errno::Errno,
    },
    #[error("pod {pod}: mounting its /dev/shm tmpfs at {path}")]
    Shm {
        pod: String,
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("pod {pod}: {action} {path}")]
    Io {
        pod: String,
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {pod}")]
    Volume {
        pod: String,
        source: volumes::VolumeError,
    },
    #[error("pod {pod}: its shared PID namespace")]
    PodInit { pod: String, source: PodInitError },
    #[error("pod {pod}: its user namespace")]
    UserNamespace { pod: String, source: UserNsError },
    #[error("pod {pod}: {problem}")]
    Refused { pod: String, problem: String },
}

/// The content of the pod's `/etc/hosts` and `/etc/resolv.conf` (the
/// network plugin knows the pod's address and DNS settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: String,
    pub resolv_conf: String,
}

impl EtcFiles {
    /// Loopback names plus the pod's own name, and the host's resolver
    /// configuration: what a pod on the host network would see.
    pub fn defaults(hostname: &str, address: Option<std::net::IpAddr>) -> Self {
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        match address {
            Some(ip) => hosts.push_str(&format!("{ip}\t{hostname}\n")),
            None => hosts.push_str(&format!("127.0.1.1\t{hostname}\n")),
        }
        Self {
            hosts,
            resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        }
    }
}

/// How sandboxes are made on this host.
#[derive(Debug, Clone, Copy)]
pub struct SandboxOptions<'a> {
    /// Size of each pod's /dev/shm, in bytes.
    pub shm_size: u64,
    /// berth-shim: the init of a shared PID namespace, the holder of a
    /// new user namespace.
    pub shim: &'a Path,
    /// The host IDs of `hostUsers: false` pods.
    pub userns_range: IdRange,
}

/// A pod's shared state on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSandbox {
    pub uid: String,
    pub hostname: String,
    pub dir: PathBuf,
    pub ipc_ns: PathBuf,
    /// `None` for hostNetwork pods: like kubelet, they share the host's UTS
    /// namespace (and hostname).
    pub uts_ns: Option<PathBuf>,
    /// The network namespace file, or `None` on the host network.
    pub net_ns: Option<PathBuf>,
    /// The shared PID namespace (`shareProcessNamespace`), else `None`.
    pub pid_ns: Option<PathBuf>,
    /// The pod's user namespace (`hostUsers: false`), else `None`.
    pub user_ns: Option<PathBuf>,
    pub shm: PathBuf,
    pub hosts: PathBuf,
    pub hostname_file: PathBuf,
    pub resolv_conf: PathBuf,
}

impl PodSandbox {
    /// Where the sandbox of pod `uid` lives; touches nothing.
    pub fn at(paths: &Paths, pod: &PodInfo, net_ns: Option<PathBuf>) -> Self {
        let dir = paths.pod_run_dir(&pod.uid);
        Self {
            uid: pod.uid.clone(),
            hostname: pod.hostname.clone(),
            ipc_ns: dir.join("ns/ipc"),
            uts_ns: (!pod.host_network).then(|| dir.join("ns/uts")),
            net_ns,
            pid_ns: pod.namespaces.share_pid.then(|| PidNamespace::at(&dir).ns),
            user_ns: pod.namespaces.user.then(|| UserNamespace::at(&dir).ns),
            shm: dir.join("shm"),
            hosts: dir.join("etc/hosts"),
            hostname_file: dir.join("etc/hostname"),
            resolv_conf: dir.join("etc/resolv.conf"),
            dir,
        }
    }

    /// Creates (or completes, after a crash) the sandbox of `pod`.
    /// Idempotent: an existing namespace or mount is kept.
    pub fn create(
        paths: &Paths,
        pod: &PodInfo,
        net_ns: Option<PathBuf>,
        options: &SandboxOptions<'_>,
        etc: &EtcFiles,
    ) -> Result<Self, SandboxError> {
        let sandbox = Self::at(paths, pod, net_ns);
        let name = pod_name(pod);
        let ns_err = |source| SandboxError::Namespace {
            pod: name.clone(),
            source,
        };
        // First: the IPC and UTS namespaces are made with it, owned by it.
        sandbox.ensure_user_namespace(paths, pod, options)?;
        ns::create(NsKind::Ipc, &sandbox.ipc_ns).map_err(ns_err)?;
        if let Some(uts_ns) = &sandbox.uts_ns {
            ns::create(NsKind::Uts, uts_ns).map_err(ns_err)?;
            let hostname = pod.hostname.clone();
            ns::run_in(NsKind::Uts, uts_ns, move || {
                nix::unistd::sethostname(&hostname)
            })
            .map_err(ns_err)?
            .map_err(|source| SandboxError::Hostname {
                pod: name.clone(),
                hostname: pod.hostname.clone(),
                source,
            })?;
        }

        if pod.namespaces.share_pid {
            PidNamespace::at(&sandbox.dir)
                .ensure(options.shim)
                .map_err(|source| SandboxError::PodInit {
                    pod: name.clone(),
                    source,
                })?;
        }

        let io = |action, path: &Path| {
            let pod = name.clone();
            let path = path.to_path_buf();
            move |source| SandboxError::Io {
                pod,
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&sandbox.shm).map_err(io("creating", &sandbox.shm))?;
        if !mountinfo::is_mounted_at(&sandbox.shm) {
            nix::mount::mount(
                Some("shm"),
                &sandbox.shm,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(format!("mode=1777,size={}", options.shm_size).as_str()),
            )
            .map_err(|source| SandboxError::Shm {
                pod: name.clone(),
                path: sandbox.shm.clone(),
                source,
            })?;
        }
        let etc_dir = sandbox.dir.join("etc");
        std::fs::create_dir_all(&etc_dir).map_err(io("creating", &etc_dir))?;
        for (path, content) in [
            (&sandbox.hosts, etc.hosts.as_str()),
            (&sandbox.hostname_file, &format!("{}\n", pod.hostname)),
            (&sandbox.resolv_conf, etc.resolv_conf.as_str()),
        ] {
            crate::fsutil::write_atomic(path, content.as_bytes(), 0o644)
                .map_err(io("writing", path))?;
        }
        Ok(sandbox)
    }

    /// Removes everything the sandbox of pod `uid` holds: namespace files,
    /// /dev/shm, /etc files and the pod's volume directories. Every failure
    /// is returned; missing pieces are fine.
    pub fn remove(paths: &Paths, pod_uid: &str) -> Vec<SandboxError> {
        let dir = paths.pod_run_dir(pod_uid);
        let pod = pod_uid.to_string();
        let mut errors = Vec::new();
        // Killing the init ends whatever its namespace still holds.
        if let Err(source) = PidNamespace::at(&dir).remove() {
            errors.push(SandboxError::PodInit {
                pod: pod.clone(),
                source,
            });
        }
        for kind in ["ipc", "uts"] {
            if let Err(source) = ns::remove(&dir.join("ns").join(kind)) {
                errors.push(SandboxError::Namespace {
                    pod: pod.clone(),
                    source,
                });
            }
        }
        if let Err(source) = UserNamespace::at(&dir).remove() {
            errors.push(SandboxError::UserNamespace {
                pod: pod.clone(),
                source,
            });
        }
        errors.extend(
            volumes::remove_pod_volumes(paths, pod_uid)
                .into_iter()
                .map(|source| SandboxError::Volume {
                    pod: pod.clone(),
                    source,
                }),
        );
        errors.extend(volumes::unmount_under(&dir).into_iter().map(|source| {
            SandboxError::Volume {
                pod: pod.clone(),
                source,
            }
        }));
        if errors.is_empty()
            && let Err(source) = crate::fsutil::remove_dir_all_if_exists(&dir)
        {
            errors.push(SandboxError::Io {
                pod,
                action: "removing",
                path: dir,
                source,
            });
        }
        errors
    }
}

impl PodSandbox {
    /// `hostUsers: false`: the pod's user namespace and, owned by it, its
    /// IPC, UTS and network namespaces. Nothing otherwise. Idempotent.
    pub fn ensure_user_namespace(
        &self,
        paths: &Paths,
        pod: &PodInfo,
        options: &SandboxOptions<'_>,
    ) -> Result<(), SandboxError> {
        if !pod.namespaces.user {
            return Ok(());
        }
        let uts = self
            .uts_ns
            .clone()
            .unwrap_or_else(|| self.dir.join("ns/uts"));
        let mut owned = vec![(self.ipc_ns.as_path(), "ipc"), (uts.as_path(), "uts")];
        if let Some(net) = &self.net_ns {
            owned.push((net.as_path(), "net"));
        }
        UserNamespace::at(&self.dir)
            .ensure(options.shim, &owned, options.userns_range, &paths.pods())
            .map(|_| ())
            .map_err(|source| SandboxError::UserNamespace {
                pod: pod_name(pod),
                source,
            })
    }

    /// False when the sandbox has a shared PID namespace whose init is
    /// gone (the namespace is dead: the pod must be made again). Found
    /// from the files alone, so it holds for a sandbox located without
    /// the pod's spec.
    pub fn shared_pid_alive(&self) -> bool {
        let pid = PidNamespace::at(&self.dir);
        !pid.exists() || pid.running_init().is_some()
    }
}

fn pod_name(pod: &PodInfo) -> String {
    format!("{}/{}", pod.namespace, pod.name)
}
