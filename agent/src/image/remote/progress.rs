//! Per-pull hooks: progress reporting (CLI bars, rate-limited agent logs),
//! per-pull credentials, the guard that protects blobs from garbage
//! collection while they are written, and the tee that lets layers be
//! unpacked while they download.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_spec::image::{Descriptor, Digest, ImageConfiguration};

use super::RemoteError;
use crate::image::auth::Credentials;
use crate::image::content::VerifiedIngest;

/// Per-blob progress, for the CLI's bars and the agent's rate-limited logs.
pub trait Progress: Send + Sync {
    /// `done` of `total` bytes of `digest` are stored (including bytes kept
    /// from an earlier, interrupted attempt).
    fn blob_progress(&self, digest: &Digest, done: u64, total: u64);
    /// The blob is stored and verified; `downloaded` is false when it was
    /// already there.
    fn blob_done(&self, _digest: &Digest, _downloaded: bool) {}
    /// A host failed and the next one will be tried (the last host's
    /// failure is in the error instead).
    fn host_failed(&self, _host: &str, _error: &RemoteError) {}
}

/// Keeps blobs safe from garbage collection while a pull writes them (the
/// image service's lease implements it).
pub trait BlobGuard: Send + Sync {
    /// Called before `digest` is written to the content store; an error
    /// stops the pull.
    fn protect(&self, digest: &Digest) -> Result<(), String>;

    /// [`BlobGuard::protect`] for several blobs at once (one transaction
    /// instead of one per blob: each is a disk sync).
    fn protect_all(&self, digests: &[&Digest]) -> Result<(), String> {
        digests.iter().try_for_each(|digest| self.protect(digest))
    }
}

/// A pull under an image-service lease: each blob joins the lease before it
/// is written, so a concurrent GC leaves it alone.
impl BlobGuard for crate::image::meta::Lease {
    fn protect(&self, digest: &Digest) -> Result<(), String> {
        self.add_blob(digest)
            .map_err(|err| crate::status::chain(&err))
    }

    fn protect_all(&self, digests: &[&Digest]) -> Result<(), String> {
        self.add_all(digests, &[])
            .map_err(|err| crate::status::chain(&err))
    }
}

/// Receives layers' bytes while they download, so they can be unpacked in
/// the same pass (the image service's streaming unpack implements it).
/// With a tee, the puller fetches the config before the layers, and a
/// layer blob a sink took is stored only once its owner commits it: call
/// the tee's own finishing step before using the fetched image.
pub trait LayerTee: Send + Sync {
    /// The chosen manifest's layers (base first, OCI media types) and the
    /// image config, before any layer is downloaded.
    fn begin(&self, config: &ImageConfiguration, layers: &[Descriptor]);
    /// A download of `layer` starts from its first byte: where its bytes
    /// should also go, if anywhere.
    fn open(&self, layer: &Descriptor) -> Option<Box<dyn TeeSink>>;
}

/// One download's copy of a layer's bytes. Dropping it without
/// [`TeeSink::finish`] means the same as `finish(None)`.
pub trait TeeSink: Send {
    /// The next bytes of the blob, in order. `false`: the sink wants no
    /// more (its consumer gave up); the download goes on regardless.
    fn write(&mut self, chunk: &bytes::Bytes) -> bool;
    /// The body ended: no more bytes will come (the verdict follows once the
    /// blob is checked).
    fn end(&mut self);
    /// The download is over. `Some`: every byte went through
    /// [`TeeSink::write`] and the blob matched its size and digest; the sink
    /// now owns committing it to the content store (together with what it
    /// built from the bytes, with one sync for all). `None`: nothing built
    /// from the bytes may be used.
    fn finish(self: Box<Self>, blob: Option<VerifiedIngest>);
}

/// Per-pull settings beyond the reference and platform.
#[derive(Clone, Copy)]
pub struct FetchOptions<'a> {
    pub progress: &'a dyn Progress,
    /// Credentials for this pull only (the node's merged with a pod's image
    /// pull secrets); `None` uses the puller's.
    pub credentials: Option<&'a Credentials>,
    pub guard: Option<&'a dyn BlobGuard>,
    /// Where layer bytes also go while they download.
    pub tee: Option<&'a dyn LayerTee>,
    /// Re-hash blobs already stored instead of trusting them; a corrupt one
    /// is fetched again (`berth pull` repairs what `berth images --check`
    /// found).
    pub verify_stored: bool,
    /// Asked, once the blobs are known, whether they fit
    /// (`crate::image::preflight`).
    pub preflight: Option<&'a dyn Preflight>,
}

/// A check before a pull downloads its blobs (every blob of the chosen
/// manifest, config first); an error refuses the pull.
pub trait Preflight: Send + Sync {
    fn check<'a>(
        &'a self,
        blobs: &'a [oci_spec::image::Descriptor],
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

impl<'a> FetchOptions<'a> {
    pub fn new(progress: &'a dyn Progress) -> Self {
        Self {
            progress,
            credentials: None,
            guard: None,
            tee: None,
            verify_stored: false,
            preflight: None,
        }
    }

    pub(super) fn protect(&self, digest: &Digest) -> Result<(), RemoteError> {
        match self.guard {
            Some(guard) => guard.protect(digest).map_err(|reason| RemoteError::Guard {
                digest: digest.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    pub(super) fn protect_all(&self, digests: &[&Digest]) -> Result<(), RemoteError> {
        match (self.guard, digests.first()) {
            (Some(guard), Some(first)) => {
                guard
                    .protect_all(digests)
                    .map_err(|reason| RemoteError::Guard {
                        digest: first.to_string(),
                        reason,
                    })
            }
            _ => Ok(()),
        }
    }
}

/// Progress for the agent's log: per blob, one `info` line at most every
/// `interval`, and one when it is stored.
pub struct TracingProgress {
    image: String,
    interval: Duration,
    last: Mutex<HashMap<Digest, Instant>>,
}

impl TracingProgress {
    pub fn new(image: impl Into<String>, interval: Duration) -> Self {
        Self {
            image: image.into(),
            interval,
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for TracingProgress {
    fn blob_progress(&self, digest: &Digest, done: u64, total: u64) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let due = last
            .get(digest)
            .is_none_or(|at| now.duration_since(*at) >= self.interval);
        if due {
            last.insert(digest.clone(), now);
            tracing::info!(image = %self.image, blob = %digest, done, total, "pulling");
        }
    }

    fn blob_done(&self, digest: &Digest, downloaded: bool) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
        tracing::info!(image = %self.image, blob = %digest, downloaded, "blob stored");
    }

    fn host_failed(&self, host: &str, error: &RemoteError) {
        tracing::warn!(image = %self.image, %host, error = %crate::status::chain(error), "registry host failed; trying the next one");
    }
}

/// Progress reporting that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn blob_progress(&self, _digest: &Digest, _done: u64, _total: u64) {}
}
