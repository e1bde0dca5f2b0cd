//! What counts as a pod-level change (a new incarnation: new sandbox, new
//! network, every container restarted) and what as a change of one
//! container (only that container is replaced).
//!
//! Pod-level: volumes, hostNetwork, runtimeClassName, dnsPolicy, dnsConfig,
//! hostAliases, the pod securityContext, initContainers, the ports the
//! host sees (hostPorts; every port for hostNetwork), the namespace
//! choices (hostPID, hostIPC, shareProcessNamespace, hostUsers) and the
//! priority (every container's OOM score follows it). These shape the
//! sandbox every container shares — /etc files are bind mounts that pin
//! their inode, so even a DNS change must recreate.
//!
//! Container-level: everything in the container's own spec (image,
//! command, args, env, resources, probes, securityContext, …) plus the
//! values it reads from ConfigMaps and Secrets as env. Values only enter
//! as a hash, so secrets never reach the pod's state file.
//!
//! Neither: restartPolicy, terminationGracePeriodSeconds and
//! imagePullSecrets apply to the next action without recreating anything;
//! the contents of configMap, secret, downwardAPI and projected volumes
//! (and so the pod's labels and annotations) are swapped in atomically
//! through `..data`, as the kubelet does.

use manifests::types as api;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::inputs::{FieldValues, InputError, resolve_env};
use super::plan::Wanted;
use crate::desired::DesiredState;

/// A short stable hash of `value`'s canonical JSON.
pub fn of<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).expect("pod spec types always serialise to JSON");
    let digest = Sha256::digest(json);
    hex::encode(&digest[..8])
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodLevel<'a> {
    volumes: &'a [api::Volume],
    host_network: bool,
    runtime_class_name: &'a Option<String>,
    dns_policy: Option<api::DnsPolicy>,
    dns_config: &'a Option<api::PodDnsConfig>,
    host_aliases: &'a [api::HostAlias],
    security_context: &'a Option<Box<api::PodSecurityContext>>,
    hostname: &'a str,
    /// Init containers with their resolved env hashes.
    init_containers: Vec<String>,
    host_ports: Vec<&'a api::ContainerPort>,
    /// Namespaces and priority; left out when unset, so pods that set none
    /// keep the hash they had before these fields existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespaces: Option<Namespaces<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Namespaces<'a> {
    host_pid: bool,
    host_ipc: bool,
    share_process_namespace: Option<bool>,
    host_users: Option<bool>,
    priority_class_name: &'a Option<String>,
    priority: Option<i32>,
}

/// The pod-level hash of `spec` (see the module docs).
pub fn pod_level(
    namespace: &str,
    name: &str,
    spec: &api::PodSpec,
    desired: &DesiredState,
) -> Result<String, InputError> {
    let init_containers = spec
        .init_containers
        .iter()
        .map(|c| container_level(namespace, c, desired))
        .collect::<Result<Vec<_>, _>>()?;
    let host_ports = spec
        .containers
        .iter()
        .chain(&spec.init_containers)
        .flat_map(|c| &c.ports)
        .filter(|p| spec.host_network || p.host_port.is_some_and(|h| h != 0))
        .collect();
    Ok(of(&PodLevel {
        volumes: &spec.volumes,
        host_network: spec.host_network,
        runtime_class_name: &spec.runtime_class_name,
        dns_policy: spec.dns_policy,
        dns_config: &spec.dns_config,
        host_aliases: &spec.host_aliases,
        security_context: &spec.security_context,
        hostname: name,
        init_containers,
        host_ports,
        namespaces: (spec.host_pid
            || spec.host_ipc
            || spec.share_process_namespace.is_some()
            || spec.host_users.is_some()
            || spec.priority_class_name.is_some()
            || spec.priority.is_some())
        .then_some(Namespaces {
            host_pid: spec.host_pid,
            host_ipc: spec.host_ipc,
            share_process_namespace: spec.share_process_namespace,
            host_users: spec.host_users,
            priority_class_name: &spec.priority_class_name,
            priority: spec.priority,
        }),
    }))
}

/// The container-level hash of `container`.
pub fn container_level(
    namespace: &str,
    container: &api::Container,
    desired: &DesiredState,
) -> Result<String, InputError> {
    let env = resolve_env(namespace, container, desired, &FieldValues::placeholders())?;
    let env: Vec<(&str, String)> = env
        .iter()
        .map(|e| (e.name.as_str(), of(&e.value)))
        .collect();
    Ok(of(&(container, env)))
}

/// The pod-level hash of `spec` and every container it wants, init
/// containers first, with its container-level hash.
pub fn wanted(
    namespace: &str,
    name: &str,
    spec: &api::PodSpec,
    desired: &DesiredState,
) -> Result<(String, Vec<Wanted>), InputError> {
    let mut containers = Vec::new();
    for (container, init) in spec
        .init_containers
        .iter()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)))
    {
        containers.push(Wanted {
            name: container.name.clone(),
            init,
            hash: container_level(namespace, container, desired)?,
        });
    }
    Ok((pod_level(namespace, name, spec, desired)?, containers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> api::PodSpec {
        serde_json::from_value(json).expect("spec")
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "containers": [
                {"name": "web", "image": "r/web:1", "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "r/side:1"}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}]
        })
    }

    fn hashes(json: serde_json::Value) -> (String, Vec<String>) {
        let desired = DesiredState::default();
        let spec = spec(json);
        let pod = pod_level("default", "p", &spec, &desired).expect("pod hash");
        let containers = spec
            .containers
            .iter()
            .map(|c| container_level("default", c, &desired).expect("container hash"))
            .collect();
        (pod, containers)
    }

    #[test]
    fn a_container_change_is_confined_to_that_container() {
        let (pod, containers) = hashes(base());
        let mut edited = base();
        edited["containers"][0]["image"] = "r/web:2".into();
        edited["containers"][0]["env"] = serde_json::json!([{"name": "A", "value": "1"}]);
        let (pod2, containers2) = hashes(edited);
        assert_eq!(pod, pod2, "not a pod-level change");
        assert_ne!(containers[0], containers2[0]);
        assert_eq!(containers[1], containers2[1], "the sibling is untouched");
    }

    #[test]
    fn pod_level_fields_change_the_pod_hash() {
        let (pod, _) = hashes(base());
        let edits: Vec<(&str, serde_json::Value)> = vec![
            ("hostNetwork", true.into()),
            ("runtimeClassName", "crun".into()),
            ("dnsPolicy", "Default".into()),
            (
                "hostAliases",
                serde_json::json!([{"ip": "10.1.1.1", "hostnames": ["x"]}]),
            ),
            ("volumes", serde_json::json!([])),
            (
                "initContainers",
                serde_json::json!([{"name": "init", "image": "r/i:1"}]),
            ),
            ("securityContext", serde_json::json!({"runAsUser": 1000})),
        ];
        for (field, value) in edits {
            let mut edited = base();
            edited[field] = value;
            assert_ne!(hashes(edited).0, pod, "{field} is pod-level");
        }
        let mut host_port = base();
        host_port["containers"][0]["ports"][0]["hostPort"] = 8080.into();
        assert_ne!(hashes(host_port).0, pod, "a hostPort is pod-level");
        let mut policy = base();
        policy["restartPolicy"] = "Never".into();
        policy["terminationGracePeriodSeconds"] = 5.into();
        assert_eq!(hashes(policy).0, pod, "applied without recreating");
    }
}
