//! downwardAPI files (the pod's own fields and its containers' resources)
//! and projected volumes (configMap, secret and downwardAPI sources in one
//! directory), with the kubelet's formats: a label map is `key="value"`
//! lines sorted by key with Go's `%q` quoting, a resource is rounded up to
//! whole divisors, and a limit left out reads as the node's capacity.

use std::collections::BTreeMap;

use manifests::field_path::{self, VolumeField};
use manifests::types as api;

use crate::runtime::volumes::VolumeFile;

pub use crate::node::capacity::Capacity;

/// Why one downwardAPI file cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file's path in the volume.
    pub path: String,
    pub problem: String,
}

/// Values of the pod's own fields for `fieldRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldValues {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub pod_ips: Vec<String>,
    pub host_ip: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// What a limit left out reads as (`resourceFieldRef`).
    pub capacity: super::projection::Capacity,
    /// Every field reads as `$(PATH)` (see [`Self::placeholders`]).
    pub stand_ins: bool,
}

/// Kubernetes' service account of a pod that names none (berth has no API
/// server and no service accounts, so every pod reads this).
const SERVICE_ACCOUNT: &str = "default";

impl FieldValues {
    /// Stand-ins that name each field instead of its value: what a
    /// container's spec hash is computed from, so the hash does not change
    /// when the pod gets a new IP or uid.
    pub fn placeholders() -> Self {
        Self {
            stand_ins: true,
            ..Self::default()
        }
    }

    /// The value of `fieldPath` (the one grammar `berth validate` uses);
    /// a missing label or annotation is empty, as in Kubernetes.
    pub(super) fn get(&self, path: &str) -> Option<String> {
        use manifests::field_path::PodField;
        let field = manifests::field_path::parse(path).ok()?;
        if self.stand_ins {
            return Some(format!("$({path})"));
        }
        Some(match field {
            PodField::Name => self.name.clone(),
            PodField::Namespace => self.namespace.clone(),
            PodField::Uid => self.uid.clone(),
            PodField::NodeName => self.node_name.clone(),
            PodField::ServiceAccountName => SERVICE_ACCOUNT.to_string(),
            PodField::PodIp => self.pod_ips.first().cloned().unwrap_or_default(),
            PodField::PodIps => self.pod_ips.join(","),
            PodField::HostIp => self.host_ip.clone(),
            PodField::Label(key) => self.labels.get(key).cloned().unwrap_or_default(),
            PodField::Annotation(key) => self.annotations.get(key).cloned().unwrap_or_default(),
        })
    }
}

/// The pod as downwardAPI files see it.
pub struct PodFacts<'a> {
    /// With the real labels, annotations and capacity (not stand-ins).
    pub fields: &'a FieldValues,
    pub spec: &'a api::PodSpec,
}

impl PodFacts<'_> {
    /// The files of downwardAPI `items`.
    pub fn files(
        &self,
        items: &[api::DownwardApiVolumeFile],
        mode: impl Fn(Option<i32>) -> u32,
    ) -> Result<Vec<VolumeFile>, FileError> {
        items
            .iter()
            .map(|item| {
                let problem = |problem: String| FileError {
                    path: item.path.clone(),
                    problem,
                };
                let text = match (&item.field_ref, &item.resource_field_ref) {
                    (Some(field), _) => self.field(&field.field_path).map_err(problem)?,
                    (None, Some(resource)) => self.resource(resource).map_err(problem)?,
                    (None, None) => {
                        return Err(problem(
                            "needs one of fieldRef, resourceFieldRef".to_string(),
                        ));
                    }
                };
                Ok(VolumeFile {
                    path: item.path.clone(),
                    data: text.into_bytes(),
                    mode: mode(item.mode),
                })
            })
            .collect()
    }

    fn field(&self, path: &str) -> Result<String, String> {
        match field_path::parse_volume_field(path)? {
            VolumeField::Labels => Ok(format_map(&self.fields.labels)),
            VolumeField::Annotations => Ok(format_map(&self.fields.annotations)),
            VolumeField::One(_) => self
                .fields
                .get(path)
                .ok_or_else(|| format!("fieldPath `{path}` is not supported")),
        }
    }

    fn resource(&self, selector: &api::ResourceFieldSelector) -> Result<String, String> {
        let name = selector.container_name.as_deref().unwrap_or_default();
        let container = self
            .spec
            .init_containers
            .iter()
            .chain(&self.spec.containers)
            .find(|c| c.name == name)
            .ok_or_else(|| format!("resourceFieldRef: the pod has no container `{name}`"))?;
        resource_value(container, selector, self.fields.capacity)
    }
}

/// A container's request or limit divided by the divisor, rounded up (the
/// kubelet's `ExtractContainerResourceValue`): CPU in millicores, memory
/// and storage in bytes. A limit left out reads as the node's capacity; a
/// request left out as the limit the pod gives, else 0 (API defaulting).
pub(super) fn resource_value(
    container: &api::Container,
    selector: &api::ResourceFieldSelector,
    capacity: Capacity,
) -> Result<String, String> {
    let (is_limit, name) = field_path::parse_resource_field(&selector.resource)?;
    let resources = container.resources.clone().unwrap_or_default();
    let amount = |map: &BTreeMap<String, api::Quantity>| -> Result<Option<i128>, String> {
        map.get(name)
            .map(|q| {
                q.amount()
                    .map(|p| p.millis())
                    .map_err(|e| format!("{name} of container {}: {e}", container.name))
            })
            .transpose()
    };
    let node_millis = match name {
        "cpu" => capacity.cpu_millis,
        "memory" => capacity.memory_bytes.saturating_mul(1000),
        _ => capacity.ephemeral_storage_bytes.saturating_mul(1000),
    };
    let limit = amount(&resources.limits)?;
    let millis = if is_limit {
        limit.unwrap_or(node_millis)
    } else {
        amount(&resources.requests)?.or(limit).unwrap_or(0)
    };
    let divisor = match &selector.divisor {
        None => 1000,
        Some(q) => q.amount().map_err(|e| format!("divisor: {e}"))?.millis(),
    };
    if divisor <= 0 {
        return Err("divisor must be positive".into());
    }
    // Memory and storage count whole bytes first, as the kubelet does.
    let millis = if name == "cpu" {
        millis
    } else {
        ceil_div(millis, 1000).saturating_mul(1000)
    };
    let divisor = if name == "cpu" {
        divisor
    } else {
        ceil_div(divisor, 1000).saturating_mul(1000).max(1000)
    };
    Ok(ceil_div(millis, divisor).to_string())
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

/// `key="value"` lines sorted by key, no trailing newline (the kubelet's
/// `fieldpath.FormatMap`).
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `%q` (`strconv.Quote`): a double-quoted string with Go escapes.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> api::PodSpec {
        serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "app", "image": "x", "resources": {
                    "limits": {"cpu": "250m", "memory": "64Mi"},
                    "requests": {"memory": "32Mi"}
                }},
                {"name": "bare", "image": "x"}
            ]
        }))
        .expect("spec")
    }

    const CAPACITY: Capacity = Capacity {
        cpu_millis: 2000,
        memory_bytes: 8 << 30,
        ephemeral_storage_bytes: 100 << 30,
    };

    fn facts<'a>(fields: &'a FieldValues, spec: &'a api::PodSpec) -> PodFacts<'a> {
        PodFacts { fields, spec }
    }

    fn items(json: serde_json::Value) -> Vec<api::DownwardApiVolumeFile> {
        serde_json::from_value(json).expect("items")
    }

    fn contents(files: &[VolumeFile]) -> Vec<(&str, String, u32)> {
        files
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    String::from_utf8_lossy(&f.data).into_owned(),
                    f.mode,
                )
            })
            .collect()
    }

    #[test]
    fn downward_api_files_hold_fields_in_the_kubelet_format() {
        let fields = FieldValues {
            capacity: CAPACITY,
            name: "web".into(),
            namespace: "prod".into(),
            uid: "u-1".into(),
            labels: BTreeMap::from([
                ("tier".to_string(), "front".to_string()),
                ("app".to_string(), "web".to_string()),
            ]),
            annotations: BTreeMap::from([("note".to_string(), "say \"hi\"\n".to_string())]),
            ..FieldValues::default()
        };
        let spec = spec();
        let files = facts(&fields, &spec)
            .files(
                &items(serde_json::json!([
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}, "mode": 0o600},
                    {"path": "uid", "fieldRef": {"fieldPath": "metadata.uid"}},
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                    {"path": "tier", "fieldRef": {"fieldPath": "metadata.labels['tier']"}}
                ])),
                |mode| mode.map_or(0o644, |m| u32::try_from(m).expect("mode")),
            )
            .expect("files");
        assert_eq!(
            contents(&files),
            [
                ("name", "web".to_string(), 0o644),
                ("ns", "prod".to_string(), 0o600),
                ("uid", "u-1".to_string(), 0o644),
                ("labels", "app=\"web\"\ntier=\"front\"".to_string(), 0o644),
                (
                    "annotations",
                    "note=\"say \\\"hi\\\"\\n\"".to_string(),
                    0o644
                ),
                ("tier", "front".to_string(), 0o644),
            ]
        );
        let err = facts(&fields, &spec)
            .files(
                &items(
                    serde_json::json!([{"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}}]),
                ),
                |_| 0o644,
            )
            .expect_err("not in volumes");
        assert_eq!(err.path, "ip");
        assert!(
            err.problem
                .contains("not supported in a downwardAPI volume"),
            "{err:?}"
        );
    }

    #[test]
    fn resource_fields_round_up_and_default_to_the_node() {
        let fields = FieldValues {
            capacity: CAPACITY,
            ..FieldValues::default()
        };
        let spec = spec();
        let value = |container: &str, resource: &str, divisor: Option<&str>| {
            let selector = api::ResourceFieldSelector {
                container_name: Some(container.into()),
                resource: resource.into(),
                divisor: divisor.map(api::Quantity::new),
            };
            facts(&fields, &spec).resource(&selector).expect("value")
        };
        // 250m rounds up to 1 core; in millicores it is 250.
        assert_eq!(value("app", "limits.cpu", None), "1");
        assert_eq!(value("app", "limits.cpu", Some("1m")), "250");
        assert_eq!(value("app", "limits.memory", Some("1Mi")), "64");
        assert_eq!(value("app", "requests.memory", Some("1Mi")), "32");
        assert_eq!(value("app", "limits.memory", None), (64 << 20).to_string());
        // requests.cpu unset: defaults to the limit.
        assert_eq!(value("app", "requests.cpu", Some("1m")), "250");
        // No limit: the node's capacity; no request and no limit: 0.
        assert_eq!(value("bare", "limits.cpu", None), "2");
        assert_eq!(value("bare", "limits.memory", Some("1Gi")), "8");
        assert_eq!(
            value("bare", "limits.ephemeral-storage", Some("1Gi")),
            "100"
        );
        assert_eq!(value("bare", "requests.memory", None), "0");
    }
}
