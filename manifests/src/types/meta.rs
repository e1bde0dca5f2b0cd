use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::serde_helpers::null_as_default;

/// `apiVersion: v1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiV1 {
    #[default]
    #[serde(rename = "v1")]
    V1,
}

/// `apiVersion: berth/v1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BerthV1 {
    #[default]
    #[serde(rename = "berth/v1")]
    V1,
}

/// The subset of Kubernetes' ObjectMeta that berth uses. Other metadata
/// (`creationTimestamp`, `uid`, `ownerReferences`, …) is accepted with a
/// warning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The object's name: a DNS-1123 subdomain for Pod, ConfigMap, Secret and
    /// Image; the configured registry host for Registry.
    pub name: String,
    /// Namespace of Pod, ConfigMap and Secret; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// A metadata block with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// The namespace, `default` when none is given (as kubectl does).
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A one-value enum per kind, so `kind: Pod` round-trips and the JSON Schema
/// pins it.
macro_rules! kind_marker {
    ($name:ident, $value:literal) => {
        #[doc = concat!("`kind: ", $value, "`.")]
        #[derive(
            Debug,
            Clone,
            Copy,
            Default,
            PartialEq,
            Eq,
            serde::Serialize,
            serde::Deserialize,
            schemars::JsonSchema,
        )]
        pub enum $name {
            #[default]
            #[serde(rename = $value)]
            Kind,
        }
    };
}

kind_marker!(PodKind, "Pod");
kind_marker!(ConfigMapKind, "ConfigMap");
kind_marker!(SecretKind, "Secret");
kind_marker!(ImageKind, "Image");
kind_marker!(RegistryKind, "Registry");
