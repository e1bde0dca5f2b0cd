//! A set of known field paths, extracted from a JSON Schema.
//!
//! Paths are generic: `spec.containers[].name` (any list item),
//! `metadata.labels{}` (any map value). A schema that is an object with
//! neither properties nor a value schema is "open": anything goes below it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

#[derive(Debug, Default, Clone)]
pub struct FieldTable {
    /// Every field path, including `[]` items and `{}` map values.
    paths: BTreeSet<String>,
    /// Paths below which anything is accepted.
    open: BTreeSet<String>,
    /// Field names below each object path, for suggestions.
    children: BTreeMap<String, BTreeSet<String>>,
    /// JSON types each path accepts (`string`, `integer`, `boolean`, …).
    types: BTreeMap<String, BTreeSet<String>>,
}

impl FieldTable {
    /// Builds the table from a schema, following local `$ref`s into `$defs`
    /// or `definitions`.
    pub fn from_schema(schema: &Value) -> Self {
        let mut table = Self::default();
        table.walk(schema, schema, "", 0);
        table
    }

    /// Builds the table from lines written by [`FieldTable::to_lines`].
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut table = Self::default();
        for line in lines {
            match line.strip_suffix(" *") {
                Some(open) => {
                    table.open.insert(open.to_owned());
                }
                None => table.insert(line),
            }
        }
        table
    }

    /// One path per line; open paths end in ` *`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn to_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.paths.iter().cloned().collect();
        lines.extend(self.open.iter().map(|p| format!("{p} *")));
        lines.sort();
        lines
    }

    /// True when `path` takes only non-text scalars (booleans or numbers),
    /// so a quoted string there is a mistake the API server rejects.
    pub fn rejects_text(&self, path: &str) -> bool {
        self.types.get(path).is_some_and(|types| {
            !types.is_empty()
                && types
                    .iter()
                    .all(|t| matches!(t.as_str(), "boolean" | "integer" | "number" | "null"))
        })
    }

    /// The JSON types `path` accepts, for messages.
    pub fn types(&self, path: &str) -> impl Iterator<Item = &str> {
        self.types
            .get(path)
            .into_iter()
            .flat_map(|t| t.iter().map(String::as_str))
            .filter(|t| *t != "null")
    }

    pub fn contains(&self, path: &str) -> bool {
        self.paths.contains(path)
    }

    pub fn is_open(&self, path: &str) -> bool {
        self.open.contains(path)
    }

    /// True when `path` is a mapping whose keys are free (`labels`, `data`).
    pub fn is_map(&self, path: &str) -> bool {
        self.paths.contains(&format!("{path}{{}}"))
    }

    /// True when `path` is an object with named fields.
    pub fn is_object(&self, path: &str) -> bool {
        self.children.contains_key(path)
    }

    pub fn children(&self, path: &str) -> impl Iterator<Item = &str> {
        self.children
            .get(path)
            .into_iter()
            .flat_map(|names| names.iter().map(String::as_str))
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }

    fn insert(&mut self, path: &str) {
        if let Some((parent, name)) = split_last_field(path) {
            self.children
                .entry(parent.to_owned())
                .or_default()
                .insert(name.to_owned());
        }
        self.paths.insert(path.to_owned());
    }

    fn walk(&mut self, root: &Value, schema: &Value, path: &str, depth: usize) {
        // Our schemas are not recursive and Kubernetes' are inlined, but a
        // cap keeps a recursive schema from looping.
        if depth > 64 {
            return;
        }
        let schema = resolve_ref(root, schema);
        let mut described = false;
        match schema.get("type") {
            Some(Value::String(t)) => {
                self.types
                    .entry(path.to_owned())
                    .or_default()
                    .insert(t.clone());
            }
            Some(Value::Array(types)) => {
                let entry = self.types.entry(path.to_owned()).or_default();
                entry.extend(types.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {
                // No type: anything goes (e.g. an enum of strings without a
                // `type`), so record "string" to never reject text here.
                if schema.get("enum").is_some() || schema.get("const").is_some() {
                    self.types
                        .entry(path.to_owned())
                        .or_default()
                        .insert("string".into());
                }
            }
        }

        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            described = true;
            for (name, child) in properties {
                let child_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                self.insert(&child_path);
                self.walk(root, child, &child_path, depth + 1);
            }
        }
        if let Some(items) = schema.get("items") {
            described = true;
            let item_path = format!("{path}[]");
            self.paths.insert(item_path.clone());
            self.walk(root, items, &item_path, depth + 1);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            described = true;
            let value_path = format!("{path}{{}}");
            self.paths.insert(value_path.clone());
            self.walk(root, values, &value_path, depth + 1);
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            for sub in schema
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                described = true;
                self.walk(root, sub, path, depth + 1);
            }
        }
        if !described && is_object_type(schema) && !path.is_empty() {
            self.open.insert(path.to_owned());
        }
    }
}

fn resolve_ref<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    for _ in 0..16 {
        let Some(pointer) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        else {
            break;
        };
        match root.pointer(pointer) {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

fn is_object_type(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
        _ => false,
    }
}

/// `spec.containers[].name` → (`spec.containers[]`, `name`).
fn split_last_field(path: &str) -> Option<(&str, &str)> {
    if path.ends_with(']') || path.ends_with('}') {
        return None;
    }
    match path.rsplit_once('.') {
        Some((parent, name)) => Some((parent, name)),
        None if !path.contains(['[', '{']) => Some(("", path)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_properties_items_maps_and_refs() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "metadata": { "$ref": "#/$defs/Meta" },
                "spec": { "type": "object", "properties": {
                    "containers": { "type": "array", "items": { "type": "object", "properties": { "name": {"type": "string"} } } },
                    "anything": { "type": "object" }
                } }
            },
            "$defs": { "Meta": { "type": "object", "properties": {
                "labels": { "type": "object", "additionalProperties": { "type": "string" } }
            } } }
        });
        let table = FieldTable::from_schema(&schema);
        assert!(table.contains("spec.containers[].name"));
        assert!(table.is_map("metadata.labels"));
        assert!(table.is_object("spec"));
        assert!(table.is_object("spec.containers[]"));
        assert!(table.is_open("spec.anything"));
        assert_eq!(table.children("").collect::<Vec<_>>(), ["metadata", "spec"]);
        let round_trip = FieldTable::from_lines(table.to_lines().iter().map(String::as_str));
        assert_eq!(round_trip.to_lines(), table.to_lines());
        assert!(round_trip.is_object("spec.containers[]"));
    }
}
