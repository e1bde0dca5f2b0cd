//! `v1 ConfigMap` and `v1 Secret`: data for env and volumes.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{ApiV1, ConfigMapKind, ObjectMeta, SecretKind};
use super::serde_helpers::null_as_default;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    pub api_version: ApiV1,
    pub kind: ConfigMapKind,
    pub metadata: ObjectMeta,
    /// UTF-8 values by key. Keys are file names: `[-._a-zA-Z0-9]+`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub data: BTreeMap<String, String>,
    /// Base64-encoded binary values by key; keys must not repeat `data`'s.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl ConfigMap {
    /// Every key with its bytes (`data` as UTF-8, `binaryData` decoded).
    /// Validation guarantees `binaryData` decodes; a value that does not is
    /// left out.
    pub fn contents(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (key, encoded) in &self.binary_data {
            if let Ok(bytes) = decode_base64(encoded) {
                out.insert(key.clone(), bytes);
            }
        }
        out
    }
}

/// Secret values. `Debug` never prints them, so a secret logged by mistake
/// shows only its keys.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub api_version: ApiV1,
    pub kind: SecretKind,
    pub metadata: ObjectMeta,
    /// `Opaque` (default), `kubernetes.io/dockerconfigjson`, `kubernetes.io/tls`, …
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Base64-encoded values by key.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub data: BTreeMap<String, String>,
    /// Plain-text values by key; they win over `data` for the same key.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl Secret {
    /// Every key with its decoded bytes (`stringData` over `data`, as the
    /// API server merges them). Validation guarantees `data` decodes.
    pub fn contents(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = self
            .data
            .iter()
            .filter_map(|(k, v)| decode_base64(v).ok().map(|bytes| (k.clone(), bytes)))
            .collect();
        for (key, value) in &self.string_data {
            out.insert(key.clone(), value.clone().into_bytes());
        }
        out
    }

    /// A copy safe to print: every value replaced by `<redacted>`.
    pub fn redacted(&self) -> Secret {
        let hide = |map: &BTreeMap<String, String>| {
            map.keys()
                .map(|k| (k.clone(), "<redacted>".to_owned()))
                .collect()
        };
        Secret {
            data: hide(&self.data),
            string_data: hide(&self.string_data),
            ..self.clone()
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("metadata", &self.metadata)
            .field("type", &self.type_)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .field(
                "string_data_keys",
                &self.string_data.keys().collect::<Vec<_>>(),
            )
            .field("immutable", &self.immutable)
            .finish()
    }
}

/// Standard base64 with padding, as Kubernetes encodes `data`. Line breaks
/// (from YAML folding or `base64` without `-w0`) are ignored.
pub(crate) fn decode_base64(encoded: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}
