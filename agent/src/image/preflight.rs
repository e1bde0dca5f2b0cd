//! The disk pre-flight of a pull: before any blob is downloaded, the bytes
//! the pull will need — its missing blobs compressed, plus an estimate of
//! their unpacked size — are compared with the free space of the store's
//! file system (`--root`) less `[store] min-free`. When short,
//! unreferenced images are collected first (as `berth prune`: images no
//! container uses and no Image object pins); when still short the pull is
//! refused with `InsufficientDisk: need X, free Y`, before it has written
//! anything, so whatever runs keeps running and the disk never fills up
//! halfway through a layer.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use oci_spec::image::Descriptor;

use super::remote::Preflight;
use super::service::ImageService;

/// Unpacked bytes per compressed byte of a gzip or zstd layer (container
/// layers compress 2–3×); an uncompressed layer unpacks to its own size.
const UNPACK_ESTIMATE_NUM: u64 = 5;
const UNPACK_ESTIMATE_DEN: u64 = 2;

/// The default reserve: a twentieth of the file system, at most 1 GiB
/// (the same the unpacker keeps).
const DEFAULT_SHARE: u64 = 5;
const DEFAULT_CAP: u64 = 1 << 30;

/// `[store] min-free`: free space a pull must leave on the store's file
/// system: a size (`"2GiB"`), a share (`"10%"`), or by default 5% capped
/// at 1 GiB (read by `crate::config::min_free`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MinFree {
    #[default]
    Default,
    Percent(u64),
    Bytes(u64),
}

impl MinFree {
    /// The bytes to keep free on a file system of `total` bytes.
    pub fn reserve(self, total: u64) -> u64 {
        match self {
            Self::Default => (total / 100 * DEFAULT_SHARE).min(DEFAULT_CAP),
            Self::Percent(p) => total / 100 * p,
            Self::Bytes(bytes) => bytes,
        }
    }
}

/// What a pull needs: the compressed bytes of the blobs not stored yet
/// and, for layers, their estimated unpacked size.
pub fn need(blobs: &[Descriptor], stored: impl Fn(&Descriptor) -> bool) -> u64 {
    blobs
        .iter()
        .filter(|blob| !stored(blob))
        .map(|blob| {
            let size = blob.size();
            let media_type = blob.media_type().to_string();
            let unpacked = if media_type.contains("layer") {
                if media_type.ends_with("gzip") || media_type.ends_with("zstd") {
                    size.saturating_mul(UNPACK_ESTIMATE_NUM) / UNPACK_ESTIMATE_DEN
                } else {
                    size
                }
            } else {
                0
            };
            size.saturating_add(unpacked)
        })
        .fold(0, u64::saturating_add)
}

/// `12.3 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The store's pre-flight, for the agent's pulls.
pub struct DiskPreflight {
    pub service: ImageService,
    pub min_free: MinFree,
}

impl DiskPreflight {
    /// Free bytes above the reserve on the file system holding `root`.
    fn usable(root: &Path, min_free: MinFree) -> Result<u64, String> {
        let fs = rustix::fs::statvfs(root)
            .map_err(|errno| format!("statvfs {}: {errno}", root.display()))?;
        let available = fs.f_bavail.saturating_mul(fs.f_frsize);
        let total = fs.f_blocks.saturating_mul(fs.f_frsize);
        Ok(available.saturating_sub(min_free.reserve(total)))
    }

    fn check_blocking(service: &ImageService, min_free: MinFree, need: u64) -> Result<(), String> {
        let root: PathBuf = service.content().root().to_path_buf();
        if need <= Self::usable(&root, min_free)? {
            return Ok(());
        }
        match service.prune() {
            Ok(report) => tracing::info!(
                images = report.images.len(),
                freed = report.gc.bytes_freed(),
                "collected unreferenced images before a pull that did not fit"
            ),
            Err(err) => {
                tracing::warn!(error = %crate::status::chain(&err), "could not collect unreferenced images")
            }
        }
        let free = Self::usable(&root, min_free)?;
        if need <= free {
            return Ok(());
        }
        Err(format!(
            "InsufficientDisk: need {}, free {} (on the file system of {}, keeping [store] min-free)",
            human(need),
            human(free),
            root.display()
        ))
    }
}

impl Preflight for DiskPreflight {
    fn check<'a>(&'a self, blobs: &'a [Descriptor]) -> BoxFuture<'a, Result<(), String>> {
        let service = self.service.clone();
        let min_free = self.min_free;
        let blobs = blobs.to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let content = service.content();
                let need = need(&blobs, |blob| {
                    content.contains(blob.digest()).unwrap_or(false)
                });
                if need == 0 {
                    return Ok(());
                }
                Self::check_blocking(&service, min_free, need)
            })
            .await
            .map_err(|err| format!("the disk pre-flight stopped: {err}"))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{DescriptorBuilder, MediaType};

    fn blob(media_type: MediaType, size: u64, n: u8) -> Descriptor {
        DescriptorBuilder::default()
            .media_type(media_type)
            .size(size)
            .digest(
                format!("sha256:{}", hex::encode([n; 32]))
                    .parse::<oci_spec::image::Digest>()
                    .expect("a digest"),
            )
            .build()
            .expect("a descriptor")
    }

    #[test]
    fn a_pull_needs_its_missing_blobs_and_their_unpacked_estimate() {
        let blobs = [
            blob(MediaType::ImageConfig, 1_000, 1),
            blob(MediaType::ImageLayerGzip, 10_000, 2),
            blob(MediaType::ImageLayer, 4_000, 3),
            blob(MediaType::ImageLayerGzip, 50_000, 4),
        ];
        // The last layer is stored already.
        let need = need(&blobs, |b| b.size() == 50_000);
        assert_eq!(need, 1_000 + 10_000 + 25_000 + 4_000 + 4_000);
    }

    #[test]
    fn min_free_is_five_percent_up_to_a_gib_by_default() {
        assert_eq!(MinFree::Default.reserve(100 << 20), 5 << 20);
        assert_eq!(MinFree::Default.reserve(1 << 40), 1 << 30);
        assert_eq!(MinFree::Percent(10).reserve(1000), 100);
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
