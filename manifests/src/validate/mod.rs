//! Semantic validation of typed objects: names, references, quantities,
//! duplicates, cross-references. Each problem is an [`Issue`] at a field
//! path; the parser turns paths into line:column through the document's
//! position index.

use crate::diag::Severity;
use crate::names;
use crate::object::Object;
use crate::types::{KeyToPath, ObjectMeta, Quantity};

mod config;
mod image;
mod placement;
mod pod;
mod pod_security;
mod projection;
mod registry;

/// One problem at one field path (`spec.containers[0].image`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub severity: Severity,
    pub path: String,
    /// Point at the key (`image:`) rather than the value.
    pub at_key: bool,
    pub message: String,
}

impl Issue {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            path: path.into(),
            at_key: false,
            message: message.into(),
        }
    }

    pub fn error_at_key(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            at_key: true,
            ..Self::error(path, message)
        }
    }

    pub fn warning_at_key(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            at_key: true,
            ..Self::error(path, message)
        }
    }
}

/// The issues found so far.
pub(crate) struct Issues {
    pub list: Vec<Issue>,
}

impl Issues {
    pub fn new() -> Self {
        Self { list: Vec::new() }
    }

    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Issue::error(path, message));
    }

    pub fn error_at_key(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Issue::error_at_key(path, message));
    }

    pub fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Issue {
            severity: Severity::Warning,
            ..Issue::error(path, message)
        });
    }

    /// Records `check(value)`'s complaint about `what` at `path`.
    pub fn check(
        &mut self,
        path: &str,
        what: &str,
        value: &str,
        check: fn(&str) -> Result<(), String>,
    ) {
        if let Err(why) = check(value) {
            self.error(path, format!("{what} `{value}` is not valid: {why}"));
        }
    }
}

/// Validates an object that deserialized cleanly.
pub(crate) fn validate(object: &Object) -> Vec<Issue> {
    let mut issues = Issues::new();
    match object {
        Object::Pod(pod) => pod::validate_pod(pod, &mut issues),
        Object::ConfigMap(config_map) => config::validate_config_map(config_map, &mut issues),
        Object::Secret(secret) => config::validate_secret(secret, &mut issues),
        Object::Image(image) => image::validate_image(image, &mut issues),
        Object::Registry(registry) => registry::validate_registry(registry, &mut issues),
    }
    issues.list
}

/// Name, namespace, labels and annotations. `what` names the object in
/// messages; Image and Registry pass `namespaced = false`.
fn validate_metadata(meta: &ObjectMeta, what: &str, namespaced: bool, issues: &mut Issues) {
    issues.check(
        "metadata.name",
        &format!("{what} name"),
        &meta.name,
        names::dns1123_subdomain,
    );
    match (&meta.namespace, namespaced) {
        (Some(ns), true) => {
            issues.check("metadata.namespace", "namespace", ns, names::dns1123_label)
        }
        (Some(_), false) => issues.error_at_key(
            "metadata.namespace",
            format!("{what} objects are not namespaced; remove metadata.namespace"),
        ),
        (None, _) => {}
    }
    for (key, value) in &meta.labels {
        let path = crate::parse::tree::join_key("metadata.labels", key);
        if let Err(why) = names::qualified_name(key) {
            issues.error_at_key(
                path.clone(),
                format!("label key `{key}` is not valid: {why}"),
            );
        }
        if let Err(why) = names::label_value(value) {
            issues.error(path, format!("label value `{value}` is not valid: {why}"));
        }
    }
    for key in meta.annotations.keys() {
        if let Err(why) = names::qualified_name(key) {
            let path = crate::parse::tree::join_key("metadata.annotations", key);
            issues.error_at_key(path, format!("annotation key `{key}` is not valid: {why}"));
        }
    }
    for finding in crate::annotations::check(meta, what, what == "pod") {
        issues.list.push(Issue {
            severity: if finding.is_error {
                Severity::Error
            } else {
                Severity::Warning
            },
            path: crate::parse::tree::join_key("metadata.annotations", &finding.key),
            at_key: finding.at_key,
            message: finding.message,
        });
    }
}

fn absolute_path(path: &str, what: &str, value: &str, issues: &mut Issues) {
    if !value.starts_with('/') {
        issues.error(path, format!("{what} `{value}` must be an absolute path"));
    } else if value.contains('\0') {
        issues.error(path, format!("{what} must not contain a NUL byte"));
    }
}

/// A path inside a volume: relative and without `..` components.
fn relative_path(path: &str, what: &str, value: &str, issues: &mut Issues) {
    if value.starts_with('/') {
        issues.error(path, format!("{what} `{value}` must be a relative path"));
    } else if value.split('/').any(|c| c == "..") {
        issues.error(path, format!("{what} `{value}` must not contain `..`"));
    } else if value.contains('\0') {
        issues.error(path, format!("{what} must not contain a NUL byte"));
    }
}

/// Parses a quantity, reporting why it does not parse or is negative.
fn quantity(path: &str, quantity: &Quantity, issues: &mut Issues) -> Option<i128> {
    match quantity.amount() {
        Ok(value) => Some(value.millis()),
        Err(err) => {
            issues.error(path, err.to_string());
            None
        }
    }
}

/// configMap/secret volume `items` and file modes.
fn key_to_paths(path: &str, items: &[KeyToPath], default_mode: Option<i32>, issues: &mut Issues) {
    file_mode(&format!("{path}.defaultMode"), default_mode, issues);
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}.items[{i}]");
        issues.check(
            &format!("{item_path}.key"),
            "key",
            &item.key,
            names::config_key,
        );
        relative_path(&format!("{item_path}.path"), "path", &item.path, issues);
        if item.path.is_empty() {
            issues.error(format!("{item_path}.path"), "path must not be empty");
        }
        file_mode(&format!("{item_path}.mode"), item.mode, issues);
    }
}

fn file_mode(path: &str, mode: Option<i32>, issues: &mut Issues) {
    if let Some(mode) = mode
        && !(0..=0o777).contains(&mode)
    {
        issues.error(
            path,
            format!("file mode 0{mode:o} ({mode}) is not between 0 and 0777"),
        );
    }
}

fn capability(name: &str) -> Result<(), String> {
    names::capability(name).map(drop)
}
