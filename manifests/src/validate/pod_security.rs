//! The pod's namespaces, security profiles, sysctls and priority: the
//! checks the API server makes, plus what can never work on a node
//! (node-level sysctls).

use std::collections::HashMap;

use super::Issues;
use crate::names;
use crate::sysctl;
use crate::types::{
    AppArmorProfile, Pod, ProcMountType, ProfileType, SYSTEM_CLUSTER_CRITICAL,
    SYSTEM_NODE_CRITICAL, SeccompProfile, SecurityContext,
};

pub(super) fn validate(pod: &Pod, issues: &mut Issues) {
    let spec = &pod.spec;
    let user_namespace = spec.host_users == Some(false);
    if spec.host_pid && spec.share_process_namespace == Some(true) {
        issues.error(
            "spec.shareProcessNamespace",
            "shareProcessNamespace and hostPID cannot both be true",
        );
    }
    if user_namespace {
        for (field, set) in [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ] {
            if set {
                issues.error(
                    format!("spec.{field}"),
                    format!("{field} cannot be true when hostUsers is false: the pod's own user namespace cannot own the host's namespaces"),
                );
            }
        }
    }
    if let Some(class) = &spec.priority_class_name {
        issues.check(
            "spec.priorityClassName",
            "priorityClassName",
            class,
            names::dns1123_subdomain,
        );
        if class != SYSTEM_NODE_CRITICAL && class != SYSTEM_CLUSTER_CRITICAL {
            issues.warning(
                "spec.priorityClassName",
                format!(
                    "no API server: PriorityClass `{class}` cannot be looked up; only {SYSTEM_NODE_CRITICAL} and {SYSTEM_CLUSTER_CRITICAL} are known, so the OOM score comes from the QoS class"
                ),
            );
        }
    }
    if let Some(sc) = &spec.security_context {
        let path = "spec.securityContext";
        if let Some(profile) = &sc.seccomp_profile {
            seccomp(&format!("{path}.seccompProfile"), profile, issues);
        }
        if let Some(profile) = &sc.app_armor_profile {
            app_armor(&format!("{path}.appArmorProfile"), profile, issues);
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, entry) in sc.sysctls.iter().enumerate() {
            let at = format!("{path}.sysctls[{i}].name");
            if let Err(why) = sysctl::check_name(&entry.name) {
                issues.error(at, format!("sysctl `{}` is not valid: {why}", entry.name));
                continue;
            }
            let name = sysctl::normalize(&entry.name);
            if let Some(first) = seen.insert(name.clone(), i) {
                issues.error(
                    &at,
                    format!("sysctl {name} is already set by {path}.sysctls[{first}]"),
                );
            }
            if sysctl::namespace_of(&name).is_none() {
                issues.error(
                    &at,
                    format!(
                        "sysctl {name} is not namespaced: setting it would change the whole node, so no pod may (only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* are per pod)"
                    ),
                );
            } else if let Some(why) = sysctl::host_conflict(&name, spec.host_network, spec.host_ipc)
            {
                issues.error(&at, why);
            }
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c)),
        );
    for (path, container) in containers {
        if let Some(sc) = &container.security_context {
            container_context(
                &format!("{path}.securityContext"),
                sc,
                user_namespace,
                issues,
            );
        }
    }
}

fn container_context(path: &str, sc: &SecurityContext, user_namespace: bool, issues: &mut Issues) {
    if let Some(profile) = &sc.seccomp_profile {
        seccomp(&format!("{path}.seccompProfile"), profile, issues);
    }
    if let Some(profile) = &sc.app_armor_profile {
        app_armor(&format!("{path}.appArmorProfile"), profile, issues);
    }
    if sc.proc_mount == Some(ProcMountType::Unmasked) && !user_namespace {
        issues.error(
            format!("{path}.procMount"),
            "procMount Unmasked needs hostUsers: false (an unmasked /proc is safe only inside the pod's own user namespace)",
        );
    }
}

fn seccomp(path: &str, profile: &SeccompProfile, issues: &mut Issues) {
    localhost_profile(
        path,
        profile.type_,
        profile.localhost_profile.as_deref(),
        issues,
    );
    if let (ProfileType::Localhost, Some(file)) = (profile.type_, &profile.localhost_profile)
        && let Err(why) = relative_path(file)
    {
        issues.error(
            format!("{path}.localhostProfile"),
            format!("`{file}` {why}"),
        );
    }
}

fn app_armor(path: &str, profile: &AppArmorProfile, issues: &mut Issues) {
    localhost_profile(
        path,
        profile.type_,
        profile.localhost_profile.as_deref(),
        issues,
    );
}

/// `localhostProfile` is required with `Localhost` and forbidden otherwise.
fn localhost_profile(path: &str, kind: ProfileType, profile: Option<&str>, issues: &mut Issues) {
    match (kind, profile) {
        (ProfileType::Localhost, None | Some("")) => issues.error_at_key(
            format!("{path}.type"),
            "type Localhost needs localhostProfile",
        ),
        (ProfileType::Localhost, Some(_)) | (_, None) => {}
        (_, Some(_)) => issues.error_at_key(
            format!("{path}.localhostProfile"),
            "localhostProfile may only be set with type Localhost",
        ),
    }
}

/// A path inside the profile directory: relative, no `..`.
fn relative_path(file: &str) -> Result<(), &'static str> {
    if file.starts_with('/') {
        return Err("must be relative to the seccomp profile directory");
    }
    if file.split('/').any(|part| part == "..") {
        return Err("must not contain `..`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::diag::Severity;

    fn diagnostics(spec: &str) -> Vec<(Severity, String)> {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{spec}  containers:\n  - name: app\n    image: busybox\n"
        );
        crate::parse_file(std::path::Path::new("pod.yaml"), yaml.as_bytes())
            .all_diagnostics()
            .map(|d| (d.severity, d.message.clone()))
            .collect()
    }

    /// (pod spec lines, the one diagnostic expected: severity and a part
    /// of its message; `None`: none at all).
    #[test]
    fn namespaces_profiles_sysctls_and_priority() {
        let cases: &[(&str, Option<(Severity, &str)>)] = &[
            (
                "  hostPID: true\n  hostIPC: true\n  shareProcessNamespace: false\n",
                None,
            ),
            ("  hostUsers: false\n", None),
            (
                "  hostPID: true\n  shareProcessNamespace: true\n",
                Some((Severity::Error, "cannot both be true")),
            ),
            (
                "  hostUsers: false\n  hostNetwork: true\n",
                Some((
                    Severity::Error,
                    "hostNetwork cannot be true when hostUsers is false",
                )),
            ),
            (
                "  priorityClassName: system-node-critical\n  priority: 2000001000\n",
                None,
            ),
            (
                "  priorityClassName: high\n",
                Some((Severity::Warning, "no API server: PriorityClass `high`")),
            ),
            (
                "  securityContext:\n    seccompProfile:\n      type: Localhost\n      localhostProfile: profiles/deny.json\n",
                None,
            ),
            (
                "  securityContext:\n    seccompProfile:\n      type: Localhost\n",
                Some((Severity::Error, "type Localhost needs localhostProfile")),
            ),
            (
                "  securityContext:\n    seccompProfile:\n      type: Localhost\n      localhostProfile: ../etc/x.json\n",
                Some((Severity::Error, "must not contain `..`")),
            ),
            (
                "  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n      localhostProfile: x.json\n",
                Some((Severity::Error, "only be set with type Localhost")),
            ),
            (
                "  securityContext:\n    appArmorProfile:\n      type: Localhost\n      localhostProfile: k8s-nginx\n",
                None,
            ),
            (
                "  securityContext:\n    sysctls:\n    - name: net.ipv4.ip_unprivileged_port_start\n      value: \"0\"\n    - name: net/core/somaxconn\n      value: \"1024\"\n",
                None,
            ),
            (
                "  securityContext:\n    sysctls:\n    - name: vm.swappiness\n      value: \"10\"\n",
                Some((Severity::Error, "sysctl vm.swappiness is not namespaced")),
            ),
            (
                "  hostNetwork: true\n  securityContext:\n    sysctls:\n    - name: net.core.somaxconn\n      value: \"10\"\n",
                Some((Severity::Error, "not allowed with hostNetwork")),
            ),
            (
                "  securityContext:\n    sysctls:\n    - name: kernel.shmmax\n      value: \"1\"\n    - name: kernel/shmmax\n      value: \"2\"\n",
                Some((Severity::Error, "already set by")),
            ),
        ];
        for (spec, want) in cases {
            let found = diagnostics(spec);
            match want {
                None => assert!(found.is_empty(), "{spec}: {found:?}"),
                Some((severity, part)) => assert!(
                    found.len() == 1 && found[0].0 == *severity && found[0].1.contains(part),
                    "{spec}: want one {severity:?} with {part:?}, got {found:?}"
                ),
            }
        }
    }

    #[test]
    fn proc_mount_unmasked_needs_a_user_namespace() {
        let container = "    securityContext:\n      procMount: Unmasked\n";
        let yaml = |spec: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{spec}  containers:\n  - name: app\n    image: busybox\n{container}"
            )
        };
        let found: Vec<String> =
            crate::parse_file(std::path::Path::new("p.yaml"), yaml("").as_bytes())
                .all_diagnostics()
                .map(|d| d.message.clone())
                .collect();
        assert!(
            found.len() == 1 && found[0].contains("needs hostUsers: false"),
            "{found:?}"
        );
        let found = crate::parse_file(
            std::path::Path::new("p.yaml"),
            yaml("  hostUsers: false\n").as_bytes(),
        );
        assert_eq!(found.all_diagnostics().count(), 0);
    }

    /// What `kubectl run --dry-run=client -o yaml` writes: nothing to say.
    #[test]
    fn kubectl_run_output_validates_silently() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  creationTimestamp: null\n  labels:\n    run: nginx\n  name: nginx\nspec:\n  containers:\n  - image: nginx\n    name: nginx\n    resources: {}\n  dnsPolicy: ClusterFirst\n  restartPolicy: Always\nstatus: {}\n";
        let parsed = crate::parse_file(std::path::Path::new("nginx.yaml"), yaml.as_bytes());
        let found: Vec<String> = parsed.all_diagnostics().map(|d| d.to_string()).collect();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn ignored_fields_say_why() {
        let found = diagnostics(
            "  serviceAccountName: builder\n  tolerations:\n  - operator: Exists\n  os:\n    name: linux\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].1.contains("`spec.serviceAccountName` is a Kubernetes field that berth ignores: no API server: no service account token is projected"),
            "{found:?}"
        );
        let found = diagnostics("  os:\n    name: windows\n");
        assert!(
            found.len() == 1 && found[0].1.contains("Linux containers only"),
            "{found:?}"
        );
    }
}
