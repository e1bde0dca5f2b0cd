//! The image service: the one API the agent and the CLI use for stored
//! images. It ties the content store, the snapshotter and the metadata
//! store together.
//!
//! All methods block (file I/O and SQLite); async callers run them on a
//! blocking thread (`tokio::task::spawn_blocking`). The service is cheap to
//! clone and safe to share.
//!
//! Typical flows:
//! - pull (`berth pull`, the image reconciler): `let lease =
//!   service.lease("pull …")?;` → `Puller::fetch_with` with the lease as its
//!   `BlobGuard` (each blob joins the lease before it is written) and
//!   [`ImageService::streaming_unpack`] as its tee (layers unpack while they
//!   download) → `StreamingUnpack::finish` →
//!   [`ImageService::install_fetched`] (unpack what is still missing, then
//!   record) → release the lease;
//! - import: [`ImageService::import`] does all of that itself;
//! - run a container: [`ImageService::hold_for_container`] (records the
//!   hold, unpacks if needed, returns the overlay lowerdirs), and
//!   [`ImageService::release_container`] when the container is removed;
//! - Image objects: [`ImageService::pin`] / [`ImageService::unpin`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration};

use super::check::{self, CheckError, ImageCheck};
use super::content::{ContentError, ContentStore};
use super::export::{self, ArchiveFormat, ExportError, Exported};
use super::gc::{self, GcError, GcOptions, GcReport};
use super::import::{self, ImportError};
use super::meta::{self, ImageRecord, LayerRecord, Lease, ManifestRecord, MetaError, MetaStore};
use super::remote::{FetchedImage, Platform};
use super::snapshot::{self, LayerPlan, SnapshotError, Snapshotter};
use super::streaming::StreamingUnpack;
use super::unpack::UnpackLimits;
use crate::paths::Paths;

/// The image reference type of the whole service (parsed and normalised by
/// the manifests crate, as the pod and Image manifests spell images).
pub use manifests::reference::ImageReference;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("image {name} is not stored (pull or import it first)")]
    NotFound { name: String },
    #[error("image {name} is in use ({}); {hint}", describe_users(.pinned_by, .containers))]
    InUse {
        name: String,
        pinned_by: Vec<String>,
        containers: Vec<String>,
        hint: &'static str,
    },
    #[error("image {name}: {reason}")]
    BadImage { name: String, reason: String },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Gc(#[from] GcError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("cannot tag {target}: {reason}")]
    BadTag {
        target: String,
        reason: &'static str,
    },
}

fn describe_users(pinned_by: &[String], containers: &[String]) -> String {
    let mut parts = Vec::new();
    if !containers.is_empty() {
        parts.push(format!("used by container {}", containers.join(", ")));
    }
    if !pinned_by.is_empty() {
        parts.push(format!("pinned by {}", pinned_by.join(", ")));
    }
    parts.join("; ")
}

type Result<T> = std::result::Result<T, ServiceError>;

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Layers unpacked at the same time (default 2: unpacking is CPU-bound
    /// by decompression, and edge boxes have few cores).
    pub unpack_parallelism: usize,
    /// How long a lease lives without progress before GC may ignore it.
    pub lease_ttl: Duration,
    pub gc: GcOptions,
    /// What one layer may cost (size, entries, depth, header records).
    pub limits: UnpackLimits,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            unpack_parallelism: 2,
            lease_ttl: Duration::from_secs(3600),
            gc: GcOptions::default(),
            limits: UnpackLimits::default(),
        }
    }
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub images: Vec<String>,
    pub gc: GcReport,
}

#[derive(Debug, Clone)]
pub struct ImageService {
    content: ContentStore,
    snapshots: Snapshotter,
    meta: MetaStore,
    options: ServiceOptions,
}

impl ImageService {
    /// Opens the stores under `paths.root`, creating them if needed.
    pub fn open(paths: &Paths) -> Result<Self> {
        Self::with_options(paths, ServiceOptions::default())
    }

    pub fn with_options(paths: &Paths, options: ServiceOptions) -> Result<Self> {
        Ok(Self {
            content: ContentStore::open(paths.content())?,
            snapshots: Snapshotter::open(paths.snapshots())?.with_limits(options.limits),
            meta: MetaStore::open(&paths.database())?,
            options,
        })
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    pub fn snapshots(&self) -> &Snapshotter {
        &self.snapshots
    }

    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// A lease for work in progress (a pull, an import): add each blob and
    /// snapshot to it *before* writing it.
    pub fn lease(&self, purpose: &str) -> Result<Lease> {
        Ok(self.meta.lease(purpose, self.options.lease_ttl)?)
    }

    /// A [`LayerTee`](super::remote::LayerTee) for one pull: layers are
    /// unpacked while they download (see [`super::streaming`]). Pass it in
    /// the pull's `FetchOptions`, then call
    /// [`StreamingUnpack::finish`] before [`ImageService::install_fetched`].
    pub fn streaming_unpack<'a>(&'a self, lease: &'a Lease) -> StreamingUnpack<'a> {
        StreamingUnpack::new(&self.content, &self.snapshots, &self.meta, lease)
    }

    /// Records an image whose blobs are all in the content store, under
    /// the name `fetched.reference`. Does not unpack (see
    /// [`ImageService::install_fetched`]).
    pub fn record_fetched(&self, fetched: &FetchedImage) -> Result<ImageRecord> {
        let (name, record) = self.plan_fetched(fetched)?;
        self.meta
            .record_image(&name, &record, fetched.index_digest.as_ref())?;
        self.stored(&name)
    }

    /// Unpacks the layers of a fetched image and then records it: an image
    /// whose layers fail to unpack (a diffID mismatch, a hostile entry) is
    /// never recorded. The blobs stay in the content store until GC.
    pub fn install_fetched(&self, fetched: &FetchedImage) -> Result<ImageRecord> {
        // Held until the record exists: from then on the image is a root.
        let lease = self.lease(&format!("install {}", fetched.reference))?;
        let record = self.install_fetched_under(fetched, &lease)?;
        lease.release()?;
        Ok(record)
    }

    /// [`ImageService::install_fetched`] under the caller's lease (the
    /// pull's own, which must be held until this returns).
    pub fn install_fetched_under(
        &self,
        fetched: &FetchedImage,
        lease: &Lease,
    ) -> Result<ImageRecord> {
        let (name, record) = self.plan_fetched(fetched)?;
        self.unpack_layers(&name, &record.layers, lease)?;
        self.meta
            .record_image(&name, &record, fetched.index_digest.as_ref())?;
        self.stored(&name)
    }

    fn plan_fetched(&self, fetched: &FetchedImage) -> Result<(String, ManifestRecord)> {
        let name = fetched.reference.to_string();
        let record = manifest_record(
            &self.content,
            &name,
            &fetched.manifest_digest,
            &fetched.config_digest,
            &fetched.config,
            &fetched.layers,
            &fetched.platform,
        )?;
        Ok((name, record))
    }

    /// The stored image `reference` names: by exact name, or, for a
    /// reference with a digest, any stored name of the same repository
    /// whose manifest or index has that digest.
    pub fn resolve(&self, reference: &ImageReference) -> Result<Option<ImageRecord>> {
        let name = reference.to_string();
        if let Some(record) = self.meta.image(&name)? {
            return Ok(Some(record));
        }
        let Some(digest) = reference.digest() else {
            return Ok(None);
        };
        let repository = reference.name();
        Ok(self.meta.images()?.into_iter().find(|image| {
            same_repository(&image.name, &repository)
                && (image.manifest_digest.to_string() == digest
                    || image
                        .index_digest
                        .as_ref()
                        .is_some_and(|index| index.to_string() == digest))
        }))
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.meta.images()?)
    }

    /// Unpacks every layer of the image not unpacked yet (in parallel) and
    /// returns the overlay lowerdirs, top layer first.
    pub fn ensure_unpacked(&self, reference: &ImageReference) -> Result<Vec<PathBuf>> {
        let record = self.require(reference)?;
        self.unpack_record(&record)
    }

    fn unpack_record(&self, record: &ImageRecord) -> Result<Vec<PathBuf>> {
        let layers = self.meta.layers(&record.manifest_digest)?;
        // An rmi and GC in another process may race with us: the lease
        // keeps the layers until the caller holds them some other way.
        let lease = self.lease(&format!("unpack {}", record.name))?;
        self.unpack_layers(&record.name, &layers, &lease)?;
        self.meta.touch(&record.name)?;
        let chain_ids: Vec<Digest> = layers.iter().map(|l| l.chain_id.clone()).collect();
        let lowerdirs = self.snapshots.lowerdirs(&chain_ids)?;
        lease.release()?;
        Ok(lowerdirs)
    }

    /// Unpacks the layers that have no snapshot yet and records their
    /// sizes. Every layer is added to `lease` first, so GC keeps what this
    /// finds already present as well as what it creates.
    fn unpack_layers(&self, name: &str, layers: &[LayerRecord], lease: &Lease) -> Result<()> {
        let blobs: Vec<&Digest> = layers.iter().map(|l| &l.blob).collect();
        let chain_ids: Vec<&Digest> = layers.iter().map(|l| &l.chain_id).collect();
        lease.add_all(&blobs, &chain_ids)?;
        let mut missing = Vec::new();
        for layer in layers {
            if !self.snapshots.exists(&layer.chain_id)? {
                missing.push(LayerPlan {
                    blob: layer.blob.clone(),
                    media_type: layer.media_type.clone(),
                    diff_id: layer.diff_id.clone(),
                    chain_id: layer.chain_id.clone(),
                });
            } else if self.meta.snapshot_size(layer.chain_id.as_ref())?.is_none() {
                // Committed by a process that died before recording it.
                let size = snapshot::disk_usage(&self.snapshots.path(&layer.chain_id)?);
                self.meta.record_snapshot(&layer.chain_id, size)?;
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let sizes =
            self.snapshots
                .unpack_all(&self.content, &missing, self.options.unpack_parallelism)?;
        let mut recorded = Vec::with_capacity(missing.len());
        for (layer, size) in missing.iter().zip(sizes) {
            let size = match size {
                Some(size) => size,
                None => snapshot::disk_usage(&self.snapshots.path(&layer.chain_id)?),
            };
            recorded.push((&layer.chain_id, size));
        }
        self.meta.record_snapshots(&recorded)?;
        tracing::info!(
            image = %name,
            layers = missing.len(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "unpacked image layers"
        );
        Ok(())
    }

    /// Records that `container_id` runs `reference` (so neither rmi nor GC
    /// takes its layers away, even if the name moves to another image),
    /// unpacks what is missing and returns the lowerdirs, top first.
    pub fn hold_for_container(
        &self,
        container_id: &str,
        reference: &ImageReference,
    ) -> Result<Vec<PathBuf>> {
        let record = self.require(reference)?;
        if !self.meta.hold_for_container(container_id, &record.name)? {
            return Err(ServiceError::NotFound { name: record.name });
        }
        self.unpack_record(&record)
    }

    pub fn release_container(&self, container_id: &str) -> Result<()> {
        Ok(self.meta.release_container(container_id)?)
    }

    /// Every container id that holds an image.
    pub fn held_containers(&self) -> Result<Vec<String>> {
        Ok(self.meta.held_containers()?)
    }

    /// Keeps the stored image `reference` names by its digest (`repo:tag@
    /// sha256:…`) under that name, pinned by `owner`, so neither GC nor
    /// prune takes it while the tag moves on: a pod's rollback target
    /// (`pod::rollout`). False when that manifest is not stored.
    pub fn keep(&self, owner: &str, reference: &ImageReference) -> Result<bool> {
        let Some(digest) = reference.digest() else {
            return Ok(false);
        };
        let name = reference.to_string();
        if !self.meta.name_manifest(&name, digest)? {
            return Ok(false);
        }
        self.meta.pin(owner, &name)?;
        Ok(true)
    }

    /// Drops what `owner` kept ([`ImageService::keep`]): its pins, and the
    /// names unless something else pins them.
    pub fn unkeep(&self, owner: &str) -> Result<()> {
        let names = self.meta.pins_of(owner)?;
        self.meta.unpin_owner(owner)?;
        for name in names {
            if !self.meta.is_pinned(&name)? {
                self.meta.remove_image(&name)?;
            }
        }
        Ok(())
    }

    /// The Image object `owner` (its key, e.g. `Image/busybox`) pins
    /// `reference`, replacing what it pinned before (in one transaction).
    pub fn pin(&self, owner: &str, reference: &ImageReference) -> Result<()> {
        Ok(self.meta.set_pins(owner, &[&reference.to_string()])?)
    }

    /// Adds the name `name` to what `owner` pins, keeping its other pins
    /// (an Image object pins its new reference before it drops the old one).
    pub fn add_pin(&self, owner: &str, name: &str) -> Result<()> {
        Ok(self.meta.pin(owner, name)?)
    }

    /// Makes `names` exactly what `owner` pins, in one transaction.
    pub fn set_pins(&self, owner: &str, names: &[&str]) -> Result<()> {
        Ok(self.meta.set_pins(owner, names)?)
    }

    pub fn unpin(&self, owner: &str) -> Result<()> {
        Ok(self.meta.unpin_owner(owner)?)
    }

    /// Removes the name `reference` (its content goes at the next GC).
    /// Refuses an image a container uses or an Image object pins, unless
    /// `force`. A forced removal still keeps a running container's layers.
    pub fn remove(&self, reference: &ImageReference, force: bool) -> Result<ImageRecord> {
        let record = self.require(reference)?;
        let name = record.name.clone();
        self.meta.write(|tx| -> Result<()> {
            let (pinned_by, containers) = meta::users_of(tx, &name)?;
            if !force && (!pinned_by.is_empty() || !containers.is_empty()) {
                return Err(ServiceError::InUse {
                    name: name.clone(),
                    pinned_by,
                    containers,
                    hint: "remove those first or pass --force",
                });
            }
            meta::delete_image(tx, &name)?;
            Ok(())
        })?;
        Ok(record)
    }

    /// Removes every image no container uses and no Image object pins, then
    /// collects garbage.
    pub fn prune(&self) -> Result<PruneReport> {
        let images = self.meta.write(|tx| -> Result<Vec<String>> {
            let mut removed = Vec::new();
            for name in meta::image_names(tx)? {
                let (pinned_by, containers) = meta::users_of(tx, &name)?;
                if pinned_by.is_empty() && containers.is_empty() {
                    meta::delete_image(tx, &name)?;
                    removed.push(name);
                }
            }
            Ok(removed)
        })?;
        Ok(PruneReport {
            images,
            gc: self.gc()?,
        })
    }

    /// Deletes blobs and snapshots nothing references, and stale leftovers.
    pub fn gc(&self) -> Result<GcReport> {
        Ok(gc::collect(
            &self.meta,
            &self.content,
            &self.snapshots,
            &self.options.gc,
        )?)
    }

    /// Imports an OCI archive or a `docker save` tarball, unpacks and
    /// records it. `name` overrides the names inside the archive.
    pub fn import(
        &self,
        archive: &Path,
        name: Option<&ImageReference>,
    ) -> Result<Vec<ImageRecord>> {
        let lease = self.lease(&format!("import {}", archive.display()))?;
        let images = import::read_archive(&self.content, &lease, archive, name, &Platform::host())?;
        let mut records = Vec::new();
        for image in &images {
            records.push(self.install_fetched(image)?);
        }
        lease.release()?;
        Ok(records)
    }

    /// Gives the image `source` names the second name `target` (replacing
    /// what `target` named), as `ctr image tag` / `docker tag` do.
    pub fn tag(&self, source: &ImageReference, target: &ImageReference) -> Result<ImageRecord> {
        if target.digest().is_some() {
            return Err(ServiceError::BadTag {
                target: target.to_string(),
                reason: "a new name is a tag; a digest names content that is already there",
            });
        }
        let record = self.require(source)?;
        let target = target.to_string();
        if !self.meta.tag_image(&record.name, &target)? {
            // Removed between the lookup and the tag.
            return Err(ServiceError::NotFound { name: record.name });
        }
        self.stored(&target)
    }

    /// Checks the images `references` name (every image when empty): each
    /// blob present and hashing to its digest, each snapshot present.
    pub fn check(&self, references: &[ImageReference]) -> Result<Vec<ImageCheck>> {
        let images = self.select(references)?;
        let lease = self.lease("check images")?;
        let checks =
            check::check_images(&self.content, &self.snapshots, &self.meta, &lease, &images)?;
        lease.release()?;
        Ok(checks)
    }

    /// Writes the images `references` name as one archive to `out`.
    pub fn export(
        &self,
        references: &[ImageReference],
        format: ArchiveFormat,
        out: &mut dyn std::io::Write,
    ) -> Result<Vec<Exported>> {
        let images = self.select(references)?;
        let lease = self.lease("export images")?;
        let exported =
            export::write_archive(&self.content, &self.meta, &lease, &images, format, out)?;
        lease.release()?;
        Ok(exported)
    }

    /// The stored images `references` name, in that order (each once);
    /// every image when `references` is empty.
    fn select(&self, references: &[ImageReference]) -> Result<Vec<ImageRecord>> {
        if references.is_empty() {
            return self.list();
        }
        let mut images: Vec<ImageRecord> = Vec::with_capacity(references.len());
        for reference in references {
            let image = self.require(reference)?;
            if !images.iter().any(|known| known.name == image.name) {
                images.push(image);
            }
        }
        Ok(images)
    }

    fn require(&self, reference: &ImageReference) -> Result<ImageRecord> {
        self.resolve(reference)?
            .ok_or_else(|| ServiceError::NotFound {
                name: reference.to_string(),
            })
    }

    fn stored(&self, name: &str) -> Result<ImageRecord> {
        self.meta
            .image(name)?
            .ok_or_else(|| ServiceError::NotFound {
                name: name.to_owned(),
            })
    }
}

/// `docker.io/library/busybox:1` belongs to `docker.io/library/busybox`.
fn same_repository(name: &str, repository: &str) -> bool {
    name.strip_prefix(repository)
        .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('@'))
}

/// The metadata row for an image manifest: layers with their diffIDs (from
/// the config) and chain IDs, and sizes from the content store.
fn manifest_record(
    content: &ContentStore,
    name: &str,
    manifest_digest: &Digest,
    config_digest: &Digest,
    config: &ImageConfiguration,
    layers: &[Descriptor],
    platform: &Platform,
) -> Result<ManifestRecord> {
    let bad = |reason: String| ServiceError::BadImage {
        name: name.to_owned(),
        reason,
    };
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(bad(format!(
            "the manifest lists {} layers but the config has {} diff_ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    let diff_ids: Vec<Digest> = diff_ids
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|_| bad(format!("config diff_id {d:?} is not a digest")))
        })
        .collect::<Result<_>>()?;
    let chain_ids = snapshot::chain_ids(&diff_ids);
    let mut compressed_size = 0u64;
    for digest in [manifest_digest, config_digest] {
        compressed_size += content.size(digest)?.unwrap_or(0);
    }
    let mut records = Vec::with_capacity(layers.len());
    for ((layer, diff_id), chain_id) in layers.iter().zip(diff_ids).zip(chain_ids) {
        compressed_size += layer.size();
        records.push(LayerRecord {
            blob: layer.digest().clone(),
            media_type: layer.media_type().to_string(),
            size: layer.size(),
            diff_id,
            chain_id,
        });
    }
    Ok(ManifestRecord {
        digest: manifest_digest.clone(),
        config_digest: config_digest.clone(),
        platform: platform.to_string(),
        compressed_size,
        created: config.created().clone(),
        layers: records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_can_be_shared_across_threads_and_tasks() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<ImageService>();
    }

    #[test]
    fn repository_prefix_needs_a_separator() {
        assert!(same_repository(
            "docker.io/library/busybox:1",
            "docker.io/library/busybox"
        ));
        assert!(!same_repository(
            "docker.io/library/busybox-extra:1",
            "docker.io/library/busybox"
        ));
    }

    #[test]
    fn in_use_errors_name_every_user() {
        let err = ServiceError::InUse {
            name: "docker.io/library/busybox:1".into(),
            pinned_by: vec!["Image/bb".into()],
            containers: vec!["web-1".into()],
            hint: "remove those first or pass --force",
        };
        assert_eq!(
            err.to_string(),
            "image docker.io/library/busybox:1 is in use (used by container web-1; pinned by Image/bb); remove those first or pass --force"
        );
    }
}
