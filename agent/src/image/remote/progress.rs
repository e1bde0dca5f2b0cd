//! Per-pull hooks: progress reporting (CLI bars, rate-limited agent logs),
//! per-pull credentials and the guard that protects blobs from garbage
//! collection while they are written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_spec::image::Digest;

use super::RemoteError;
use crate::image::auth::Credentials;

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
}

/// A pull under an image-service lease: each blob joins the lease before it
/// is written, so a concurrent GC leaves it alone.
impl BlobGuard for crate::image::meta::Lease {
    fn protect(&self, digest: &Digest) -> Result<(), String> {
        self.add_blob(digest).map_err(|err| err.to_string())
    }
}

/// Per-pull settings beyond the reference and platform.
#[derive(Clone, Copy)]
pub struct FetchOptions<'a> {
    pub progress: &'a dyn Progress,
    /// Credentials for this pull only (the node's merged with a pod's image
    /// pull secrets); `None` uses the puller's.
    pub credentials: Option<&'a Credentials>,
    pub guard: Option<&'a dyn BlobGuard>,
}

impl<'a> FetchOptions<'a> {
    pub fn new(progress: &'a dyn Progress) -> Self {
        Self {
            progress,
            credentials: None,
            guard: None,
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
        tracing::warn!(image = %self.image, %host, %error, "registry host failed; trying the next one");
    }
}

/// Progress reporting that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn blob_progress(&self, _digest: &Digest, _done: u64, _total: u64) {}
}
