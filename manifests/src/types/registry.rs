//! `berth/v1 Registry`: the YAML form of one containerd `hosts.toml`.
//!
//! `metadata.name` is the registry host it configures (`docker.io`,
//! `registry.local:5000`, or `_default` for every registry without its own
//! configuration), exactly like the `certs.d/<host>/` directory name in
//! containerd. Using the host as the name makes the object key unique per
//! configured host: two sources configuring the same host is a conflict.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::meta::{BerthV1, ObjectMeta, RegistryKind};
use super::serde_helpers::{is_false, null_as_default};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    pub api_version: BerthV1,
    pub kind: RegistryKind,
    /// `name` is the configured registry host.
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: RegistrySpec,
}

impl Registry {
    /// The registry host this object configures.
    pub fn host(&self) -> &str {
        &self.metadata.name
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// The upstream, tried after every entry of `hosts`. A URL string, or a
    /// mapping with the same settings as a host entry (hosts.toml's top-level
    /// `ca`, `client`, … apply to the server). Default: the host itself
    /// (`docker.io` → `https://registry-1.docker.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "server_schema")]
    pub server: Option<RegistryHost>,
    /// Mirrors, tried in this order before `server`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<RegistryHost>,
}

/// `server` is a URL string or a host mapping.
fn server_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let host = generator.subschema_for::<RegistryHost>();
    schemars::json_schema!({
        "anyOf": [
            { "type": "string", "description": "The upstream URL, e.g. `https://registry-1.docker.io`." },
            host,
            { "type": "null" }
        ]
    })
}

/// `header` values are a string or a list of strings, as in hosts.toml.
fn header_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } }
            ]
        }
    })
}

/// One header's value(s): `x-a: one` or `x-a: [one, two]`.
struct HeaderValues(Vec<String>);

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValuesVisitor;
        impl<'de> Visitor<'de> for ValuesVisitor {
            type Value = HeaderValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value or a list of header values (strings)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderValues, E> {
                Ok(HeaderValues(vec![v.to_owned()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<HeaderValues, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(HeaderValues)
            }
        }
        deserializer.deserialize_any(ValuesVisitor)
    }
}

/// The `header` map with each value a string or a list (null: none).
fn header_values<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let map: Option<BTreeMap<String, HeaderValues>> = Option::deserialize(deserializer)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(name, values)| (name, values.0))
        .collect())
}

/// One endpoint: a mirror (`hosts` entry) or the upstream (`server`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryHost {
    /// `https://mirror.local:5000` or `http://…`; with `overridePath`, the
    /// path is the API root instead of `/v2`.
    pub url: String,
    /// What this endpoint is trusted to do; default all three. A public
    /// mirror should only `pull` (resolving tags is a trusted operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<Capability>>,
    /// CA certificate files (PEM) to trust for this endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca: Vec<String>,
    /// Client certificates for mutual TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client: Vec<ClientCert>,
    /// Do not verify the endpoint's certificate chain or host name.
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_verify: bool,
    /// Extra request headers, sent only to this endpoint: name → a value or
    /// a list of values (every one is sent, as containerd does).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "header_schema")]
    pub header: BTreeMap<String, Vec<String>>,
    /// The URL's path is the API root (registries without the `/v2` prefix).
    #[serde(default, skip_serializing_if = "is_false")]
    pub override_path: bool,
    /// Connection timeout as a Go duration (`1s`, `500ms`); default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_timeout: Option<String>,
    /// Proxy URL (`http`, `https`, `socks5`, `socks5h`) for this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

impl RegistryHost {
    /// An endpoint with default settings.
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// `capabilities`, or all of them when unset (containerd's default).
    pub fn effective_capabilities(&self) -> Vec<Capability> {
        self.capabilities
            .clone()
            .unwrap_or_else(|| vec![Capability::Pull, Capability::Resolve, Capability::Push])
    }

    pub fn can(&self, capability: Capability) -> bool {
        self.capabilities
            .as_ref()
            .is_none_or(|caps| caps.contains(&capability))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Fetch manifests and blobs by digest.
    Pull,
    /// Resolve a tag to a digest.
    Resolve,
    Push,
}

/// A client certificate and its key; a PEM holding both leaves `key` unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCert {
    pub cert: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The mapping form of a host, deserialized field by field so errors keep
/// their positions.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryHostFields {
    url: String,
    #[serde(default)]
    capabilities: Option<Vec<Capability>>,
    #[serde(default, deserialize_with = "null_as_default")]
    ca: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    client: Vec<ClientCert>,
    #[serde(default, deserialize_with = "null_as_default")]
    skip_verify: bool,
    #[serde(default, deserialize_with = "header_values")]
    header: BTreeMap<String, Vec<String>>,
    #[serde(default, deserialize_with = "null_as_default")]
    override_path: bool,
    #[serde(default)]
    dial_timeout: Option<String>,
    #[serde(default)]
    proxy: Option<String>,
}

/// A host is a mapping, or just its URL (`server: https://registry.local`).
impl<'de> Deserialize<'de> for RegistryHost {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HostVisitor;
        impl<'de> Visitor<'de> for HostVisitor {
            type Value = RegistryHost;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL or a mapping with `url`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RegistryHost, E> {
                Ok(RegistryHost::url(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RegistryHost, A::Error> {
                let f =
                    RegistryHostFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RegistryHost {
                    url: f.url,
                    capabilities: f.capabilities,
                    ca: f.ca,
                    client: f.client,
                    skip_verify: f.skip_verify,
                    header: f.header,
                    override_path: f.override_path,
                    dial_timeout: f.dial_timeout,
                    proxy: f.proxy,
                })
            }
        }
        deserializer.deserialize_any(HostVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{Object, parse_file};

    fn registry_yaml(header: &str) -> String {
        format!(
            "apiVersion: berth/v1\nkind: Registry\nmetadata: {{name: docker.io}}\nspec:\n  hosts:\n    - url: https://mirror.local\n      header:\n{header}"
        )
    }

    #[test]
    fn header_values_are_a_string_or_a_list_as_in_hosts_toml() {
        let yaml = registry_yaml("        x-a: [\"1\", \"2\"]\n        x-b: one\n");
        let parsed = parse_file(Path::new("r.yaml"), yaml.as_bytes());
        assert!(!parsed.has_errors(), "{parsed:#?}");
        let Some(Object::Registry(registry)) = parsed.objects().next() else {
            panic!("a Registry");
        };
        let header = &registry.spec.hosts[0].header;
        assert_eq!(header["x-a"], ["1", "2"]);
        assert_eq!(header["x-b"], ["one"]);
    }

    #[test]
    fn a_header_value_that_is_neither_is_an_error_at_its_position() {
        let yaml = registry_yaml("        x-a: {nested: map}\n");
        let parsed = parse_file(Path::new("r.yaml"), yaml.as_bytes());
        let messages: Vec<String> = parsed.all_diagnostics().map(|d| d.to_string()).collect();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].starts_with("r.yaml:8:")
                && messages[0].contains("spec.hosts[0].header.x-a")
                && messages[0].contains("a header value or a list"),
            "{messages:?}"
        );
    }
}
