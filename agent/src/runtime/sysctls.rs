//! Which of a pod's sysctls the node allows, as the kubelet's sysctl
//! admission decides (`pkg/kubelet/sysctl/allowlist.go`): the safe set,
//! plus the node's allowlist of unsafe ones; never a node-level one.

use manifests::sysctl;

/// `Err` names the first sysctl the node does not allow, and the fix.
pub fn check(sysctls: &[(String, String)], allowed_unsafe: &[String]) -> Result<(), String> {
    for (name, _) in sysctls {
        if sysctl::namespace_of(name).is_none() {
            return Err(format!(
                "sysctl {name} is not namespaced: it would change the whole node, so no pod may set it"
            ));
        }
        if !sysctl::is_safe(name)
            && !allowed_unsafe
                .iter()
                .any(|pattern| sysctl::allowlist_matches(pattern, name))
        {
            return Err(format!(
                "SysctlForbidden: sysctl {name} is not in the safe set; add it to [runtime] allowed-unsafe-sysctls in the agent config to allow it"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), "1".to_string())]
    }

    #[test]
    fn safe_allowed_unsafe_only_when_listed_node_level_never() {
        assert!(check(&one("net.ipv4.ip_unprivileged_port_start"), &[]).is_ok());
        let err = check(&one("net.core.somaxconn"), &[]).expect_err("unsafe");
        assert!(err.contains("allowed-unsafe-sysctls"), "{err}");
        assert!(check(&one("net.core.somaxconn"), &["net.core.somaxconn".into()]).is_ok());
        assert!(check(&one("net.core.somaxconn"), &["net.core.*".into()]).is_ok());
        let err = check(&one("vm.swappiness"), &["vm.*".into()]).expect_err("node-level");
        assert!(err.contains("not namespaced"), "{err}");
    }
}
