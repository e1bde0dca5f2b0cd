//! `berth import`: images from an archive file, for hosts without registry
//! access. Two formats are read:
//!
//! - **OCI archive**: a tar of an OCI image layout (`oci-layout`,
//!   `index.json`, `blobs/sha256/<hex>`), as `skopeo copy … oci-archive:`
//!   writes it. Names come from the index entry's `io.containerd.image.name`
//!   annotation, or `org.opencontainers.image.ref.name` when that is a full
//!   reference (a bare tag such as `latest` needs `--name`).
//! - **`docker save` tarball**: `manifest.json` (`Config`, `RepoTags`,
//!   `Layers`) plus the config JSON and layer tars it names, as `docker
//!   save` and `skopeo copy … docker-archive:` write them. Layers become OCI
//!   layer blobs with computed digests (media type by their magic bytes) and
//!   an OCI manifest is synthesised, so its digest differs from the one a
//!   registry would show. Names come from `RepoTags`.
//!
//! When an archive has both (`docker save` of Docker 25+), `index.json`
//! wins. The archive itself may be gzip- or zstd-compressed.
//! `--name` replaces the archive's names (it needs an archive of one image).
//!
//! The archive is read in one pass and every blob is streamed into the
//! content store (verified against its digest when the layout names one);
//! no layer is ever held in memory. Every blob is added to the import's
//! lease before it is written, so a concurrent GC cannot delete it.
//! Only images for this host's platform are imported.

mod staged;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{
    Descriptor, DescriptorBuilder, Digest, ImageConfiguration, ImageIndex, ImageManifest,
    ImageManifestBuilder, MediaType,
};

use super::content::{ContentError, ContentStore};
use super::layout::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_FILE, DockerManifestEntry, INDEX_FILE, OCI_CONFIG,
    OCI_LAYOUT_FILE, OCI_MANIFEST, REPOSITORIES_FILE, layout_digest, name_of,
};
use super::meta::{Lease, MetaError};
use super::remote::{FetchStats, FetchedImage, Platform};
use super::unpack::budget::Budget;
use super::unpack::tarstream::{TarError, TarStream};
use super::unpack::{Compression, CopyError, LimitError, UnpackLimits, copy_chunks};
use manifests::reference::ImageReference;
use staged::Staged;

/// `index.json`, `manifest.json` and friends are read whole; anything this
/// large is not one.
const MAX_METADATA_BYTES: u64 = 16 << 20;
/// Entries of an archive: an image's blobs and metadata are a handful per
/// layer, and each entry is remembered while the archive is read.
const MAX_ARCHIVE_ENTRIES: u64 = 100_000;
const COPY_BUFFER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading archive {}", archive.display())]
    Read {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is neither an OCI archive (no index.json) nor a docker save tarball (no manifest.json)",
        archive.display()
    )]
    UnknownFormat { archive: PathBuf },
    #[error("{} in archive {}: {reason}", file, archive.display())]
    BadFile {
        archive: PathBuf,
        file: String,
        reason: String,
    },
    #[error("archive {} refers to {what}, which it does not contain", archive.display())]
    Missing { archive: PathBuf, what: String },
    #[error(
        "archive {} holds an image without a name{}; pass --name",
        archive.display(),
        tag_hint(.tag)
    )]
    NoName {
        archive: PathBuf,
        tag: Option<String>,
    },
    #[error("--name needs an archive of one image, but {} holds {count}", archive.display())]
    SeveralImages { archive: PathBuf, count: usize },
    #[error("archive {} has no image for this host's platform {host} (it has: {available})", archive.display())]
    NoPlatform {
        archive: PathBuf,
        host: String,
        available: String,
    },
    #[error("archive {}: image name {name:?}: {reason}", archive.display())]
    BadName {
        archive: PathBuf,
        name: String,
        reason: String,
    },
    #[error("archive {}: blob {digest}", archive.display())]
    Content {
        archive: PathBuf,
        digest: String,
        #[source]
        source: ContentError,
    },
    #[error("archive {} refused", archive.display())]
    Refused {
        archive: PathBuf,
        #[source]
        limit: LimitError,
    },
    #[error("archive {}", archive.display())]
    Tar {
        archive: PathBuf,
        #[source]
        source: TarError,
    },
    #[error("archive {}", archive.display())]
    Lease {
        archive: PathBuf,
        #[source]
        source: MetaError,
    },
}

fn tag_hint(tag: &Option<String>) -> String {
    tag.as_ref()
        .map(|tag| format!(" (only the tag {tag:?})"))
        .unwrap_or_default()
}

/// Reads `archive` into the content store and describes the images in it
/// for the host `platform`, one [`FetchedImage`] per name.
pub fn read_archive(
    content: &ContentStore,
    lease: &Lease,
    archive: &Path,
    name: Option<&ImageReference>,
    platform: &Platform,
) -> Result<Vec<FetchedImage>, ImportError> {
    let files = store_entries(content, lease, archive)?;
    let reader = ArchiveContents {
        archive,
        content,
        lease,
        files,
    };
    let images = if reader.files.metadata.contains_key(INDEX_FILE) {
        reader.oci_images(platform)?
    } else if reader.files.metadata.contains_key(DOCKER_MANIFEST_FILE) {
        reader.docker_images()?
    } else {
        return Err(ImportError::UnknownFormat {
            archive: archive.to_path_buf(),
        });
    };
    let images = match name {
        Some(name) => {
            let mut distinct: Vec<&Candidate> = Vec::new();
            for image in &images {
                if !distinct
                    .iter()
                    .any(|d| d.manifest_digest == image.manifest_digest)
                {
                    distinct.push(image);
                }
            }
            if distinct.len() != 1 {
                return Err(ImportError::SeveralImages {
                    archive: archive.to_path_buf(),
                    count: distinct.len(),
                });
            }
            vec![Candidate {
                name: Some(name.to_string()),
                ..distinct[0].clone()
            }]
        }
        None => images,
    };
    images
        .into_iter()
        .map(|candidate| reader.finish(candidate, platform))
        .collect()
}

/// What one pass over the archive found.
#[derive(Default)]
struct ArchiveFiles {
    /// Small JSON files at the top of the archive, read whole.
    metadata: HashMap<String, Vec<u8>>,
    /// Every other regular file: its digest and size in the content store.
    blobs: HashMap<String, (Digest, u64)>,
    /// Symlinks (legacy `docker save` links shared layers).
    links: HashMap<String, String>,
}

fn store_entries(
    content: &ContentStore,
    lease: &Lease,
    archive: &Path,
) -> Result<ArchiveFiles, ImportError> {
    let read_err = |source| ImportError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let file = File::open(archive).map_err(read_err)?;
    let mut buffered = BufReader::with_capacity(COPY_BUFFER, file);
    let head = buffered.fill_buf().map_err(read_err)?;
    let stream: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(read_err)?)
        }
    };
    let limits = archive_limits();
    let mut tar = TarStream::new(stream, limits);
    let tar_err = |err: TarError| match err {
        TarError::Limit(limit) => ImportError::Refused {
            archive: archive.to_path_buf(),
            limit,
        },
        TarError::Read(source) => read_err(source),
        other => ImportError::Tar {
            archive: archive.to_path_buf(),
            source: other,
        },
    };
    let mut files = ArchiveFiles::default();
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut count = 0u64;
    while let Some(entry) = tar.next_entry().map_err(tar_err)? {
        count += 1;
        if count > limits.max_entries {
            return Err(tar_err(TarError::Limit(LimitError::TooManyEntries {
                limit: limits.max_entries,
            })));
        }
        let path = normalize(&String::from_utf8_lossy(&entry.path));
        match entry.kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink => {
                if let Some(target) = &entry.link {
                    let target = String::from_utf8_lossy(target).into_owned();
                    let parent = Path::new(&path).parent().unwrap_or(Path::new(""));
                    files.links.insert(
                        path.clone(),
                        normalize(&parent.join(target).to_string_lossy()),
                    );
                }
                continue;
            }
            _ => continue,
        }
        if is_legacy_docker_metadata(&path) {
            continue;
        }
        if [
            INDEX_FILE,
            DOCKER_MANIFEST_FILE,
            OCI_LAYOUT_FILE,
            REPOSITORIES_FILE,
        ]
        .contains(&path.as_str())
        {
            if entry.size > MAX_METADATA_BYTES {
                return Err(ImportError::BadFile {
                    archive: archive.to_path_buf(),
                    file: path,
                    reason: format!("{} bytes is too large for image metadata", entry.size),
                });
            }
            let mut bytes = Vec::new();
            tar.data().read_to_end(&mut bytes).map_err(read_err)?;
            files.metadata.insert(path, bytes);
            continue;
        }
        if entry.sparse {
            // A sparse entry expands a few bytes of archive into any size.
            return Err(ImportError::BadFile {
                archive: archive.to_path_buf(),
                file: path,
                reason: "it is a sparse file, which no image blob is".into(),
            });
        }
        // Checked before the blob is written: a compressed archive could
        // otherwise fill the store's disk with one blob.
        Budget::new(UnpackLimits::default(), File::open(content.root()).ok())
            .file(&entry.path, entry.size)
            .map_err(|limit| tar_err(TarError::Limit(limit)))?;
        let mut data = tar.data();
        let stored = match layout_digest(&path) {
            Some(digest) => store_known(content, lease, archive, &digest, &mut data, &mut buffer)?,
            None => store_unknown(content, lease, archive, &mut data, &mut buffer)?,
        };
        files.blobs.insert(path, stored);
    }
    Ok(files)
}

/// The limits an archive is read under: a layer's header limits, no size
/// limit (the archive is a file the operator chose; its layers get theirs
/// when they are unpacked), and at most [`MAX_ARCHIVE_ENTRIES`] entries.
fn archive_limits() -> UnpackLimits {
    UnpackLimits {
        max_layer_bytes: u64::MAX,
        max_entries: MAX_ARCHIVE_ENTRIES,
        ..UnpackLimits::default()
    }
}

/// Per-layer `VERSION` and `json` files of the legacy `docker save` format
/// describe nothing an OCI image needs.
fn is_legacy_docker_metadata(path: &str) -> bool {
    matches!(path.rsplit_once('/'), Some((_, "VERSION" | "json")))
}

/// A blob whose digest the layout states: verified while it is stored.
fn store_known(
    content: &ContentStore,
    lease: &Lease,
    archive: &Path,
    digest: &Digest,
    entry: &mut dyn Read,
    buffer: &mut [u8],
) -> Result<(Digest, u64), ImportError> {
    let content_err = |source| ImportError::Content {
        archive: archive.to_path_buf(),
        digest: digest.to_string(),
        source,
    };
    lease
        .add_blob(digest)
        .map_err(|source| ImportError::Lease {
            archive: archive.to_path_buf(),
            source,
        })?;
    if let Some(size) = content.size(digest).map_err(content_err)? {
        return Ok((digest.clone(), size));
    }
    let mut ingest = content.ingest(digest, None).map_err(content_err)?;
    ingest.restart().map_err(content_err)?;
    copy_chunks(entry, buffer, |chunk| ingest.write_all(chunk)).map_err(|err| match err {
        CopyError::Read(source) => ImportError::Read {
            archive: archive.to_path_buf(),
            source,
        },
        CopyError::Write(source) => content_err(source),
    })?;
    let size = ingest.offset();
    ingest.commit().map_err(content_err)?;
    Ok((digest.clone(), size))
}

/// A blob named by path only (`docker save`): hashed while staged, leased,
/// then committed.
fn store_unknown(
    content: &ContentStore,
    lease: &Lease,
    archive: &Path,
    entry: &mut dyn Read,
    buffer: &mut [u8],
) -> Result<(Digest, u64), ImportError> {
    let staged = Staged::write(content, entry, buffer).map_err(|source| ImportError::Content {
        archive: archive.to_path_buf(),
        digest: String::from("(being computed)"),
        source,
    })?;
    let digest = staged.digest().clone();
    let size = staged.size();
    lease
        .add_blob(&digest)
        .map_err(|source| ImportError::Lease {
            archive: archive.to_path_buf(),
            source,
        })?;
    staged.commit().map_err(|source| ImportError::Content {
        archive: archive.to_path_buf(),
        digest: digest.to_string(),
        source,
    })?;
    Ok((digest, size))
}

/// `./a/../b//c` → `b/c`; archive paths are only keys, never written.
fn normalize(path: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// An image found in the archive, before its name is checked.
#[derive(Debug, Clone)]
struct Candidate {
    name: Option<String>,
    /// A bare tag from `org.opencontainers.image.ref.name`, for the error.
    tag_only: Option<String>,
    index_digest: Option<Digest>,
    manifest_digest: Digest,
    manifest_media_type: String,
}

struct ArchiveContents<'a> {
    archive: &'a Path,
    content: &'a ContentStore,
    lease: &'a Lease,
    files: ArchiveFiles,
}

impl ArchiveContents<'_> {
    fn bad(&self, file: impl Into<String>, reason: impl ToString) -> ImportError {
        ImportError::BadFile {
            archive: self.archive.to_path_buf(),
            file: file.into(),
            reason: reason.to_string(),
        }
    }

    fn read_blob(&self, digest: &Digest, what: &str) -> Result<Vec<u8>, ImportError> {
        match self.content.read_blob(digest) {
            Ok(bytes) => Ok(bytes),
            Err(ContentError::NotFound { .. }) => Err(ImportError::Missing {
                archive: self.archive.to_path_buf(),
                what: format!("{what} {digest}"),
            }),
            Err(source) => Err(ImportError::Content {
                archive: self.archive.to_path_buf(),
                digest: digest.to_string(),
                source,
            }),
        }
    }

    fn oci_images(&self, platform: &Platform) -> Result<Vec<Candidate>, ImportError> {
        let index: ImageIndex = serde_json::from_slice(&self.files.metadata[INDEX_FILE])
            .map_err(|err| self.bad(INDEX_FILE, err))?;
        let entries = index.manifests();
        let named = entries.iter().any(|d| name_of(d).0.is_some());
        let manifests = entries
            .iter()
            .filter(|d| is_manifest(d.media_type()))
            .count();
        // A multi-platform image flattened into index.json itself.
        if !named && manifests > 1 && entries.iter().all(|d| d.platform().is_some()) {
            let chosen = self.select(platform, entries, INDEX_FILE)?;
            return Ok(vec![self.candidate(chosen, None, None)?]);
        }
        let mut images = Vec::new();
        for entry in entries {
            let (name, tag_only) = name_of(entry);
            if *entry.media_type() == MediaType::ImageIndex
                || entry.media_type().to_string()
                    == "application/vnd.docker.distribution.manifest.list.v2+json"
            {
                let bytes = self.read_blob(entry.digest(), "image index")?;
                let nested: ImageIndex = serde_json::from_slice(&bytes)
                    .map_err(|err| self.bad(entry.digest().to_string(), err))?;
                let chosen = self.select(platform, nested.manifests(), entry.digest().as_ref())?;
                let mut candidate = self.candidate(chosen, name, tag_only)?;
                candidate.index_digest = Some(entry.digest().clone());
                images.push(candidate);
            } else if is_manifest(entry.media_type()) {
                images.push(self.candidate(entry, name, tag_only)?);
            }
        }
        if images.is_empty() {
            return Err(self.bad(INDEX_FILE, "it lists no image manifest"));
        }
        Ok(images)
    }

    fn select<'d>(
        &self,
        platform: &Platform,
        entries: &'d [Descriptor],
        file: &str,
    ) -> Result<&'d Descriptor, ImportError> {
        platform
            .select(entries)
            .ok_or_else(|| ImportError::NoPlatform {
                archive: self.archive.to_path_buf(),
                host: platform.to_string(),
                available: entries
                    .iter()
                    .filter_map(Platform::of_descriptor)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
                    + &format!(" in {file}"),
            })
    }

    fn candidate(
        &self,
        descriptor: &Descriptor,
        name: Option<String>,
        tag_only: Option<String>,
    ) -> Result<Candidate, ImportError> {
        Ok(Candidate {
            name,
            tag_only,
            index_digest: None,
            manifest_digest: descriptor.digest().clone(),
            manifest_media_type: descriptor.media_type().to_string(),
        })
    }

    fn docker_images(&self) -> Result<Vec<Candidate>, ImportError> {
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&self.files.metadata[DOCKER_MANIFEST_FILE])
                .map_err(|err| self.bad(DOCKER_MANIFEST_FILE, err))?;
        let mut images = Vec::new();
        for entry in entries {
            let (config_digest, config_size) = self.blob_at(&entry.config)?;
            let mut layers = Vec::with_capacity(entry.layers.len());
            for layer_path in &entry.layers {
                let (digest, size) = self.blob_at(layer_path)?;
                let media_type = self.sniff_layer(&digest)?;
                layers.push(descriptor(media_type, size, &digest));
            }
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(descriptor(OCI_CONFIG, config_size, &config_digest))
                .layers(layers)
                .build()
                .map_err(|err| self.bad(DOCKER_MANIFEST_FILE, err))?;
            let bytes =
                serde_json::to_vec(&manifest).map_err(|err| self.bad(DOCKER_MANIFEST_FILE, err))?;
            let manifest_digest = super::content::sha256_digest_of(&bytes);
            self.lease
                .add_blob(&manifest_digest)
                .map_err(|source| ImportError::Lease {
                    archive: self.archive.to_path_buf(),
                    source,
                })?;
            self.content
                .write_blob(&bytes)
                .map_err(|source| ImportError::Content {
                    archive: self.archive.to_path_buf(),
                    digest: manifest_digest.to_string(),
                    source,
                })?;
            let tags = entry.repo_tags.unwrap_or_default();
            let template = Candidate {
                name: None,
                tag_only: None,
                index_digest: None,
                manifest_digest,
                manifest_media_type: OCI_MANIFEST.to_owned(),
            };
            if tags.is_empty() {
                images.push(template.clone());
            }
            for tag in tags {
                images.push(Candidate {
                    name: Some(tag),
                    ..template.clone()
                });
            }
        }
        if images.is_empty() {
            return Err(self.bad(DOCKER_MANIFEST_FILE, "it lists no image"));
        }
        Ok(images)
    }

    /// The blob stored for an archive path, following symlinks.
    fn blob_at(&self, path: &str) -> Result<(Digest, u64), ImportError> {
        let mut path = normalize(path);
        for _ in 0..8 {
            match self.files.links.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        self.files
            .blobs
            .get(&path)
            .cloned()
            .ok_or_else(|| ImportError::Missing {
                archive: self.archive.to_path_buf(),
                what: path,
            })
    }

    fn sniff_layer(&self, digest: &Digest) -> Result<&'static str, ImportError> {
        let mut head = [0u8; 4];
        let mut blob = self
            .content
            .open_blob(digest)
            .map_err(|source| ImportError::Content {
                archive: self.archive.to_path_buf(),
                digest: digest.to_string(),
                source,
            })?;
        let mut filled = 0;
        while filled < head.len() {
            match blob.read(&mut head[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ImportError::Read {
                        archive: self.archive.to_path_buf(),
                        source,
                    });
                }
            }
        }
        Ok(Compression::sniff(&head[..filled]).oci_media_type())
    }

    /// Loads manifest and config, checks names and platform and that every
    /// layer is stored.
    fn finish(
        &self,
        candidate: Candidate,
        platform: &Platform,
    ) -> Result<FetchedImage, ImportError> {
        let name = candidate.name.clone().ok_or_else(|| ImportError::NoName {
            archive: self.archive.to_path_buf(),
            tag: candidate.tag_only.clone(),
        })?;
        let bad_name = |reason: String| ImportError::BadName {
            archive: self.archive.to_path_buf(),
            name: name.clone(),
            reason,
        };
        let reference = ImageReference::parse(&name).map_err(|err| bad_name(err.to_string()))?;
        let manifest_bytes = self.read_blob(&candidate.manifest_digest, "image manifest")?;
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|err| self.bad(candidate.manifest_digest.to_string(), err))?;
        let config_digest = manifest.config().digest().clone();
        let config_bytes = self.read_blob(&config_digest, "image config")?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|err| self.bad(config_digest.to_string(), err))?;
        let image_platform = Platform::new(
            &config.os().to_string(),
            &config.architecture().to_string(),
            config.variant().as_deref(),
        );
        if !platform.matches(&image_platform) {
            return Err(ImportError::NoPlatform {
                archive: self.archive.to_path_buf(),
                host: platform.to_string(),
                available: image_platform.to_string(),
            });
        }
        for layer in manifest.layers() {
            if !self.content.contains(layer.digest()).unwrap_or(false) {
                return Err(ImportError::Missing {
                    archive: self.archive.to_path_buf(),
                    what: format!("layer {}", layer.digest()),
                });
            }
        }
        Ok(FetchedImage {
            reference,
            platform: image_platform,
            index_digest: candidate.index_digest,
            manifest_digest: candidate.manifest_digest,
            manifest_media_type: candidate.manifest_media_type,
            layers: manifest.layers().clone(),
            manifest,
            config_digest,
            config,
            stats: FetchStats::default(),
        })
    }
}

fn is_manifest(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageManifest || media_type.to_string() == DOCKER_MANIFEST
}

fn descriptor(media_type: &str, size: u64, digest: &Digest) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .size(size)
        .digest(digest.clone())
        .build()
        .expect("media type, size and digest are all a descriptor needs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_normalised() {
        assert_eq!(normalize("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(normalize("abc/../def/layer.tar"), "def/layer.tar");
        assert_eq!(normalize("/manifest.json"), "manifest.json");
    }
}
