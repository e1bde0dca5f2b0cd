//! What berth derives for each kind of OCI runtime, so a handler needs
//! nothing but its binary in the config: the global flags the runtime must
//! get to run a pod as berth makes it, what it supports, and which
//! container settings it cannot honour.
//!
//! runc, crun and any other runtime that follows the OCI runtime CLI get
//! nothing extra. gVisor's `runsc` (one sandbox per container, since every
//! berth container is its own `runsc run`) gets:
//!
//! - `--network=host`: the sandbox process joins the network namespace the
//!   bundle names (the pod's, made by the network driver; none for
//!   `hostNetwork`) and gVisor passes socket calls to that namespace. So
//!   the containers of a pod share one network (localhost included) as in
//!   Kubernetes, and the driver keeps owning the namespace (its addresses
//!   stay there for `check`, hostPorts and CNI). runsc's default,
//!   `--network=sandbox`, copies the namespace's addresses into one
//!   sandbox's own stack (and removes them from the namespace), so a
//!   second container of the pod would find none; and runsc 20221219
//!   refuses it on kernels where `/proc/sys/net/core/rmem_default` exists
//!   in every namespace (6.x: "cannot run with network enabled in root
//!   network namespace"), for a pod's namespace as for the host's.
//! - `--oci-seccomp`: without it runsc ignores the bundle's seccomp
//!   profile; with it the RuntimeDefault (or Localhost) profile is applied
//!   inside the sandbox.
//! - `--overlay2=none`: the container's writes go to the overlay berth
//!   mounted (its upper directory, as `berth inspect` shows it), not to a
//!   second copy-on-write layer in the sandbox's memory or a file store
//!   (newer runsc releases default to one; 20221219 does not).
//!
//! Flags from the handler's own `args` come after these, so a handler can
//! still override one (runsc takes the last value of a flag).

use super::RuntimeKind;
use super::spec::{ContainerSpec, SeccompProfile};

/// Global flags berth gives a runtime of `kind`, before the handler's own.
pub fn derived_args(kind: RuntimeKind) -> Vec<String> {
    match kind {
        RuntimeKind::Runsc => vec![
            "--network=host".into(),
            "--oci-seccomp".into(),
            "--overlay2=none".into(),
        ],
        RuntimeKind::Runc | RuntimeKind::Crun | RuntimeKind::Other => Vec::new(),
    }
}

/// What a runtime handler can do for berth's pods.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Support {
    /// Pods with their own network namespace (bridge, none, cni drivers).
    pub pod_network: bool,
    /// `hostNetwork: true` pods.
    pub host_network: bool,
    /// `berth exec`, exec probes and exec hooks.
    pub exec: bool,
    /// A timed-out or cancelled exec has its process in the container
    /// killed.
    pub exec_timeout_kills: bool,
    /// `resources` limits as cgroup limits the host enforces.
    pub resource_limits: bool,
    /// An out-of-memory kill is reported as `OOMKilled`.
    pub oom_detection: bool,
    /// `securityContext.privileged`.
    pub privileged: bool,
    /// The containers of a pod share IPC (and `/dev/shm` coherently), as
    /// well as the network.
    pub shared_pod_ipc: bool,
    /// Commands run by exec get the container's seccomp profile.
    pub exec_seccomp: bool,
    /// `berth exec -t`: a pseudo-terminal for the command.
    pub exec_tty: bool,
    /// Where this comes from: `known` for runc, crun and runsc; `assumed`
    /// for another runtime (what the OCI runtime CLI promises).
    pub source: &'static str,
}

impl Support {
    pub fn of(kind: RuntimeKind) -> Self {
        let oci = Self {
            pod_network: true,
            host_network: true,
            exec: true,
            exec_timeout_kills: true,
            resource_limits: true,
            oom_detection: true,
            privileged: true,
            shared_pod_ipc: true,
            exec_seccomp: true,
            exec_tty: true,
            source: "known",
        };
        match kind {
            RuntimeKind::Runc | RuntimeKind::Crun => oci,
            RuntimeKind::Other => Self {
                source: "assumed",
                ..oci
            },
            RuntimeKind::Runsc => Self {
                // Each container is its own sandbox with its own kernel:
                // the pod's IPC namespace file cannot be shared.
                shared_pod_ipc: false,
                privileged: false,
                exec_seccomp: false,
                exec_tty: false,
                ..oci
            },
        }
    }
}

/// Why a runtime of `kind` cannot run container `c` (`Err`), or what of it
/// it will not honour (warnings for the pod's status).
pub fn check(kind: RuntimeKind, handler: &str, c: &ContainerSpec) -> Result<Vec<String>, String> {
    if kind != RuntimeKind::Runsc {
        return Ok(Vec::new());
    }
    let security = &c.security_context;
    if security.privileged {
        // As GKE Sandbox does: a privileged container expects the host's
        // devices and kernel, which a gVisor sandbox never gives it.
        return Err(format!(
            "container {:?} is privileged, which runtime handler {handler} (gVisor) cannot honour: \
             the sandbox has its own kernel and no host devices; run it with runc or crun, \
             or drop securityContext.privileged",
            c.name
        ));
    }
    let mut warnings = Vec::new();
    if security.seccomp_profile != Some(SeccompProfile::Unconfined) {
        warnings.push(format!(
            "container {:?}: gVisor (handler {handler}) applies the seccomp profile to the \
             container's own processes only; commands run by exec (berth exec, exec probes \
             and hooks) run without it, confined by the sandbox alone",
            c.name
        ));
    }
    let host_kernel_caps: Vec<&str> = security
        .capabilities
        .add
        .iter()
        .map(|cap| cap.trim_start_matches("CAP_"))
        .filter(|cap| HOST_KERNEL_CAPS.contains(&cap.to_ascii_uppercase().as_str()))
        .collect();
    if !host_kernel_caps.is_empty() {
        warnings.push(format!(
            "container {:?}: capabilities {} act on the host kernel, which gVisor (handler {handler}) \
             does not give a container: they have no effect",
            c.name,
            host_kernel_caps.join(", ")
        ));
    }
    Ok(warnings)
}

/// Why a runtime of `kind` cannot run an exec as asked, if it cannot.
pub fn check_exec(kind: RuntimeKind, handler: &str, tty: bool) -> Result<(), String> {
    if kind == RuntimeKind::Runsc && tty {
        // runsc 20221219 `exec` makes a terminal only for a console socket
        // (which berth exec does not use): the command would get none.
        return Err(format!(
            "runtime handler {handler} (gVisor) gives an exec a terminal only through a \
             console socket, which berth exec does not use: run it without -t"
        ));
    }
    Ok(())
}

/// Capabilities whose whole use is the host kernel or hardware.
const HOST_KERNEL_CAPS: [&str; 8] = [
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_TIME",
    "SYS_BOOT",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "BPF",
    "PERFMON",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> ContainerSpec {
        ContainerSpec {
            name: "app".into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_runsc_gets_flags() {
        assert!(derived_args(RuntimeKind::Runc).is_empty());
        assert!(derived_args(RuntimeKind::Other).is_empty());
        assert_eq!(
            derived_args(RuntimeKind::Runsc),
            ["--network=host", "--oci-seccomp", "--overlay2=none"]
        );
    }

    #[test]
    fn privileged_is_refused_under_gvisor_only() {
        let mut c = container();
        c.security_context.privileged = true;
        assert_eq!(check(RuntimeKind::Runc, "runc", &c), Ok(Vec::new()));
        let err = check(RuntimeKind::Runsc, "gvisor", &c).expect_err("refused");
        assert!(err.contains("privileged"), "{err}");
        assert!(err.contains("handler gvisor"), "{err}");
    }

    #[test]
    fn host_kernel_capabilities_are_a_warning_under_gvisor() {
        let mut c = container();
        c.security_context.seccomp_profile = Some(SeccompProfile::Unconfined);
        c.security_context.capabilities.add = vec!["CAP_SYS_MODULE".into(), "NET_ADMIN".into()];
        let warnings = check(RuntimeKind::Runsc, "gvisor", &c).expect("runs");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("SYS_MODULE"), "{warnings:?}");
        assert!(!warnings[0].contains("NET_ADMIN"), "{warnings:?}");
        assert!(
            check(RuntimeKind::Crun, "crun", &c)
                .expect("runs")
                .is_empty()
        );
    }

    #[test]
    fn exec_with_a_terminal_is_refused_under_gvisor_only() {
        assert_eq!(check_exec(RuntimeKind::Runc, "runc", true), Ok(()));
        assert_eq!(check_exec(RuntimeKind::Runsc, "gvisor", false), Ok(()));
        let err = check_exec(RuntimeKind::Runsc, "gvisor", true).expect_err("refused");
        assert!(err.contains("without -t"), "{err}");
    }

    #[test]
    fn exec_without_the_seccomp_profile_is_a_warning_under_gvisor() {
        let c = container();
        let warnings = check(RuntimeKind::Runsc, "gvisor", &c).expect("runs");
        assert!(
            warnings.iter().any(|w| w.contains("seccomp")),
            "{warnings:?}"
        );
        assert!(
            check(RuntimeKind::Runc, "runc", &c)
                .expect("runs")
                .is_empty()
        );
    }
}
