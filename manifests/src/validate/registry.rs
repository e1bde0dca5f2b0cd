//! `berth/v1 Registry` validation (also run on hosts.toml files).

use super::Issues;
use crate::parse::tree::join_key;
use crate::reference::validate_domain;
use crate::types::{Registry, RegistryHost};

pub(super) fn validate_registry(registry: &Registry, issues: &mut Issues) {
    let host = registry.host();
    if host != "_default"
        && let Err(why) = validate_domain(host)
    {
        issues.error(
                "metadata.name",
                format!("a Registry's name is the registry host it configures (`docker.io`, `registry.local:5000`, `_default`): {why}"),
            );
    }
    if registry.metadata.namespace.is_some() {
        issues.error_at_key(
            "metadata.namespace",
            "Registry objects are not namespaced; remove metadata.namespace",
        );
    }
    if let Some(server) = &registry.spec.server {
        // An empty server URL means "the host itself" (hosts.toml with only
        // top-level settings).
        validate_host("spec.server", server, !server.url.is_empty(), issues);
    }
    for (i, host) in registry.spec.hosts.iter().enumerate() {
        validate_host(&format!("spec.hosts[{i}]"), host, true, issues);
    }
}

fn validate_host(path: &str, host: &RegistryHost, check_url: bool, issues: &mut Issues) {
    if check_url && let Err(why) = url(&host.url, &["http", "https"]) {
        issues.error(
            format!("{path}.url"),
            format!("registry URL `{}` is not valid: {why}", host.url),
        );
    }
    if let Some(capabilities) = &host.capabilities
        && capabilities.is_empty()
    {
        issues.error(
            format!("{path}.capabilities"),
            "capabilities is empty: this host could do nothing; list pull, resolve or push",
        );
    }
    for (i, ca) in host.ca.iter().enumerate() {
        if ca.is_empty() {
            issues.error(format!("{path}.ca[{i}]"), "a CA path must not be empty");
        }
    }
    for (i, client) in host.client.iter().enumerate() {
        if client.cert.is_empty() {
            issues.error(
                format!("{path}.client[{i}]"),
                "a client certificate path must not be empty",
            );
        }
    }
    for (name, values) in &host.header {
        let header_path = join_key(&format!("{path}.header"), name);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            issues.error_at_key(
                header_path.clone(),
                format!("`{name}` is not a valid HTTP header name"),
            );
        }
        if values
            .iter()
            .any(|v| v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0))
        {
            issues.error(
                header_path,
                format!("header `{name}` has a value with a line break or NUL"),
            );
        }
    }
    if let Some(timeout) = &host.dial_timeout
        && let Err(why) = crate::duration::parse_go(timeout)
    {
        issues.error(format!("{path}.dialTimeout"), format!("dialTimeout: {why}"));
    }
    if let Some(proxy) = &host.proxy
        && let Err(why) = url(proxy, &["http", "https", "socks5", "socks5h"])
    {
        issues.error(
            format!("{path}.proxy"),
            format!("proxy `{proxy}` is not valid: {why}"),
        );
    }
}

/// `scheme://host[:port][/path]` with one of `schemes`.
fn url(text: &str, schemes: &[&str]) -> Result<(), String> {
    let (scheme, rest) = text.split_once("://").ok_or_else(|| {
        format!(
            "expected scheme://host[:port] with scheme {}",
            schemes.join(" or ")
        )
    })?;

    if !schemes.contains(&scheme) {
        return Err(format!(
            "scheme `{scheme}` is not one of {}",
            schemes.join(", ")
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials do not belong in the URL".into());
    }
    validate_domain(authority)
}

/// HTTP token characters (RFC 9110).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
