//! `v1 Pod` validation: what the API server would reject, plus what berth
//! cannot run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use super::{Issues, absolute_path, relative_path, validate_metadata};
use crate::names;
use crate::reference::ImageReference;
use crate::types::{
    Container, ContainerPort, DnsPolicy, EnvVar, HttpGetAction, IntOrString, LifecycleHandler, Pod,
    Probe, Protocol, ResourceRequirements, TcpSocketAction, Volume,
};

/// Resources berth applies; others are refused rather than silently ignored.
const RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

pub(super) fn validate_pod(pod: &Pod, issues: &mut Issues) {
    validate_metadata(&pod.metadata, "pod", true, issues);
    let spec = &pod.spec;
    if spec.containers.is_empty() {
        issues.error_at_key("spec.containers", "a pod needs at least one container");
    }

    let container_set: HashSet<&str> = spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .map(|c| c.name.as_str())
        .collect();
    let volumes = validate_volumes(&spec.volumes, &container_set, issues);
    super::placement::validate(spec, issues);
    let mut container_names: HashMap<&str, String> = HashMap::new();
    let mut port_names: HashMap<&str, String> = HashMap::new();
    let mut ports_in_use: HashMap<(i32, Protocol), String> = HashMap::new();
    let mut host_ports: HashMap<(i32, Protocol, String), String> = HashMap::new();

    let all = (spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c, true)))
    .chain(
        spec.containers
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("spec.containers[{i}]"), c, false)),
    );
    for (path, container, is_init) in all {
        if let Some(first) = container_names.insert(&container.name, path.clone()) {
            issues.error(
                format!("{path}.name"),
                format!(
                    "container name `{}` is already used by {first}",
                    container.name
                ),
            );
        }
        validate_container(&path, container, is_init, &volumes, issues);
        for (i, port) in container.ports.iter().enumerate() {
            let port_path = format!("{path}.ports[{i}]");
            validate_port(&port_path, port, spec.host_network, issues);
            if let Some(name) = &port.name
                && let Some(first) = port_names.insert(name, port_path.clone())
            {
                issues.error(
                    format!("{port_path}.name"),
                    format!("port name `{name}` is already used by {first}"),
                );
            }
            // Init containers run before the others, so their ports do not clash.
            if is_init {
                continue;
            }
            let protocol = port.protocol_or_default();
            if let Some(first) =
                ports_in_use.insert((port.container_port, protocol), port_path.clone())
            {
                issues.error(
                    format!("{port_path}.containerPort"),
                    format!(
                        "port {}/{protocol} is already declared by {first}; containers of a pod share one network namespace",
                        port.container_port
                    ),
                );
            }
            if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
                let host_ip = port.host_ip.clone().unwrap_or_default();
                if let Some(first) =
                    host_ports.insert((host_port, protocol, host_ip), port_path.clone())
                {
                    issues.error(
                        format!("{port_path}.hostPort"),
                        format!("host port {host_port}/{protocol} is already used by {first}"),
                    );
                }
            }
        }
    }

    if let Some(runtime_class) = &spec.runtime_class_name {
        issues.check(
            "spec.runtimeClassName",
            "runtimeClassName",
            runtime_class,
            names::dns1123_subdomain,
        );
    }
    if let Some(grace) = spec.termination_grace_period_seconds
        && grace < 0
    {
        issues.error(
            "spec.terminationGracePeriodSeconds",
            "terminationGracePeriodSeconds must not be negative",
        );
    }
    for (i, alias) in spec.host_aliases.iter().enumerate() {
        let path = format!("spec.hostAliases[{i}]");
        if alias.ip.parse::<IpAddr>().is_err() {
            issues.error(
                format!("{path}.ip"),
                format!("`{}` is not an IP address", alias.ip),
            );
        }
        if alias.hostnames.is_empty() {
            issues.error_at_key(
                format!("{path}.ip"),
                "a host alias needs at least one hostname",
            );
        }
        for (j, hostname) in alias.hostnames.iter().enumerate() {
            issues.check(
                &format!("{path}.hostnames[{j}]"),
                "hostname",
                hostname,
                names::dns1123_subdomain,
            );
        }
    }
    validate_dns(pod, issues);
    super::pod_security::validate(pod, issues);
    if let Some(sc) = &spec.security_context {
        for (field, id) in [
            ("runAsUser", sc.run_as_user),
            ("runAsGroup", sc.run_as_group),
            ("fsGroup", sc.fs_group),
        ] {
            non_negative_id(&format!("spec.securityContext.{field}"), id, issues);
        }
        if sc.run_as_non_root == Some(true) && sc.run_as_user == Some(0) {
            issues.error(
                "spec.securityContext.runAsUser",
                "runAsNonRoot is true but runAsUser is 0 (root)",
            );
        }
    }
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        issues.check(
            &format!("spec.imagePullSecrets[{i}].name"),
            "secret name",
            &secret.name,
            names::dns1123_subdomain,
        );
    }
}

fn validate_dns(pod: &Pod, issues: &mut Issues) {
    let spec = &pod.spec;
    if spec.dns_policy == Some(DnsPolicy::None)
        && spec
            .dns_config
            .as_ref()
            .is_none_or(|c| c.nameservers.is_empty())
    {
        issues.error(
            "spec.dnsPolicy",
            "dnsPolicy `None` needs `dnsConfig.nameservers`",
        );
    }
    let Some(config) = &spec.dns_config else {
        return;
    };
    if config.nameservers.len() > 3 {
        issues.error(
            "spec.dnsConfig.nameservers",
            "at most 3 nameservers (the resolv.conf limit)",
        );
    }
    for (i, server) in config.nameservers.iter().enumerate() {
        if server.parse::<IpAddr>().is_err() {
            issues.error(
                format!("spec.dnsConfig.nameservers[{i}]"),
                format!("`{server}` is not an IP address"),
            );
        }
    }
    if config.searches.len() > 32 {
        issues.error("spec.dnsConfig.searches", "at most 32 search domains");
    }
    for (i, search) in config.searches.iter().enumerate() {
        // A trailing dot (fully qualified) is allowed.
        let domain = search.strip_suffix('.').unwrap_or(search);
        issues.check(
            &format!("spec.dnsConfig.searches[{i}]"),
            "search domain",
            domain,
            names::dns1123_subdomain,
        );
    }
    for (i, option) in config.options.iter().enumerate() {
        if option.name.is_empty() {
            issues.error_at_key(
                format!("spec.dnsConfig.options[{i}]"),
                "a DNS option needs a name",
            );
        }
    }
}

/// Checks volumes and returns their names.
fn validate_volumes<'a>(
    volumes: &'a [Volume],
    containers: &HashSet<&str>,
    issues: &mut Issues,
) -> HashSet<&'a str> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, volume) in volumes.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        issues.check(
            &format!("{path}.name"),
            "volume name",
            &volume.name,
            names::dns1123_label,
        );
        if let Some(first) = seen.insert(&volume.name, i) {
            issues.error(
                format!("{path}.name"),
                format!(
                    "volume name `{}` is already used by spec.volumes[{first}]",
                    volume.name
                ),
            );
        }
        let sources = [
            volume.host_path.is_some(),
            volume.empty_dir.is_some(),
            volume.config_map.is_some(),
            volume.secret.is_some(),
            volume.downward_api.is_some(),
            volume.projected.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => issues.error(
                format!("{path}.name"),
                format!(
                    "volume `{}` has no source berth supports: use one of hostPath, emptyDir, configMap, secret, downwardAPI, projected",
                    volume.name
                ),
            ),
            1 => {}
            _ => issues.error(
                format!("{path}.name"),
                format!("volume `{}` has more than one source; give exactly one", volume.name),
            ),
        }
        if let Some(host_path) = &volume.host_path {
            absolute_path(
                &format!("{path}.hostPath.path"),
                "hostPath.path",
                &host_path.path,
                issues,
            );
        }
        if let Some(empty_dir) = &volume.empty_dir {
            if let Some(medium) = empty_dir.medium.as_deref()
                && !matches!(medium, "" | "Memory")
            {
                issues.error(
                    format!("{path}.emptyDir.medium"),
                    format!(
                        "emptyDir medium `{medium}` is not supported: use \"\" (disk) or `Memory`"
                    ),
                );
            }
            if let Some(size) = &empty_dir.size_limit {
                super::quantity(&format!("{path}.emptyDir.sizeLimit"), size, issues);
            }
        }
        if let Some(cm) = &volume.config_map {
            issues.check(
                &format!("{path}.configMap.name"),
                "ConfigMap name",
                &cm.name,
                names::dns1123_subdomain,
            );
            super::key_to_paths(
                &format!("{path}.configMap"),
                &cm.items,
                cm.default_mode,
                issues,
            );
        }
        super::projection::validate(&path, volume, containers, issues);
        if let Some(secret) = &volume.secret {
            issues.check(
                &format!("{path}.secret.secretName"),
                "Secret name",
                &secret.secret_name,
                names::dns1123_subdomain,
            );
            super::key_to_paths(
                &format!("{path}.secret"),
                &secret.items,
                secret.default_mode,
                issues,
            );
        }
    }
    seen.into_keys().collect()
}

fn validate_container(
    path: &str,
    container: &Container,
    is_init: bool,
    volumes: &HashSet<&str>,
    issues: &mut Issues,
) {
    issues.check(
        &format!("{path}.name"),
        "container name",
        &container.name,
        names::dns1123_label,
    );
    if container.image.is_empty() {
        issues.error_at_key(
            format!("{path}.name"),
            format!("container `{}` has no image", container.name),
        );
    } else if let Err(err) = ImageReference::parse(&container.image) {
        issues.error(format!("{path}.image"), err.to_string());
    }
    if let Some(dir) = &container.working_dir {
        absolute_path(&format!("{path}.workingDir"), "workingDir", dir, issues);
    }
    for (i, env) in container.env.iter().enumerate() {
        validate_env(&format!("{path}.env[{i}]"), env, &container.name, issues);
    }
    for (i, from) in container.env_from.iter().enumerate() {
        let from_path = format!("{path}.envFrom[{i}]");
        match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), None) => issues.check(
                &format!("{from_path}.configMapRef.name"),
                "ConfigMap name",
                &r.name,
                names::dns1123_subdomain,
            ),
            (None, Some(r)) => issues.check(
                &format!("{from_path}.secretRef.name"),
                "Secret name",
                &r.name,
                names::dns1123_subdomain,
            ),
            _ => issues.error(
                from_path.clone(),
                "envFrom needs exactly one of configMapRef and secretRef",
            ),
        }
        if let Some(prefix) = &from.prefix {
            issues.check(
                &format!("{from_path}.prefix"),
                "envFrom prefix",
                prefix,
                names::env_var_name,
            );
        }
    }
    let mut mount_paths: HashMap<&str, usize> = HashMap::new();
    for (i, mount) in container.volume_mounts.iter().enumerate() {
        let mount_path = format!("{path}.volumeMounts[{i}]");
        if !volumes.contains(mount.name.as_str()) {
            let hint = crate::fields::did_you_mean(&mount.name, volumes.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| {
                    if volumes.is_empty() {
                        "; the pod has no volumes".to_owned()
                    } else {
                        let mut names: Vec<&str> = volumes.iter().copied().collect();
                        names.sort_unstable();
                        format!("; volumes are: {}", names.join(", "))
                    }
                });
            issues.error(
                format!("{mount_path}.name"),
                format!(
                    "volumeMount refers to volume `{}`, which is not in spec.volumes{hint}",
                    mount.name
                ),
            );
        }
        absolute_path(
            &format!("{mount_path}.mountPath"),
            "mountPath",
            &mount.mount_path,
            issues,
        );
        if let Some(first) = mount_paths.insert(&mount.mount_path, i) {
            issues.error(
                format!("{mount_path}.mountPath"),
                format!(
                    "mountPath `{}` is already used by {path}.volumeMounts[{first}]",
                    mount.mount_path
                ),
            );
        }
        if let Some(sub_path) = &mount.sub_path {
            relative_path(
                &format!("{mount_path}.subPath"),
                "subPath",
                sub_path,
                issues,
            );
        }
    }
    if let Some(resources) = &container.resources {
        validate_resources(&format!("{path}.resources"), resources, issues);
    }
    if let Some(sc) = &container.security_context {
        let sc_path = format!("{path}.securityContext");
        if let Some(caps) = &sc.capabilities {
            for (list, names) in [("add", &caps.add), ("drop", &caps.drop)] {
                for (i, name) in names.iter().enumerate() {
                    if let Err(why) = super::capability(name) {
                        issues.error(format!("{sc_path}.capabilities.{list}[{i}]"), why);
                    }
                }
            }
        }
        for (field, id) in [
            ("runAsUser", sc.run_as_user),
            ("runAsGroup", sc.run_as_group),
        ] {
            non_negative_id(&format!("{sc_path}.{field}"), id, issues);
        }
        if sc.run_as_non_root == Some(true) && sc.run_as_user == Some(0) {
            issues.error(
                format!("{sc_path}.runAsUser"),
                "runAsNonRoot is true but runAsUser is 0 (root)",
            );
        }
        if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
            issues.error(
                format!("{sc_path}.allowPrivilegeEscalation"),
                "allowPrivilegeEscalation cannot be false for a privileged container",
            );
        }
    }
    let probes = [
        ("livenessProbe", &container.liveness_probe),
        ("readinessProbe", &container.readiness_probe),
        ("startupProbe", &container.startup_probe),
    ];
    for (name, probe) in probes {
        let Some(probe) = probe else { continue };
        let probe_path = format!("{path}.{name}");
        if is_init {
            issues.error_at_key(
                probe_path.clone(),
                format!("init containers cannot have a {name}"),
            );
        }
        validate_probe(&probe_path, name, probe, container, issues);
    }
    if let Some(lifecycle) = &container.lifecycle {
        for (name, handler) in [
            ("postStart", &lifecycle.post_start),
            ("preStop", &lifecycle.pre_stop),
        ] {
            if let Some(handler) = handler {
                validate_handler(
                    &format!("{path}.lifecycle.{name}"),
                    handler,
                    container,
                    issues,
                );
            }
        }
    }
}

fn validate_port(path: &str, port: &ContainerPort, host_network: bool, issues: &mut Issues) {
    port_number(
        &format!("{path}.containerPort"),
        "containerPort",
        port.container_port,
        issues,
    );
    if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
        port_number(&format!("{path}.hostPort"), "hostPort", host_port, issues);
        if host_network && host_port != port.container_port {
            issues.error(
                format!("{path}.hostPort"),
                format!(
                    "with hostNetwork, hostPort must equal containerPort ({}) or be left out",
                    port.container_port
                ),
            );
        }
    }
    if let Some(ip) = &port.host_ip
        && ip.parse::<IpAddr>().is_err()
    {
        issues.error(
            format!("{path}.hostIP"),
            format!("`{ip}` is not an IP address"),
        );
    }
    if let Some(name) = &port.name {
        issues.check(
            &format!("{path}.name"),
            "port name",
            name,
            names::iana_svc_name,
        );
    }
}

fn port_number(path: &str, what: &str, port: i32, issues: &mut Issues) {
    if !(1..=65535).contains(&port) {
        issues.error(
            path,
            format!("{what} {port} is not a port number (1-65535)"),
        );
    }
}

fn non_negative_id(path: &str, id: Option<i64>, issues: &mut Issues) {
    if let Some(id) = id
        && !(0..=i64::from(u32::MAX)).contains(&id)
    {
        issues.error(
            path,
            format!("{id} is not a valid user or group ID (0-4294967295)"),
        );
    }
}

fn validate_env(path: &str, env: &EnvVar, container: &str, issues: &mut Issues) {
    issues.check(
        &format!("{path}.name"),
        "environment variable name",
        &env.name,
        names::env_var_name,
    );
    let Some(from) = &env.value_from else {
        return;
    };
    if env.value.as_deref().is_some_and(|v| !v.is_empty()) {
        issues.error(
            format!("{path}.valueFrom"),
            format!("`{}` has both value and valueFrom; give one", env.name),
        );
    }
    let refs = [
        from.config_map_key_ref.is_some(),
        from.secret_key_ref.is_some(),
        from.field_ref.is_some(),
        from.resource_field_ref.is_some(),
    ];
    if refs.iter().filter(|r| **r).count() != 1 {
        issues.error(
            format!("{path}.valueFrom"),
            "valueFrom needs exactly one of configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef",
        );
    }
    if let Some(resource) = &from.resource_field_ref {
        let at = format!("{path}.valueFrom.resourceFieldRef");
        if let Err(why) = crate::field_path::parse_resource_field(&resource.resource) {
            issues.error(format!("{at}.resource"), why);
        }
        if let Some(name) = resource.container_name.as_deref()
            && !name.is_empty()
            && name != container
        {
            issues.error(
                format!("{at}.containerName"),
                format!("an env variable reads its own container's resources: use `{container}` or leave containerName out"),
            );
        }
        if let Some(divisor) = &resource.divisor
            && let Some(millis) = super::quantity(&format!("{at}.divisor"), divisor, issues)
            && millis <= 0
        {
            issues.error(format!("{at}.divisor"), "divisor must be positive");
        }
    }
    for (field, selector, what) in [
        ("configMapKeyRef", &from.config_map_key_ref, "ConfigMap"),
        ("secretKeyRef", &from.secret_key_ref, "Secret"),
    ] {
        if let Some(selector) = selector {
            let p = format!("{path}.valueFrom.{field}");
            issues.check(
                &format!("{p}.name"),
                &format!("{what} name"),
                &selector.name,
                names::dns1123_subdomain,
            );
            issues.check(
                &format!("{p}.key"),
                &format!("{what} key"),
                &selector.key,
                names::config_key,
            );
        }
    }
    if let Some(field_ref) = &from.field_ref {
        if let Err(why) = crate::field_path::parse(&field_ref.field_path) {
            issues.error(format!("{path}.valueFrom.fieldRef.fieldPath"), why);
        }
        if let Some(version) = &field_ref.api_version
            && version != "v1"
        {
            issues.error(
                format!("{path}.valueFrom.fieldRef.apiVersion"),
                "fieldRef apiVersion must be `v1`",
            );
        }
    }
}

fn validate_resources(path: &str, resources: &ResourceRequirements, issues: &mut Issues) {
    let mut parsed: BTreeMap<(&str, &str), i128> = BTreeMap::new();
    for (list, map) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for (name, quantity) in map {
            let q_path = format!("{path}.{list}.{name}");
            if !RESOURCES.contains(&name.as_str()) {
                let hint = crate::fields::did_you_mean(name, RESOURCES)
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("berth manages {}", RESOURCES.join(", ")));
                issues.error_at_key(
                    q_path,
                    format!("resource `{name}` is not supported; {hint}"),
                );
                continue;
            }
            if let Some(value) = super::quantity(&q_path, quantity, issues) {
                parsed.insert((list, name), value);
            }
        }
    }
    for name in RESOURCES {
        if let (Some(request), Some(limit)) = (
            parsed.get(&("requests", name)),
            parsed.get(&("limits", name)),
        ) && request > limit
        {
            issues.error(
                format!("{path}.requests.{name}"),
                format!(
                    "{name} request {} is more than its limit {}",
                    resources.requests[name], resources.limits[name]
                ),
            );
        }
    }
}

fn validate_probe(
    path: &str,
    name: &str,
    probe: &Probe,
    container: &Container,
    issues: &mut Issues,
) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ];
    if handlers.iter().filter(|h| **h).count() != 1 {
        issues.error_at_key(
            path,
            format!("{name} needs exactly one of exec, httpGet, tcpSocket, grpc"),
        );
    }
    if let Some(grpc) = &probe.grpc
        && !(1..=65535).contains(&grpc.port)
    {
        issues.error(
            format!("{path}.grpc.port"),
            format!("grpc port {} is not between 1 and 65535", grpc.port),
        );
    }
    if let Some(exec) = &probe.exec
        && exec.command.is_empty()
    {
        issues.error_at_key(format!("{path}.exec"), "exec needs a command");
    }
    if let Some(http) = &probe.http_get {
        validate_http_get(&format!("{path}.httpGet"), http, container, issues);
    }
    if let Some(tcp) = &probe.tcp_socket {
        validate_tcp_socket(&format!("{path}.tcpSocket"), tcp, container, issues);
    }
    let timings = [
        ("initialDelaySeconds", probe.initial_delay_seconds, 0),
        ("periodSeconds", probe.period_seconds, 1),
        ("timeoutSeconds", probe.timeout_seconds, 1),
        ("successThreshold", probe.success_threshold, 1),
        ("failureThreshold", probe.failure_threshold, 1),
    ];
    for (field, value, min) in timings {
        if let Some(value) = value
            && value < min
        {
            issues.error(
                format!("{path}.{field}"),
                format!("{field} must be at least {min}"),
            );
        }
    }
    if name != "readinessProbe" && probe.success_threshold.is_some_and(|t| t != 1) {
        issues.error(
            format!("{path}.successThreshold"),
            format!("successThreshold of a {name} must be 1"),
        );
    }
    if probe
        .termination_grace_period_seconds
        .is_some_and(|s| s < 1)
    {
        issues.error(
            format!("{path}.terminationGracePeriodSeconds"),
            "terminationGracePeriodSeconds must be at least 1",
        );
    }
}

fn validate_handler(
    path: &str,
    handler: &LifecycleHandler,
    container: &Container,
    issues: &mut Issues,
) {
    let handlers = [
        handler.exec.is_some(),
        handler.http_get.is_some(),
        handler.tcp_socket.is_some(),
        handler.sleep.is_some(),
    ];
    if handlers.iter().filter(|h| **h).count() != 1 {
        issues.error_at_key(
            path,
            "a lifecycle handler needs exactly one of exec, httpGet, tcpSocket, sleep",
        );
    }
    if let Some(exec) = &handler.exec
        && exec.command.is_empty()
    {
        issues.error_at_key(format!("{path}.exec"), "exec needs a command");
    }
    if let Some(http) = &handler.http_get {
        validate_http_get(&format!("{path}.httpGet"), http, container, issues);
    }
    if let Some(tcp) = &handler.tcp_socket {
        let tcp_path = format!("{path}.tcpSocket");
        validate_tcp_socket(&tcp_path, tcp, container, issues);
        issues.warning(
            tcp_path.clone(),
            format!(
                "`{tcp_path}` is accepted but not run by berth (kubelet does not run tcpSocket hooks either); use exec, httpGet or sleep"
            ),
        );
    }
    if let Some(sleep) = &handler.sleep
        && sleep.seconds < 0
    {
        issues.error(
            format!("{path}.sleep.seconds"),
            "sleep seconds must not be negative",
        );
    }
}

fn validate_http_get(path: &str, http: &HttpGetAction, container: &Container, issues: &mut Issues) {
    probe_port(&format!("{path}.port"), &http.port, container, issues);
    if let Some(scheme) = &http.scheme
        && scheme != "HTTP"
        && scheme != "HTTPS"
    {
        issues.error(
            format!("{path}.scheme"),
            format!("scheme `{scheme}` must be HTTP or HTTPS"),
        );
    }
    if let Some(p) = &http.path
        && !p.is_empty()
        && !p.starts_with('/')
    {
        issues.error(
            format!("{path}.path"),
            format!("path `{p}` must start with `/`"),
        );
    }
}

fn validate_tcp_socket(
    path: &str,
    tcp: &TcpSocketAction,
    container: &Container,
    issues: &mut Issues,
) {
    probe_port(&format!("{path}.port"), &tcp.port, container, issues);
}

/// A probe port is a number or the name of one of the container's ports.
fn probe_port(path: &str, port: &IntOrString, container: &Container, issues: &mut Issues) {
    match port {
        IntOrString::Int(number) => port_number(path, "port", *number, issues),
        IntOrString::String(name) => {
            let names: Vec<&str> = container
                .ports
                .iter()
                .filter_map(|p| p.name.as_deref())
                .collect();
            if !names.contains(&name.as_str()) {
                let hint = crate::fields::did_you_mean(name, names.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                issues.error(
                    path,
                    format!(
                        "port `{name}` is not the name of a port of container `{}`{hint}",
                        container.name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Severity;

    #[test]
    fn tcp_socket_hooks_are_named_as_not_run() {
        let container = Container {
            name: "app".into(),
            ..Default::default()
        };
        let handler = LifecycleHandler {
            tcp_socket: Some(TcpSocketAction {
                port: IntOrString::Int(80),
                host: None,
            }),
            ..Default::default()
        };
        let mut issues = Issues::new();
        let path = "spec.containers[0].lifecycle.preStop";
        validate_handler(path, &handler, &container, &mut issues);
        let warnings: Vec<String> = issues
            .list
            .iter()
            .filter(|i| i.severity == Severity::Warning)
            .map(|i| i.message.clone())
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains(
                "`spec.containers[0].lifecycle.preStop.tcpSocket` is accepted but not run"
            ),
            "{warnings:?}"
        );
    }

    fn diagnostics(yaml: &str) -> Vec<(Severity, String)> {
        let parsed = crate::parse_file(std::path::Path::new("pod.yaml"), yaml.as_bytes());
        parsed
            .all_diagnostics()
            .map(|d| (d.severity, d.to_string()))
            .collect()
    }

    fn pod_with_fs_group(fs_group: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  securityContext:\n    runAsUser: 1000\n    fsGroup: {fs_group}\n  containers:\n  - name: app\n    image: busybox\n"
        )
    }

    #[test]
    fn fs_group_is_implemented_and_range_checked() {
        for ok in ["0", "2000", "4294967295"] {
            let found = diagnostics(&pod_with_fs_group(ok));
            assert!(found.is_empty(), "fsGroup {ok}: {found:?}");
        }
        for bad in ["-1", "4294967296"] {
            let found = diagnostics(&pod_with_fs_group(bad));
            assert_eq!(found.len(), 1, "fsGroup {bad}: {found:?}");
            assert_eq!(found[0].0, Severity::Error, "{found:?}");
            assert!(
                // Line 8 is the fsGroup line.
                found[0].1.starts_with("pod.yaml:8:")
                    && found[0]
                        .1
                        .contains(&format!("{bad} is not a valid user or group ID")),
                "{found:?}"
            );
        }
    }
}
