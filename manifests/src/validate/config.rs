//! `v1 ConfigMap` and `v1 Secret` validation.

use super::{Issues, validate_metadata};
use crate::names;
use crate::parse::tree::join_key;
use crate::types::config::decode_base64;
use crate::types::{ConfigMap, Secret};

/// The API server's limit on a ConfigMap or Secret.
const MAX_DATA_BYTES: usize = 1024 * 1024;

pub(super) fn validate_config_map(config_map: &ConfigMap, issues: &mut Issues) {
    validate_metadata(&config_map.metadata, "ConfigMap", true, issues);
    let mut total = 0;
    for (key, value) in &config_map.data {
        key_name(&join_key("data", key), key, issues);
        total += value.len();
    }
    for (key, value) in &config_map.binary_data {
        let path = join_key("binaryData", key);
        key_name(&path, key, issues);
        if config_map.data.contains_key(key) {
            issues.error_at_key(
                path.clone(),
                format!("key `{key}` is in both data and binaryData"),
            );
        }
        match decode_base64(value) {
            Ok(bytes) => total += bytes.len(),
            Err(err) => issues.error(
                path,
                format!("binaryData `{key}` is not valid base64: {err}"),
            ),
        }
    }
    if total > MAX_DATA_BYTES {
        issues.error_at_key(
            "data",
            format!("ConfigMap holds {total} bytes, over the 1 MiB limit"),
        );
    }
}

pub(super) fn validate_secret(secret: &Secret, issues: &mut Issues) {
    validate_metadata(&secret.metadata, "Secret", true, issues);
    let mut total = 0;
    for (key, value) in &secret.data {
        let path = join_key("data", key);
        key_name(&path, key, issues);
        // Never quote the value: it is a secret.
        match decode_base64(value) {
            Ok(bytes) => total += bytes.len(),
            // The decoder's error would quote a character of the secret.
            Err(_) => issues.error(
                path,
                format!(
                    "data `{key}` is not valid base64; put plain text under stringData instead"
                ),
            ),
        }
    }
    for (key, value) in &secret.string_data {
        key_name(&join_key("stringData", key), key, issues);
        total += value.len();
    }
    if total > MAX_DATA_BYTES {
        issues.error_at_key(
            "data",
            format!("Secret holds {total} bytes, over the 1 MiB limit"),
        );
    }
    let required: &[&str] = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => &[".dockerconfigjson"],
        Some("kubernetes.io/dockercfg") => &[".dockercfg"],
        Some("kubernetes.io/tls") => &["tls.crt", "tls.key"],
        Some("kubernetes.io/basic-auth") | Some(_) | None => &[],
    };
    if secret.type_.as_deref() == Some("kubernetes.io/dockerconfigjson") {
        docker_config(secret, issues);
    }
    for key in required {
        if !secret.data.contains_key(*key) && !secret.string_data.contains_key(*key) {
            let type_ = secret.type_.as_deref().unwrap_or_default();
            issues.error(
                "type",
                format!("a Secret of type `{type_}` needs the key `{key}`"),
            );
        }
    }
    if secret.type_.as_deref() == Some("") {
        issues.error("type", "type must not be empty; leave it out for `Opaque`");
    }
}

/// `.dockerconfigjson` must be a docker config with `auths`, or pulls
/// would fail much later. Messages never quote the content.
fn docker_config(secret: &Secret, issues: &mut Issues) {
    let (path, bytes) = if let Some(text) = secret.string_data.get(".dockerconfigjson") {
        (
            join_key("stringData", ".dockerconfigjson"),
            text.clone().into_bytes(),
        )
    } else if let Some(encoded) = secret.data.get(".dockerconfigjson") {
        match decode_base64(encoded) {
            Ok(bytes) => (join_key("data", ".dockerconfigjson"), bytes),
            Err(_) => return, // reported as bad base64 already
        }
    } else {
        return;
    };
    let has_auths = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .is_some_and(|config| {
            config
                .get("auths")
                .is_some_and(serde_json::Value::is_object)
        });
    if !has_auths {
        issues.error(
            path,
            "`.dockerconfigjson` must be a JSON docker config with an `auths` object (as `kubectl create secret docker-registry` writes)",
        );
    }
}

fn key_name(path: &str, key: &str, issues: &mut Issues) {
    if let Err(why) = names::config_key(key) {
        issues.error_at_key(path, format!("key `{key}` is not valid: {why}"));
    }
}
