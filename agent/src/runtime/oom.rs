//! Who the kernel's OOM killer takes first, as kubelet arranges it
//! (`pkg/kubelet/qos/policy.go`): the agent at -999, so a node short of
//! memory loses containers before the process that restarts them; the
//! shims inherit the agent's value (killing one loses its container's logs
//! and exit status). Containers get `process.oomScoreAdj` from their pod:
//! `system-node-critical` pods and Guaranteed pods -997, BestEffort pods
//! 1000, Burstable containers `1000 - 1000 * memory request / RAM` within
//! `[3, 999]`. Whatever the policy says, a container always ends up above
//! the agent's actual value: lowering a score needs CAP_SYS_RESOURCE,
//! which an agent that could not lower its own lacks.

use std::io;

use super::spec::{OomPolicy, QosClass, Resources};

/// The agent's own score (kubelet's `KubeletOOMScoreAdj`).
pub const AGENT_OOM_SCORE_ADJ: i32 = -999;
/// Guaranteed and node-critical pods: killed last among containers.
const GUARANTEED: i32 = -997;
/// No requests or limits: killed first.
const BEST_EFFORT: i32 = 1000;
/// Burstable containers stay above Guaranteed ones (1000 - 997).
const BURSTABLE_MIN: i32 = 3;
const BURSTABLE_MAX: i32 = 999;
const OWN_SCORE: &str = "/proc/self/oom_score_adj";

/// Moves the agent to [`AGENT_OOM_SCORE_ADJ`]. Fails without
/// CAP_SYS_RESOURCE (the unit's `OOMScoreAdjust=` does it then).
pub fn protect_agent() -> io::Result<()> {
    std::fs::write(OWN_SCORE, AGENT_OOM_SCORE_ADJ.to_string())
}

/// The agent's current score (0 if it cannot be read).
pub fn own_score() -> i32 {
    std::fs::read_to_string(OWN_SCORE)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn memory_total() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The `oomScoreAdj` of a container with `resources` in a pod with
/// `policy`, on a host with `memory_total` bytes of RAM whose agent has
/// score `agent`.
pub fn container_score(
    policy: OomPolicy,
    resources: &Resources,
    memory_total: Option<u64>,
    agent: i32,
) -> i32 {
    let score = if policy.node_critical {
        GUARANTEED
    } else {
        match policy.qos {
            QosClass::Guaranteed => GUARANTEED,
            QosClass::BestEffort => BEST_EFFORT,
            QosClass::Burstable => {
                let request = resources.memory_request_bytes.unwrap_or(0);
                let share = match memory_total.filter(|total| *total > 0) {
                    Some(total) => i32::try_from(u128::from(request) * 1000 / u128::from(total))
                        .unwrap_or(i32::MAX),
                    None => 0,
                };
                (1000 - share.min(1000)).clamp(BURSTABLE_MIN, BURSTABLE_MAX)
            }
        }
    };
    score.max(agent.saturating_add(1)).min(BEST_EFFORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn request(memory: Option<u64>) -> Resources {
        Resources {
            memory_request_bytes: memory,
            ..Default::default()
        }
    }

    fn policy(qos: QosClass) -> OomPolicy {
        OomPolicy {
            qos,
            node_critical: false,
        }
    }

    #[test]
    fn containers_score_like_kubelet_and_always_above_the_agent() {
        let ram = Some(8 * GIB);
        let agent = AGENT_OOM_SCORE_ADJ;
        let burstable = policy(QosClass::Burstable);
        let cases = [
            (policy(QosClass::BestEffort), None, agent, 1000),
            (policy(QosClass::Guaranteed), Some(GIB), agent, -997),
            (
                OomPolicy {
                    qos: QosClass::BestEffort,
                    node_critical: true,
                },
                None,
                agent,
                -997,
            ),
            // No memory request: one below BestEffort.
            (burstable, None, agent, 999),
            // 1 GiB of 8: 1000 - 125.
            (burstable, Some(GIB), agent, 875),
            // All of the RAM (or more) still stays above Guaranteed.
            (burstable, Some(16 * GIB), agent, 3),
            // An agent that could not lower its own score (0): containers
            // still come before it.
            (burstable, Some(16 * GIB), 0, 3),
            (policy(QosClass::Guaranteed), Some(GIB), 0, 1),
            (burstable, Some(16 * GIB), 500, 501),
            (policy(QosClass::BestEffort), None, 1000, 1000),
        ];
        for (policy, memory, agent, want) in cases {
            assert_eq!(
                container_score(policy, &request(memory), ram, agent),
                want,
                "{policy:?} {memory:?} agent {agent}"
            );
        }
        // Unknown RAM: as if the request were nothing.
        assert_eq!(
            container_score(burstable, &request(Some(GIB)), None, agent),
            999
        );
    }

    #[test]
    fn reads_this_hosts_memory_and_own_score() {
        assert!(memory_total().is_some_and(|total| total > 0));
        assert!((-1000..=1000).contains(&own_score()));
    }
}
