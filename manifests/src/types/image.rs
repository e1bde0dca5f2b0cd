//! `berth/v1 Image`: pre-pull and pin an image.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::meta::{BerthV1, ImageKind, ObjectMeta};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub api_version: BerthV1,
    pub kind: ImageKind,
    pub metadata: ObjectMeta,
    pub spec: ImageSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// The image reference, by tag or digest (`docker.io/library/nginx:1.27`,
    /// `registry.local:5000/app@sha256:…`). Normalised like docker.
    pub image: String,
    /// `os/arch[/variant]` to pick from a multi-platform image; default: the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Air-gapped hosts: an OCI archive (`oci-archive`, a tar of an OCI image
    /// layout) or a `docker save` tarball to import instead of pulling. A
    /// relative path is resolved against the manifest file's directory when
    /// the file is parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `IfNotPresent` (default): pull once. `Always`: re-resolve the tag on
    /// every resync. `Never`: only use what is already in the store (or `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
}

pub use super::pod::ImagePullPolicy as PullPolicy;
