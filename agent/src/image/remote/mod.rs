//! The distribution client: resolve an image reference to a manifest through
//! the endpoints the [`Resolver`] gives, pick the platform from an index,
//! and fetch the config and layers into the [`ContentStore`].
//!
//! ```text
//! Puller::fetch(reference, platform, progress)
//!   manifest by tag   → hosts with `resolve`, in order  ┐ each host's error is
//!   manifest by digest, config, layers → hosts with `pull`┘ kept for the report
//!   layers: `concurrency` at a time, stored ones skipped, Range-resumed
//! ```
//!
//! Every manifest is verified against its digest (the requested one, or the
//! one the registry claims in `Docker-Content-Digest` for a tag) and stored.
//! OCI image manifests and indexes and Docker schema2 manifests and manifest
//! lists are accepted; a Docker schema2 image comes out in the same
//! [`FetchedImage`] shape, with its layer media types mapped to the OCI ones.
//! When every host fails, the error lists each host tried with its error.

mod blob;
mod body;
mod error;
mod manifest;
pub mod platform;
mod progress;
mod redact;
pub mod reference;
mod request;
mod session;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest};

use error::Attempts;
pub use error::{Attempt, RemoteError};
pub use manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use manifest::{Document, ManifestBlob, fetch_manifest, oci_layer};
pub use platform::Platform;
pub use progress::{
    BlobGuard, FetchOptions, LayerTee, NoProgress, Preflight, Progress, TeeSink, TracingProgress,
};
pub use reference::ImageReference;
use session::{AuthCache, Session};

use crate::image::auth::Credentials;
use crate::image::content::ContentStore;
use crate::image::hosts::{Capabilities, Resolver};

/// Layers downloaded at the same time, unless configured otherwise.
pub const DEFAULT_CONCURRENCY: usize = 3;
/// How long a registry may send nothing (no response head, no body byte)
/// before its host is given up for the next one, unless configured
/// otherwise (`[images] stall-timeout`).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
pub use body::{MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, MAX_TOKEN_BYTES};

/// What [`Puller::fetch`] stored: everything unpacking and running needs.
#[derive(Debug, Clone)]
pub struct FetchedImage {
    pub reference: ImageReference,
    /// The platform of the chosen manifest (from the index entry, or the
    /// requested one for a single-platform image).
    pub platform: Platform,
    /// The index or manifest list the tag pointed to, if any.
    pub index_digest: Option<Digest>,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    /// The layers, base first, with OCI media types (Docker's mapped).
    pub layers: Vec<Descriptor>,
    pub stats: FetchStats,
}

#[derive(Debug, Clone, Default)]
pub struct FetchStats {
    /// Body bytes received over the network (manifests and blobs).
    pub bytes_transferred: u64,
    pub blobs_downloaded: usize,
    pub blobs_already_present: usize,
    pub elapsed: Duration,
}

/// Pulls images through a [`Resolver`] into a [`ContentStore`]. Cheap to
/// keep for the agent's lifetime: it caches auth tokens across pulls.
pub struct Puller {
    resolver: Arc<Resolver>,
    credentials: Credentials,
    store: ContentStore,
    concurrency: usize,
    stall_timeout: Duration,
    auth_cache: AuthCache,
    rate: Option<Arc<crate::image::rate::RateLimit>>,
}

impl Puller {
    pub fn new(resolver: Arc<Resolver>, credentials: Credentials, store: ContentStore) -> Self {
        Self {
            resolver,
            credentials,
            store,
            concurrency: DEFAULT_CONCURRENCY,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            auth_cache: AuthCache::default(),
            rate: None,
        }
    }

    /// Every blob download of this puller together at most
    /// `bytes_per_second` (0: no limit).
    pub fn with_max_download_rate(mut self, bytes_per_second: u64) -> Self {
        self.rate = crate::image::rate::RateLimit::new(bytes_per_second).map(Arc::new);
        self
    }

    /// How long a registry may send nothing before its host is given up
    /// (at least a millisecond).
    pub fn with_stall_timeout(mut self, stall_timeout: Duration) -> Self {
        self.stall_timeout = stall_timeout.max(Duration::from_millis(1));
        self
    }

    /// How many layers download at the same time (at least one).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Resolves `reference`, picks `platform` from an index, and stores the
    /// manifest(s), config and layers.
    pub async fn fetch(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        progress: &dyn Progress,
    ) -> Result<FetchedImage, RemoteError> {
        self.fetch_with(reference, platform, FetchOptions::new(progress))
            .await
    }

    /// [`Puller::fetch`] with per-pull credentials and a GC guard.
    pub async fn fetch_with(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        options: FetchOptions<'_>,
    ) -> Result<FetchedImage, RemoteError> {
        let started = Instant::now();
        let credentials = options.credentials.unwrap_or(&self.credentials);
        let sessions = self.sessions(reference, credentials)?;
        let mut stats = FetchStats::default();
        let pullers = self.hosts_with(&sessions, |c| c.pull, reference, "pull")?;
        let (index_digest, chosen, chosen_platform, transferred) = self
            .choose_manifest(&sessions, &pullers, reference, platform, &options)
            .await?;
        stats.bytes_transferred += transferred;
        let Document::Manifest(manifest) = chosen.document else {
            return Err(RemoteError::Protocol {
                url: reference.to_string(),
                reason: format!("index {} points to another index", chosen.digest),
            });
        };

        let config_descriptor = manifest.config().clone();
        if config_descriptor.size() > MAX_CONFIG_BYTES {
            // Verified content: every host would serve the same.
            return Err(RemoteError::TooLarge {
                url: format!(
                    "{reference}: manifest {}: config {}",
                    chosen.digest,
                    config_descriptor.digest()
                ),
                what: "image config",
                limit: MAX_CONFIG_BYTES,
            });
        }
        let layers: Vec<Descriptor> = manifest.layers().iter().map(oci_layer).collect();
        let mut blobs = vec![config_descriptor.clone()];
        for layer in &layers {
            if !blobs.iter().any(|b| b.digest() == layer.digest()) {
                blobs.push(layer.clone());
            }
        }
        if let Some(preflight) = options.preflight {
            preflight
                .check(&blobs)
                .await
                .map_err(|reason| RemoteError::Refused {
                    reference: reference.to_string(),
                    reason,
                })?;
        }
        // Every blob joins the GC guard before any is written, in one go.
        let digests: Vec<&Digest> = blobs.iter().map(Descriptor::digest).collect();
        options.protect_all(&digests)?;
        let mut results = Vec::with_capacity(blobs.len());
        if let Some(tee) = options.tee {
            // The tee needs the config (the layers' diffIDs) first. Then the
            // largest layers start first: with unpacking in the same pass,
            // the largest layer is the critical path.
            let config_descriptor = blobs.remove(0);
            results
                .push(fetch_blob_any(&pullers, &self.store, &config_descriptor, &options).await?);
            let config = self.read_config(reference, config_descriptor.digest())?;
            tee.begin(&config, &layers);
            blobs.sort_by_key(|blob| std::cmp::Reverse(blob.size()));
        }
        // Owned descriptors: a closure over borrowed ones would make the
        // future not `Send` (a higher-ranked lifetime rustc cannot prove).
        let (pullers, store, options) = (&pullers, &self.store, &options);
        let downloaded: Vec<blob::Downloaded> =
            futures::stream::iter(blobs)
                .map(|descriptor| async move {
                    fetch_blob_any(pullers, store, &descriptor, options).await
                })
                .buffer_unordered(self.concurrency)
                .try_collect()
                .await?;
        results.extend(downloaded);
        for downloaded in &results {
            stats.bytes_transferred += downloaded.transferred;
            if downloaded.transferred > 0 {
                stats.blobs_downloaded += 1;
            } else {
                stats.blobs_already_present += 1;
            }
        }

        let config_digest = config_descriptor.digest().clone();
        let config = self.read_config(reference, &config_digest)?;
        stats.elapsed = started.elapsed();
        Ok(FetchedImage {
            reference: reference.clone(),
            platform: chosen_platform,
            index_digest,
            manifest_digest: chosen.digest,
            manifest_media_type: chosen.media_type,
            manifest: *manifest,
            config_digest,
            config,
            layers,
            stats,
        })
    }

    /// What `reference` points to now, for `platform`, without downloading
    /// the image's blobs: (index digest, manifest digest). `berth
    /// auto-update --dry-run` asks this.
    pub async fn resolve(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        progress: &dyn Progress,
    ) -> Result<(Option<Digest>, Digest), RemoteError> {
        let options = FetchOptions::new(progress);
        let sessions = self.sessions(reference, &self.credentials)?;
        let pullers = self.hosts_with(&sessions, |c| c.pull, reference, "pull")?;
        let (index_digest, chosen, _, _) = self
            .choose_manifest(&sessions, &pullers, reference, platform, &options)
            .await?;
        Ok((index_digest, chosen.digest))
    }

    /// The manifest `reference` names (through an index: the entry for
    /// `platform`), stored: (index digest, manifest, its platform, bytes
    /// received).
    async fn choose_manifest(
        &self,
        sessions: &[Session<'_>],
        pullers: &[&Session<'_>],
        reference: &ImageReference,
        platform: &Platform,
        options: &FetchOptions<'_>,
    ) -> Result<(Option<Digest>, ManifestBlob, Platform, u64), RemoteError> {
        let mut transferred = 0;
        let (capability, name): (fn(&Capabilities) -> bool, _) = match reference.digest() {
            Some(_) => (|c| c.pull, "pull"),
            None => (|c| c.resolve, "resolve"),
        };
        let resolvers = self.hosts_with(sessions, capability, reference, name)?;
        let expected = reference
            .digest()
            .map(|d| parse_digest(d, &reference.to_string()))
            .transpose()?;
        let top = fetch_manifest_any(
            &resolvers,
            reference.object(),
            expected.as_ref(),
            &self.store,
            options,
            &format!("manifest of {reference}"),
        )
        .await?;
        transferred += top.transferred;

        let (index_digest, chosen, chosen_platform) = match top.document {
            Document::Manifest(_) => (None, top, platform.clone()),
            Document::Index(index) => {
                let entry =
                    platform
                        .select(index.manifests())
                        .ok_or_else(|| RemoteError::NoPlatform {
                            reference: reference.to_string(),
                            platform: platform.to_string(),
                            available: index
                                .manifests()
                                .iter()
                                .filter_map(Platform::of_descriptor)
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        })?;
                let chosen_platform = Platform::of_descriptor(entry).unwrap_or(platform.clone());
                let child = fetch_manifest_any(
                    pullers,
                    entry.digest().as_ref(),
                    Some(entry.digest()),
                    &self.store,
                    options,
                    &format!("manifest for {chosen_platform} of {reference}"),
                )
                .await?;
                transferred += child.transferred;
                (Some(top.digest), child, chosen_platform)
            }
        };
        Ok((index_digest, chosen, chosen_platform, transferred))
    }

    fn read_config(
        &self,
        reference: &ImageReference,
        digest: &Digest,
    ) -> Result<ImageConfiguration, RemoteError> {
        let bytes = self
            .store
            .read_blob(digest)
            .map_err(|err| RemoteError::content(digest, err))?;
        serde_json::from_slice(&bytes).map_err(|err| RemoteError::Protocol {
            url: reference.to_string(),
            reason: format!("config {digest} is not an image config: {err}"),
        })
    }

    fn sessions(
        &self,
        reference: &ImageReference,
        credentials: &Credentials,
    ) -> Result<Vec<Session<'_>>, RemoteError> {
        let mut sessions = Vec::new();
        for endpoint in self.resolver.endpoints(reference.domain())? {
            let client = self.resolver.client(&endpoint)?;
            let credential = credentials.for_host(endpoint.authority()).cloned();
            sessions.push(
                Session::new(
                    endpoint,
                    reference.repository(),
                    client,
                    credential,
                    &self.auth_cache,
                    self.stall_timeout,
                )?
                .with_rate(self.rate.clone()),
            );
        }
        Ok(sessions)
    }

    fn hosts_with<'s, 'a>(
        &self,
        sessions: &'s [Session<'a>],
        capability: fn(&Capabilities) -> bool,
        reference: &ImageReference,
        name: &'static str,
    ) -> Result<Vec<&'s Session<'a>>, RemoteError> {
        let chosen: Vec<&Session<'_>> = sessions
            .iter()
            .filter(|s| capability(&s.endpoint.capabilities))
            .collect();
        if chosen.is_empty() {
            return Err(RemoteError::NoHost {
                reference: reference.to_string(),
                registry: reference.domain().to_owned(),
                capability: name,
            });
        }
        Ok(chosen)
    }
}

fn parse_digest(digest: &str, context: &str) -> Result<Digest, RemoteError> {
    digest.parse().map_err(|err| RemoteError::Protocol {
        url: context.to_owned(),
        reason: format!("invalid digest {digest:?}: {err}"),
    })
}

async fn fetch_manifest_any(
    sessions: &[&Session<'_>],
    reference: &str,
    expected: Option<&Digest>,
    store: &ContentStore,
    options: &FetchOptions<'_>,
    what: &str,
) -> Result<ManifestBlob, RemoteError> {
    let mut attempts = Attempts::new(what.to_owned());
    for (i, session) in sessions.iter().enumerate() {
        match fetch_manifest(session, reference, expected, store, options).await {
            Ok(manifest) => return Ok(manifest),
            Err(error @ RemoteError::Guard { .. }) => return Err(error),
            Err(error) => attempts.failed(session, error, i + 1 < sessions.len(), options.progress),
        }
    }
    Err(attempts.into_error())
}

async fn fetch_blob_any(
    sessions: &[&Session<'_>],
    store: &ContentStore,
    descriptor: &Descriptor,
    options: &FetchOptions<'_>,
) -> Result<blob::Downloaded, RemoteError> {
    // The caller protected it from GC (`FetchOptions::protect_all`).
    let digest = descriptor.digest();
    let progress = options.progress;
    let mut attempts = Attempts::new(format!("blob {digest}"));
    for (i, session) in sessions.iter().enumerate() {
        let last_host = i + 1 == sessions.len();
        let download = blob::Download {
            tee: options.tee,
            last_host,
            verify_stored: options.verify_stored,
        };
        match blob::download(session, store, descriptor, progress, download).await {
            Ok(downloaded) => {
                progress.blob_done(digest, downloaded.transferred > 0);
                return Ok(downloaded);
            }
            Err(error) => attempts.failed(session, error, !last_host, progress),
        }
    }
    Err(attempts.into_error())
}

impl fmt::Display for FetchStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let megabytes = self.bytes_transferred as f64 / 1_000_000.0;
        let rate = if seconds > 0.0 {
            megabytes / seconds
        } else {
            0.0
        };
        write!(
            f,
            "{megabytes:.1} MB in {seconds:.2}s ({rate:.1} MB/s), {} blobs downloaded, {} already present",
            self.blobs_downloaded, self.blobs_already_present
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent runs pulls with `tokio::spawn`, which needs `Send` futures.
    #[test]
    fn fetch_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path()).expect("store");
        let resolver = Arc::new(Resolver::new(Default::default()).expect("resolver"));
        let puller = Puller::new(resolver, Credentials::none(), store);
        let reference: ImageReference = "busybox".parse().expect("reference");
        let platform = Platform::host();
        let future = puller.fetch(&reference, &platform, &NoProgress);
        assert_send(&future);
    }
}
