//! Port mappings (a container's `hostPort`s) and the rule that two pods may
//! not hold the same host port: same protocol and port, on overlapping host
//! addresses (an unset hostIP means every address of the host).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = PortError;

    /// Accepts Kubernetes' spelling (`TCP`) and CNI's (`tcp`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(PortError::UnknownProtocol(s.to_string())),
        }
    }
}

/// One `hostPort` of a pod: traffic to `host_ip:host_port` (any host
/// address when `host_ip` is `None`) goes to the pod's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: Option<IpAddr>,
    pub protocol: Protocol,
}

impl PortMapping {
    /// The host address this mapping listens on, `None` for all of them
    /// (`0.0.0.0` and `::` count as all, as in Kubernetes).
    pub fn bound_ip(&self) -> Option<IpAddr> {
        self.host_ip.filter(|ip| !ip.is_unspecified())
    }

    /// Whether this mapping and `other` would catch the same packets.
    pub fn overlaps(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && match (self.bound_ip(), other.bound_ip()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.bound_ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(
            f,
            "{}->{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// A host port held by a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortClaim {
    pub pod_id: String,
    pub mapping: PortMapping,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("unknown protocol {0:?} (expected TCP, UDP or SCTP)")]
    UnknownProtocol(String),
    #[error("port mapping {mapping}: containerPort must be between 1 and 65535")]
    ZeroContainerPort { mapping: PortMapping },
    #[error("port mappings {first} and {second} of the same pod overlap")]
    Duplicate {
        first: PortMapping,
        second: PortMapping,
    },
    #[error(
        "hostPort {wanted} is already held by pod {holder} ({held}); pick another hostPort or hostIP"
    )]
    Conflict {
        wanted: PortMapping,
        held: PortMapping,
        holder: String,
    },
}

/// Checks a pod's own mappings: ports set, no two overlapping.
pub fn validate(mappings: &[PortMapping]) -> Result<(), PortError> {
    for (i, mapping) in mappings.iter().enumerate() {
        if mapping.container_port == 0 {
            return Err(PortError::ZeroContainerPort { mapping: *mapping });
        }
        if let Some(earlier) = mappings[..i].iter().find(|m| m.overlaps(mapping)) {
            return Err(PortError::Duplicate {
                first: *earlier,
                second: *mapping,
            });
        }
    }
    Ok(())
}

/// The first of `wanted` that collides with a port another pod holds.
pub fn find_conflict(
    pod_id: &str,
    wanted: &[PortMapping],
    held: &[PortClaim],
) -> Result<(), PortError> {
    for mapping in wanted {
        if let Some(claim) = held
            .iter()
            .find(|c| c.pod_id != pod_id && c.mapping.overlaps(mapping))
        {
            return Err(PortError::Conflict {
                wanted: *mapping,
                held: claim.mapping,
                holder: claim.pod_id.clone(),
            });
        }
    }
    Ok(())
}

/// Only mappings with a host port reach the host; `hostPort: 0` (or unset)
/// just documents the container port.
pub fn published(mappings: &[PortMapping]) -> Vec<PortMapping> {
    let mut seen = HashSet::new();
    mappings
        .iter()
        .filter(|m| m.host_port != 0)
        .filter(|m| seen.insert(**m))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host_port: u16, host_ip: Option<&str>) -> PortMapping {
        PortMapping {
            container_port: 80,
            host_port,
            host_ip: host_ip.map(|ip| ip.parse().expect("ip")),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn overlap_needs_same_protocol_port_and_address() {
        assert!(tcp(8080, None).overlaps(&tcp(8080, Some("127.0.0.1"))));
        assert!(tcp(8080, Some("0.0.0.0")).overlaps(&tcp(8080, Some("10.0.0.1"))));
        assert!(!tcp(8080, Some("127.0.0.1")).overlaps(&tcp(8080, Some("10.0.0.1"))));
        assert!(!tcp(8080, None).overlaps(&tcp(8081, None)));
        let udp = PortMapping {
            protocol: Protocol::Udp,
            ..tcp(8080, None)
        };
        assert!(!tcp(8080, None).overlaps(&udp));
    }

    #[test]
    fn conflict_names_the_pod_that_holds_the_port() {
        let held = vec![PortClaim {
            pod_id: "default_web".into(),
            mapping: tcp(8080, None),
        }];
        let err = find_conflict("default_other", &[tcp(8080, Some("127.0.0.1"))], &held)
            .expect_err("conflict");
        let text = err.to_string();
        assert!(text.contains("default_web"), "{text}");
        assert!(text.contains("8080"), "{text}");
        // The holder itself may re-claim its ports (idempotent setup).
        find_conflict("default_web", &[tcp(8080, None)], &held).expect("own port");
    }

    #[test]
    fn a_pod_cannot_map_one_host_port_twice() {
        let err = validate(&[tcp(8080, None), tcp(8080, Some("127.0.0.1"))]).expect_err("dup");
        assert!(matches!(err, PortError::Duplicate { .. }));
        validate(&[tcp(8080, Some("127.0.0.1")), tcp(8080, Some("127.0.0.2"))]).expect("distinct");
        let zero = PortMapping {
            container_port: 0,
            ..tcp(1, None)
        };
        assert!(validate(&[zero]).is_err());
    }

    #[test]
    fn protocols_parse_in_either_case() {
        assert_eq!("TCP".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert_eq!("udp".parse::<Protocol>(), Ok(Protocol::Udp));
        assert!("icmp".parse::<Protocol>().is_err());
    }

    #[test]
    fn unpublished_ports_are_dropped() {
        let mut doc_only = tcp(0, None);
        doc_only.container_port = 9000;
        assert_eq!(
            published(&[doc_only, tcp(8080, None)]),
            vec![tcp(8080, None)]
        );
        assert_eq!(
            tcp(8080, Some("127.0.0.1")).to_string(),
            "127.0.0.1:8080->80/tcp"
        );
    }
}
