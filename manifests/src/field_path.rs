//! `env[].valueFrom.fieldRef.fieldPath`: the pod fields a container can
//! read, in the one reading validation and the agent's env resolution share.

/// A pod field an environment variable can take its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodField<'a> {
    Name,
    Namespace,
    Uid,
    NodeName,
    ServiceAccountName,
    HostIp,
    PodIp,
    PodIps,
    /// `metadata.labels['KEY']`
    Label(&'a str),
    /// `metadata.annotations['KEY']`
    Annotation(&'a str),
}

/// The plain field paths, in the order error messages list them.
pub const FIELD_PATHS: [(&str, PodField<'static>); 8] = [
    ("metadata.name", PodField::Name),
    ("metadata.namespace", PodField::Namespace),
    ("metadata.uid", PodField::Uid),
    ("spec.nodeName", PodField::NodeName),
    ("spec.serviceAccountName", PodField::ServiceAccountName),
    ("status.hostIP", PodField::HostIp),
    ("status.podIP", PodField::PodIp),
    ("status.podIPs", PodField::PodIps),
];

/// Reads a fieldPath; the error lists what is supported.
pub fn parse(path: &str) -> Result<PodField<'_>, String> {
    if let Some((_, field)) = FIELD_PATHS.iter().find(|(name, _)| *name == path) {
        return Ok(*field);
    }
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
    };
    if let Some(key) = subscript("metadata.labels['") {
        return Ok(PodField::Label(key));
    }
    if let Some(key) = subscript("metadata.annotations['") {
        return Ok(PodField::Annotation(key));
    }
    let plain: Vec<&str> = FIELD_PATHS.iter().map(|(name, _)| *name).collect();
    Err(format!(
        "fieldPath `{path}` is not supported: use one of {}, metadata.labels['KEY'], metadata.annotations['KEY']",
        plain.join(", ")
    ))
}

/// What a `downwardAPI` volume file may hold: Kubernetes allows fewer
/// fields there than in env (no node, IPs or service account), and the
/// whole label and annotation maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeField<'a> {
    One(PodField<'a>),
    /// `metadata.labels`: every label, one `key="value"` line each.
    Labels,
    /// `metadata.annotations`, like `Labels`.
    Annotations,
}

/// Reads a downwardAPI volume file's fieldPath; the error lists what is
/// supported.
pub fn parse_volume_field(path: &str) -> Result<VolumeField<'_>, String> {
    match path {
        "metadata.labels" => return Ok(VolumeField::Labels),
        "metadata.annotations" => return Ok(VolumeField::Annotations),
        _ => {}
    }
    match parse(path) {
        Ok(
            field @ (PodField::Name
            | PodField::Namespace
            | PodField::Uid
            | PodField::Label(_)
            | PodField::Annotation(_)),
        ) => Ok(VolumeField::One(field)),
        _ => Err(format!(
            "fieldPath `{path}` is not supported in a downwardAPI volume: use metadata.name, metadata.namespace, metadata.uid, metadata.labels, metadata.annotations, metadata.labels['KEY'] or metadata.annotations['KEY']"
        )),
    }
}

/// The resources a `resourceFieldRef` may name.
pub const RESOURCE_FIELDS: [&str; 6] = [
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
];

/// Reads a `resourceFieldRef.resource`: whether it is a limit, and the
/// resource's name (`cpu`, `memory`, `ephemeral-storage`).
pub fn parse_resource_field(resource: &str) -> Result<(bool, &str), String> {
    if !RESOURCE_FIELDS.contains(&resource) {
        return Err(format!(
            "resource `{resource}` is not supported: use one of {}",
            RESOURCE_FIELDS.join(", ")
        ));
    }
    let (kind, name) = resource
        .split_once('.')
        .expect("every supported resource field has a dot");
    Ok((kind == "limits", name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_fields_are_fewer_than_env_fields() {
        assert_eq!(
            parse_volume_field("metadata.labels"),
            Ok(VolumeField::Labels)
        );
        assert_eq!(
            parse_volume_field("metadata.annotations['a']"),
            Ok(VolumeField::One(PodField::Annotation("a")))
        );
        assert!(parse_volume_field("status.podIP").is_err());
        assert!(parse_volume_field("spec.nodeName").is_err());
        assert_eq!(parse_resource_field("limits.cpu"), Ok((true, "cpu")));
        assert_eq!(
            parse_resource_field("requests.ephemeral-storage"),
            Ok((false, "ephemeral-storage"))
        );
        assert!(parse_resource_field("limits.gpu").is_err());
    }

    #[test]
    fn field_paths() {
        assert_eq!(parse("status.podIP"), Ok(PodField::PodIp));
        assert_eq!(parse("metadata.labels['app']"), Ok(PodField::Label("app")));
        assert_eq!(
            parse("metadata.annotations['a/b']"),
            Ok(PodField::Annotation("a/b"))
        );
        for bad in [
            "spec.whatever",
            "metadata.labels",
            "metadata.labels['x'",
            "",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }
}
