//! `berth images --check`, as `ctr image check`: every blob an image
//! record references (index, manifest, config, layers) is present and
//! hashes to its digest, and every layer's snapshot is present. Only reads:
//! `berth pull` of the image repairs what this finds (it re-hashes stored
//! blobs and fetches a corrupt one again; missing snapshots are unpacked).
//!
//! The blobs and snapshots of each image join a lease before they are
//! read, and the image record is read again afterwards: a concurrent `rmi`
//! and GC can therefore not make content look missing that the image still
//! references.

use std::collections::HashMap;

use oci_spec::image::Digest;

use super::content::{BlobHealth, ContentError, ContentStore};
use super::meta::{ImageRecord, Lease, MetaError, MetaStore};
use super::snapshot::{SnapshotError, Snapshotter};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// What is wrong with one piece of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// Not in the store.
    Missing,
    /// Stored, but its bytes do not hash to its digest.
    Corrupt,
}

/// One problem of an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `manifest`, `config`, `index`, `layer N` (its blob, base = 1) or
    /// `snapshot of layer N`.
    pub what: String,
    /// The blob's digest, or the snapshot's chain ID.
    pub digest: String,
    pub fault: Fault,
    /// For a corrupt blob: what its bytes hash to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_digest: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fault = match self.fault {
            Fault::Missing => "missing",
            Fault::Corrupt => "corrupt",
        };
        write!(f, "{} {} is {fault}", self.what, self.digest)?;
        if let Some(actual) = &self.actual_digest {
            write!(f, " (its content hashes to {actual})")?;
        }
        Ok(())
    }
}

/// The verdict on one image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCheck {
    pub name: String,
    pub manifest_digest: String,
    /// Empty when the image is whole.
    pub problems: Vec<Problem>,
}

impl ImageCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `images` under `lease` (blobs shared between images are hashed
/// once). An image removed or re-pointed while it was being checked is
/// left out: its content is no longer its own.
pub fn check_images(
    content: &ContentStore,
    snapshots: &Snapshotter,
    meta: &MetaStore,
    lease: &Lease,
    images: &[ImageRecord],
) -> Result<Vec<ImageCheck>, CheckError> {
    let mut blob_health: HashMap<Digest, BlobHealth> = HashMap::new();
    let mut checks = Vec::with_capacity(images.len());
    for image in images {
        let layers = meta.layers(&image.manifest_digest)?;
        let mut blobs: Vec<(String, &Digest)> = Vec::new();
        if let Some(index) = &image.index_digest {
            blobs.push(("index".to_owned(), index));
        }
        blobs.push(("manifest".to_owned(), &image.manifest_digest));
        blobs.push(("config".to_owned(), &image.config_digest));
        for (n, layer) in layers.iter().enumerate() {
            blobs.push((format!("layer {}", n + 1), &layer.blob));
        }
        let digests: Vec<&Digest> = blobs.iter().map(|(_, digest)| *digest).collect();
        let chain_ids: Vec<&Digest> = layers.iter().map(|layer| &layer.chain_id).collect();
        lease.add_all(&digests, &chain_ids)?;
        let still = meta.image(&image.name)?;
        if still.is_none_or(|now| now.manifest_digest != image.manifest_digest) {
            continue;
        }
        let mut problems = Vec::new();
        for (what, digest) in blobs {
            let health = match blob_health.get(digest) {
                Some(health) => health.clone(),
                None => {
                    let health = content.verify(digest)?;
                    blob_health.insert(digest.clone(), health.clone());
                    health
                }
            };
            let (fault, actual_digest) = match health {
                BlobHealth::Intact => continue,
                BlobHealth::Missing => (Fault::Missing, None),
                BlobHealth::Corrupt { actual, .. } => (Fault::Corrupt, Some(actual)),
            };
            problems.push(Problem {
                what,
                digest: digest.to_string(),
                fault,
                actual_digest,
            });
        }
        for (n, layer) in layers.iter().enumerate() {
            if !snapshots.exists(&layer.chain_id)? {
                problems.push(Problem {
                    what: format!("snapshot of layer {}", n + 1),
                    digest: layer.chain_id.to_string(),
                    fault: Fault::Missing,
                    actual_digest: None,
                });
            }
        }
        checks.push(ImageCheck {
            name: image.name.clone(),
            manifest_digest: image.manifest_digest.to_string(),
            problems,
        });
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::image::meta::{LayerRecord, ManifestRecord};

    #[test]
    fn a_corrupt_blob_and_a_missing_snapshot_are_reported_for_each_image_using_them() {
        let crate::image::TestStore {
            content,
            snapshots,
            meta,
            dir: _dir,
        } = crate::image::TestStore::new();
        let blob = |bytes: &[u8]| content.write_blob(bytes).expect("blob");
        let (base, top, config, manifest) = (blob(b"base"), blob(b"top"), blob(b"{}"), blob(b"m"));
        let layer = |blob: &Digest| LayerRecord {
            blob: blob.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            size: 4,
            diff_id: blob.clone(),
            chain_id: blob.clone(),
        };
        let record = ManifestRecord {
            digest: manifest.clone(),
            config_digest: config.clone(),
            platform: "linux/amd64".into(),
            compressed_size: 10,
            created: None,
            layers: vec![layer(&base), layer(&top)],
        };
        for name in ["a:1", "b:1"] {
            meta.record_image(name, &record, None).expect("record");
        }
        std::fs::create_dir(snapshots.path(&top).expect("path")).expect("snapshot");
        std::fs::write(content.blob_path(&top).expect("path"), b"tip").expect("corrupt");

        let lease = meta.lease("check", Duration::from_secs(60)).expect("lease");
        let images = meta.images().expect("images");
        let checks = check_images(&content, &snapshots, &meta, &lease, &images).expect("check");
        assert_eq!(checks.len(), 2);
        for check in &checks {
            let found: Vec<String> = check.problems.iter().map(ToString::to_string).collect();
            assert_eq!(
                found,
                [
                    format!(
                        "layer 2 {top} is corrupt (its content hashes to {})",
                        crate::image::content::sha256_digest_of(b"tip")
                    ),
                    format!("snapshot of layer 1 {base} is missing"),
                ],
                "{}",
                check.name
            );
        }
        lease.release().expect("release");
    }
}
