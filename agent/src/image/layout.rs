//! The archive formats `berth import` reads and `berth export` writes, in
//! one place so the two cannot drift apart:
//!
//! - an **OCI image layout** (`oci-layout`, `index.json`,
//!   `blobs/sha256/<hex>`), tarred as `skopeo copy … oci-archive:` does.
//!   Image names live in the annotations of `index.json`'s entries:
//!   containerd's `io.containerd.image.name` and the OCI
//!   `org.opencontainers.image.ref.name`;
//! - the **`docker save` tarball**'s `manifest.json`: one entry per image
//!   with its config, `RepoTags` and layer files.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, Digest};

pub use super::remote::{DOCKER_MANIFEST, OCI_MANIFEST};

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// What `oci-layout` holds (the only layout version there is).
pub const OCI_LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
pub const INDEX_FILE: &str = "index.json";
pub const DOCKER_MANIFEST_FILE: &str = "manifest.json";
/// The legacy `docker save` name map; read past, never needed.
pub const REPOSITORIES_FILE: &str = "repositories";
pub const BLOBS_DIR: &str = "blobs/sha256/";

pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// One image of a `docker save` tarball's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerManifestEntry {
    /// Path of the image config in the archive.
    pub config: String,
    /// `repository:tag` names; `null` for an untagged image.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer tars (possibly compressed), base first.
    pub layers: Vec<String>,
}

/// `blobs/sha256/<hex>`: where a layout keeps the blob `digest`.
pub fn blob_path(digest: &Digest) -> String {
    format!("{BLOBS_DIR}{}", digest.digest())
}

/// The digest a layout path `blobs/sha256/<hex>` names, if it is one.
pub fn layout_digest(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix(BLOBS_DIR)?;
    format!("sha256:{hex}").parse().ok()
}

/// The annotations that name an `index.json` entry `name`: both keys hold
/// the full reference, which containerd, podman and skopeo
/// (`oci-archive:FILE:NAME`) all read.
pub fn name_annotations(name: &str) -> HashMap<String, String> {
    HashMap::from([
        (CONTAINERD_NAME.to_owned(), name.to_owned()),
        (OCI_REF_NAME.to_owned(), name.to_owned()),
    ])
}

/// The image name an index entry carries, or the bare tag it has instead
/// (`latest` alone names no image).
pub fn name_of(entry: &Descriptor) -> (Option<String>, Option<String>) {
    let Some(annotations) = entry.annotations() else {
        return (None, None);
    };
    if let Some(name) = annotations.get(CONTAINERD_NAME) {
        return (Some(name.clone()), None);
    }
    match annotations.get(OCI_REF_NAME) {
        Some(name) if name.contains('/') || name.contains(':') || name.contains('@') => {
            (Some(name.clone()), None)
        }
        Some(tag) => (None, Some(tag.clone())),
        None => (None, None),
    }
}

/// `RepoTags` only holds `repository:tag`: a name by digest alone has no
/// place there.
pub fn docker_repo_tag(name: &str) -> Option<String> {
    let without_digest = name.split_once('@').map_or(name, |(before, _)| before);
    let (_, tag) = without_digest.rsplit_once(':')?;
    (!tag.contains('/')).then(|| without_digest.to_owned())
}

#[cfg(test)]
mod tests {
    use oci_spec::image::{DescriptorBuilder, MediaType};

    use super::*;

    #[test]
    fn layout_paths_and_digests_round_trip() {
        let digest: Digest = format!("sha256:{}", "ab".repeat(32))
            .parse()
            .expect("digest");
        let path = blob_path(&digest);
        assert_eq!(path, format!("blobs/sha256/{}", "ab".repeat(32)));
        assert_eq!(layout_digest(&path), Some(digest));
        assert_eq!(layout_digest("manifest.json"), None);
    }

    #[test]
    fn names_prefer_containerds_annotation_and_reject_bare_tags() {
        let mut annotations = HashMap::new();
        annotations.insert(OCI_REF_NAME.to_owned(), "latest".to_owned());
        let mut entry = DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .size(1u64)
            .digest(super::super::content::sha256_digest_of(b"x"))
            .annotations(annotations.clone())
            .build()
            .expect("descriptor");
        assert_eq!(name_of(&entry), (None, Some("latest".into())));
        entry.set_annotations(Some(name_annotations("docker.io/library/a:1")));
        assert_eq!(
            name_of(&entry),
            (Some("docker.io/library/a:1".into()), None)
        );
    }

    #[test]
    fn repo_tags_need_a_tag() {
        assert_eq!(
            docker_repo_tag("127.0.0.1:5000/a/b:1").as_deref(),
            Some("127.0.0.1:5000/a/b:1")
        );
        assert_eq!(
            docker_repo_tag("docker.io/library/a:1@sha256:ab").as_deref(),
            Some("docker.io/library/a:1")
        );
        assert_eq!(docker_repo_tag("127.0.0.1:5000/a/b@sha256:ab"), None);
        assert_eq!(docker_repo_tag("127.0.0.1:5000/a/b"), None);
    }
}
