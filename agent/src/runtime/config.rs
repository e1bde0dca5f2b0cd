//! `[runtime]` in the agent config: the runtime owns its section.

use std::path::PathBuf;

use serde::Deserialize;

/// `[runtime]`: how containers are run.
///
/// ```toml
/// [runtime]
/// default-handler = "runc"          # else: crun if it can work here, then runc
/// cgroup-parent = "berth"           # cgroups are <parent>/pod-<uid>/<container-id>
/// log-max-size = 10485760           # rotate a container log at this size
/// log-max-files = 5                 # files kept per container instance
///
/// [runtime.handlers.kata]           # runtimeClassName: kata
/// path = "/usr/bin/kata-runtime"
/// args = ["--debug"]                # global flags before the subcommand
///
/// seccomp-profile-root = "/var/lib/berth/seccomp"  # Localhost seccomp profiles
/// allowed-unsafe-sysctls = ["net.core.somaxconn"]  # besides the kubelet's safe set
/// userns-first-id = 65536           # hostUsers: false pods get 65536 IDs each
/// userns-id-count = 4294901760      # from this range
///
/// [runtime.rlimits]                 # defaults for every container; clamped
/// nofile = { soft = 1024, hard = 524288 }  # to the agent's own hard limits
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeConfig {
    /// Handler used when a pod names no `runtimeClassName`.
    pub default_handler: Option<String>,
    /// Runtime handlers by name. `runc` and `crun` are found on PATH when
    /// not listed here.
    pub handlers: std::collections::BTreeMap<String, RuntimeHandlerConfig>,
    /// The berth-shim binary; default: next to the running `berth` binary,
    /// then PATH.
    pub shim: Option<PathBuf>,
    /// Top-level cgroup under which every pod's cgroup is created.
    pub cgroup_parent: String,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Default rlimits by lower-case name without `RLIMIT_` (`nofile`,
    /// `nproc`, `memlock`, …).
    pub rlimits: std::collections::BTreeMap<String, RlimitConfig>,
    /// Size of each pod's /dev/shm, in bytes.
    pub shm_size: u64,
    /// How long `create` may take (runtime create + start) before it fails.
    pub start_timeout_secs: u64,
    /// Where `seccompProfile.localhostProfile` paths are resolved (the
    /// kubelet's `<root-dir>/seccomp`); default `<--root>/seccomp`.
    pub seccomp_profile_root: Option<PathBuf>,
    /// Namespaced sysctls pods may set besides the kubelet's safe set
    /// (the kubelet's `--allowed-unsafe-sysctls`): names, or prefixes
    /// ending in `*` (`net.core.*`).
    pub allowed_unsafe_sysctls: Vec<String>,
    /// The host IDs `hostUsers: false` pods get, 65536 per pod (the
    /// kubelet's default: 65536 up to 2^32).
    pub userns_first_id: u32,
    pub userns_id_count: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let mut rlimits = std::collections::BTreeMap::new();
        rlimits.insert(
            "nofile".to_string(),
            RlimitConfig {
                soft: 1024,
                hard: 524_288,
            },
        );
        Self {
            default_handler: None,
            handlers: Default::default(),
            shim: None,
            cgroup_parent: "berth".to_string(),
            log_max_size: 10 << 20,
            log_max_files: 5,
            rlimits,
            shm_size: 64 << 20,
            start_timeout_secs: 120,
            seccomp_profile_root: None,
            allowed_unsafe_sysctls: Vec::new(),
            userns_first_id: 65536,
            userns_id_count: u32::MAX - 65535,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeHandlerConfig {
    /// The runtime binary (runc, crun or a CLI-compatible one).
    pub path: PathBuf,
    /// Global flags placed before every subcommand.
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlimitConfig {
    pub soft: u64,
    pub hard: u64,
}
