//! Field checks: every mapping key in a document is either a field berth
//! implements, a Kubernetes field berth ignores (a warning naming it), or
//! unknown (an error with a "did you mean" suggestion).
//!
//! What berth implements comes from the JSON Schema of its own types, so the
//! check cannot drift from the types. What Kubernetes has comes from
//! `k8s_fields.txt`, generated from the upstream v1.31 schemas
//! (`tests/fixtures/k8s-schema/`); a test regenerates it and fails when it
//! is stale.

mod ignored;
mod suggest;
pub(crate) mod table;

use std::sync::OnceLock;

use crate::object::Kind;
use crate::parse::tree::{Node, Scalar, Value, join_key};
use crate::validate::Issue;

pub use suggest::did_you_mean;
use table::FieldTable;

/// Kubernetes field paths by kind: `Kind<TAB>path` per line.
const K8S_FIELDS: &str = include_str!("k8s_fields.txt");

struct Tables {
    ours: FieldTable,
    k8s: FieldTable,
}

fn tables(kind: Kind) -> &'static Tables {
    static TABLES: OnceLock<Vec<(Kind, Tables)>> = OnceLock::new();
    let all = TABLES.get_or_init(|| {
        Kind::ALL
            .into_iter()
            .map(|kind| {
                let ours = FieldTable::from_schema(&crate::schema::type_schema(kind));
                let k8s = FieldTable::from_lines(
                    K8S_FIELDS
                        .lines()
                        .filter_map(|line| line.split_once('\t'))
                        .filter(|(k, _)| *k == kind.as_str())
                        .map(|(_, path)| path),
                );
                (kind, Tables { ours, k8s })
            })
            .collect()
    });
    let (_, tables) = all
        .iter()
        .find(|(k, _)| *k == kind)
        .expect("a table exists for every kind");
    tables
}

/// Kubernetes' fields for `kind` (empty for berth's own kinds).
pub(crate) fn kubernetes_table(kind: Kind) -> &'static FieldTable {
    &tables(kind).k8s
}

/// Where a subtree's fields are checked against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// berth's own fields; Kubernetes-only ones warn.
    Implemented,
    /// Inside a field berth ignores: only Kubernetes' fields are valid, and
    /// the ignored field has been warned about once already.
    KubernetesOnly,
}

/// Checks every key in `root` (a document of `kind`) against the tables.
pub(crate) fn check(kind: Kind, root: &Node) -> Vec<Issue> {
    let mut issues = Vec::new();
    walk(tables(kind), root, "", "", Mode::Implemented, &mut issues);
    issues
}

fn walk(
    tables: &Tables,
    node: &Node,
    generic: &str,
    concrete: &str,
    mode: Mode,
    issues: &mut Vec<Issue>,
) {
    let table = match mode {
        Mode::Implemented => &tables.ours,
        Mode::KubernetesOnly => &tables.k8s,
    };
    match &node.value {
        // A quoted `"true"` or `"80"` where a boolean or number belongs: the
        // YAML parser would convert it, the API server rejects it. (Text
        // that is no boolean or number at all is the typed pass's error.)
        Value::Scalar(Scalar::Str(text))
            if mode == Mode::Implemented
                && table.rejects_text(generic)
                && looks_like_a_value(text) =>
        {
            let expected = match table.types(generic).next() {
                Some("boolean") => "true or false",
                _ => "a number",
            };
            issues.push(Issue::error(
                concrete,
                format!(
                    "`{concrete}` must be {expected}, not the text \"{text}\"; remove the quotes"
                ),
            ));
        }
        Value::Scalar(_) => {}

        Value::Seq(items) => {
            let item_generic = format!("{generic}[]");
            for (index, item) in items.iter().enumerate() {
                walk(
                    tables,
                    item,
                    &item_generic,
                    &format!("{concrete}[{index}]"),
                    mode,
                    issues,
                );
            }
        }
        Value::Map(entries) => {
            if table.is_open(generic) {
                return;
            }
            if table.is_map(generic) {
                let value_generic = format!("{generic}{{}}");
                for entry in entries {
                    walk(
                        tables,
                        &entry.value,
                        &value_generic,
                        &join_key(concrete, &entry.key),
                        mode,
                        issues,
                    );
                }
                return;
            }
            if !table.is_object(generic) && !generic.is_empty() {
                // A mapping where a scalar or list belongs: the typed pass
                // reports the type error.
                return;
            }
            for entry in entries {
                let child_generic = if generic.is_empty() {
                    entry.key.clone()
                } else {
                    format!("{generic}.{}", entry.key)
                };
                let child_concrete = join_key(concrete, &entry.key);
                if table.contains(&child_generic) {
                    walk(
                        tables,
                        &entry.value,
                        &child_generic,
                        &child_concrete,
                        mode,
                        issues,
                    );
                } else if mode == Mode::Implemented && tables.k8s.contains(&child_generic) {
                    let message =
                        format!("`{child_concrete}` is a Kubernetes field that berth ignores");
                    match ignored::treatment(&child_generic, &entry.value) {
                        ignored::Treatment::Silent => {}
                        ignored::Treatment::Warn(None) => {
                            issues.push(Issue::warning_at_key(&child_concrete, message));
                        }
                        ignored::Treatment::Warn(Some(why)) => {
                            issues.push(Issue::warning_at_key(
                                &child_concrete,
                                format!("{message}: {why}"),
                            ));
                        }
                    }
                    walk(
                        tables,
                        &entry.value,
                        &child_generic,
                        &child_concrete,
                        Mode::KubernetesOnly,
                        issues,
                    );
                } else {
                    issues.push(unknown_field(
                        tables,
                        mode,
                        generic,
                        concrete,
                        &entry.key,
                        &child_concrete,
                    ));
                }
            }
        }
    }
}

/// Text that unquoted would be a YAML boolean or number.
fn looks_like_a_value(text: &str) -> bool {
    matches!(text, "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
        || text.parse::<i64>().is_ok()
        || text.parse::<f64>().is_ok_and(f64::is_finite)
}

fn unknown_field(
    tables: &Tables,
    mode: Mode,
    generic: &str,
    concrete: &str,
    key: &str,
    child_concrete: &str,
) -> Issue {
    let implemented: Vec<&str> = match mode {
        Mode::Implemented => tables.ours.children(generic).collect(),
        Mode::KubernetesOnly => Vec::new(),
    };
    let kubernetes: Vec<&str> = tables.k8s.children(generic).collect();
    let suggestion = did_you_mean(key, implemented.iter().chain(&kubernetes).copied());
    let place = if concrete.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in `{concrete}`")
    };
    let message = match suggestion {
        Some(s) => format!("unknown field `{key}` {place}; did you mean `{s}`?"),
        None => {
            let mut known = implemented.clone();
            known.sort_unstable();
            if known.is_empty() || known.len() > 12 {
                format!("unknown field `{key}` {place}")
            } else {
                format!(
                    "unknown field `{key}` {place}; expected one of {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    };
    Issue::error_at_key(child_concrete, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Regenerates `k8s_fields.txt` from the vendored upstream schemas and
    /// fails when the checked-in copy differs. `UPDATE_K8S_FIELDS=1` rewrites it.
    #[test]
    fn k8s_field_table_matches_the_vendored_schemas() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/k8s-schema");
        let mut lines = Vec::new();
        for (kind, file) in [
            (Kind::Pod, "pod-v1.json"),
            (Kind::ConfigMap, "configmap-v1.json"),
            (Kind::Secret, "secret-v1.json"),
        ] {
            let text = std::fs::read_to_string(fixtures.join(file)).expect("vendored k8s schema");
            let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
            for path in FieldTable::from_schema(&schema).to_lines() {
                lines.push(format!("{kind}\t{path}"));
            }
        }
        let generated = lines.join("\n") + "\n";
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fields/k8s_fields.txt");
        if std::env::var_os("UPDATE_K8S_FIELDS").is_some() {
            std::fs::write(&target, &generated).expect("writing k8s_fields.txt");
        }
        assert!(
            generated == K8S_FIELDS,
            "{} is stale: run `UPDATE_K8S_FIELDS=1 cargo test -p manifests k8s_field_table` and commit it",
            target.display()
        );
    }

    /// Every field berth implements for a v1 kind exists in Kubernetes, so
    /// the same files apply to a cluster (catches a misspelt serde rename).
    #[test]
    fn implemented_v1_fields_are_kubernetes_fields() {
        for kind in [Kind::Pod, Kind::ConfigMap, Kind::Secret] {
            let t = tables(kind);
            let missing: Vec<&str> = t.ours.paths().filter(|p| !t.k8s.contains(p)).collect();
            assert!(
                missing.is_empty(),
                "{kind} fields unknown to Kubernetes: {missing:?}"
            );
        }
    }
}
