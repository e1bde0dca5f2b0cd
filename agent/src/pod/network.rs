//! What a pod asks of its network driver ([`request`]): its ports, DNS
//! settings and host aliases, from its spec. Pure; the drivers themselves
//! are behind [`super::host::Networks`].

use std::net::IpAddr;

use manifests::types as api;
use netplugins::dns::{DnsConfig, DnsOption, DnsPolicy, DnsSettings, HostAlias};
use netplugins::driver::PodNetwork;
use netplugins::ports::{PortMapping, Protocol};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Spec(String),
}

/// What the pod asks of its network driver. `pod_id` is the pod's uid.
pub fn request(
    namespace: &str,
    name: &str,
    uid: &str,
    spec: &api::PodSpec,
) -> Result<PodNetwork, NetworkError> {
    let mut ports = Vec::new();
    for container in spec.containers.iter().chain(&spec.init_containers) {
        for port in &container.ports {
            ports.push(port_mapping(&container.name, port)?);
        }
    }
    let host_aliases = spec
        .host_aliases
        .iter()
        .map(|alias| {
            alias
                .ip
                .parse::<IpAddr>()
                .map(|ip| HostAlias {
                    ip,
                    hostnames: alias.hostnames.clone(),
                })
                .map_err(|_| {
                    NetworkError::Spec(format!("hostAliases: {:?} is not an IP address", alias.ip))
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(PodNetwork {
        pod_id: uid.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        hostname: name.to_string(),
        ports,
        dns: DnsSettings {
            policy: match spec.dns_policy_or_default() {
                api::DnsPolicy::ClusterFirst => DnsPolicy::ClusterFirst,
                api::DnsPolicy::ClusterFirstWithHostNet => DnsPolicy::ClusterFirstWithHostNet,
                api::DnsPolicy::Default => DnsPolicy::Default,
                api::DnsPolicy::None => DnsPolicy::None,
            },
            config: spec.dns_config.as_ref().map(|c| DnsConfig {
                nameservers: c.nameservers.clone(),
                searches: c.searches.clone(),
                options: c
                    .options
                    .iter()
                    .map(|o| DnsOption {
                        name: o.name.clone(),
                        value: o.value.clone(),
                    })
                    .collect(),
            }),
        },
        host_aliases,
    })
}

fn port_mapping(container: &str, port: &api::ContainerPort) -> Result<PortMapping, NetworkError> {
    let bad = |what: &str| {
        NetworkError::Spec(format!(
            "container {container:?}: port {}: {what}",
            port.container_port
        ))
    };
    let container_port =
        u16::try_from(port.container_port).map_err(|_| bad("containerPort is out of range"))?;
    let host_port =
        u16::try_from(port.host_port.unwrap_or(0)).map_err(|_| bad("hostPort is out of range"))?;
    let host_ip = match port.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
        Some(ip) => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| bad(&format!("hostIP {ip:?} is not an IP address")))?,
        ),
        None => None,
    };
    let protocol = match port.protocol_or_default() {
        api::Protocol::Tcp => Protocol::Tcp,
        api::Protocol::Udp => Protocol::Udp,
        api::Protocol::Sctp => Protocol::Sctp,
    };
    Ok(PortMapping {
        container_port,
        host_port,
        host_ip,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_ports_dns_and_aliases() {
        let spec: api::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "web", "ports": [
                {"containerPort": 80, "hostPort": 8080, "hostIP": "127.0.0.1"},
                {"containerPort": 53, "protocol": "UDP"}
            ]}],
            "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["10.0.0.53"], "options": [{"name": "ndots", "value": "2"}]},
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["db"]}]
        }))
        .expect("spec");
        let request = request("default", "web", "uid1", &spec).expect("request");
        assert_eq!(request.pod_id, "uid1");
        assert_eq!(request.ports.len(), 2);
        assert_eq!(request.ports[0].to_string(), "127.0.0.1:8080->80/tcp");
        assert_eq!(request.ports[1].protocol, Protocol::Udp);
        assert_eq!(request.dns.policy, DnsPolicy::None);
        assert_eq!(request.host_aliases[0].hostnames, ["db"]);
        let bad: api::PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "web", "ports": [{"containerPort": 80, "hostPort": 70000}]}]
        }))
        .expect("spec");
        let err = super::request("default", "web", "u", &bad).expect_err("out of range");
        assert!(err.to_string().contains("hostPort"), "{err}");
    }
}
