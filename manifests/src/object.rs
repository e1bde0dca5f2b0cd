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
