//! Semantic validation of typed objects: names, references, quantities,
//! duplicates, cross-references. Each problem is an [`Issue`] at a field
//! path; the parser turns paths into line:column through the document's
//! position index.

use crate::diag::Severity;
use crate::object::Object;

mod pod;

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

/// Collects issues under a path prefix.
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
        Object::ConfigMap(_) | Object::Secret(_) | Object::Image(_) | Object::Registry(_) => {}
    }
    issues.list
}
