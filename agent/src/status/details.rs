//! Kind-specific status beyond phase and message: what `berth ps` and
//! `berth inspect` print. Reconcilers publish it with
//! [`StatusStore::set_details`](super::StatusStore::set_details); it is
//! persisted in `status.json` next to the object's phase. Never a secret
//! value, never object content.

use serde::{Deserialize, Serialize};

/// Serialized as `{"pod": {...}}`, so new kinds add a variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Details {
    Pod(PodDetails),
}

/// A pod as it runs: its sandbox and every container, like the status of a
/// Kubernetes Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDetails {
    /// Identifies this incarnation of the pod (a pod-level change makes a
    /// new one); containers, cgroups and the sandbox are named after it.
    pub uid: String,
    /// `podIPs`, spelled as in a Kubernetes PodStatus (camelCase alone
    /// would give `podIps`); the alias reads status written before.
    #[serde(
        default,
        rename = "podIPs",
        alias = "podIps",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub pod_ips: Vec<String>,
    pub host_network: bool,
    /// The network driver that set the pod up (`bridge`, `cni`, `host`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// hostPorts in effect, `hostIP:hostPort->containerPort/protocol`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// When the sandbox was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<ContainerDetails>,
    pub containers: Vec<ContainerDetails>,
    /// What the pod did not get as asked (clamped rlimits, a foreign
    /// firewall policy, ignored fields).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Which generation runs, one on probation, one refused
    /// (`berth.dev/probation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutDetails>,
}

/// A pod's versions under health-gated rollout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutDetails {
    /// The generation known good (the rollback target).
    pub stable_generation: u64,
    /// The generation that runs now.
    pub running_generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_generation: Option<u64>,
    /// When its probation ends (RFC 3339), once its clock started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_reason: Option<String>,
    /// The image digests refused (an auto-update), by container.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub refused_digests: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDetails {
    pub name: String,
    /// The image as the manifest names it.
    pub image: String,
    /// The manifest digest actually running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The runtime's container id of the current instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The runtime handler (`runc`, `crun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    pub state: ContainerState,
    /// The previous instance's end, after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
    pub restart_count: u32,
    pub ready: bool,
}

/// Kubernetes' three container states, with the same reasons:
/// `ContainerCreating`, `ImagePullBackOff`, `ErrImageNeverPull`,
/// `CrashLoopBackOff`, `CreateContainerError`, `PodInitializing` while
/// waiting; `Completed`, `Error`, `OOMKilled` once terminated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ContainerState {
    Waiting {
        reason: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
    Running {
        started_at: String,
        pid: i32,
    },
    Terminated {
        /// 128 + signal when killed by a signal, as shells and Kubernetes report.
        exit_code: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        reason: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_at: Option<String>,
        finished_at: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_states_serialise_like_kubernetes() {
        let state = ContainerState::Terminated {
            exit_code: 3,
            signal: None,
            reason: "Error".into(),
            message: String::new(),
            started_at: Some("a".into()),
            finished_at: "b".into(),
        };
        let json = serde_json::to_value(&state).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"terminated": {"exitCode": 3, "reason": "Error", "startedAt": "a", "finishedAt": "b"}})
        );
        let running = ContainerState::Running {
            started_at: "a".into(),
            pid: 7,
        };
        assert_eq!(
            serde_json::to_value(&running).expect("json"),
            serde_json::json!({"running": {"startedAt": "a", "pid": 7}})
        );
    }

    #[test]
    fn pod_ips_are_spelled_like_kubernetes_and_old_status_still_reads() {
        let details = PodDetails {
            pod_ips: vec!["10.0.0.2".into()],
            ..PodDetails::default()
        };
        let json = serde_json::to_value(&details).expect("json");
        assert_eq!(json["podIPs"], serde_json::json!(["10.0.0.2"]), "{json}");
        let old: PodDetails = serde_json::from_value(serde_json::json!({
            "uid": "u", "podIps": ["10.0.0.3"], "hostNetwork": false, "containers": []
        }))
        .expect("old spelling");
        assert_eq!(old.pod_ips, ["10.0.0.3"]);
    }
}
