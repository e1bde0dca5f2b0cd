//! `berth/v1 Image`: pre-pull and pin an image.
//!
//! Apply:
//! 1. pin `spec.image` for the object (`Image/<name>`) *before* anything
//!    else, keeping what it pinned before: a concurrent `berth prune` can
//!    then take neither the old image nor the new one;
//! 2. make the image present: with `source:`, import that archive (again
//!    only when the file changed: its identity, size and mtime are recorded);
//!    otherwise [`ImageManager::ensure`](crate::image::manager::ImageManager)
//!    with the object's pull policy (default `IfNotPresent`; `Always`
//!    re-resolves the tag at every relist) and platform — single-flight with
//!    pods and other Image objects of the same reference;
//! 3. pin exactly the reference and the name it is stored under (a
//!    digest reference may find the image stored under a tag), dropping
//!    the pins of an earlier reference.
//!
//! Status `Ready` names the digest (the index's when the tag points to one),
//! platform and size. A failed pull or import is reported with every host
//! tried and its error, and retried with the controller's backoff.
//!
//! Cleanup on delete: unpin (the image stays until `berth prune` or `berth
//! rmi` removes it, and then GC frees its content).

use std::path::Path;

use manifests::reference::ImageReference;
use manifests::{Object, ObjectKey};

use super::{Applied, Context, ObjectReconciler, ReconcileError};
use crate::desired::DesiredObject;
use crate::image::manager::ImageManager;
use crate::image::meta::ImageRecord;
use crate::image::policy::ImagePullPolicy;
use crate::image::remote::Platform;
use crate::image::service::{ImageService, ServiceError};
use crate::status::Phase;

pub struct ImageReconciler;

impl ObjectReconciler for ImageReconciler {
    async fn apply(
        &self,
        ctx: &Context,
        desired: &DesiredObject,
    ) -> Result<Applied, ReconcileError> {
        let Object::Image(image) = desired.object.as_ref() else {
            return Err(ReconcileError::wrong_kind(desired));
        };
        let spec = &image.spec;
        let reference = ImageReference::parse(&spec.image)
            .map_err(|err| ReconcileError::Failed(format!("spec.image: {err}")))?;
        let owner = desired.key.to_string();
        let manager = &ctx.services.images;
        let wanted = reference.to_string();
        with_store(manager, {
            let (owner, wanted) = (owner.clone(), wanted.clone());
            move |service| service.add_pin(&owner, &wanted)
        })
        .await?;

        let (record, how) = match &spec.source {
            Some(archive) => import_source(manager, &owner, &reference, Path::new(archive)).await?,
            None => {
                super::registry::ensure_current(ctx).await;
                let platform = spec
                    .platform
                    .as_deref()
                    .map(str::parse::<Platform>)
                    .transpose()
                    .map_err(|err| ReconcileError::Failed(format!("spec.platform: {err}")))?;
                let policy = spec.pull_policy.unwrap_or(ImagePullPolicy::IfNotPresent);
                let ensured = manager
                    .ensure_platform(&reference, platform.as_ref(), policy, None)
                    .await
                    .map_err(|err| ReconcileError::Subsystem(Box::new(err)))?;
                let how = if ensured.pulled { "pulled" } else { "present" };
                (ensured.record, how)
            }
        };

        with_store(manager, {
            let stored = record.name.clone();
            move |service| {
                let names: Vec<&str> = if stored == wanted {
                    vec![&wanted]
                } else {
                    vec![&wanted, &stored]
                };
                service.set_pins(&owner, &names)
            }
        })
        .await?;
        Ok(Applied::new(Phase::Ready, ready_message(&record, how)))
    }

    async fn cleanup(&self, ctx: &Context, key: &ObjectKey) -> Result<(), ReconcileError> {
        let owner = key.to_string();
        with_store(&ctx.services.images, move |service| {
            service.unpin(&owner)?;
            Ok(service.meta().forget_imported_source(&owner)?)
        })
        .await
    }
}

/// Imports `archive` as `reference` unless this object imported the same,
/// unchanged file before and the image is still stored.
async fn import_source(
    manager: &ImageManager,
    owner: &str,
    reference: &ImageReference,
    archive: &Path,
) -> Result<(ImageRecord, &'static str), ReconcileError> {
    let fingerprint = fingerprint(archive).await?;
    let name = reference.to_string();
    let archive_text = archive.display().to_string();
    let unchanged = with_store(manager, {
        let (owner, reference) = (owner.to_owned(), reference.clone());
        let expected = (archive_text.clone(), fingerprint.clone(), name.clone());
        move |service| {
            if service.meta().imported_source(&owner)? != Some(expected) {
                return Ok(None);
            }
            service.resolve(&reference)
        }
    })
    .await?;
    if let Some(record) = unchanged {
        return Ok((record, "imported"));
    }
    let record = manager
        .import(reference, archive)
        .await
        .map_err(|err| ReconcileError::Subsystem(Box::new(err)))?;
    with_store(manager, {
        let owner = owner.to_owned();
        move |service| {
            Ok(service
                .meta()
                .record_imported_source(&owner, &archive_text, &fingerprint, &name)?)
        }
    })
    .await?;
    Ok((record, "imported"))
}

/// What changes when an archive is replaced or rewritten: its inode,
/// size and modification time.
async fn fingerprint(archive: &Path) -> Result<String, ReconcileError> {
    use std::os::unix::fs::MetadataExt;
    let path = archive.to_path_buf();
    let meta = tokio::task::spawn_blocking(move || std::fs::metadata(&path))
        .await
        .map_err(|err| ReconcileError::Failed(format!("reading spec.source: {err}")))?
        .map_err(|err| {
            ReconcileError::Failed(format!(
                "spec.source {}: {err}; an air-gapped Image needs its archive on this host",
                archive.display()
            ))
        })?;
    Ok(format!(
        "{}:{}:{}:{}.{:09}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// `sha256:… linux/amd64, 2.1 MB (pulled)`: the digest users see for the
/// reference (the index's, for a multi-platform image).
fn ready_message(record: &ImageRecord, how: &str) -> String {
    let digest = record
        .index_digest
        .as_ref()
        .unwrap_or(&record.manifest_digest);
    let unpacked = record
        .unpacked_size
        .map(|size| format!(", {} unpacked", megabytes(size)))
        .unwrap_or_default();
    format!(
        "{digest} {}, {} compressed{unpacked} ({how})",
        record.platform,
        megabytes(record.compressed_size)
    )
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Runs blocking image-store work (SQLite, files) off the async threads.
async fn with_store<T: Send + 'static>(
    manager: &ImageManager,
    work: impl FnOnce(&ImageService) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ReconcileError> {
    let service = manager.service().clone();
    tokio::task::spawn_blocking(move || work(&service))
        .await
        .map_err(|err| ReconcileError::Failed(format!("the image store task stopped: {err}")))?
        .map_err(|err| ReconcileError::Subsystem(Box::new(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_message_names_the_digest_platform_and_sizes() {
        let digest = |c: char| -> oci_spec::image::Digest {
            format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .expect("digest")
        };
        let mut record = ImageRecord {
            name: "registry.local/app:1".into(),
            manifest_digest: digest('a'),
            index_digest: None,
            config_digest: digest('c'),
            platform: "linux/amd64".into(),
            compressed_size: 2_100_000,
            unpacked_size: Some(5_000_000),
            created: None,
            recorded_at: 0,
            last_used: 0,
            pinned_by: Vec::new(),
            used_by: Vec::new(),
        };
        assert_eq!(
            ready_message(&record, "pulled"),
            format!(
                "sha256:{} linux/amd64, 2.1 MB compressed, 5.0 MB unpacked (pulled)",
                "a".repeat(64)
            )
        );
        record.index_digest = Some(digest('b'));
        assert!(
            ready_message(&record, "present").starts_with(&format!("sha256:{}", "b".repeat(64)))
        );
    }
}
