//! JSON Schemas of the kinds, generated from the Rust types. `berth schema`
//! writes them; `schemas/` in the repository is their checked-in output.

use schemars::JsonSchema;
use serde_json::Value;

use crate::object::Kind;
use crate::types::{ConfigMap, Image, Pod, Registry, Secret};

/// The file name `berth schema` writes for a kind (`pod.json`).
pub fn file_name(kind: Kind) -> String {
    format!("{}.json", kind.as_str().to_lowercase())
}

/// The JSON Schema (draft 2020-12) of one kind.
pub fn schema_for(kind: Kind) -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
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
