//! The pod's namespaces and the container's confinement in the OCI spec,
//! as pure functions of the pod: which namespaces are the pod's, the
//! host's or the container's own (`hostPID`, `hostIPC`,
//! `shareProcessNamespace`), the /dev/shm it sees, /proc masking
//! (`procMount`), `sysctls` and the AppArmor profile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType,
};

use super::cgroups::CgroupMode;
use super::sandbox::PodSandbox;
use super::security;
use super::spec::{AppArmorProfile, PodInfo, SecurityContext};
use super::userns::IdMapping;

/// The container's namespaces: joined from the sandbox (by path), the
/// host's (left out), or new.
pub fn namespaces(
    pod: &PodInfo,
    sandbox: &PodSandbox,
    cgroup_mode: CgroupMode,
) -> Result<Vec<LinuxNamespace>, oci_spec::OciSpecError> {
    let ns = |typ: LinuxNamespaceType, path: Option<&Path>| {
        let builder = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(path) => builder.path(path.to_path_buf()).build(),
            None => builder.build(),
        }
    };
    let mut list = Vec::new();
    // Joined first by the runtimes, so the others are entered as its root.
    if let Some(user) = &sandbox.user_ns {
        list.push(ns(LinuxNamespaceType::User, Some(user))?);
    }
    if !pod.namespaces.host_pid {
        list.push(ns(LinuxNamespaceType::Pid, sandbox.pid_ns.as_deref())?);
    }
    list.push(ns(LinuxNamespaceType::Mount, None)?);
    if !pod.namespaces.host_ipc {
        list.push(ns(LinuxNamespaceType::Ipc, Some(&sandbox.ipc_ns))?);
    }
    if let Some(uts) = &sandbox.uts_ns {
        list.push(ns(LinuxNamespaceType::Uts, Some(uts))?);
    }
    if let Some(net) = &sandbox.net_ns {
        list.push(ns(LinuxNamespaceType::Network, Some(net))?);
    }
    // On cgroup v2 a private cgroup namespace hides the host's tree, as
    // kubelet does; v1 runtimes handle /sys/fs/cgroup without one.
    if cgroup_mode == CgroupMode::Unified {
        list.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(list)
}

/// The container's /dev/shm: the host's with `hostIPC` (as containerd
/// gives it), else the pod's.
pub fn shm_source(pod: &PodInfo, sandbox: &PodSandbox) -> PathBuf {
    if pod.namespaces.host_ipc {
        PathBuf::from("/dev/shm")
    } else {
        sandbox.shm.clone()
    }
}

/// Masked and read-only paths: none for a privileged container or
/// `procMount: Unmasked`, else the defaults.
pub fn proc_masks(security: &SecurityContext) -> (Vec<String>, Vec<String>) {
    if security.privileged || security.proc_mount_unmasked {
        (Vec::new(), Vec::new())
    } else {
        (
            security::MASKED_PATHS.map(String::from).to_vec(),
            security::READONLY_PATHS.map(String::from).to_vec(),
        )
    }
}

/// The pod's sysctls for `linux.sysctl` (empty: none set).
pub fn sysctls(pod: &PodInfo) -> HashMap<String, String> {
    pod.security_context.sysctls.iter().cloned().collect()
}

/// The `process.apparmorProfile`, or why it cannot be had here.
pub fn app_armor(
    profile: Option<&AppArmorProfile>,
    apparmor_enabled: bool,
) -> Result<Option<String>, String> {
    match profile {
        None | Some(AppArmorProfile::Unconfined) => Ok(None),
        // berth loads no profile of its own; the rest of its confinement
        // (seccomp, capabilities, masked paths) applies as always.
        Some(AppArmorProfile::RuntimeDefault) => Ok(None),
        Some(AppArmorProfile::Localhost(_)) if !apparmor_enabled => Err(
            "appArmorProfile Localhost: AppArmor is not enabled on this host (no /sys/module/apparmor), so the profile cannot be applied".into(),
        ),
        Some(AppArmorProfile::Localhost(name)) => Ok(Some(name.clone())),
    }
}

/// `linux.uidMappings` / `gidMappings`: the pod's root at `host_id`.
pub fn id_mappings(mapping: Option<IdMapping>) -> Vec<LinuxIdMapping> {
    mapping
        .map(|m| {
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(m.host_id)
                .size(m.size)
                .build()
                .expect("every field is set")
        })
        .into_iter()
        .collect()
}

/// Whether the kernel has AppArmor enabled.
pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.trim() == "Y")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::PodNamespaces;
    use crate::runtime::userns::IdMapping;

    fn pod(namespaces: PodNamespaces) -> PodInfo {
        PodInfo {
            namespace: "default".into(),
            name: "p".into(),
            uid: "uid-1".into(),
            hostname: "p".into(),
            namespaces,
            ..Default::default()
        }
    }

    fn sandbox(pod: &PodInfo) -> PodSandbox {
        let paths = crate::paths::Paths::new(Path::new("/var/lib/berth"), Path::new("/run/berth"));
        PodSandbox::at(&paths, pod, Some(PathBuf::from("/run/berth/netns/uid-1")))
    }

    /// (type, path) of every namespace, in order.
    fn table(namespaces: PodNamespaces) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        let pod = pod(namespaces);
        namespaces_of(&pod)
    }

    fn namespaces_of(pod: &PodInfo) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        namespaces(pod, &sandbox(pod), CgroupMode::Hybrid)
            .expect("namespaces")
            .iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect()
    }

    #[test]
    fn pod_fields_pick_the_namespaces() {
        use LinuxNamespaceType::{Ipc, Mount, Network, Pid, Uts};
        let dir = PathBuf::from("/run/berth/pods/uid-1");
        let net = Some(PathBuf::from("/run/berth/netns/uid-1"));
        let own = |t| (t, None);
        let sandbox_ns = |t, name: &str| (t, Some(dir.join("ns").join(name)));
        let cases = [
            (
                PodNamespaces::default(),
                vec![
                    own(Pid),
                    own(Mount),
                    sandbox_ns(Ipc, "ipc"),
                    sandbox_ns(Uts, "uts"),
                    (Network, net.clone()),
                ],
            ),
            (
                PodNamespaces {
                    host_pid: true,
                    host_ipc: true,
                    ..Default::default()
                },
                vec![own(Mount), sandbox_ns(Uts, "uts"), (Network, net.clone())],
            ),
            (
                PodNamespaces {
                    share_pid: true,
                    ..Default::default()
                },
                vec![
                    sandbox_ns(Pid, "pid"),
                    own(Mount),
                    sandbox_ns(Ipc, "ipc"),
                    sandbox_ns(Uts, "uts"),
                    (Network, net.clone()),
                ],
            ),
        ];
        for (namespaces, want) in cases {
            assert_eq!(table(namespaces), want, "{namespaces:?}");
        }
    }

    #[test]
    fn a_user_namespace_is_joined_from_the_sandbox() {
        let p = pod(PodNamespaces {
            user: true,
            ..Default::default()
        });
        let list = namespaces_of(&p);
        assert_eq!(
            list.first(),
            Some(&(
                LinuxNamespaceType::User,
                Some(PathBuf::from("/run/berth/pods/uid-1/ns/user"))
            ))
        );
        assert_eq!(
            id_mappings(Some(IdMapping {
                host_id: 131072,
                size: 65536
            }))
            .len(),
            1
        );
        assert!(id_mappings(None).is_empty());
    }

    #[test]
    fn host_ipc_shares_the_hosts_shm() {
        let shared = pod(PodNamespaces {
            host_ipc: true,
            ..Default::default()
        });
        assert_eq!(
            shm_source(&shared, &sandbox(&shared)),
            Path::new("/dev/shm")
        );
        let own = pod(PodNamespaces::default());
        assert_eq!(
            shm_source(&own, &sandbox(&own)),
            Path::new("/run/berth/pods/uid-1/shm")
        );
    }

    #[test]
    fn proc_mount_and_app_armor() {
        let unmasked = SecurityContext {
            proc_mount_unmasked: true,
            ..Default::default()
        };
        assert_eq!(proc_masks(&unmasked), (vec![], vec![]));
        let (masked, readonly) = proc_masks(&SecurityContext::default());
        assert!(masked.contains(&"/proc/kcore".to_string()));
        assert!(readonly.contains(&"/proc/sys".to_string()));

        let local = AppArmorProfile::Localhost("k8s-nginx".into());
        assert_eq!(app_armor(Some(&local), true), Ok(Some("k8s-nginx".into())));
        let err = app_armor(Some(&local), false).expect_err("no AppArmor");
        assert!(err.contains("not enabled"), "{err}");
        assert_eq!(
            app_armor(Some(&AppArmorProfile::RuntimeDefault), false),
            Ok(None)
        );
        assert_eq!(
            app_armor(Some(&AppArmorProfile::Unconfined), false),
            Ok(None)
        );
        assert_eq!(app_armor(None, true), Ok(None));
    }
}
