//! A pod's `/etc/resolv.conf` and `/etc/hosts`, as pure functions of the
//! host's files and the pod's settings (Kubernetes semantics, with the
//! kubelet's limits).
//!
//! Resolvers on loopback (systemd-resolved's 127.0.0.53, a local dnsmasq)
//! cannot be reached from a pod's own network namespace. When the host's
//! `/etc/resolv.conf` points at systemd-resolved's stub, the real upstreams
//! come from `/run/systemd/resolve/resolv.conf` (as the kubelet advises);
//! other loopback resolvers are dropped. If nothing is left, the pod gets
//! the fallback [`FALLBACK_NAMESERVERS`] (what docker and podman do) and a
//! warning. `hostNetwork` pods share the host's loopback, so they get the
//! host's file unchanged.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Used when the host has no resolver a pod can reach.
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];
/// Kubernetes' limits (`k8s.io/kubernetes/pkg/apis/core/validation`).
pub const MAX_NAMESERVERS: usize = 3;
pub const MAX_SEARCHES: usize = 32;
pub const MAX_SEARCH_CHARS: usize = 2048;

const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
const SYSTEMD_RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";
const HOST_HOSTS: &str = "/etc/hosts";

/// `spec.dnsPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DnsPolicy {
    /// The node's resolvers.
    Default,
    /// Cluster DNS first; berth has no cluster DNS, so this acts as Default.
    #[default]
    ClusterFirst,
    ClusterFirstWithHostNet,
    /// Only `dnsConfig`.
    None,
}

/// One `spec.dnsConfig.options` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsOption {
    pub name: String,
    pub value: Option<String>,
}

/// `spec.dnsConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<DnsOption>,
}

/// A pod's DNS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsSettings {
    pub policy: DnsPolicy,
    pub config: Option<DnsConfig>,
}

/// `spec.hostAliases` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAlias {
    pub ip: IpAddr,
    pub hostnames: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("dnsConfig.nameservers[{index}]: {value:?} is not an IP address")]
    BadNameserver { index: usize, value: String },
    #[error("dnsPolicy None needs at least one dnsConfig.nameservers entry")]
    NoNameserverForPolicyNone,
}

/// The host's resolver files, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostResolv {
    /// `/etc/resolv.conf`.
    pub resolv_conf: String,
    /// `/run/systemd/resolve/resolv.conf`, when systemd-resolved runs.
    pub systemd_upstreams: Option<String>,
}

impl HostResolv {
    /// Reads the host's files; a missing file reads as empty.
    pub fn read() -> Self {
        Self::read_from(
            Path::new(HOST_RESOLV_CONF),
            Path::new(SYSTEMD_RESOLVED_UPSTREAMS),
        )
    }

    pub fn read_from(resolv_conf: &Path, systemd_upstreams: &Path) -> Self {
        HostResolv {
            resolv_conf: std::fs::read_to_string(resolv_conf).unwrap_or_default(),
            systemd_upstreams: std::fs::read_to_string(systemd_upstreams).ok(),
        }
    }
}

/// A rendered file and what the user should hear about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    pub text: String,
    pub warnings: Vec<String>,
}

/// The parts of a resolv.conf berth cares about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Resolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

impl Resolv {
    fn parse(text: &str) -> Self {
        let mut resolv = Resolv::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => resolv.nameservers.extend(words.next().map(str::to_string)),
                // The last of `search`/`domain` wins, as in glibc.
                Some("search" | "domain") => resolv.searches = words.map(str::to_string).collect(),
                Some("options") => resolv.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        resolv
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for ns in &self.nameservers {
            text.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.searches.is_empty() {
            text.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            text.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        text
    }
}

fn is_loopback(nameserver: &str) -> bool {
    nameserver
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The host's resolvers as a pod in its own network namespace can use them.
fn host_resolvers_for_pod(host: &HostResolv, warnings: &mut Vec<String>) -> Resolv {
    let mut resolv = Resolv::parse(&host.resolv_conf);
    if resolv.nameservers.iter().any(|ns| is_loopback(ns)) {
        if let Some(upstreams) = &host.systemd_upstreams {
            let upstream = Resolv::parse(upstreams);
            if !upstream.nameservers.is_empty() {
                resolv.nameservers = upstream.nameservers;
            }
        }
        let before = resolv.nameservers.len();
        resolv.nameservers.retain(|ns| !is_loopback(ns));
        if resolv.nameservers.len() < before {
            warnings.push(
                "the host's loopback DNS resolvers are unreachable from a pod and were left out"
                    .to_string(),
            );
        }
    }
    if resolv.nameservers.is_empty() {
        warnings.push(format!(
            "the host has no DNS resolver a pod can reach; using {}",
            FALLBACK_NAMESERVERS.join(", ")
        ));
        resolv.nameservers = FALLBACK_NAMESERVERS.iter().map(|s| s.to_string()).collect();
    }
    resolv
}

/// Appends `extra` to `list`, skipping duplicates.
fn merge_unique(list: &mut Vec<String>, extra: &[String]) {
    for item in extra {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// Options by name: a pod's option replaces the host's of the same name.
fn merge_options(list: &mut Vec<String>, extra: &[DnsOption]) {
    for opt in extra {
        list.retain(|o| o.split(':').next() != Some(opt.name.as_str()));
        list.push(match &opt.value {
            Some(value) => format!("{}:{value}", opt.name),
            None => opt.name.clone(),
        });
    }
}

/// Applies Kubernetes' limits, with a warning for each cut.
fn enforce_limits(resolv: &mut Resolv, warnings: &mut Vec<String>) {
    if resolv.nameservers.len() > MAX_NAMESERVERS {
        warnings.push(format!(
            "only the first {MAX_NAMESERVERS} nameservers are used; dropped {}",
            resolv.nameservers[MAX_NAMESERVERS..].join(", ")
        ));
        resolv.nameservers.truncate(MAX_NAMESERVERS);
    }
    if resolv.searches.len() > MAX_SEARCHES {
        warnings.push(format!(
            "only the first {MAX_SEARCHES} search domains are used"
        ));
        resolv.searches.truncate(MAX_SEARCHES);
    }
    while resolv.searches.join(" ").len() > MAX_SEARCH_CHARS {
        let dropped = resolv.searches.pop().unwrap_or_default();
        warnings.push(format!(
            "the search list is longer than {MAX_SEARCH_CHARS} characters; dropped {dropped}"
        ));
    }
}

/// The pod's `/etc/resolv.conf`.
pub fn resolv_conf(
    host: &HostResolv,
    dns: &DnsSettings,
    host_network: bool,
) -> Result<Rendered, DnsError> {
    let mut warnings = Vec::new();
    let config = dns.config.clone().unwrap_or_default();
    for (index, value) in config.nameservers.iter().enumerate() {
        if value.parse::<IpAddr>().is_err() {
            return Err(DnsError::BadNameserver {
                index,
                value: value.clone(),
            });
        }
    }
    let mut resolv = match dns.policy {
        DnsPolicy::None => {
            if config.nameservers.is_empty() {
                return Err(DnsError::NoNameserverForPolicyNone);
            }
            Resolv::default()
        }
        DnsPolicy::ClusterFirst | DnsPolicy::ClusterFirstWithHostNet | DnsPolicy::Default => {
            if dns.policy != DnsPolicy::Default {
                warnings.push(format!(
                    "dnsPolicy {:?} needs cluster DNS, which berth does not have; the host's resolvers are used (as dnsPolicy Default)",
                    dns.policy
                ));
            }
            if host_network {
                Resolv::parse(&host.resolv_conf)
            } else {
                host_resolvers_for_pod(host, &mut warnings)
            }
        }
    };
    merge_unique(&mut resolv.nameservers, &config.nameservers);
    merge_unique(&mut resolv.searches, &config.searches);
    merge_options(&mut resolv.options, &config.options);
    enforce_limits(&mut resolv, &mut warnings);
    Ok(Rendered {
        text: resolv.render(),
        warnings,
    })
}

/// The pod's `/etc/hosts`: localhost entries, the pod's own addresses under
/// its hostname, then `hostAliases`.
pub fn hosts(pod_ips: &[IpAddr], hostname: &str, aliases: &[HostAlias]) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file (berth).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    text.push_str(&host_aliases(aliases));
    text
}

/// `/etc/hosts` for a `hostNetwork` pod: the host's file plus `hostAliases`.
pub fn host_network_hosts(host_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut text = host_hosts.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&host_aliases(aliases));
    text
}

/// Reads the host's `/etc/hosts` (empty if missing).
pub fn read_host_hosts() -> String {
    std::fs::read_to_string(HOST_HOSTS).unwrap_or_default()
}

fn host_aliases(aliases: &[HostAlias]) -> String {
    let mut text = String::new();
    if aliases.is_empty() {
        return text;
    }
    text.push_str("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        text.push_str(&format!("{}\t{}\n", alias.ip, alias.hostnames.join("\t")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(resolv: &str, upstreams: Option<&str>) -> HostResolv {
        HostResolv {
            resolv_conf: resolv.into(),
            systemd_upstreams: upstreams.map(str::to_string),
        }
    }

    fn default_policy() -> DnsSettings {
        DnsSettings {
            policy: DnsPolicy::Default,
            config: None,
        }
    }

    #[test]
    fn systemd_resolved_stub_is_replaced_by_the_real_upstreams() {
        let host = host(
            "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
            Some("nameserver 192.168.1.1\nnameserver 9.9.9.9\nsearch lan\n"),
        );
        let out = resolv_conf(&host, &default_policy(), false).expect("render");
        assert_eq!(
            out.text,
            "nameserver 192.168.1.1\nnameserver 9.9.9.9\nsearch lan\noptions edns0 trust-ad\n"
        );
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        // A hostNetwork pod shares the host's loopback: the stub works there.
        let hostnet = resolv_conf(&host, &default_policy(), true).expect("render");
        assert!(
            hostnet.text.starts_with("nameserver 127.0.0.53\n"),
            "{}",
            hostnet.text
        );
    }

    #[test]
    fn unreachable_loopback_resolvers_fall_back_with_a_warning() {
        let out = resolv_conf(
            &host("nameserver 127.0.0.1\n", None),
            &default_policy(),
            false,
        )
        .expect("render");
        assert_eq!(out.text, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        let mixed = resolv_conf(
            &host("nameserver 127.0.0.1\nnameserver 10.0.0.2\n", None),
            &default_policy(),
            false,
        )
        .expect("render");
        assert_eq!(mixed.text, "nameserver 10.0.0.2\n");
    }

    #[test]
    fn cluster_first_acts_as_default_with_a_warning() {
        let out = resolv_conf(
            &host("nameserver 10.0.0.2\n", None),
            &DnsSettings::default(),
            false,
        )
        .expect("render");
        assert_eq!(out.text, "nameserver 10.0.0.2\n");
        assert!(
            out.warnings[0].contains("ClusterFirst"),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn dns_config_merges_into_default_and_replaces_for_none() {
        let config = DnsConfig {
            nameservers: vec!["1.1.1.1".into(), "10.0.0.2".into()],
            searches: vec!["svc.local".into()],
            options: vec![
                DnsOption {
                    name: "ndots".into(),
                    value: Some("2".into()),
                },
                DnsOption {
                    name: "edns0".into(),
                    value: None,
                },
            ],
        };
        let host = host(
            "nameserver 10.0.0.2\nsearch lan\noptions ndots:5 timeout:1\n",
            None,
        );
        let merged = resolv_conf(
            &host,
            &DnsSettings {
                policy: DnsPolicy::Default,
                config: Some(config.clone()),
            },
            false,
        )
        .expect("render");
        assert_eq!(
            merged.text,
            "nameserver 10.0.0.2\nnameserver 1.1.1.1\nsearch lan svc.local\noptions timeout:1 ndots:2 edns0\n"
        );
        let only = resolv_conf(
            &host,
            &DnsSettings {
                policy: DnsPolicy::None,
                config: Some(config),
            },
            false,
        )
        .expect("render");
        assert_eq!(
            only.text,
            "nameserver 1.1.1.1\nnameserver 10.0.0.2\nsearch svc.local\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn bad_settings_are_errors_naming_the_field() {
        let none = DnsSettings {
            policy: DnsPolicy::None,
            config: None,
        };
        assert_eq!(
            resolv_conf(&HostResolv::default(), &none, false),
            Err(DnsError::NoNameserverForPolicyNone)
        );
        let bad = DnsSettings {
            policy: DnsPolicy::Default,
            config: Some(DnsConfig {
                nameservers: vec!["dns.example".into()],
                ..DnsConfig::default()
            }),
        };
        let err = resolv_conf(&HostResolv::default(), &bad, false).expect_err("bad ip");
        assert!(
            err.to_string().contains("dnsConfig.nameservers[0]"),
            "{err}"
        );
    }

    #[test]
    fn kubernetes_limits_are_enforced() {
        let config = DnsConfig {
            nameservers: vec!["10.0.0.3".into(), "10.0.0.4".into(), "10.0.0.5".into()],
            searches: (0..40).map(|i| format!("d{i}.example")).collect(),
            options: vec![],
        };
        let out = resolv_conf(
            &host("nameserver 10.0.0.2\n", None),
            &DnsSettings {
                policy: DnsPolicy::Default,
                config: Some(config),
            },
            false,
        )
        .expect("render");
        assert!(out.text.contains("nameserver 10.0.0.4\n") && !out.text.contains("10.0.0.5"));
        let search_line = out
            .text
            .lines()
            .find(|l| l.starts_with("search"))
            .expect("search");
        assert_eq!(search_line.split_whitespace().count(), 1 + MAX_SEARCHES);
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);

        let long = DnsConfig {
            searches: (0..20).map(|i| format!("{i}{}", "x".repeat(200))).collect(),
            ..DnsConfig::default()
        };
        let out = resolv_conf(
            &host("nameserver 10.0.0.2\n", None),
            &DnsSettings {
                policy: DnsPolicy::Default,
                config: Some(long),
            },
            false,
        )
        .expect("render");
        let search_line = out
            .text
            .lines()
            .find(|l| l.starts_with("search"))
            .expect("search");
        assert!(search_line.len() <= MAX_SEARCH_CHARS + "search ".len());
    }

    #[test]
    fn hosts_file_has_localhost_the_pod_and_its_aliases() {
        let aliases = vec![HostAlias {
            ip: "10.1.1.1".parse().expect("ip"),
            hostnames: vec!["db".into(), "db.local".into()],
        }];
        let text = hosts(&["10.213.0.7".parse().expect("ip")], "web-0", &aliases);
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert!(text.contains("10.213.0.7\tweb-0\n"));
        assert!(text.ends_with("# Entries added by HostAliases.\n10.1.1.1\tdb\tdb.local\n"));
        let hostnet = host_network_hosts("127.0.0.1 localhost\n10.0.0.9 node1", &aliases);
        assert!(hostnet.starts_with("127.0.0.1 localhost\n10.0.0.9 node1\n"));
        assert!(hostnet.contains("10.1.1.1\tdb"));
    }
}
