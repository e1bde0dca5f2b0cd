//! What the pod reconciler asks the runtime for: one container of a pod,
//! with Kubernetes semantics, already resolved (env values from
//! ConfigMaps/Secrets filled in, quantities turned into numbers). Field
//! names follow the Pod API so the mapping is one line per field.

use std::path::PathBuf;

/// One container (`spec.containers[]` / `spec.initContainers[]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    /// Replaces the image's Entrypoint; when set without `args`, the image's
    /// Cmd is dropped too. Empty means "not set", as in Kubernetes.
    pub command: Vec<String>,
    /// Replaces the image's Cmd. Empty means "not set".
    pub args: Vec<String>,
    /// Defaults to the image's WorkingDir, then `/`.
    pub working_dir: Option<String>,
    /// In order; appended to (and overriding) the image's env. `$(NAME)`
    /// references to earlier variables are expanded, `$$` escapes.
    pub env: Vec<EnvVar>,
    pub volume_mounts: Vec<VolumeMount>,
    pub resources: Resources,
    pub security_context: SecurityContext,
    /// Allocate a pty for the container's stdout (`tty: true`).
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl EnvVar {
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            name: name.to_string(),
            value: value.to_string(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeMount {
    /// A pod volume's name.
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
    /// A path inside the volume to mount instead of its root; it must stay
    /// inside the volume (symlinks included) and is created if missing.
    pub sub_path: Option<String>,
}

/// `resources`, as numbers. Kubernetes quantities map as: cpu "500m" → 500
/// millicores, memory "128Mi" → 134217728 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// `limits.cpu`: CFS quota over a 100 ms period.
    pub cpu_limit_millis: Option<u64>,
    /// `requests.cpu`: CPU shares (v1) / weight (v2), as kubelet computes.
    pub cpu_request_millis: Option<u64>,
    /// `limits.memory`: the hard limit; swap is not allowed beyond it.
    pub memory_limit_bytes: Option<u64>,
    /// `requests.memory` (Kubernetes defaults it to the limit): the OOM
    /// score of a Burstable container.
    pub memory_request_bytes: Option<u64>,
    /// `limits.pids` is not a Pod field; the reconciler may set a node-wide
    /// pids limit per container here (kubelet's podPidsLimit analogue).
    pub pids_limit: Option<u64>,
}

/// `securityContext` of a container, merged with the pod's by
/// [`SecurityContext::with_pod_defaults`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityContext {
    /// All capabilities, no seccomp, no masked paths, all host devices.
    pub privileged: bool,
    pub capabilities: Capabilities,
    pub read_only_root_filesystem: bool,
    /// `false` sets no_new_privs, so does "not set" (secure by default);
    /// only an explicit `true` (or `privileged`) leaves it off.
    pub allow_privilege_escalation: Option<bool>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    /// Refuse to start if the container would run as uid 0.
    pub run_as_non_root: Option<bool>,
    /// Default: RuntimeDefault (berth is secure by default, unlike kubelet's
    /// historical Unconfined).
    pub seccomp_profile: Option<SeccompProfile>,
    /// Default: none (berth has no AppArmor profile of its own).
    pub app_armor_profile: Option<AppArmorProfile>,
    /// `procMount: Unmasked`: no masked or read-only /proc paths.
    pub proc_mount_unmasked: bool,
}

/// `appArmorProfile`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmorProfile {
    /// berth loads no AppArmor profile of its own: nothing is applied.
    RuntimeDefault,
    Unconfined,
    /// The name of a profile loaded on the host.
    Localhost(String),
}

/// `capabilities.add` / `.drop`: names with or without `CAP_`, or `ALL`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompProfile {
    RuntimeDefault,
    Unconfined,
    /// A seccomp profile file (Docker's or the OCI format), relative to
    /// `[runtime] seccomp-profile-root` as the kubelet's `seccomp/`
    /// directory (an absolute path is used as it is).
    Localhost(PathBuf),
}

/// The pod-level `securityContext` fields that apply to every container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSecurityContext {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub run_as_non_root: Option<bool>,
    pub supplemental_groups: Vec<u32>,
    /// Added to every container's supplementary groups.
    pub fs_group: Option<u32>,
    pub seccomp_profile: Option<SeccompProfile>,
    pub app_armor_profile: Option<AppArmorProfile>,
    /// Namespaced kernel parameters (names normalized to dots), set in
    /// every container (they share the namespaces they belong to).
    pub sysctls: Vec<(String, String)>,
}

impl SecurityContext {
    /// The container's context with the pod's defaults filled in where the
    /// container sets nothing (Kubernetes: the container's value wins).
    pub fn with_pod_defaults(&self, pod: &PodSecurityContext) -> SecurityContext {
        SecurityContext {
            run_as_user: self.run_as_user.or(pod.run_as_user),
            run_as_group: self.run_as_group.or(pod.run_as_group),
            run_as_non_root: self.run_as_non_root.or(pod.run_as_non_root),
            seccomp_profile: self
                .seccomp_profile
                .clone()
                .or_else(|| pod.seccomp_profile.clone()),
            app_armor_profile: self
                .app_armor_profile
                .clone()
                .or_else(|| pod.app_armor_profile.clone()),
            ..self.clone()
        }
    }
}

/// A pod volume (`spec.volumes[]`), as the runtime needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    HostPath {
        path: PathBuf,
        kind: HostPathType,
    },
    /// Under the pod's state directory; `medium: Memory` is a tmpfs of at
    /// most `size_limit` bytes (default: half of RAM, as tmpfs does).
    EmptyDir {
        memory: bool,
        size_limit: Option<u64>,
    },
    /// A directory the caller materialised (configMap, secret, projected —
    /// see [`super::volumes::write_files`]); mounted read-only.
    Directory {
        path: PathBuf,
    },
}

/// `hostPath.type`, as the Pod API has it (`Unchecked` is `""`: no check).
pub use manifests::types::HostPathType;

/// The pod a container belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's hostname (`spec.hostname`, else the pod name).
    pub hostname: String,
    pub security_context: PodSecurityContext,
    /// `hostNetwork: true`: no network namespace of its own.
    pub host_network: bool,
    /// `hostPID`, `hostIPC`, `shareProcessNamespace`, `hostUsers`.
    pub namespaces: PodNamespaces,
    /// What the containers' OOM scores follow (see [`super::oom`]).
    pub oom: OomPolicy,
}

/// The pod's namespace choices besides the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    /// The host's PID namespace.
    pub host_pid: bool,
    /// The host's IPC namespace and /dev/shm.
    pub host_ipc: bool,
    /// One PID namespace for all containers, held by a tiny init process.
    pub share_pid: bool,
    /// `hostUsers: false`: a user namespace of the pod's own.
    pub user: bool,
}

/// Kubernetes' QoS class of a pod (`pkg/apis/core/v1/helper/qos`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    #[default]
    BestEffort,
}

/// The pod-wide inputs of a container's OOM score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OomPolicy {
    pub qos: QosClass,
    /// `priorityClassName: system-node-critical`.
    pub node_critical: bool,
}
