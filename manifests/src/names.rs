//! Kubernetes name rules. Each check returns why a name is wrong, phrased to
//! follow "`name` is not valid: …".

/// RFC 1123 label: container, volume and port-less names; at most 63
/// lowercase letters, digits and `-`, starting and ending alphanumeric.
pub fn dns1123_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "must be at most 63 characters (it has {})",
            name.len()
        ));
    }
    label_chars(name).map_err(|why| {
        format!("{why}; a DNS-1123 label is lowercase letters, digits and '-', starting and ending with a letter or digit")
    })
}

/// RFC 1123 subdomain: pod, ConfigMap, Secret and Image names; at most 253
/// characters of dot-separated labels.
pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "must be at most 253 characters (it has {})",
            name.len()
        ));
    }
    for part in name.split('.') {
        label_chars(part).map_err(|why| {
            format!("{why}; a DNS-1123 subdomain is lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit")
        })?;
    }
    Ok(())
}

fn label_chars(part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err("has an empty part (two dots, or a leading or trailing dot)".into());
    }
    if let Some(bad) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(if bad.is_ascii_uppercase() {
            format!("has an uppercase letter '{bad}'")
        } else {
            format!("has the character {bad:?}")
        });
    }
    if part.starts_with('-') || part.ends_with('-') {
        return Err("starts or ends with '-'".into());
    }
    Ok(())
}

/// IANA service name, for port names: at most 15 lowercase letters, digits
/// and `-`, at least one letter, no `--`, not starting or ending with `-`.
pub fn iana_svc_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("must be 1-15 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may only hold lowercase letters, digits and '-'".into());
    }
    if !name.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter".into());
    }
    if name.contains("--") || name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with '-' or contain '--'".into());
    }
    Ok(())
}

/// A ConfigMap or Secret key (it becomes a file name): `[-._a-zA-Z0-9]+`,
/// at most 253 characters, not `.` or `..`.
pub fn config_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    if key == "." || key == ".." {
        return Err("must not be '.' or '..'".into());
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(format!(
            "has the character {bad:?}; keys are letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// An environment variable name: printable ASCII without `=` (the rule
/// since Kubernetes 1.30).
pub fn env_var_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(bad) = name.chars().find(|c| !(' '..='~').contains(c) || *c == '=') {
        return Err(format!(
            "has the character {bad:?}; use printable ASCII without '='"
        ));
    }
    Ok(())
}

/// A label or annotation key: an optional DNS subdomain prefix and `/`,
/// then a name of at most 63 letters, digits, `-`, `_`, `.`, starting and
/// ending alphanumeric.
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        dns1123_subdomain(prefix).map_err(|why| format!("prefix `{prefix}` {why}"))?;
    }
    label_value(name).and_then(|()| {
        if name.is_empty() {
            Err("name part must not be empty".into())
        } else {
            Ok(())
        }
    })
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!(
            "must be at most 63 characters (it has {})",
            value.len()
        ));
    }
    if value.is_empty() {
        return Ok(());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let edges_ok = value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !value.chars().all(ok_char) || !edges_ok {
        return Err(
            "must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
                .into(),
        );
    }
    Ok(())
}

/// Linux capability names (without `CAP_`), as of Linux 6.x.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Normalises a capability as written in a pod (`NET_ADMIN`, `CAP_NET_ADMIN`,
/// `net_admin`) to the OCI form `CAP_NET_ADMIN`; `ALL` stays `ALL`.
pub fn capability(name: &str) -> Result<String, String> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok("ALL".to_owned());
    }
    if CAPABILITIES.contains(&bare) {
        return Ok(format!("CAP_{bare}"));
    }
    let hint = crate::fields::did_you_mean(bare, CAPABILITIES)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Err(format!("`{name}` is not a Linux capability{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "web", "web-1", "0", &"a".repeat(63)] {
            assert!(dns1123_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web", "web_1", "-web", "web-", "a.b", &"a".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
        assert!(
            dns1123_label("Web")
                .expect_err("upper")
                .contains("uppercase")
        );
    }

    #[test]
    fn subdomains() {
        for ok in ["kube-apiserver-node1", "a.b.c", "etcd-master.example.com"] {
            assert!(dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "A.b", "a_b", &"a".repeat(254)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_names() {
        for ok in ["http", "metrics-1", "h2c"] {
            assert!(iana_svc_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "HTTP", "123", "a--b", "-a", "sixteen-chars-xx"] {
            assert!(iana_svc_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_label_values() {
        assert!(config_key("index.html").is_ok());
        assert!(config_key("..").is_err());
        assert!(config_key("a/b").is_err());
        assert!(env_var_name("MY_VAR.1").is_ok());
        assert!(env_var_name("A=B").is_err());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("tier").is_ok());
        assert!(qualified_name("Bad Prefix/x").is_err());
        assert!(qualified_name("x/").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_3").is_ok());
        assert!(label_value("-x").is_err());
    }

    #[test]
    fn capabilities_normalise_to_the_oci_form() {
        assert_eq!(capability("NET_ADMIN").as_deref(), Ok("CAP_NET_ADMIN"));
        assert_eq!(capability("CAP_SYS_TIME").as_deref(), Ok("CAP_SYS_TIME"));
        assert_eq!(capability("all").as_deref(), Ok("ALL"));
        assert!(
            capability("NET_ADMN")
                .expect_err("typo")
                .contains("did you mean `NET_ADMIN`")
        );
    }
}
