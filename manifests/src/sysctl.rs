//! Which kernel parameters a pod may set, as the kubelet decides it
//! (`pkg/kubelet/sysctl`, `component-helpers/node/util/sysctl`): only
//! namespaced ones (the namespace is the pod's own, so the value cannot
//! reach another pod), of those the safe set without asking, the rest
//! only when the node's allowlist names them.

/// The kernel namespace that isolates a sysctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Ipc,
    Net,
}

impl SysctlNamespace {
    pub fn as_str(self) -> &'static str {
        match self {
            SysctlNamespace::Ipc => "IPC",
            SysctlNamespace::Net => "network",
        }
    }
}

/// The kubelet's safe sysctls (v1.31): namespaced and without effect on
/// other pods, so every pod may set them.
pub const SAFE: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// `net/ipv4/ip_forward` → `net.ipv4.ip_forward`: when the first
/// separator is a slash, slashes and dots swap, as the kubelet reads names
/// (`net.ipv4.conf.eno2/100.rp_filter` stays as it is).
pub fn normalize(name: &str) -> String {
    if name
        .find(['.', '/'])
        .is_some_and(|i| name.as_bytes()[i] == b'/')
    {
        name.replace('.', "\u{0}")
            .replace('/', ".")
            .replace('\u{0}', "/")
    } else {
        name.to_owned()
    }
}

/// The namespace of a (normalized) sysctl; `None` for node-level ones.
pub fn namespace_of(name: &str) -> Option<SysctlNamespace> {
    if name == "kernel.sem"
        || ["kernel.shm", "kernel.msg", "fs.mqueue."]
            .iter()
            .any(|p| name.starts_with(p))
    {
        Some(SysctlNamespace::Ipc)
    } else if name.starts_with("net.") {
        Some(SysctlNamespace::Net)
    } else {
        None
    }
}

/// Whether `name` is in the safe set.
pub fn is_safe(name: &str) -> bool {
    SAFE.contains(&name)
}

/// Whether an allowlist entry (`net.core.somaxconn`, or a prefix
/// pattern ending in `*` such as `kernel.msg*`) covers `name`.
pub fn allowlist_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Kubernetes' sysctl name syntax (at most 253 characters of dotted or
/// slashed lower-case segments).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    for segment in name.split(['.', '/']) {
        let bytes = segment.as_bytes();
        let ok_inner =
            |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_';
        let ok_edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty()
            || !bytes.iter().all(ok_inner)
            || !bytes.first().is_some_and(ok_edge)
            || !bytes.last().is_some_and(ok_edge)
        {
            return Err(format!(
                "segment `{segment}` must be lower-case letters, digits, `-` and `_`, starting and ending with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// Why a namespaced sysctl cannot be set in a pod that shares that
/// namespace with the host, if it does.
pub fn host_conflict(name: &str, host_network: bool, host_ipc: bool) -> Option<String> {
    match namespace_of(name)? {
        SysctlNamespace::Net if host_network => Some(format!(
            "sysctl {name} is not allowed with hostNetwork: the pod would change the host's network namespace"
        )),
        SysctlNamespace::Ipc if host_ipc => Some(format!(
            "sysctl {name} is not allowed with hostIPC: the pod would change the host's IPC namespace"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_as_the_kubelet_has_them() {
        for (name, ns) in [
            ("kernel.sem", Some(SysctlNamespace::Ipc)),
            ("kernel.shmmax", Some(SysctlNamespace::Ipc)),
            ("kernel.msgmax", Some(SysctlNamespace::Ipc)),
            ("fs.mqueue.msg_max", Some(SysctlNamespace::Ipc)),
            ("net.core.somaxconn", Some(SysctlNamespace::Net)),
            ("kernel.semx", None),
            ("vm.swappiness", None),
            ("kernel.pid_max", None),
            ("fs.file-max", None),
        ] {
            assert_eq!(namespace_of(name), ns, "{name}");
        }
        assert!(SAFE.iter().all(|s| namespace_of(s).is_some()));
    }

    #[test]
    fn slashes_and_patterns() {
        assert_eq!(normalize("net/ipv4/ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(
            normalize("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(
            normalize("net.ipv4.conf.eno2/100.rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert!(allowlist_matches("net.core.*", "net.core.somaxconn"));
        assert!(allowlist_matches(
            "net.core.somaxconn",
            "net.core.somaxconn"
        ));
        assert!(!allowlist_matches(
            "net.core.somaxconn",
            "net.core.somaxconn2"
        ));
        assert!(check_name("net.ipv4.ip_local_port_range").is_ok());
        assert!(check_name("Net.core").is_err());
        assert!(check_name("net..core").is_err());
        assert!(host_conflict("net.core.somaxconn", true, false).is_some());
        assert!(host_conflict("kernel.shmmax", true, false).is_none());
        assert!(host_conflict("kernel.shmmax", false, true).is_some());
    }
}
