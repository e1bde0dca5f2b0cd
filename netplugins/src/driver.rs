//! The one trait every network driver implements, what goes in and out of
//! it, and the factory that builds a driver from configuration.
//!
//! Drivers validate everything first, then apply, and roll back what they
//! made when a later step fails (keeping both the failure and any rollback
//! failure). Teardown never stops at the first error: it does every step
//! and reports all that failed. Both are idempotent, so the agent can
//! simply run them again after a crash.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::dns::{DnsSettings, HostAlias};
use crate::ports::PortMapping;

/// A pod as its network sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodNetwork {
    /// Stable and unique on this host for the pod's lifetime (the agent's
    /// pod id). Names the netns file, the lease and the veth; letters,
    /// digits, `.`, `_` and `-` only.
    pub pod_id: String,
    /// Kubernetes namespace and name (CNI_ARGS `K8S_POD_NAMESPACE`/`NAME`).
    pub namespace: String,
    pub name: String,
    /// The pod's hostname (for `/etc/hosts`).
    pub hostname: String,
    pub ports: Vec<PortMapping>,
    pub dns: DnsSettings,
    pub host_aliases: Vec<HostAlias>,
}

/// Where drivers keep their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// The agent's SQLite database (`<root>/berth.db`).
    pub database: PathBuf,
    /// Network namespace files (`<run-root>/netns`).
    pub netns_dir: PathBuf,
    /// CNI result cache (`<root>/cni-cache`); only the cni driver uses it.
    pub cni_cache_dir: PathBuf,
}

/// One address of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address and prefix length, e.g. `10.213.0.5/16`.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// What a driver made: what the agent gives the runtime (the netns path),
/// writes into the pod (`/etc/resolv.conf`, `/etc/hosts`) and reports in
/// status (addresses, ports, warnings).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub driver: String,
    /// The network namespace all containers of the pod join (`None`: the
    /// host's, for `hostNetwork`).
    pub netns: Option<PathBuf>,
    /// The pod's interface (`eth0`), if it has one besides `lo`.
    pub interface: Option<String>,
    pub ips: Vec<IpConfig>,
    /// Host ports in effect.
    pub ports: Vec<PortMapping>,
    pub resolv_conf: String,
    pub hosts: String,
    /// Things the user should know that did not stop the pod.
    pub warnings: Vec<String>,
}

impl NetworkStatus {
    /// `status.podIPs`.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        self.ips.iter().map(|ip| ip.address.addr()).collect()
    }
}

/// What `cleanup_orphans` removed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CleanupReport {
    pub pods: Vec<String>,
    pub links: Vec<String>,
    pub netns: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("pod id {pod_id:?}: {reason}")]
    InvalidPodId {
        pod_id: String,
        reason: &'static str,
    },
    #[error("network configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Namespace(#[from] crate::ns::NsError),
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
    #[error(transparent)]
    Ipam(#[from] crate::ipam::IpamError),
    #[error(transparent)]
    Firewall(#[from] crate::firewall::FirewallError),
    #[error("pod {pod_id}")]
    Ports {
        pod_id: String,
        source: crate::ports::PortError,
    },
    #[error("pod {pod_id}")]
    Dns {
        pod_id: String,
        source: crate::dns::DnsError,
    },
    #[error(transparent)]
    Cni(#[from] crate::cni::CniError),
    #[error("writing {path}")]
    Sysctl {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {pod_id}: network check failed: {problem}")]
    Check { pod_id: String, problem: String },
    /// The failure with its causes, then the rollback's: neither is a
    /// `source()`, since a chain has room for one cause only.
    #[error(
        "setting up the network of pod {pod_id}: {}{}",
        crate::chain(error.as_ref()),
        rollback_note(.rollback)
    )]
    Setup {
        pod_id: String,
        error: Box<NetError>,
        rollback: Vec<NetError>,
    },
    #[error("tearing down the network of pod {pod_id}: {}", join_errors(.errors))]
    Teardown {
        pod_id: String,
        errors: Vec<NetError>,
    },
    #[error("removing leftover network state: {}", join_errors(.errors))]
    Cleanup { errors: Vec<NetError> },
    #[error("a background task failed: {0}")]
    Task(String),
}

fn join_errors(errors: &[NetError]) -> String {
    errors
        .iter()
        .map(|e| crate::chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

fn rollback_note(rollback: &[NetError]) -> String {
    if rollback.is_empty() {
        String::new()
    } else {
        format!(
            " (and undoing the partial setup failed: {})",
            join_errors(rollback)
        )
    }
}

/// Wraps a failed setup with what went wrong while undoing it.
pub(crate) fn setup_failed(
    pod_id: &str,
    error: NetError,
    rollback: Result<(), NetError>,
) -> NetError {
    let rollback = match rollback {
        Ok(()) => Vec::new(),
        Err(NetError::Teardown { errors, .. }) => errors,
        Err(other) => vec![other],
    };
    NetError::Setup {
        pod_id: pod_id.to_string(),
        error: Box::new(error),
        rollback,
    }
}

/// Turns the errors collected by a teardown into its result.
pub(crate) fn teardown_result(pod_id: &str, errors: Vec<NetError>) -> Result<(), NetError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NetError::Teardown {
            pod_id: pod_id.to_string(),
            errors,
        })
    }
}

/// The pod's `/etc/resolv.conf` from the host's resolvers and its settings.
pub(crate) fn pod_resolv_conf(
    pod: &PodNetwork,
    host_network: bool,
) -> Result<crate::dns::Rendered, NetError> {
    crate::dns::resolv_conf(&crate::dns::HostResolv::read(), &pod.dns, host_network).map_err(
        |source| NetError::Dns {
            pod_id: pod.pod_id.clone(),
            source,
        },
    )
}

/// Runs `setup`; if it fails, runs `undo` and reports both (a pod id that
/// cannot name anything has nothing to undo).
pub(crate) async fn setup_or_undo<U>(
    pod_id: &str,
    setup: impl std::future::Future<Output = Result<NetworkStatus, NetError>>,
    undo: impl FnOnce() -> U,
) -> Result<NetworkStatus, NetError>
where
    U: std::future::Future<Output = Result<(), NetError>>,
{
    match setup.await {
        Ok(status) => Ok(status),
        Err(err @ NetError::InvalidPodId { .. }) => Err(err),
        Err(err) => Err(setup_failed(pod_id, err, undo().await)),
    }
}

/// Turns the errors collected by an orphan cleanup into its result.
pub(crate) fn cleanup_result(
    report: CleanupReport,
    errors: Vec<NetError>,
) -> Result<CleanupReport, NetError> {
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(NetError::Cleanup { errors })
    }
}

/// Runs blocking work (SQLite) off the async threads.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, NetError>
where
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| NetError::Task(err.to_string()))?
}

/// A pod network driver. Every method is idempotent.
pub trait NetworkDriver: Send + Sync {
    /// `bridge`, `host`, `none` or `cni`.
    fn name(&self) -> &'static str;

    /// Makes the pod's network exist as described (creating its netns at
    /// `<netns-dir>/<pod_id>` where the driver uses one).
    fn setup<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<NetworkStatus, NetError>>;

    /// Removes everything of the pod's network; a pod with nothing left is fine.
    fn teardown<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), NetError>>;

    /// Verifies the pod's network is still as set up.
    fn check<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), NetError>>;

    /// Removes the network state of every pod not in `alive` (run at agent
    /// start, before pods are set up again).
    fn cleanup_orphans<'a>(
        &'a self,
        alive: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<CleanupReport, NetError>>;
}

/// Rejects pod ids that cannot name a file or a lease safely.
pub fn validate_pod_id(pod_id: &str) -> Result<(), NetError> {
    let invalid = |reason| NetError::InvalidPodId {
        pod_id: pod_id.to_string(),
        reason,
    };
    if pod_id.is_empty() || pod_id.len() > 200 {
        return Err(invalid("must be 1 to 200 characters"));
    }
    if pod_id.starts_with('.') {
        return Err(invalid("must not start with '.'"));
    }
    if !pod_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "may contain only letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Where a pod's network namespace file lives.
pub fn netns_path(netns_dir: &Path, pod_id: &str) -> PathBuf {
    netns_dir.join(pod_id)
}

/// Removes the netns files in `netns_dir` of pods not in `alive` (on a
/// blocking thread: each is an unmount).
pub(crate) async fn remove_orphan_netns(
    netns_dir: &Path,
    alive: &HashSet<String>,
    report: &mut CleanupReport,
    errors: &mut Vec<NetError>,
) {
    let (dir, alive) = (netns_dir.to_path_buf(), alive.clone());
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return removed; // no directory: nothing was ever made
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if alive.contains(&name) || validate_pod_id(&name).is_err() {
                continue;
            }
            let path = entry.path();
            let result = crate::ns::remove(&path).map_err(NetError::from);
            removed.push((path, result));
        }
        removed
    })
    .await;
    match removed {
        Ok(removed) => {
            for (path, result) in removed {
                match result {
                    Ok(()) => report.netns.push(path),
                    Err(err) => errors.push(err),
                }
            }
        }
        Err(err) => errors.push(NetError::Task(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ids_must_be_safe_file_names() {
        validate_pod_id("default_web-0_3f2a.1").expect("ok");
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(201)] {
            let err = validate_pod_id(bad).expect_err(bad);
            assert!(err.to_string().contains("pod id"), "{err}");
        }
    }

    #[test]
    fn setup_errors_keep_the_rollback_failures() {
        let err = setup_failed(
            "p",
            NetError::Config("boom".into()),
            Err(NetError::Teardown {
                pod_id: "p".into(),
                errors: vec![NetError::Config("veth stuck".into())],
            }),
        );
        let text = err.to_string();
        assert!(
            text.contains("boom") && text.contains("veth stuck"),
            "{text}"
        );
        let clean = setup_failed("p", NetError::Config("boom".into()), Ok(()));
        assert!(!clean.to_string().contains("undoing"));
    }

    #[test]
    fn setup_and_rollback_failures_say_their_causes_once() {
        let busy = || std::io::Error::from_raw_os_error(libc::EBUSY);
        let err = setup_failed(
            "p",
            NetError::Sysctl {
                path: "/proc/sys/net/ipv4/ip_forward".into(),
                source: std::io::Error::from_raw_os_error(libc::EROFS),
            },
            Err(NetError::Teardown {
                pod_id: "p".into(),
                errors: vec![NetError::Namespace(crate::ns::NsError::RemoveFile {
                    path: "/run/netns/p".into(),
                    source: busy(),
                })],
            }),
        );
        assert_eq!(
            crate::chain(&err),
            "setting up the network of pod p: writing /proc/sys/net/ipv4/ip_forward: \
             Read-only file system (os error 30) (and undoing the partial setup failed: \
             removing namespace file /run/netns/p: \
             Device or resource busy (os error 16))"
        );
    }
}
