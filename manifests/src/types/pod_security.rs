//! The Pod's security and process fields: seccomp and AppArmor profiles,
//! `procMount`, `sysctls`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The priority classes every cluster has (others need an API server).
pub const SYSTEM_NODE_CRITICAL: &str = "system-node-critical";
pub const SYSTEM_CLUSTER_CRITICAL: &str = "system-cluster-critical";

/// `seccompProfile` (pod or container; the container's wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    /// `RuntimeDefault`, `Unconfined` or `Localhost`.
    #[serde(rename = "type")]
    pub type_: ProfileType,
    /// For `Localhost`: a path relative to the agent's seccomp profile
    /// directory (`[runtime] seccomp-profile-root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// `appArmorProfile` (pod or container; the container's wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppArmorProfile {
    /// `RuntimeDefault`, `Unconfined` or `Localhost`.
    #[serde(rename = "type")]
    pub type_: ProfileType,
    /// For `Localhost`: the name of a profile loaded on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

/// Which profile confines the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProfileType {
    RuntimeDefault,
    Unconfined,
    Localhost,
}

/// `procMount`: `Default` masks and write-protects parts of /proc;
/// `Unmasked` (with `hostUsers: false` only) does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProcMountType {
    Default,
    Unmasked,
}

/// One namespaced kernel parameter for the pod (`net.*`, `kernel.shm*`,
/// `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sysctl {
    pub name: String,
    pub value: String,
}
