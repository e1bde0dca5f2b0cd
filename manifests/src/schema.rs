//! JSON Schemas of the kinds, generated from the Rust types. `berth schema`
//! writes them; `schemas/` in the repository is their checked-in output.
//!
//! Published schemas are draft-07 (what yaml-language-server and most
//! editors support) and strict: every object has `additionalProperties:
//! false`, so an editor flags a misspelt field. Kubernetes fields berth
//! ignores are listed as accepted properties with a description saying so,
//! matching what `berth validate` does (a warning, not an error).

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde_json::{Value, json};

use crate::fields::table::FieldTable;
use crate::object::Kind;
use crate::types::{ConfigMap, Image, Pod, Registry, Secret};

/// The file name `berth schema` writes for a kind (`pod.json`).
pub fn file_name(kind: Kind) -> String {
    format!("{}.json", kind.as_str().to_lowercase())
}

/// The published JSON Schema of one kind.
pub fn schema_for(kind: Kind) -> Value {
    let mut schema = type_schema(kind);
    let ignored = crate::fields::kubernetes_table(kind);
    make_strict(&mut schema, ignored);
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "title".into(),
            json!(format!("berth {} {kind}", kind.api_version())),
        );
    }
    schema
}

/// The schema of the Rust type alone: what berth implements.
pub(crate) fn type_schema(kind: Kind) -> Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = match kind {
        Kind::Pod => generate::<Pod>(generator),
        Kind::ConfigMap => generate::<ConfigMap>(generator),
        Kind::Secret => generate::<Secret>(generator),
        Kind::Image => generate::<Image>(generator),
        Kind::Registry => generate::<Registry>(generator),
    };
    schema.to_value()
}

fn generate<T: JsonSchema>(mut generator: schemars::SchemaGenerator) -> schemars::Schema {
    generator.root_schema_for::<T>()
}

/// Every kind's schema with its file name, as `berth schema --out` writes them.
pub fn all_schemas() -> Vec<(String, Value)> {
    Kind::ALL
        .into_iter()
        .map(|kind| (file_name(kind), schema_for(kind)))
        .collect()
}

/// The exact bytes written for a schema: pretty JSON and a final newline.
pub fn render(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a JSON value always serialises");
    text.push('\n');
    text
}

const DEFINITIONS: &str = "definitions";

/// Adds the Kubernetes-only fields of each object as documented, accepted
/// properties and closes every object with `additionalProperties: false`.
fn make_strict(schema: &mut Value, kubernetes: &FieldTable) {
    // Definitions are shared (Container serves containers[] and
    // initContainers[]), so first learn which field paths each one serves.
    let mut paths_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    collect_definition_paths(schema, schema, "", &mut paths_of, 0);

    let root_paths = BTreeSet::from([String::new()]);
    close_object(schema, &root_paths, kubernetes);
    if let Some(definitions) = schema.get_mut(DEFINITIONS).and_then(Value::as_object_mut) {
        for (name, definition) in definitions.iter_mut() {
            let paths = paths_of.get(name).cloned().unwrap_or_default();
            close_object(definition, &paths, kubernetes);
        }
    }
}

fn close_object(object: &mut Value, paths: &BTreeSet<String>, kubernetes: &FieldTable) {
    let Some(properties) = object.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for path in paths {
        for name in kubernetes.children(path) {
            if !properties.contains_key(name) {
                properties.insert(
                    name.to_owned(),
                    json!({ "description": "A Kubernetes field that berth accepts with a warning and ignores." }),
                );
            }
        }
    }
    properties.sort_keys();
    if let Some(map) = object.as_object_mut() {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
}

fn collect_definition_paths(
    root: &Value,
    schema: &Value,
    path: &str,
    paths_of: &mut BTreeMap<String, BTreeSet<String>>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(&format!("#/{DEFINITIONS}/")))
    {
        paths_of
            .entry(name.to_owned())
            .or_default()
            .insert(path.to_owned());
        if let Some(target) = root.get(DEFINITIONS).and_then(|d| d.get(name)) {
            collect_definition_paths(root, target, path, paths_of, depth + 1);
        }
        return;
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            collect_definition_paths(root, child, &child_path, paths_of, depth + 1);
        }
    }
    if let Some(items) = schema.get("items") {
        collect_definition_paths(root, items, &format!("{path}[]"), paths_of, depth + 1);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        collect_definition_paths(root, values, &format!("{path}{{}}"), paths_of, depth + 1);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect_definition_paths(root, sub, path, paths_of, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_schemas_are_closed_and_list_ignored_kubernetes_fields() {
        let pod = schema_for(Kind::Pod);
        assert_eq!(pod["additionalProperties"], json!(false));
        assert!(
            pod["properties"]["status"].is_object(),
            "status is accepted"
        );
        let spec = &pod[DEFINITIONS]["PodSpec"];
        assert_eq!(spec["additionalProperties"], json!(false));
        assert!(
            spec["properties"]["activeDeadlineSeconds"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("ignores"))
        );
        let container = &pod[DEFINITIONS]["Container"];
        assert!(container["properties"]["terminationMessagePath"].is_object());
        assert!(container["properties"]["imagePulPolicy"].is_null());

        let registry = schema_for(Kind::Registry);
        assert_eq!(
            registry[DEFINITIONS]["RegistryHost"]["additionalProperties"],
            json!(false)
        );
    }
}
