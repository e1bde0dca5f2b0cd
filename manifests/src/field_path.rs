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

#[cfg(test)]
mod tests {
    use super::*;

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
