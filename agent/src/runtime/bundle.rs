//! The OCI bundle of a container: `config.json` (runtime spec, `ociVersion`
//! 1.0.2, which both runc 1.1 and crun 1.8 accept) next to the mounted
//! `rootfs/`. Built from the image config and the Pod's container with
//! Kubernetes semantics, secure by default (see `security`, `seccomp`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxSeccomp, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::cgroups::CgroupMode;
use super::config::RlimitConfig;
use super::isolation;
use super::oom;
use super::process::{self, EnvDefaults, ProcessError};
use super::rlimits::{self, HostLimits, RlimitError};
use super::sandbox::PodSandbox;
use super::seccomp;
use super::seccomp_localhost;
use super::security::{self, SecurityError};
use super::spec::{ContainerSpec, PodInfo, SeccompProfile};
use super::user::{self, AccountFiles, UserError, UserOverrides};

/// The runtime-spec version both runc 1.1.5 and crun 1.8.1 accept (crun
/// rejects "1.2.0").
pub const OCI_VERSION: &str = "1.0.2";

/// CFS period for CPU limits, as kubelet uses.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("container {container:?}")]
    User {
        container: String,
        source: UserError,
    },
    #[error("container {container:?}")]
    Security {
        container: String,
        source: SecurityError,
    },
    #[error(transparent)]
    Rlimit(#[from] RlimitError),
    #[error(
        "container {container:?} would run as root (uid 0) but runAsNonRoot is set: set runAsUser, or use an image whose USER is not root"
    )]
    RunsAsRoot { container: String },
    #[error("container {container:?}: {reason}")]
    AppArmor { container: String, reason: String },
    #[error("container {container:?}: seccomp profile {path}: {reason}")]
    SeccompProfile {
        container: String,
        path: PathBuf,
        reason: String,
    },
    #[error("container {container:?}: building the OCI spec")]
    Spec {
        container: String,
        source: oci_spec::OciSpecError,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A volume mount resolved to its host source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What the host offers, gathered once by the runtime.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The agent's capability bounding set.
    pub cap_bounding: u64,
    pub cgroup_mode: CgroupMode,
    /// cgroup v1 swap accounting (`memory.memsw.*`) is available.
    pub swap_accounting: bool,
    /// RAM, for the containers' OOM scores (see [`super::oom`]).
    pub memory_total: Option<u64>,
    /// The agent's own OOM score; containers get a higher one.
    pub agent_oom_score_adj: i32,
    /// AppArmor is enabled in the kernel.
    pub apparmor_enabled: bool,
    /// Where `Localhost` seccomp profiles are (the kubelet's `seccomp/`).
    pub seccomp_profile_root: PathBuf,
}

pub struct BundleRequest<'a> {
    pub pod: &'a PodInfo,
    pub sandbox: &'a PodSandbox,
    pub container: &'a ContainerSpec,
    pub image: Option<&'a ImageConfig>,
    /// The image's /etc/passwd and /etc/group (see `user::AccountFiles`).
    pub accounts: &'a AccountFiles,
    pub mounts: &'a [ResolvedMount],
    pub cgroups_path: &'a str,
    pub rlimits: &'a BTreeMap<String, RlimitConfig>,
    pub host: &'a HostFacts,
    pub host_limits: &'a dyn HostLimits,
    /// The pod's ID mapping (`hostUsers: false`), else `None`.
    pub id_mapping: Option<super::userns::IdMapping>,
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub spec: Spec,
    /// Things the user asked for and did not get in full (clamped rlimits,
    /// capabilities the agent lacks), for the pod's status.
    pub warnings: Vec<String>,
    /// The image's StopSignal, or SIGTERM.
    pub stop_signal: String,
}

/// Builds the spec of one container.
pub fn build(req: &BundleRequest<'_>) -> Result<Bundle, BundleError> {
    let c = req.container;
    let name = || c.name.clone();
    let spec_err = |source| BundleError::Spec {
        container: c.name.clone(),
        source,
    };
    let security = c
        .security_context
        .with_pod_defaults(&req.pod.security_context);
    let mut warnings = Vec::new();

    let user = user::resolve(
        req.image.and_then(|i| i.user().as_deref()),
        &UserOverrides {
            run_as_user: security.run_as_user,
            run_as_group: security.run_as_group,
            supplemental_groups: &req.pod.security_context.supplemental_groups,
            fs_group: req.pod.security_context.fs_group,
        },
        req.accounts,
    )
    .map_err(|source| BundleError::User {
        container: name(),
        source,
    })?;
    if security.run_as_non_root == Some(true) && user.uid == 0 {
        return Err(BundleError::RunsAsRoot { container: name() });
    }

    let (caps, cap_warnings) =
        security::capabilities(&security, req.host.cap_bounding).map_err(|source| {
            BundleError::Security {
                container: name(),
                source,
            }
        })?;
    warnings.extend(cap_warnings);
    let (rlimits, rlimit_warnings) = rlimits::rlimits(req.rlimits, req.host_limits)?;
    warnings.extend(rlimit_warnings);

    let no_new_privileges = match security.allow_privilege_escalation {
        Some(allow) => !allow,
        None => !security.privileged,
    };
    let apparmor = isolation::app_armor(
        security.app_armor_profile.as_ref(),
        req.host.apparmor_enabled,
    )
    .map_err(|reason| BundleError::AppArmor {
        container: name(),
        reason,
    })?;
    let mut process = ProcessBuilder::default()
        .terminal(c.tty)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()
                .map_err(spec_err)?,
        )
        .args(process::argv(c, req.image)?)
        .env(process::env(
            c,
            req.image,
            &EnvDefaults {
                hostname: &req.pod.hostname,
                home: &user.home,
                tty: c.tty,
            },
        ))
        .cwd(process::working_dir(c, req.image))
        .capabilities(security::linux_capabilities(&caps))
        .rlimits(rlimits)
        .no_new_privileges(no_new_privileges)
        .oom_score_adj(oom::container_score(
            req.pod.oom,
            &c.resources,
            req.host.memory_total,
            req.host.agent_oom_score_adj,
        ))
        .build()
        .map_err(spec_err)?;
    if apparmor.is_some() {
        process.set_apparmor_profile(apparmor);
    }

    let seccomp = seccomp_profile(
        c,
        &security.seccomp_profile,
        security.privileged,
        &caps,
        &req.host.seccomp_profile_root,
    )?;
    // Explicitly set even when empty: oci-spec's builder would fill in
    // its defaults.
    let (masked, readonly) = isolation::proc_masks(&security);
    let mut linux = LinuxBuilder::default()
        .cgroups_path(PathBuf::from(req.cgroups_path))
        .namespaces(
            isolation::namespaces(req.pod, req.sandbox, req.host.cgroup_mode).map_err(spec_err)?,
        )
        .resources(resources(c, req.host, security.privileged).map_err(spec_err)?)
        .masked_paths(masked)
        .readonly_paths(readonly);
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }
    if security.privileged {
        linux = linux.devices(security::host_devices());
    }
    let mappings = isolation::id_mappings(req.id_mapping);
    if !mappings.is_empty() {
        linux = linux.uid_mappings(mappings.clone()).gid_mappings(mappings);
    }
    let sysctls = isolation::sysctls(req.pod);
    if !sysctls.is_empty() {
        linux = linux.sysctl(sysctls);
    }

    let annotations: std::collections::HashMap<String, String> = [
        ("io.berth.pod.namespace", req.pod.namespace.as_str()),
        ("io.berth.pod.name", req.pod.name.as_str()),
        ("io.berth.pod.uid", req.pod.uid.as_str()),
        ("io.berth.container.name", c.name.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(security.read_only_root_filesystem)
                .build()
                .map_err(spec_err)?,
        )
        .process(process)
        .mounts(mounts(req, security.privileged).map_err(spec_err)?)
        .linux(linux.build().map_err(spec_err)?)
        .annotations(annotations)
        .build()
        .map_err(spec_err)?;
    // Without a UTS namespace of its own (hostNetwork) a container keeps
    // the host's name, and runtimes refuse to set one. Set explicitly
    // either way: oci-spec's default hostname is "youki".
    spec.set_hostname(
        req.sandbox
            .uts_ns
            .is_some()
            .then(|| req.pod.hostname.clone()),
    );
    let stop_signal = req
        .image
        .and_then(|i| i.stop_signal().clone())
        .unwrap_or_else(|| "SIGTERM".to_string());
    Ok(Bundle {
        spec,
        warnings,
        stop_signal,
    })
}

/// Writes `config.json` into `bundle_dir` atomically, readable by root
/// only (it holds the environment, which may carry secrets).
pub fn write(bundle_dir: &Path, spec: &Spec) -> Result<PathBuf, BundleError> {
    let path = bundle_dir.join("config.json");
    let err = |source| BundleError::Write {
        path: path.clone(),
        source,
    };
    let json = serde_json::to_vec_pretty(spec).map_err(|e| err(std::io::Error::other(e)))?;
    crate::fsutil::write_atomic(&path, &json, 0o600).map_err(err)?;
    Ok(path)
}

/// A seccomp profile is a few hundred rules: 1 MiB is plenty.
const MAX_SECCOMP_PROFILE: u64 = 1 << 20;

fn seccomp_profile(
    c: &ContainerSpec,
    profile: &Option<SeccompProfile>,
    privileged: bool,
    caps: &std::collections::BTreeSet<&str>,
    profile_root: &Path,
) -> Result<Option<LinuxSeccomp>, BundleError> {
    match profile {
        Some(SeccompProfile::Unconfined) => Ok(None),
        None if privileged => Ok(None),
        None | Some(SeccompProfile::RuntimeDefault) => Ok(Some(seccomp::runtime_default(caps))),
        Some(SeccompProfile::Localhost(path)) => {
            let err = |reason: String| BundleError::SeccompProfile {
                container: c.name.clone(),
                path: profile_root.join(path),
                reason,
            };
            // The manifest names it: read it as carefully as an image's
            // file, confined to the profile directory.
            let bytes = crate::fsutil::read_untrusted(
                profile_root,
                &path.to_string_lossy(),
                MAX_SECCOMP_PROFILE,
            )
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err("does not exist".into()))?;
            let target = seccomp_localhost::Target {
                capabilities: caps,
                go_arch: seccomp_localhost::Target::native_go_arch(),
                kernel: seccomp_localhost::Target::running_kernel(),
            };
            seccomp_localhost::convert(&bytes, &target)
                .map(Some)
                .map_err(err)
        }
    }
}

fn resources(
    c: &ContainerSpec,
    host: &HostFacts,
    privileged: bool,
) -> Result<oci_spec::runtime::LinuxResources, oci_spec::OciSpecError> {
    let r = &c.resources;
    let mut builder = LinuxResourcesBuilder::default().devices(if privileged {
        security::allow_all_devices()
    } else {
        security::default_device_rules()
    });
    if let Some(limit) = r.memory_limit_bytes {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut memory = LinuxMemoryBuilder::default().limit(limit);
        if host.swap_accounting {
            // memory+swap = memory: no swap beyond the limit.
            memory = memory.swap(limit);
        }
        builder = builder.memory(memory.build()?);
    }
    // kubelet: no request means the minimum weight; a limit sets the quota.
    let shares = r
        .cpu_request_millis
        .map(|m| (m * 1024 / 1000).max(2))
        .unwrap_or(2);
    let mut cpu = LinuxCpuBuilder::default().shares(shares);
    if let Some(limit) = r.cpu_limit_millis {
        let quota = (limit * CPU_PERIOD_US / 1000).max(1000);
        cpu = cpu
            .quota(i64::try_from(quota).unwrap_or(i64::MAX))
            .period(CPU_PERIOD_US);
    }
    builder = builder.cpu(cpu.build()?);
    if let Some(pids) = r.pids_limit {
        builder = builder.pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(pids).unwrap_or(i64::MAX))
                .build()?,
        );
    }
    builder.build()
}

fn mounts(req: &BundleRequest<'_>, privileged: bool) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let mount = |dest: &str, typ: &str, source: &Path, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source.to_path_buf())
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    let sys_access = if privileged { "rw" } else { "ro" };
    let sandbox = req.sandbox;
    let mut list = vec![
        mount(
            "/proc",
            "proc",
            Path::new("proc"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev",
            "tmpfs",
            Path::new("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            Path::new("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "bind",
            &isolation::shm_source(req.pod, sandbox),
            &["rbind", "nosuid", "nodev", "noexec"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            Path::new("mqueue"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            Path::new("sysfs"),
            &["nosuid", "noexec", "nodev", sys_access],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            Path::new("cgroup"),
            &["nosuid", "noexec", "nodev", "relatime", sys_access],
        )?,
        mount("/etc/hosts", "bind", &sandbox.hosts, &["rbind", "rprivate"])?,
        mount(
            "/etc/hostname",
            "bind",
            &sandbox.hostname_file,
            &["rbind", "rprivate"],
        )?,
        mount(
            "/etc/resolv.conf",
            "bind",
            &sandbox.resolv_conf,
            &["rbind", "rprivate"],
        )?,
    ];
    for m in req.mounts {
        let mut options = vec!["rbind", "rprivate"];
        if m.read_only {
            options.push("ro");
        }
        list.push(mount(&m.destination, "bind", &m.source, &options)?);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{
        Capabilities, EnvVar, PodSecurityContext, Resources, SecurityContext,
    };
    use oci_spec::image::ConfigBuilder;
    use oci_spec::runtime::LinuxNamespaceType;

    struct NoClamp;
    impl HostLimits for NoClamp {
        fn hard_limit(&self, _: &str) -> Option<u64> {
            None
        }
    }

    fn host() -> HostFacts {
        HostFacts {
            cap_bounding: 0x1ff_feff_ffff,
            cgroup_mode: CgroupMode::Hybrid,
            swap_accounting: true,
            memory_total: Some(8 << 30),
            agent_oom_score_adj: oom::AGENT_OOM_SCORE_ADJ,
            apparmor_enabled: false,
            seccomp_profile_root: PathBuf::from("/var/lib/berth/seccomp"),
        }
    }

    fn pod() -> PodInfo {
        PodInfo {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-1".into(),
            hostname: "web".into(),
            ..Default::default()
        }
    }

    fn sandbox(pod: &PodInfo) -> PodSandbox {
        let paths = crate::paths::Paths::new(Path::new("/var/lib/berth"), Path::new("/run/berth"));
        PodSandbox::at(&paths, pod, Some(PathBuf::from("/run/berth/netns/uid-1")))
    }

    fn accounts() -> AccountFiles {
        AccountFiles {
            passwd: "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".into(),
            group: "root:x:0:\napp:x:1000:\nextra:x:2000:app\n".into(),
        }
    }

    fn image() -> ImageConfig {
        ConfigBuilder::default()
            .entrypoint(vec!["/bin/httpd".to_string()])
            .cmd(vec!["-f".to_string()])
            .env(vec!["PATH=/bin".to_string(), "MODE=image".to_string()])
            .working_dir("/srv")
            .user("app")
            .stop_signal("SIGQUIT")
            .build()
            .expect("image config")
    }

    fn build_with(
        container: &ContainerSpec,
        pod: &PodInfo,
        img: Option<&ImageConfig>,
    ) -> Result<Bundle, BundleError> {
        let sandbox = sandbox(pod);
        let accounts = accounts();
        let rlimits: BTreeMap<String, RlimitConfig> = [(
            "nofile".to_string(),
            RlimitConfig {
                soft: 1024,
                hard: 4096,
            },
        )]
        .into();
        let host = host();
        let mounts = [ResolvedMount {
            source: PathBuf::from("/data"),
            destination: "/var/data".into(),
            read_only: true,
        }];
        build(&BundleRequest {
            pod,
            sandbox: &sandbox,
            container,
            image: img,
            accounts: &accounts,
            mounts: &mounts,
            cgroups_path: "/berth/pod-uid-1/c1",
            rlimits: &rlimits,
            host: &host,
            host_limits: &NoClamp,
            id_mapping: None,
        })
    }

    fn container() -> ContainerSpec {
        ContainerSpec {
            name: "app".into(),
            env: vec![EnvVar::new("MODE", "pod")],
            ..Default::default()
        }
    }

    #[test]
    fn a_default_container_is_confined() {
        let img = image();
        let bundle = build_with(&container(), &pod(), Some(&img)).expect("bundle");
        let spec = &bundle.spec;
        assert_eq!(spec.version(), "1.0.2");
        assert_eq!(spec.hostname().as_deref(), Some("web"));
        let process = spec.process().as_ref().expect("process");
        assert_eq!(
            process.args().as_deref(),
            Some(&["/bin/httpd".to_string(), "-f".to_string()][..])
        );
        assert_eq!(process.cwd(), Path::new("/srv"));
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().gid(), 1000);
        assert_eq!(
            process.user().additional_gids().as_deref(),
            Some(&[2000][..])
        );
        let env = process.env().clone().unwrap_or_default();
        assert!(env.contains(&"MODE=pod".to_string()), "{env:?}");
        assert!(env.contains(&"PATH=/bin".to_string()), "{env:?}");
        assert!(env.contains(&"HOME=/home/app".to_string()), "{env:?}");
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().expect("caps");
        assert_eq!(caps.bounding().as_ref().map(|s| s.len()), Some(14));
        assert_eq!(caps.ambient().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(bundle.stop_signal, "SIGQUIT");

        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.seccomp().is_some());
        assert!(
            linux
                .masked_paths()
                .as_deref()
                .is_some_and(|p| p.contains(&"/proc/kcore".to_string()))
        );
        assert!(
            linux
                .readonly_paths()
                .as_deref()
                .is_some_and(|p| p.contains(&"/proc/sys".to_string()))
        );
        let namespaces = linux.namespaces().clone().unwrap_or_default();
        let path_of = |t| {
            namespaces
                .iter()
                .find(|n| n.typ() == t)
                .and_then(|n| n.path().clone())
        };
        assert_eq!(
            path_of(LinuxNamespaceType::Ipc),
            Some(PathBuf::from("/run/berth/pods/uid-1/ns/ipc"))
        );
        assert_eq!(
            path_of(LinuxNamespaceType::Uts),
            Some(PathBuf::from("/run/berth/pods/uid-1/ns/uts"))
        );
        assert_eq!(
            path_of(LinuxNamespaceType::Network),
            Some(PathBuf::from("/run/berth/netns/uid-1"))
        );
        assert!(
            namespaces
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        );
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/pod-uid-1/c1"))
        );

        let mounts = spec.mounts().clone().unwrap_or_default();
        let find = |dest: &str| {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(dest))
                .cloned()
        };
        let sys = find("/sys").expect("/sys");
        assert!(
            sys.options()
                .as_deref()
                .is_some_and(|o| o.contains(&"ro".to_string()))
        );
        let shm = find("/dev/shm").expect("/dev/shm");
        assert_eq!(
            shm.source().as_deref(),
            Some(Path::new("/run/berth/pods/uid-1/shm"))
        );
        assert!(find("/etc/resolv.conf").is_some() && find("/dev/mqueue").is_some());
        let data = find("/var/data").expect("volume");
        assert!(
            data.options()
                .as_deref()
                .is_some_and(|o| o.contains(&"ro".to_string()))
        );
    }

    #[test]
    fn privileged_drops_the_confinement() {
        let mut c = container();
        c.security_context.privileged = true;
        let bundle = build_with(&c, &pod(), Some(&image())).expect("bundle");
        let linux = bundle.spec.linux().clone().expect("linux");
        assert!(linux.seccomp().is_none());
        assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
        assert_eq!(linux.readonly_paths().as_deref(), Some(&[][..]));
        let process = bundle.spec.process().clone().expect("process");
        assert_eq!(process.no_new_privileges(), Some(false));
        let caps = process.capabilities().clone().expect("caps");
        assert_eq!(caps.effective().as_ref().map(|s| s.len()), Some(40));
    }

    #[test]
    fn security_context_overrides() {
        let mut c = container();
        c.security_context = SecurityContext {
            capabilities: Capabilities {
                add: vec!["NET_ADMIN".into()],
                drop: vec!["ALL".into()],
            },
            read_only_root_filesystem: true,
            allow_privilege_escalation: Some(true),
            run_as_user: Some(4000),
            ..Default::default()
        };
        let mut p = pod();
        p.security_context = PodSecurityContext {
            run_as_group: Some(5000),
            supplemental_groups: vec![6000],
            seccomp_profile: Some(SeccompProfile::Unconfined),
            ..Default::default()
        };
        let bundle = build_with(&c, &p, Some(&image())).expect("bundle");
        let spec = &bundle.spec;
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(true));
        let process = spec.process().clone().expect("process");
        assert_eq!((process.user().uid(), process.user().gid()), (4000, 5000));
        assert_eq!(
            process.user().additional_gids().as_deref(),
            Some(&[6000][..])
        );
        assert_eq!(process.no_new_privileges(), Some(false));
        let caps = process.capabilities().clone().expect("caps");
        let effective: Vec<String> = caps
            .effective()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(effective, ["NET_ADMIN"]);
        assert!(
            spec.linux()
                .as_ref()
                .and_then(|l| l.seccomp().clone())
                .is_none(),
            "pod-level Unconfined"
        );
    }

    #[test]
    fn host_network_pods_keep_the_hosts_network_and_uts_namespaces() {
        let mut p = pod();
        p.host_network = true;
        let paths = crate::paths::Paths::new(Path::new("/var/lib/berth"), Path::new("/run/berth"));
        let sandbox = PodSandbox::at(&paths, &p, None);
        let accounts = accounts();
        let host = host();
        let bundle = build(&BundleRequest {
            pod: &p,
            sandbox: &sandbox,
            container: &container(),
            image: Some(&image()),
            accounts: &accounts,
            mounts: &[],
            cgroups_path: "/berth/pod-uid-1/c1",
            rlimits: &BTreeMap::new(),
            host: &host,
            host_limits: &NoClamp,
            id_mapping: None,
        })
        .expect("bundle");
        let namespaces = bundle
            .spec
            .linux()
            .clone()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        let types: Vec<LinuxNamespaceType> = namespaces.iter().map(|n| n.typ()).collect();
        assert_eq!(
            types,
            [
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Ipc
            ]
        );
        assert_eq!(bundle.spec.hostname(), &None);
    }

    #[test]
    fn run_as_non_root_refuses_root() {
        let mut c = container();
        c.security_context.run_as_non_root = Some(true);
        let err = build_with(&c, &pod(), None).map(|_| ()).expect_err("root");
        assert!(matches!(err, BundleError::RunsAsRoot { .. }), "{err}");
        let mut c = container();
        c.command = vec!["/bin/true".into()];
        c.security_context.run_as_non_root = Some(true);
        c.security_context.run_as_user = Some(1000);
        build_with(&c, &pod(), None).expect("non-root is fine");
    }

    #[test]
    fn resources_follow_kubelet() {
        let mut c = container();
        c.resources = Resources {
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            memory_limit_bytes: Some(64 << 20),
            memory_request_bytes: Some(64 << 20),
            pids_limit: Some(100),
        };
        let mut burstable = pod();
        burstable.oom.qos = crate::runtime::spec::QosClass::Burstable;
        let bundle = build_with(&c, &burstable, Some(&image())).expect("bundle");
        let resources = bundle
            .spec
            .linux()
            .clone()
            .and_then(|l| l.resources().clone())
            .expect("resources");
        let cpu = resources.cpu().clone().expect("cpu");
        assert_eq!(
            (cpu.quota(), cpu.period(), cpu.shares()),
            (Some(50_000), Some(100_000), Some(256))
        );
        let memory = resources.memory().expect("memory");
        assert_eq!(
            (memory.limit(), memory.swap()),
            (Some(64 << 20), Some(64 << 20))
        );
        assert_eq!(resources.pids().as_ref().map(|p| p.limit()), Some(100));
        // 64 MiB of 8 GiB: kubelet's Burstable score, 1000 - 7.
        let oom_score = |b: &Bundle| b.spec.process().as_ref().and_then(|p| p.oom_score_adj());
        assert_eq!(oom_score(&bundle), Some(993));
        let no_limits = build_with(&container(), &pod(), Some(&image())).expect("bundle");
        assert_eq!(oom_score(&no_limits), Some(1000), "BestEffort");
        let resources = no_limits
            .spec
            .linux()
            .clone()
            .and_then(|l| l.resources().clone())
            .expect("resources");
        assert_eq!(
            resources.cpu().as_ref().and_then(|c| c.shares()),
            Some(2),
            "BestEffort"
        );
        assert!(resources.memory().is_none());
    }

    /// Pod fields → OCI spec fragments.
    #[test]
    fn pod_security_fields_reach_the_spec() {
        use crate::runtime::spec::{OomPolicy, PodNamespaces, QosClass};
        let mut p = pod();
        p.namespaces = PodNamespaces {
            host_ipc: true,
            share_pid: true,
            ..Default::default()
        };
        p.oom = OomPolicy {
            qos: QosClass::Guaranteed,
            node_critical: false,
        };
        p.security_context.sysctls =
            vec![("net.ipv4.ip_unprivileged_port_start".into(), "0".into())];
        let mut c = container();
        c.security_context.proc_mount_unmasked = true;
        c.security_context.seccomp_profile = Some(SeccompProfile::Unconfined);
        let bundle = build_with(&c, &p, Some(&image())).expect("bundle");
        let json = serde_json::to_value(&bundle.spec).expect("json");
        assert_eq!(json["process"]["oomScoreAdj"], -997);
        assert_eq!(
            json["linux"]["sysctl"]["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        assert_eq!(json["linux"]["maskedPaths"], serde_json::json!([]));
        assert_eq!(json["linux"]["readonlyPaths"], serde_json::json!([]));
        assert!(json["linux"]["seccomp"].is_null());
        let namespaces = json["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(namespaces.iter().all(|n| n["type"] != "ipc"), "hostIPC");
        assert!(
            namespaces
                .iter()
                .any(|n| n["type"] == "pid" && n["path"] == "/run/berth/pods/uid-1/ns/pid")
        );
        let mounts = json["mounts"].as_array().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m["destination"] == "/dev/shm" && m["source"] == "/dev/shm")
        );
    }

    #[test]
    fn localhost_seccomp_profiles_come_from_the_profile_root() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("profiles")).expect("mkdir");
        std::fs::write(
            root.path().join("profiles/deny-mkdir.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
        )
        .expect("profile");
        let caps = std::collections::BTreeSet::new();
        let profile = SeccompProfile::Localhost(PathBuf::from("profiles/deny-mkdir.json"));
        let seccomp = seccomp_profile(&container(), &Some(profile), false, &caps, root.path())
            .expect("loads")
            .expect("a profile");
        let json = serde_json::to_value(&seccomp).expect("json");
        assert_eq!(json["defaultAction"], "SCMP_ACT_ALLOW");
        assert_eq!(
            json["syscalls"][0]["names"],
            serde_json::json!(["mkdir", "mkdirat"])
        );
        let missing = SeccompProfile::Localhost(PathBuf::from("nope.json"));
        let err = seccomp_profile(&container(), &Some(missing), false, &caps, root.path())
            .map(|_| ())
            .expect_err("missing");
        assert!(err.to_string().contains("does not exist"), "{err}");
        // `..` cannot leave the directory.
        let escape = SeccompProfile::Localhost(PathBuf::from("../../etc/passwd"));
        assert!(seccomp_profile(&container(), &Some(escape), false, &caps, root.path()).is_err());
    }

    #[test]
    fn the_spec_serializes_as_runtimes_expect() {
        let bundle = build_with(&container(), &pod(), Some(&image())).expect("bundle");
        let json = serde_json::to_value(&bundle.spec).expect("json");
        assert_eq!(json["ociVersion"], "1.0.2");
        assert_eq!(
            json["process"]["capabilities"]["inheritable"],
            serde_json::json!([])
        );
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    }
}
