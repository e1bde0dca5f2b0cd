//! From the Pod API (`manifests::types`) to the runtime's inputs
//! ([`super::spec`]). What needs other objects — env values from
//! ConfigMaps/Secrets, the files of configMap/secret volumes — is resolved
//! by the caller and passed in; everything else maps here, one field at a
//! time, with Kubernetes' defaults.

use std::path::PathBuf;

use manifests::quantity::Quantity;
use manifests::types as api;

use super::spec::{
    AppArmorProfile, Capabilities, ContainerSpec, EnvVar, HostPathType, OomPolicy, PodNamespaces,
    PodSecurityContext, QosClass, Resources, SeccompProfile, SecurityContext, Volume, VolumeMount,
    VolumeSource,
};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "container {container:?}: resources.{field}: {quantity:?} is not a valid quantity: {reason}"
    )]
    Quantity {
        container: String,
        field: String,
        quantity: String,
        reason: String,
    },
    #[error(
        "container {container:?}: securityContext.{field}: {value} is not a valid id (0 to 4294967295)"
    )]
    Id {
        container: String,
        field: &'static str,
        value: i64,
    },
    #[error("volume {volume:?}: {problem}")]
    Volume { volume: String, problem: String },
}

/// The container's spec for the runtime. `env` is the container's `env`
/// and `envFrom` already resolved, in Kubernetes order.
pub fn container_spec(c: &api::Container, env: Vec<EnvVar>) -> Result<ContainerSpec, ConvertError> {
    Ok(ContainerSpec {
        name: c.name.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        env,
        volume_mounts: c
            .volume_mounts
            .iter()
            .map(|m| VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only,
                sub_path: m.sub_path.clone().filter(|s| !s.is_empty()),
            })
            .collect(),
        resources: resources(&c.name, c.resources.as_ref())?,
        security_context: security_context(&c.name, c.security_context.as_ref())?,
        tty: c.tty,
    })
}

/// The env entries that carry a literal `value` (those with `valueFrom`
/// need the caller's ConfigMaps, Secrets and pod fields).
pub fn literal_env(c: &api::Container) -> Vec<EnvVar> {
    c.env
        .iter()
        .filter(|e| e.value_from.is_none())
        .map(|e| EnvVar::new(&e.name, e.value.as_deref().unwrap_or("")))
        .collect()
}

fn resources(
    container: &str,
    r: Option<&api::ResourceRequirements>,
) -> Result<Resources, ConvertError> {
    let Some(r) = r else {
        return Ok(Resources::default());
    };
    let parse = |section: &str, name: &str, q: &Quantity| {
        q.amount().map_err(|e| ConvertError::Quantity {
            container: container.to_string(),
            field: format!("{section}.{name}"),
            quantity: q.as_str().to_string(),
            reason: e.to_string(),
        })
    };
    let non_negative = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
    let mut out = Resources::default();
    if let Some(q) = r.limits.get("cpu") {
        out.cpu_limit_millis = Some(non_negative(parse("limits", "cpu", q)?.millis()));
    }
    if let Some(q) = r.limits.get("memory") {
        out.memory_limit_bytes = Some(non_negative(parse("limits", "memory", q)?.value()));
    }
    out.memory_request_bytes = match r.requests.get("memory") {
        Some(q) => Some(non_negative(parse("requests", "memory", q)?.value())),
        None => out.memory_limit_bytes,
    };
    // Kubernetes defaults a missing CPU request to the limit.
    out.cpu_request_millis = match r.requests.get("cpu") {
        Some(q) => Some(non_negative(parse("requests", "cpu", q)?.millis())),
        None => out.cpu_limit_millis,
    };
    Ok(out)
}

fn id(
    container: &str,
    field: &'static str,
    value: Option<i64>,
) -> Result<Option<u32>, ConvertError> {
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| ConvertError::Id {
                container: container.to_string(),
                field,
                value: v,
            })
        })
        .transpose()
}

fn security_context(
    container: &str,
    s: Option<&api::SecurityContext>,
) -> Result<SecurityContext, ConvertError> {
    let Some(s) = s else {
        return Ok(SecurityContext::default());
    };
    Ok(SecurityContext {
        privileged: s.privileged.unwrap_or(false),
        capabilities: s
            .capabilities
            .as_ref()
            .map(|c| Capabilities {
                add: c.add.clone(),
                drop: c.drop.clone(),
            })
            .unwrap_or_default(),
        read_only_root_filesystem: s.read_only_root_filesystem.unwrap_or(false),
        allow_privilege_escalation: s.allow_privilege_escalation,
        run_as_user: id(container, "runAsUser", s.run_as_user)?,
        run_as_group: id(container, "runAsGroup", s.run_as_group)?,
        run_as_non_root: s.run_as_non_root,
        seccomp_profile: s.seccomp_profile.as_ref().map(seccomp_profile),
        app_armor_profile: s.app_armor_profile.as_ref().map(app_armor_profile),
        proc_mount_unmasked: s.proc_mount == Some(api::ProcMountType::Unmasked),
    })
}

fn seccomp_profile(p: &api::SeccompProfile) -> SeccompProfile {
    match p.type_ {
        api::ProfileType::RuntimeDefault => SeccompProfile::RuntimeDefault,
        api::ProfileType::Unconfined => SeccompProfile::Unconfined,
        api::ProfileType::Localhost => SeccompProfile::Localhost(PathBuf::from(
            p.localhost_profile.clone().unwrap_or_default(),
        )),
    }
}

fn app_armor_profile(p: &api::AppArmorProfile) -> AppArmorProfile {
    match p.type_ {
        api::ProfileType::RuntimeDefault => AppArmorProfile::RuntimeDefault,
        api::ProfileType::Unconfined => AppArmorProfile::Unconfined,
        api::ProfileType::Localhost => {
            AppArmorProfile::Localhost(p.localhost_profile.clone().unwrap_or_default())
        }
    }
}

/// `hostPID`, `hostIPC`, `shareProcessNamespace`, `hostUsers`.
pub fn pod_namespaces(spec: &api::PodSpec) -> PodNamespaces {
    PodNamespaces {
        host_pid: spec.host_pid,
        host_ipc: spec.host_ipc,
        share_pid: spec.share_process_namespace == Some(true),
        user: spec.host_users == Some(false),
    }
}

/// The pod's QoS class and criticality, for its containers' OOM scores.
pub fn oom_policy(spec: &api::PodSpec) -> OomPolicy {
    OomPolicy {
        qos: qos_class(spec),
        node_critical: spec.priority_class_name.as_deref() == Some(api::SYSTEM_NODE_CRITICAL),
    }
}

/// Kubernetes' `ComputePodQOS` over cpu and memory of every container
/// (init containers too), with requests defaulted to limits as the API
/// server (and the kubelet for static pods) defaults them.
pub fn qos_class(spec: &api::PodSpec) -> QosClass {
    use std::collections::BTreeMap;
    const RESOURCES: [&str; 2] = ["cpu", "memory"];
    let positive = |q: Option<&Quantity>| {
        q.and_then(|q| q.amount().ok())
            .map(|a| a.millis())
            .filter(|m| *m > 0)
    };
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(&spec.init_containers) {
        let r = c.resources.clone().unwrap_or_default();
        let mut limits_found = 0;
        for name in RESOURCES {
            let limit = positive(r.limits.get(name));
            let request = positive(r.requests.get(name).or(r.limits.get(name)));
            if let Some(request) = request {
                *requests.entry(name).or_default() += request;
            }
            if let Some(limit) = limit {
                *limits.entry(name).or_default() += limit;
                limits_found += 1;
            }
        }
        if limits_found < RESOURCES.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requests.len() == limits.len()
        && requests.iter().all(|(name, r)| limits.get(name) == Some(r))
    {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// The pod-level `securityContext`.
pub fn pod_security_context(
    s: Option<&api::PodSecurityContext>,
) -> Result<PodSecurityContext, ConvertError> {
    let Some(s) = s else {
        return Ok(PodSecurityContext::default());
    };
    let groups = s
        .supplemental_groups
        .iter()
        .map(|g| id("(pod)", "supplementalGroups", Some(*g)).map(|g| g.unwrap_or(0)))
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(PodSecurityContext {
        run_as_user: id("(pod)", "runAsUser", s.run_as_user)?,
        run_as_group: id("(pod)", "runAsGroup", s.run_as_group)?,
        run_as_non_root: s.run_as_non_root,
        supplemental_groups: groups,
        fs_group: id("(pod)", "fsGroup", s.fs_group)?,
        seccomp_profile: s.seccomp_profile.as_ref().map(seccomp_profile),
        app_armor_profile: s.app_armor_profile.as_ref().map(app_armor_profile),
        sysctls: s
            .sysctls
            .iter()
            .map(|entry| {
                (
                    manifests::sysctl::normalize(&entry.name),
                    entry.value.clone(),
                )
            })
            .collect(),
    })
}

/// A pod volume. configMap, secret, downwardAPI and projected volumes need
/// `materialised`: the directory the caller wrote their files into
/// (`volumes::write_files`).
pub fn volume(v: &api::Volume, materialised: Option<PathBuf>) -> Result<Volume, ConvertError> {
    let err = |problem: &str| ConvertError::Volume {
        volume: v.name.clone(),
        problem: problem.to_string(),
    };
    let source = if let Some(h) = &v.host_path {
        VolumeSource::HostPath {
            path: PathBuf::from(&h.path),
            kind: h.type_.unwrap_or(HostPathType::Unchecked),
        }
    } else if let Some(e) = &v.empty_dir {
        let size_limit = match &e.size_limit {
            None => None,
            Some(q) => Some(
                q.amount()
                    .map_err(|e| err(&format!("emptyDir.sizeLimit {q}: {e}")))
                    .map(|p| u64::try_from(p.value().max(0)).unwrap_or(u64::MAX))?,
            ),
        };
        VolumeSource::EmptyDir {
            memory: e.medium.as_deref() == Some("Memory"),
            size_limit,
        }
    } else if v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
    {
        VolumeSource::Directory {
            path: materialised.ok_or_else(|| {
                err("the volume's files were not written before starting the pod")
            })?,
        }
    } else {
        return Err(err(
            "has no source berth supports (hostPath, emptyDir, configMap, secret, downwardAPI, projected)",
        ));
    };
    Ok(Volume {
        name: v.name.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn container() -> api::Container {
        api::Container {
            name: "web".into(),
            command: vec!["/bin/httpd".into()],
            resources: Some(api::ResourceRequirements {
                limits: BTreeMap::from([
                    ("cpu".to_string(), Quantity::new("500m")),
                    ("memory".to_string(), Quantity::new("128Mi")),
                ]),
                requests: BTreeMap::new(),
            }),
            security_context: Some(api::SecurityContext {
                run_as_user: Some(1000),
                capabilities: Some(api::Capabilities {
                    add: vec!["NET_ADMIN".into()],
                    drop: vec![],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn maps_a_container() {
        let spec = container_spec(&container(), vec![EnvVar::new("A", "1")]).expect("maps");
        assert_eq!(spec.command, ["/bin/httpd"]);
        assert_eq!(spec.resources.cpu_limit_millis, Some(500));
        assert_eq!(
            spec.resources.cpu_request_millis,
            Some(500),
            "request defaults to the limit"
        );
        assert_eq!(spec.resources.memory_limit_bytes, Some(128 << 20));
        assert_eq!(spec.security_context.run_as_user, Some(1000));
        assert_eq!(spec.security_context.capabilities.add, ["NET_ADMIN"]);
        assert_eq!(spec.env, [EnvVar::new("A", "1")]);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut c = container();
        if let Some(sc) = c.security_context.as_mut() {
            sc.run_as_user = Some(-1);
        }
        let err = container_spec(&c, vec![]).expect_err("negative uid");
        assert!(
            err.to_string().contains("securityContext.runAsUser: -1"),
            "{err}"
        );
    }

    #[test]
    fn fs_group_becomes_the_pods_fs_group() {
        let context = |fs_group| api::PodSecurityContext {
            fs_group: Some(fs_group),
            ..Default::default()
        };
        let mapped = pod_security_context(Some(&context(2000))).expect("maps");
        assert_eq!(mapped.fs_group, Some(2000));
        let err = pod_security_context(Some(&context(-5))).expect_err("negative gid");
        assert!(
            err.to_string().contains("securityContext.fsGroup: -5"),
            "{err}"
        );
    }

    fn with_resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> api::Container {
        let map = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
                .collect::<BTreeMap<_, _>>()
        };
        api::Container {
            name: "c".into(),
            resources: Some(api::ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
            }),
            ..Default::default()
        }
    }

    /// Kubernetes' QoS classes, from every container's cpu and memory.
    #[test]
    fn qos_classes_follow_kubernetes() {
        let full = [("cpu", "500m"), ("memory", "128Mi")];
        let cases: Vec<(Vec<api::Container>, QosClass)> = vec![
            (vec![with_resources(&[], &[])], QosClass::BestEffort),
            (
                vec![with_resources(&[], &[("ephemeral-storage", "1Gi")])],
                QosClass::BestEffort,
            ),
            // Requests default to limits.
            (vec![with_resources(&[], &full)], QosClass::Guaranteed),
            (vec![with_resources(&full, &full)], QosClass::Guaranteed),
            (
                vec![with_resources(&[("cpu", "250m")], &full)],
                QosClass::Burstable,
            ),
            (
                vec![with_resources(&[], &[("memory", "128Mi")])],
                QosClass::Burstable,
            ),
            (
                vec![with_resources(&[("cpu", "1")], &[])],
                QosClass::Burstable,
            ),
            // One container without limits spoils the pod.
            (
                vec![with_resources(&[], &full), with_resources(&[], &[])],
                QosClass::Burstable,
            ),
        ];
        for (containers, want) in cases {
            let spec = api::PodSpec {
                containers,
                ..Default::default()
            };
            assert_eq!(qos_class(&spec), want, "{:?}", spec.containers);
        }
        let critical = api::PodSpec {
            containers: vec![with_resources(&[], &[])],
            priority_class_name: Some("system-node-critical".into()),
            ..Default::default()
        };
        assert!(oom_policy(&critical).node_critical);
        let cluster = api::PodSpec {
            priority_class_name: Some("system-cluster-critical".into()),
            ..critical
        };
        assert!(
            !oom_policy(&cluster).node_critical,
            "as the kubelet: node-critical only"
        );
    }

    #[test]
    fn memory_request_defaults_to_the_limit() {
        let spec =
            container_spec(&with_resources(&[], &[("memory", "64Mi")]), vec![]).expect("maps");
        assert_eq!(spec.resources.memory_request_bytes, Some(64 << 20));
        let spec = container_spec(
            &with_resources(&[("memory", "32Mi")], &[("memory", "64Mi")]),
            vec![],
        )
        .expect("maps");
        assert_eq!(spec.resources.memory_request_bytes, Some(32 << 20));
    }

    #[test]
    fn maps_volumes() {
        let memory = api::Volume {
            name: "cache".into(),
            empty_dir: Some(api::EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity::new("64Mi")),
            }),
            ..Default::default()
        };
        assert_eq!(
            volume(&memory, None).expect("maps").source,
            VolumeSource::EmptyDir {
                memory: true,
                size_limit: Some(64 << 20)
            }
        );
        let secret = api::Volume {
            name: "token".into(),
            secret: Some(api::SecretVolumeSource {
                secret_name: "t".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(volume(&secret, None).is_err(), "needs its files");
        assert!(matches!(
            volume(&secret, Some(PathBuf::from("/run/x")))
                .expect("maps")
                .source,
            VolumeSource::Directory { .. }
        ));
    }
}
