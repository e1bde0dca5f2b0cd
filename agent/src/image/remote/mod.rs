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
pub mod platform;
pub mod reference;
mod session;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use oci_spec::image::{
    Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};
use reqwest::header::{self, HeaderMap, HeaderValue};

pub use platform::Platform;
pub use reference::ImageReference;
use session::{AuthCache, Session};

use crate::image::auth::Credentials;
use crate::image::content::{ContentError, ContentStore, sha256_digest_of};
use crate::image::hosts::{Capabilities, HostsError, Resolver};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Every manifest type berth understands, for the Accept header.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// Manifests larger than this are refused before they are read whole
/// (containerd's limit is 4 MiB too).
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Layers downloaded at the same time, unless configured otherwise.
pub const DEFAULT_CONCURRENCY: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: status {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: not authorized: {reason}")]
    Unauthorized { url: String, reason: String },
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("blob {digest}: {source}")]
    Content {
        digest: String,
        #[source]
        source: ContentError,
    },
    #[error(
        "image {reference}: no manifest for platform {platform} (the index offers: {available})"
    )]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("image {reference}: no configured host for {registry} has the {capability} capability")]
    NoHost {
        reference: String,
        registry: String,
        capability: &'static str,
    },
    #[error("{what}: every host failed:{}", list_attempts(.attempts))]
    AllHostsFailed {
        what: String,
        attempts: Vec<Attempt>,
    },
    #[error("internal error: {reason}")]
    Internal { reason: String },
}

/// One host tried and why it failed.
#[derive(Debug)]
pub struct Attempt {
    pub host: String,
    pub error: RemoteError,
}

fn list_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("\n  - {}: {}", a.host, a.error))
        .collect()
}

impl RemoteError {
    fn http(url: &str, err: reqwest::Error) -> Self {
        Self::Http {
            url: url.to_owned(),
            reason: error_chain(&err),
        }
    }

    fn content(digest: &Digest, source: ContentError) -> Self {
        Self::Content {
            digest: digest.to_string(),
            source,
        }
    }

    async fn status(url: &str, response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        // The registry's error body says why (MANIFEST_UNKNOWN, …): keep a
        // short, single-line excerpt.
        let body = response.text().await.unwrap_or_default();
        let excerpt: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let excerpt: String = excerpt.chars().take(200).collect();
        Self::Status {
            url: url.to_owned(),
            status,
            detail: if excerpt.is_empty() {
                String::new()
            } else {
                format!(": {excerpt}")
            },
        }
    }
}

/// reqwest's `Display` hides the cause ("error sending request"); the chain
/// says what happened ("Connection refused", "invalid peer certificate").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Per-blob progress, for the CLI's bars and the agent's rate-limited logs.
pub trait Progress: Send + Sync {
    /// `done` of `total` bytes of `digest` are stored (including bytes kept
    /// from an earlier, interrupted attempt).
    fn blob_progress(&self, digest: &Digest, done: u64, total: u64);
    /// The blob is stored and verified; `downloaded` is false when it was
    /// already there.
    fn blob_done(&self, _digest: &Digest, _downloaded: bool) {}
    /// A host failed and the next one will be tried.
    fn host_failed(&self, _host: &str, _error: &RemoteError) {}
}

/// Progress reporting that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn blob_progress(&self, _digest: &Digest, _done: u64, _total: u64) {}
}

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
    auth_cache: AuthCache,
}

/// A parsed manifest document.
enum Document {
    Index(ImageIndex),
    Manifest(ImageManifest),
}

struct ManifestBlob {
    digest: Digest,
    media_type: String,
    document: Document,
    transferred: u64,
}

impl Puller {
    pub fn new(resolver: Arc<Resolver>, credentials: Credentials, store: ContentStore) -> Self {
        Self {
            resolver,
            credentials,
            store,
            concurrency: DEFAULT_CONCURRENCY,
            auth_cache: AuthCache::default(),
        }
    }

    /// How many layers download at the same time (at least one).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Replaces the credentials, e.g. with a pod's pull secrets merged in.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    /// Resolves `reference`, picks `platform` from an index, and stores the
    /// manifest(s), config and layers.
    pub async fn fetch(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        progress: &dyn Progress,
    ) -> Result<FetchedImage, RemoteError> {
        let started = Instant::now();
        let sessions = self.sessions(reference)?;
        let mut stats = FetchStats::default();

        let (capability, name): (fn(&Capabilities) -> bool, _) = match reference.digest() {
            Some(_) => (|c| c.pull, "pull"),
            None => (|c| c.resolve, "resolve"),
        };
        let resolvers = self.hosts_with(&sessions, capability, reference, name)?;
        let pullers = self.hosts_with(&sessions, |c| c.pull, reference, "pull")?;
        let expected = reference
            .digest()
            .map(|d| parse_digest(d, &reference.to_string()))
            .transpose()?;
        let top = fetch_manifest_any(
            &resolvers,
            reference.manifest_reference(),
            expected.as_ref(),
            &self.store,
            progress,
            &format!("manifest of {reference}"),
        )
        .await?;
        stats.bytes_transferred += top.transferred;

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
                    &pullers,
                    &entry.digest().to_string(),
                    Some(entry.digest()),
                    &self.store,
                    progress,
                    &format!("manifest for {chosen_platform} of {reference}"),
                )
                .await?;
                stats.bytes_transferred += child.transferred;
                (Some(top.digest), child, chosen_platform)
            }
        };
        let Document::Manifest(manifest) = chosen.document else {
            return Err(RemoteError::Protocol {
                url: reference.to_string(),
                reason: format!("index {} points to another index", chosen.digest),
            });
        };

        let config_descriptor = manifest.config().clone();
        let mut blobs = vec![config_descriptor.clone()];
        for layer in manifest.layers() {
            if !blobs.iter().any(|b| b.digest() == layer.digest()) {
                blobs.push(layer.clone());
            }
        }
        let results: Vec<blob::Downloaded> = futures::stream::iter(blobs.iter())
            .map(|descriptor| fetch_blob_any(&pullers, &self.store, descriptor, progress))
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        for downloaded in &results {
            stats.bytes_transferred += downloaded.transferred;
            if downloaded.transferred > 0 {
                stats.blobs_downloaded += 1;
            } else {
                stats.blobs_already_present += 1;
            }
        }

        let config_digest = config_descriptor.digest().clone();
        let config_bytes = self
            .store
            .read_blob(&config_digest)
            .map_err(|err| RemoteError::content(&config_digest, err))?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|err| RemoteError::Protocol {
                url: reference.to_string(),
                reason: format!("config {config_digest} is not an image config: {err}"),
            })?;
        let layers = manifest.layers().iter().map(oci_layer).collect();
        stats.elapsed = started.elapsed();
        Ok(FetchedImage {
            reference: reference.clone(),
            platform: chosen_platform,
            index_digest,
            manifest_digest: chosen.digest,
            manifest_media_type: chosen.media_type,
            manifest,
            config_digest,
            config,
            layers,
            stats,
        })
    }

    fn sessions(&self, reference: &ImageReference) -> Result<Vec<Session<'_>>, RemoteError> {
        let mut sessions = Vec::new();
        for endpoint in self.resolver.endpoints(reference.registry())? {
            let client = self.resolver.client(&endpoint)?;
            let credential = self.credentials.for_host(endpoint.authority()).cloned();
            sessions.push(Session::new(
                endpoint,
                reference.repository(),
                client,
                credential,
                &self.auth_cache,
            ));
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
                registry: reference.registry().to_owned(),
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

/// Collects each host's error while trying hosts in order.
struct Attempts {
    what: String,
    attempts: Vec<Attempt>,
}

impl Attempts {
    fn new(what: String) -> Self {
        Self {
            what,
            attempts: Vec::new(),
        }
    }

    fn failed(&mut self, session: &Session<'_>, error: RemoteError, progress: &dyn Progress) {
        let host = session.name();
        tracing::warn!(%host, %error, what = %self.what, "registry host failed; trying the next one");
        progress.host_failed(&host, &error);
        self.attempts.push(Attempt { host, error });
    }

    fn into_error(self) -> RemoteError {
        RemoteError::AllHostsFailed {
            what: self.what,
            attempts: self.attempts,
        }
    }
}

async fn fetch_manifest_any(
    sessions: &[&Session<'_>],
    reference: &str,
    expected: Option<&Digest>,
    store: &ContentStore,
    progress: &dyn Progress,
    what: &str,
) -> Result<ManifestBlob, RemoteError> {
    let mut attempts = Attempts::new(what.to_owned());
    for session in sessions {
        match fetch_manifest(session, reference, expected, store).await {
            Ok(manifest) => return Ok(manifest),
            Err(error) => attempts.failed(session, error, progress),
        }
    }
    Err(attempts.into_error())
}

async fn fetch_blob_any(
    sessions: &[&Session<'_>],
    store: &ContentStore,
    descriptor: &Descriptor,
    progress: &dyn Progress,
) -> Result<blob::Downloaded, RemoteError> {
    let digest = descriptor.digest();
    let mut attempts = Attempts::new(format!("blob {digest}"));
    for session in sessions {
        match blob::download(session, store, descriptor, progress).await {
            Ok(downloaded) => {
                progress.blob_done(digest, downloaded.transferred > 0);
                return Ok(downloaded);
            }
            Err(error) => attempts.failed(session, error, progress),
        }
    }
    Err(attempts.into_error())
}

async fn fetch_manifest(
    session: &Session<'_>,
    reference: &str,
    expected: Option<&Digest>,
    store: &ContentStore,
) -> Result<ManifestBlob, RemoteError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_MANIFESTS));
    let mut response = session.get("manifests", reference, headers).await?;
    let url = response.url().to_string();
    if !response.status().is_success() {
        return Err(RemoteError::status(&url, response).await);
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_MANIFEST_BYTES as u64)
    {
        return Err(RemoteError::Protocol {
            url,
            reason: format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
        });
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let claimed = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| RemoteError::http(&url, err))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(RemoteError::Protocol {
                url,
                reason: format!("manifest larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
    }
    let actual = sha256_digest_of(&body);
    let mismatch = |wanted: &str| RemoteError::Protocol {
        url: url.clone(),
        reason: format!("manifest content hashes to {actual}, but {wanted} was expected"),
    };
    match (expected, &claimed) {
        (Some(expected), _) if *expected != actual => return Err(mismatch(&expected.to_string())),
        (None, Some(claimed))
            if claimed.starts_with("sha256:") && *claimed != actual.to_string() =>
        {
            return Err(mismatch(claimed));
        }
        _ => {}
    }
    let (media_type, document) =
        parse_manifest(content_type.as_deref(), &body).map_err(|reason| RemoteError::Protocol {
            url: url.clone(),
            reason,
        })?;
    let transferred = body.len() as u64;
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.write_blob(&body))
        .await
        .map_err(|err| RemoteError::Internal {
            reason: format!("storing manifest: {err}"),
        })?
        .map_err(|err| RemoteError::content(&actual, err))?;
    Ok(ManifestBlob {
        digest: actual,
        media_type,
        document,
        transferred,
    })
}

/// Parses a manifest body by its media type: the Content-Type header when it
/// names a manifest type, else the body's own `mediaType`, else its shape.
fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<(String, Document), String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
    }
    let probe: Probe =
        serde_json::from_slice(body).map_err(|err| format!("manifest is not JSON: {err}"))?;
    if probe.schema_version == Some(1) {
        return Err(
            "Docker schema1 manifests are not supported (re-push the image with a current client)"
                .to_owned(),
        );
    }
    let known = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
    let media_type = content_type
        .filter(|t| known.contains(t))
        .map(str::to_owned)
        .or(probe.media_type)
        .unwrap_or_else(|| {
            if probe.manifests.is_some() {
                OCI_INDEX.to_owned()
            } else {
                OCI_MANIFEST.to_owned()
            }
        });
    let document = match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => Document::Index(
            serde_json::from_slice(body).map_err(|err| format!("invalid {media_type}: {err}"))?,
        ),
        OCI_MANIFEST | DOCKER_MANIFEST => Document::Manifest(
            serde_json::from_slice(body).map_err(|err| format!("invalid {media_type}: {err}"))?,
        ),
        other => return Err(format!("unsupported manifest media type {other:?}")),
    };
    Ok((media_type, document))
}

/// A layer descriptor with Docker's media types mapped to OCI's, so that
/// unpacking needs to know only the OCI ones.
fn oci_layer(layer: &Descriptor) -> Descriptor {
    let mut layer = layer.clone();
    let mapped = match layer.media_type() {
        MediaType::Other(t) if t == DOCKER_LAYER_GZIP => Some(MediaType::ImageLayerGzip),
        MediaType::Other(t) if t == DOCKER_FOREIGN_LAYER_GZIP => {
            Some(MediaType::ImageLayerNonDistributableGzip)
        }
        _ => None,
    };
    if let Some(mapped) = mapped {
        layer.set_media_type(mapped);
    }
    layer
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

    const DOCKER_SCHEMA2: &str = r#"{
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2,
                   "digest": "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 3,
                    "digest": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}]
    }"#;

    #[test]
    fn docker_schema2_parses_and_layers_map_to_oci_types() {
        let (media_type, document) =
            parse_manifest(Some(DOCKER_MANIFEST), DOCKER_SCHEMA2.as_bytes()).expect("parse");
        assert_eq!(media_type, DOCKER_MANIFEST);
        let Document::Manifest(manifest) = document else {
            panic!("a manifest, not an index");
        };
        let layer = oci_layer(&manifest.layers()[0]);
        assert_eq!(*layer.media_type(), MediaType::ImageLayerGzip);
        assert_eq!(layer.size(), 3);
    }

    #[test]
    fn media_type_falls_back_to_the_body_when_the_header_is_generic() {
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let (media_type, document) =
            parse_manifest(Some("application/json"), index.as_bytes()).expect("parse");
        assert_eq!(media_type, OCI_INDEX);
        assert!(matches!(document, Document::Index(_)));
        let bare = r#"{"schemaVersion":2,"manifests":[]}"#;
        let (media_type, _) = parse_manifest(None, bare.as_bytes()).expect("bare index");
        assert_eq!(media_type, OCI_INDEX);
    }

    #[test]
    fn schema1_and_unknown_types_are_refused_clearly() {
        let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = parse_manifest(None, schema1.as_bytes())
            .err()
            .expect("schema1");
        assert!(err.contains("schema1"), "{err}");
        let other = r#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.config.v1+json"}"#;
        let err = parse_manifest(None, other.as_bytes()).err().expect("helm");
        assert!(err.contains("unsupported"), "{err}");
    }

    #[test]
    fn all_hosts_failed_lists_every_host() {
        let err = RemoteError::AllHostsFailed {
            what: "manifest of r/x:1".to_owned(),
            attempts: vec![
                Attempt {
                    host: "http://m1/v2 (mirror)".to_owned(),
                    error: RemoteError::Http {
                        url: "http://m1/v2/x/manifests/1".to_owned(),
                        reason: "Connection refused".to_owned(),
                    },
                },
                Attempt {
                    host: "https://r/v2 (server)".to_owned(),
                    error: RemoteError::Status {
                        url: "https://r/v2/x/manifests/1".to_owned(),
                        status: 404,
                        detail: String::new(),
                    },
                },
            ],
        };
        let message = err.to_string();
        assert!(message.contains("http://m1/v2 (mirror)"), "{message}");
        assert!(message.contains("Connection refused"), "{message}");
        assert!(message.contains("https://r/v2 (server)"), "{message}");
        assert!(message.contains("404"), "{message}");
    }
}
