//! Object identity: which kind, which namespace, which name.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Pod,
    ConfigMap,
    Secret,
    Image,
    Registry,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Pod,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Image,
        Kind::Registry,
    ];

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod | Kind::ConfigMap | Kind::Secret => "v1",
            Kind::Image | Kind::Registry => "berth/v1",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::Image => "Image",
            Kind::Registry => "Registry",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a desired object. Cluster-scoped kinds (Image, Registry)
/// use an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `Pod/default/web`, or `Registry/docker.io` for cluster-scoped kinds.
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Any object berth accepts. Serialises as the object itself (with its
/// `apiVersion` and `kind`), so the canonical JSON of an `Object` is the same
/// as that of the inner type; the agent hashes it to detect changes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Object {
    Pod(crate::types::Pod),
    ConfigMap(crate::types::ConfigMap),
    Secret(crate::types::Secret),
    Image(crate::types::Image),
    Registry(crate::types::Registry),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::Image(_) => Kind::Image,
            Object::Registry(_) => Kind::Registry,
        }
    }

    pub fn metadata(&self) -> &crate::types::ObjectMeta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Image(o) => &o.metadata,
            Object::Registry(o) => &o.metadata,
        }
    }

    /// Namespaced kinds (Pod, ConfigMap, Secret) default to the `default`
    /// namespace; Image and Registry are cluster-scoped (empty namespace).
    /// A Registry's name is the registry host it configures, so two objects
    /// configuring one host share a key and conflict.
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        let namespace = match self.kind() {
            Kind::Pod | Kind::ConfigMap | Kind::Secret => meta.namespace_or_default(),
            Kind::Image | Kind::Registry => "",
        };
        ObjectKey::new(self.kind(), namespace, meta.name.clone())
    }

    /// Canonical JSON: struct fields in declaration order, maps sorted,
    /// empty optional fields left out. Equal objects give equal bytes.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("berth's object types always serialise to JSON")
    }

    /// SHA-256 of [`Object::canonical_json`], hex-encoded: the agent's change detector.
    pub fn content_hash(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(self.canonical_json()))
    }

    /// A copy safe to print in status, inspect and logs: Secret values are
    /// replaced by `<redacted>`.
    pub fn redacted(&self) -> Object {
        match self {
            Object::Secret(secret) => Object::Secret(secret.redacted()),
            other => other.clone(),
        }
    }
}

/// Reads an object back from its JSON form (`berth inspect`, the agent's
/// state), dispatching on `kind`.
impl<'de> serde::Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        let kind = value
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| D::Error::missing_field("kind"))?;
        let object = match kind {
            "Pod" => serde_json::from_value(value).map(Object::Pod),
            "ConfigMap" => serde_json::from_value(value).map(Object::ConfigMap),
            "Secret" => serde_json::from_value(value).map(Object::Secret),
            "Image" => serde_json::from_value(value).map(Object::Image),
            "Registry" => serde_json::from_value(value).map(Object::Registry),
            other => return Err(D::Error::custom(format!("unknown kind `{other}`"))),
        };
        object.map_err(D::Error::custom)
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind `{s}`"))
    }
}
