//! `downwardAPI` and `projected` volumes: file paths, field paths,
//! resource fields and sources a node can fill without an API server.

use std::collections::{HashMap, HashSet};

use super::{Issues, file_mode, key_to_paths, quantity, relative_path};
use crate::field_path;
use crate::names;
use crate::types::{DownwardApiVolumeFile, KeyToPath, ProjectedVolumeSource, Volume};

/// The checks of a `downwardAPI` or `projected` volume at `path`
/// (`spec.volumes[0]`); `containers` are the pod's container names.
pub(super) fn validate(
    path: &str,
    volume: &Volume,
    containers: &HashSet<&str>,
    issues: &mut Issues,
) {
    if let Some(downward) = &volume.downward_api {
        let at = format!("{path}.downwardAPI");
        file_mode(&format!("{at}.defaultMode"), downward.default_mode, issues);
        let mut paths = HashMap::new();
        downward_files(&at, &downward.items, containers, &mut paths, issues);
    }
    if let Some(projected) = &volume.projected {
        validate_projected(&format!("{path}.projected"), projected, containers, issues);
    }
}

fn validate_projected(
    at: &str,
    projected: &ProjectedVolumeSource,
    containers: &HashSet<&str>,
    issues: &mut Issues,
) {
    file_mode(&format!("{at}.defaultMode"), projected.default_mode, issues);
    // Two sources writing one path would make the file depend on order.
    let mut paths: HashMap<String, String> = HashMap::new();
    for (i, source) in projected.sources.iter().enumerate() {
        let source_at = format!("{at}.sources[{i}]");
        let given = [
            source.config_map.is_some(),
            source.secret.is_some(),
            source.downward_api.is_some(),
            source.service_account_token.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => issues.error_at_key(
                &source_at,
                "a projected source needs one of configMap, secret, downwardAPI",
            ),
            1 => {}
            _ => issues.error_at_key(
                &source_at,
                "a projected source has more than one kind; give exactly one",
            ),
        }
        let key_sources = [
            (
                "configMap",
                "ConfigMap",
                source.config_map.as_ref().map(|c| (&c.name, &c.items)),
            ),
            (
                "secret",
                "Secret",
                source.secret.as_ref().map(|s| (&s.name, &s.items)),
            ),
        ];
        for (field, kind, given) in key_sources {
            let Some((name, items)) = given else { continue };
            let at = format!("{source_at}.{field}");
            issues.check(
                &format!("{at}.name"),
                &format!("{kind} name"),
                name,
                names::dns1123_subdomain,
            );
            key_to_paths(&at, items, None, issues);
            item_paths(&at, items, &mut paths, issues);
        }
        if let Some(downward) = &source.downward_api {
            let at = format!("{source_at}.downwardAPI");
            downward_files(&at, &downward.items, containers, &mut paths, issues);
        }
        if source.service_account_token.is_some() {
            issues.error_at_key(
                format!("{source_at}.serviceAccountToken"),
                "serviceAccountToken cannot be projected: berth has no API server to issue a token; put a token in a Secret and project the secret",
            );
        }
    }
}

fn item_paths(
    at: &str,
    items: &[KeyToPath],
    paths: &mut HashMap<String, String>,
    issues: &mut Issues,
) {
    for (i, item) in items.iter().enumerate() {
        claim(&format!("{at}.items[{i}].path"), &item.path, paths, issues);
    }
}

/// Records that `file` is written by `at`; a second writer is an error.
fn claim(at: &str, file: &str, paths: &mut HashMap<String, String>, issues: &mut Issues) {
    if let Some(first) = paths.insert(file.to_string(), at.to_string()) {
        issues.error(at, format!("path `{file}` is already written by {first}"));
    }
}

fn downward_files(
    at: &str,
    items: &[DownwardApiVolumeFile],
    containers: &HashSet<&str>,
    paths: &mut HashMap<String, String>,
    issues: &mut Issues,
) {
    for (i, item) in items.iter().enumerate() {
        let item_at = format!("{at}.items[{i}]");
        relative_path(&format!("{item_at}.path"), "path", &item.path, issues);
        if item.path.is_empty() {
            issues.error(format!("{item_at}.path"), "path must not be empty");
        } else if item.path.starts_with("..") {
            issues.error(
                format!("{item_at}.path"),
                format!("path `{}` must not start with `..`", item.path),
            );
        }
        claim(&format!("{item_at}.path"), &item.path, paths, issues);
        file_mode(&format!("{item_at}.mode"), item.mode, issues);
        match (&item.field_ref, &item.resource_field_ref) {
            (Some(field), None) => {
                if let Err(why) = field_path::parse_volume_field(&field.field_path) {
                    issues.error(format!("{item_at}.fieldRef.fieldPath"), why);
                }
            }
            (None, Some(resource)) => {
                let at = format!("{item_at}.resourceFieldRef");
                if let Err(why) = field_path::parse_resource_field(&resource.resource) {
                    issues.error(format!("{at}.resource"), why);
                }
                match resource.container_name.as_deref() {
                    None | Some("") => {
                        issues.error_at_key(&at, "resourceFieldRef in a volume needs containerName")
                    }
                    Some(name) if !containers.contains(name) => issues.error(
                        format!("{at}.containerName"),
                        format!("the pod has no container `{name}`"),
                    ),
                    Some(_) => {}
                }
                if let Some(divisor) = &resource.divisor
                    && let Some(millis) = quantity(&format!("{at}.divisor"), divisor, issues)
                    && millis <= 0
                {
                    issues.error(format!("{at}.divisor"), "divisor must be positive");
                }
            }
            _ => issues.error_at_key(
                &item_at,
                "a downwardAPI file needs exactly one of fieldRef, resourceFieldRef",
            ),
        }
    }
}
