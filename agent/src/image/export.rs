//! `berth export` (alias `save`): stored images into one archive that
//! `berth import`, `skopeo`, `podman load`, `docker load` and `ctr import`
//! read, in the formats of [`super::layout`]:
//!
//! - `oci-archive`: a tar of an OCI image layout. `index.json` has one
//!   entry per name, pointing at the image's manifest, named by both
//!   `io.containerd.image.name` and `org.opencontainers.image.ref.name`
//!   (the full reference; `skopeo … oci-archive:FILE:NAME` picks one).
//! - `docker-archive`: the same layout plus `manifest.json` with each
//!   image's `RepoTags`, as `docker save` of Docker 25 and later writes it:
//!   older `docker load` and `skopeo … docker-archive:` read
//!   `manifest.json`, everything newer reads `index.json`.
//!
//! Blobs are copied byte for byte, so the manifest, config and layer
//! digests survive a round trip (`berth import` prefers `index.json`). An
//! image pulled through a multi-platform index is exported as its own
//! platform's manifest: the index names manifests berth never stored. Each
//! blob is re-hashed while it is copied; a corrupt or missing one stops
//! the export, naming the image and the digest.
//!
//! The blobs join the export's lease before they are read, and each image
//! record is read again afterwards: garbage collection cannot delete
//! content under an export.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use oci_spec::image::{DescriptorBuilder, Digest, ImageIndexBuilder, MediaType, PlatformBuilder};
use sha2::{Digest as _, Sha256};

use super::content::{ContentError, ContentStore};
use super::layout::{
    DOCKER_MANIFEST_FILE, DockerManifestEntry, INDEX_FILE, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE,
    OCI_MANIFEST, blob_path, docker_repo_tag, name_annotations,
};
use super::meta::{ImageRecord, Lease, MetaError, MetaStore};
use super::remote::Platform;

/// The archive formats `berth export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    OciArchive,
    DockerArchive,
}

/// Which blob of which image an error is about.
#[derive(Debug)]
pub struct BlobOf {
    pub image: String,
    pub what: String,
    pub digest: String,
}

impl std::fmt::Display for BlobOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "image {}: {} {}", self.image, self.what, self.digest)
    }
}

fn blob_of(image: &str, what: &str, digest: &Digest) -> Box<BlobOf> {
    Box::new(BlobOf {
        image: image.to_owned(),
        what: what.to_owned(),
        digest: digest.to_string(),
    })
}

/// Blob context is boxed: these travel in every `Result` of an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{blob}")]
    Content {
        blob: Box<BlobOf>,
        #[source]
        source: ContentError,
    },
    #[error(
        "{blob} is missing from the content store; `berth pull` or `berth import` of the image repairs it"
    )]
    Missing { blob: Box<BlobOf> },
    #[error(
        "{blob} is corrupt (its {size} bytes hash to {actual}); `berth pull` of the image repairs it"
    )]
    Corrupt {
        blob: Box<BlobOf>,
        actual: String,
        size: u64,
    },
    #[error("{blob} cannot be exported: {reason}")]
    BadManifest { blob: Box<BlobOf>, reason: String },
    #[error("image {name} was removed or re-pointed while it was being exported; export again")]
    Changed { name: String },
    #[error("writing the archive")]
    Write(#[source] io::Error),
}

/// One exported name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub name: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
}

/// The parts of a stored manifest an archive needs (Docker schema2 and
/// OCI manifests alike).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestShape {
    media_type: Option<String>,
    config: BlobRef,
    layers: Vec<BlobRef>,
}

#[derive(serde::Deserialize)]
struct BlobRef {
    digest: Digest,
    size: u64,
}

/// An image ready to be written: what its manifest lists.
struct Planned {
    name: String,
    platform: String,
    manifest_digest: Digest,
    manifest_media_type: String,
    manifest_size: u64,
    config: BlobRef,
    layers: Vec<BlobRef>,
}

/// Writes `images` as one archive to `out`, under `lease`.
pub fn write_archive(
    content: &ContentStore,
    meta: &MetaStore,
    lease: &Lease,
    images: &[ImageRecord],
    format: ArchiveFormat,
    out: &mut dyn Write,
) -> Result<Vec<Exported>, ExportError> {
    let planned = images
        .iter()
        .map(|image| plan(content, meta, lease, image))
        .collect::<Result<Vec<_>, _>>()?;
    let mut tar = tar::Builder::new(out);
    append_bytes(&mut tar, OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT.as_bytes())?;
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    let mut written: HashSet<Digest> = HashSet::new();
    for image in &planned {
        let blobs = std::iter::once((
            "manifest".to_owned(),
            &image.manifest_digest,
            image.manifest_size,
        ))
        .chain(std::iter::once((
            "config".to_owned(),
            &image.config.digest,
            image.config.size,
        )))
        .chain(
            image
                .layers
                .iter()
                .enumerate()
                .map(|(n, layer)| (format!("layer {}", n + 1), &layer.digest, layer.size)),
        );
        for (what, digest, size) in blobs {
            if written.insert(digest.clone()) {
                // Renews the lease: an export of large images takes a while.
                lease.add_blob(digest)?;
                append_blob(&mut tar, content, &image.name, &what, digest, size)?;
            }
        }
    }
    append_bytes(&mut tar, INDEX_FILE, &index_json(&planned)?)?;
    if format == ArchiveFormat::DockerArchive {
        append_bytes(
            &mut tar,
            DOCKER_MANIFEST_FILE,
            &docker_manifest_json(&planned)?,
        )?;
    }
    tar.into_inner()
        .and_then(|out| out.flush())
        .map_err(ExportError::Write)?;
    Ok(planned
        .into_iter()
        .map(|image| Exported {
            name: image.name,
            manifest_digest: image.manifest_digest,
            config_digest: image.config.digest,
        })
        .collect())
}

/// Leases the image's blobs, checks its record still points where it did,
/// and reads its manifest.
fn plan(
    content: &ContentStore,
    meta: &MetaStore,
    lease: &Lease,
    image: &ImageRecord,
) -> Result<Planned, ExportError> {
    let layers = meta.layers(&image.manifest_digest)?;
    let mut blobs: Vec<&Digest> = vec![&image.manifest_digest, &image.config_digest];
    blobs.extend(layers.iter().map(|layer| &layer.blob));
    lease.add_all(&blobs, &[])?;
    if meta
        .image(&image.name)?
        .is_none_or(|now| now.manifest_digest != image.manifest_digest)
    {
        return Err(ExportError::Changed {
            name: image.name.clone(),
        });
    }
    let digest = &image.manifest_digest;
    let manifest = || blob_of(&image.name, "manifest", digest);
    let bytes = content.read_blob(digest).map_err(|source| match source {
        ContentError::NotFound { .. } => ExportError::Missing { blob: manifest() },
        source => ExportError::Content {
            blob: manifest(),
            source,
        },
    })?;
    let bad = |reason: String| ExportError::BadManifest {
        blob: manifest(),
        reason,
    };
    let actual = super::content::sha256_digest_of(&bytes);
    if actual != *digest {
        return Err(ExportError::Corrupt {
            blob: manifest(),
            actual: actual.to_string(),
            size: bytes.len() as u64,
        });
    }
    let shape: ManifestShape =
        serde_json::from_slice(&bytes).map_err(|err| bad(format!("not a manifest: {err}")))?;
    if shape.config.digest != image.config_digest {
        return Err(bad(format!(
            "it names config {}, but the image record says {}",
            shape.config.digest, image.config_digest
        )));
    }
    Ok(Planned {
        name: image.name.clone(),
        platform: image.platform.clone(),
        manifest_digest: digest.clone(),
        manifest_media_type: shape.media_type.unwrap_or_else(|| OCI_MANIFEST.to_owned()),
        manifest_size: bytes.len() as u64,
        config: shape.config,
        layers: shape.layers,
    })
}

fn index_json(images: &[Planned]) -> Result<Vec<u8>, ExportError> {
    let mut manifests = Vec::with_capacity(images.len());
    for image in images {
        let bad = |reason: String| ExportError::BadManifest {
            blob: blob_of(&image.name, "manifest", &image.manifest_digest),
            reason,
        };
        let platform: Platform = image
            .platform
            .parse()
            .map_err(|err| bad(format!("platform {:?}: {err}", image.platform)))?;
        let mut oci_platform = PlatformBuilder::default()
            .os(platform.os.as_str())
            .architecture(platform.architecture.as_str());
        if let Some(variant) = &platform.variant {
            oci_platform = oci_platform.variant(variant.as_str());
        }
        let descriptor = DescriptorBuilder::default()
            .media_type(MediaType::from(image.manifest_media_type.as_str()))
            .digest(image.manifest_digest.clone())
            .size(image.manifest_size)
            .platform(
                oci_platform
                    .build()
                    .map_err(|err| bad(format!("platform: {err}")))?,
            )
            .annotations(name_annotations(&image.name))
            .build()
            .map_err(|err| bad(format!("index entry: {err}")))?;
        manifests.push(descriptor);
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|err| ExportError::Write(io::Error::other(err)))?;
    // Through a JSON value, whose maps are sorted: annotations are a
    // HashMap, and the same images should make the same archive.
    serde_json::to_value(&index)
        .and_then(|index| serde_json::to_vec(&index))
        .map_err(|err| ExportError::Write(err.into()))
}

/// One entry per manifest, with every name of it as `RepoTags`.
fn docker_manifest_json(images: &[Planned]) -> Result<Vec<u8>, ExportError> {
    let mut entries: Vec<(Digest, DockerManifestEntry)> = Vec::new();
    for image in images {
        let tags = docker_repo_tag(&image.name);
        if let Some((_, entry)) = entries
            .iter_mut()
            .find(|(digest, _)| *digest == image.manifest_digest)
        {
            if let Some(tag) = tags {
                entry.repo_tags.get_or_insert_with(Vec::new).push(tag);
            }
            continue;
        }
        entries.push((
            image.manifest_digest.clone(),
            DockerManifestEntry {
                config: blob_path(&image.config.digest),
                repo_tags: tags.map(|tag| vec![tag]),
                layers: image
                    .layers
                    .iter()
                    .map(|layer| blob_path(&layer.digest))
                    .collect(),
            },
        ));
    }
    let entries: Vec<DockerManifestEntry> = entries.into_iter().map(|(_, entry)| entry).collect();
    serde_json::to_vec(&entries).map_err(|err| ExportError::Write(err.into()))
}

fn header(path: &str, size: u64, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
        .set_path(path)
        .expect("archive paths are ASCII and under 100 bytes (blobs/sha256/<64 hex>)");
    header.set_cksum();
    header
}

fn append_dir(tar: &mut tar::Builder<&mut dyn Write>, path: &str) -> Result<(), ExportError> {
    let header = header(path, 0, tar::EntryType::Directory, 0o755);
    tar.append(&header, io::empty()).map_err(ExportError::Write)
}

fn append_bytes(
    tar: &mut tar::Builder<&mut dyn Write>,
    path: &str,
    bytes: &[u8],
) -> Result<(), ExportError> {
    let header = header(path, bytes.len() as u64, tar::EntryType::Regular, 0o644);
    tar.append(&header, bytes).map_err(ExportError::Write)
}

/// Streams a stored blob into the archive, hashing it on the way: exactly
/// `size` bytes go in, and they must hash to `digest`.
fn append_blob(
    tar: &mut tar::Builder<&mut dyn Write>,
    content: &ContentStore,
    name: &str,
    what: &str,
    digest: &Digest,
    size: u64,
) -> Result<(), ExportError> {
    let content_err = |source: ContentError| match source {
        ContentError::NotFound { .. } => ExportError::Missing {
            blob: blob_of(name, what, digest),
        },
        source => ExportError::Content {
            blob: blob_of(name, what, digest),
            source,
        },
    };
    let file = content.open_blob(digest).map_err(content_err)?;
    let stored = file
        .metadata()
        .map_err(|source| {
            content_err(ContentError::Io {
                op: "inspecting",
                path: content.blob_path(digest).unwrap_or_default(),
                source,
            })
        })?
        .len();
    let corrupt = |actual: String, size: u64| ExportError::Corrupt {
        blob: blob_of(name, what, digest),
        actual,
        size,
    };
    if stored != size {
        let actual = match content.verify(digest).map_err(content_err)? {
            super::content::BlobHealth::Corrupt { actual, .. } => actual,
            _ => digest.to_string(),
        };
        return Err(corrupt(actual, stored));
    }
    let mut reader = Hashing {
        inner: file.take(size),
        hasher: Sha256::new(),
        read: 0,
        error: None,
    };
    let header = header(&blob_path(digest), size, tar::EntryType::Regular, 0o644);
    let appended = tar.append(&header, &mut reader);
    // A failure to read the blob is the store's, not the archive's.
    if let Some(source) = reader.error.take() {
        return Err(content_err(ContentError::Io {
            op: "reading",
            path: content.blob_path(digest).unwrap_or_default(),
            source,
        }));
    }
    appended.map_err(ExportError::Write)?;
    let actual = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
    if reader.read != size || actual != digest.to_string() {
        return Err(corrupt(actual, reader.read));
    }
    Ok(())
}

/// Hashes what passes through, and keeps a read error apart from a write
/// error of the same copy.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.read += n as u64;
                Ok(n)
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Err(err),
            Err(err) => {
                let kind = err.kind();
                self.error = Some(err);
                Err(io::Error::new(kind, "reading the blob failed"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(name: &str, manifest: char) -> Planned {
        let digest = |c: char| -> Digest {
            format!("sha256:{}", c.to_string().repeat(64))
                .parse()
                .expect("digest")
        };
        Planned {
            name: name.to_owned(),
            platform: "linux/arm/v7".to_owned(),
            manifest_digest: digest(manifest),
            manifest_media_type: OCI_MANIFEST.to_owned(),
            manifest_size: 10,
            config: BlobRef {
                digest: digest('c'),
                size: 5,
            },
            layers: vec![BlobRef {
                digest: digest('1'),
                size: 7,
            }],
        }
    }

    #[test]
    fn names_of_one_manifest_share_a_docker_entry_and_each_get_an_index_entry() {
        let images = [
            planned("127.0.0.1:5000/a:1", 'a'),
            planned("127.0.0.1:5000/b:1", 'a'),
            planned("127.0.0.1:5000/c@sha256:ab", 'b'),
        ];
        let docker: Vec<DockerManifestEntry> =
            serde_json::from_slice(&docker_manifest_json(&images).expect("json")).expect("parse");
        assert_eq!(docker.len(), 2);
        assert_eq!(
            docker[0].repo_tags.as_deref(),
            Some(
                &[
                    "127.0.0.1:5000/a:1".to_owned(),
                    "127.0.0.1:5000/b:1".to_owned()
                ][..]
            )
        );
        assert_eq!(docker[0].config, format!("blobs/sha256/{}", "c".repeat(64)));
        assert_eq!(docker[1].repo_tags, None, "a digest-only name has no tag");

        let index: oci_spec::image::ImageIndex =
            serde_json::from_slice(&index_json(&images).expect("json")).expect("parse");
        assert_eq!(index.manifests().len(), 3);
        let names: Vec<_> = index
            .manifests()
            .iter()
            .map(|d| super::super::layout::name_of(d).0.expect("named"))
            .collect();
        assert_eq!(
            names,
            [
                "127.0.0.1:5000/a:1",
                "127.0.0.1:5000/b:1",
                "127.0.0.1:5000/c@sha256:ab"
            ]
        );
        let platform = index.manifests()[0].platform().clone().expect("platform");
        assert_eq!(platform.variant().as_deref(), Some("v7"));
    }
}
