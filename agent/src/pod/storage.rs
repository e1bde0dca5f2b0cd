//! Local ephemeral storage limits, the kubelet's eviction manager way: a
//! disk `emptyDir` over its `sizeLimit`, a container whose writable layer
//! and logs exceed its `ephemeral-storage` limit, or a pod whose
//! containers, logs and disk emptyDirs together exceed the sum of its
//! containers' limits is evicted (reason `Evicted`, with the kubelet's
//! messages). The file systems berth runs on here have no project quotas,
//! so usage is measured every `[pods] storage-check-interval` — as the
//! kubelet does without `LocalStorageCapacityIsolationFSQuotaMonitoring`.
//!
//! [`check`] is pure: from the pod's spec and measured usage to an
//! eviction message.

use std::collections::BTreeMap;

use manifests::types as api;

const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// What to measure of one pod, and what was measured (bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Disk emptyDirs by volume name.
    pub empty_dirs: BTreeMap<String, u64>,
    /// Writable layer plus logs, by container name.
    pub containers: BTreeMap<String, u64>,
}

/// Where one pod's ephemeral storage is (the host knows the paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageQuery {
    pub pod_uid: String,
    pub namespace: String,
    pub pod_name: String,
    /// Disk emptyDir volume names.
    pub empty_dirs: Vec<String>,
    /// (name, id) of each container's current instance.
    pub containers: Vec<(String, String)>,
}

/// Whether the pod has any limit this module enforces.
pub fn has_limits(spec: &api::PodSpec) -> bool {
    disk_empty_dirs(spec).any(|(_, limit)| limit.is_some())
        || spec
            .init_containers
            .iter()
            .chain(&spec.containers)
            .any(|c| limit_of(c).is_some())
}

/// The pod's disk emptyDirs with their `sizeLimit` (memory-backed ones
/// count against memory, as in Kubernetes).
pub fn disk_empty_dirs(
    spec: &api::PodSpec,
) -> impl Iterator<Item = (&str, Option<&api::Quantity>)> {
    spec.volumes.iter().filter_map(|v| {
        let empty_dir = v.empty_dir.as_ref()?;
        (empty_dir.medium.as_deref() != Some("Memory"))
            .then_some((v.name.as_str(), empty_dir.size_limit.as_ref()))
    })
}

/// A container's `ephemeral-storage` limit.
fn limit_of(container: &api::Container) -> Option<&api::Quantity> {
    container.resources.as_ref()?.limits.get(EPHEMERAL_STORAGE)
}

fn bytes(quantity: &api::Quantity) -> Option<u64> {
    let value = quantity.amount().ok()?.value();
    Some(u64::try_from(value).unwrap_or(u64::MAX))
}

/// Why the pod must be evicted, if it must: the kubelet's checks in its
/// order (emptyDirs, the pod, each container) and its messages.
pub fn check(spec: &api::PodSpec, usage: &Usage) -> Option<String> {
    for (name, limit) in disk_empty_dirs(spec) {
        let (Some(limit), Some(used)) = (limit, usage.empty_dirs.get(name)) else {
            continue;
        };
        if bytes(limit).is_some_and(|limit| *used > limit) {
            return Some(format!(
                "Usage of EmptyDir volume {name:?} exceeds the limit {:?}.",
                limit.as_str()
            ));
        }
    }
    if let Some(limit) = pod_limit(spec) {
        let used: u64 = usage
            .empty_dirs
            .values()
            .chain(usage.containers.values())
            .sum();
        if used > limit {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}.",
                binary_quantity(limit)
            ));
        }
    }
    for container in spec.init_containers.iter().chain(&spec.containers) {
        let (Some(limit), Some(used)) =
            (limit_of(container), usage.containers.get(&container.name))
        else {
            continue;
        };
        if bytes(limit).is_some_and(|limit| *used > limit) {
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit {:?}.",
                container.name,
                limit.as_str()
            ));
        }
    }
    None
}

/// Bytes as Kubernetes prints a binary quantity: `2Mi`, `1536Ki`, `1000`.
fn binary_quantity(bytes: u64) -> String {
    const SUFFIXES: [&str; 6] = ["Ei", "Pi", "Ti", "Gi", "Mi", "Ki"];
    for (i, suffix) in SUFFIXES.iter().enumerate() {
        let unit = 1u64 << (10 * (6 - i));
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

/// The pod's limit, as Kubernetes' `PodLimits`: the app containers' sum or
/// the largest init container's, whichever is larger; none when no
/// container has one.
fn pod_limit(spec: &api::PodSpec) -> Option<u64> {
    let app: Vec<u64> = spec
        .containers
        .iter()
        .filter_map(limit_of)
        .filter_map(bytes)
        .collect();
    let init = spec
        .init_containers
        .iter()
        .filter_map(limit_of)
        .filter_map(bytes)
        .max();
    if app.is_empty() && init.is_none() {
        return None;
    }
    Some(app.iter().sum::<u64>().max(init.unwrap_or(0)))
}

/// Bytes of ephemeral storage the pod's containers request (for a disk
/// pre-flight): the app containers' sum or the largest init container's.
pub fn requested(spec: &api::PodSpec) -> u64 {
    let request = |c: &api::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.get(EPHEMERAL_STORAGE))
            .and_then(bytes)
            .unwrap_or(0)
    };
    let app: u64 = spec.containers.iter().map(request).sum();
    let init = spec.init_containers.iter().map(request).max().unwrap_or(0);
    app.max(init)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> api::PodSpec {
        serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "a", "image": "x", "resources": {
                    "limits": {"ephemeral-storage": "10Mi"},
                    "requests": {"ephemeral-storage": "4Mi"}
                }},
                {"name": "b", "image": "x", "resources": {"limits": {"ephemeral-storage": "6Mi"}}}
            ],
            "volumes": [
                {"name": "cache", "emptyDir": {"sizeLimit": "1Mi"}},
                {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Ki"}},
                {"name": "free", "emptyDir": {}}
            ]
        }))
        .expect("spec")
    }

    const MI: u64 = 1 << 20;

    fn usage(cache: u64, free: u64, a: u64, b: u64) -> Usage {
        Usage {
            empty_dirs: BTreeMap::from([("cache".to_string(), cache), ("free".to_string(), free)]),
            containers: BTreeMap::from([("a".to_string(), a), ("b".to_string(), b)]),
        }
    }

    #[test]
    fn eviction_table() {
        let spec = spec();
        assert!(has_limits(&spec));
        let table = [
            ("within every limit", usage(MI, 0, MI, MI), None),
            (
                "emptyDir over its sizeLimit",
                usage(MI + 1, 0, 0, 0),
                Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"1Mi\"."),
            ),
            (
                "the pod over the sum of its containers' limits",
                usage(MI, 9 * MI, 5 * MI, MI + 1),
                Some(
                    "Pod ephemeral local storage usage exceeds the total limit of containers 16Mi.",
                ),
            ),
            (
                "one container over its own limit",
                usage(0, 0, MI, 6 * MI + 1),
                Some("Container b exceeded its local ephemeral storage limit \"6Mi\"."),
            ),
        ];
        for (case, usage, want) in table {
            assert_eq!(check(&spec, &usage).as_deref(), want, "{case}");
        }
        assert_eq!(requested(&spec), 4 * MI);
        assert_eq!(binary_quantity(1536 * 1024), "1536Ki");
        assert_eq!(binary_quantity(1000), "1000");
        let names: Vec<&str> = disk_empty_dirs(&spec).map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["cache", "free"],
            "a memory emptyDir counts as memory"
        );
    }

    #[test]
    fn no_limits_no_checks() {
        let spec: api::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "a", "image": "x"}],
            "volumes": [{"name": "free", "emptyDir": {}}]
        }))
        .expect("spec");
        assert!(!has_limits(&spec));
        assert_eq!(check(&spec, &usage(u64::MAX / 4, 0, 0, 0)), None);
    }
}
