//! The agent's image manager: where the desired state's registry
//! configuration, the node's credentials and a pod's pull policy meet the
//! image service. The pod and image reconcilers call [`ImageManager::ensure`];
//! the registry reconciler calls [`ImageManager::set_hosts`].
//!
//! Pulls of one reference are shared: every caller that needs a reference
//! being pulled (twenty pods of one image after a power cut, a pod and an
//! Image object) waits for that pull and takes its outcome — the image, or
//! the real error — the moment it ends, instead of pulling again or
//! backing off. A pull that succeeded less than [`RECENT_PULL`] ago answers
//! an `Always` caller too. At most `[images] parallel-pulls` pulls run at
//! once.
//!
//! Offline first (`[images] offline-fallback`, on by default): when no host
//! of an image's registry answers and the image is in the store, the
//! stored copy is used and the caller is told why ([`EnsuredImage::offline`]).

use crate::image::preflight::{DiskPreflight, MinFree};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use oci_spec::image::ImageConfiguration;

use crate::image::auth::Credentials;
use crate::image::hosts::{HostsConfig, HostsError, Resolver};
use crate::image::meta::ImageRecord;
use crate::image::policy::{self, ImagePullPolicy, PullDecision};
use crate::image::remote::{
    FetchOptions, ImageReference, Platform, Puller, RemoteError, TracingProgress,
};
use crate::image::service::{ImageService, ServiceError};

/// How often a pull in progress logs each blob's progress.
const PROGRESS_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    /// The image is absent and the policy forbids pulling (`ErrImageNeverPull`).
    #[error("{0}")]
    NeverPull(String),
    /// Every host failed, or the image is unusable (`ImagePullBackOff`).
    /// Like every variant with a cause, the message leaves the cause to the
    /// error chain (`status::chain`), which would otherwise repeat it.
    #[error("pulling {reference}")]
    Pull {
        reference: String,
        #[source]
        error: RemoteError,
    },
    #[error("image {reference}")]
    Store {
        reference: String,
        #[source]
        error: ServiceError,
    },
    #[error("the image store task for {reference} stopped unexpectedly: {reason}")]
    Task { reference: String, reason: String },
    /// The outcome of a pull another caller ran, shared.
    #[error(transparent)]
    Shared(Arc<EnsureError>),
}

impl EnsureError {
    /// Whether no host of the image's registry answered at all (connection
    /// refused, no route, timeouts): the registry is out of reach, as
    /// opposed to refusing or not having the image.
    pub fn unreachable(&self) -> bool {
        match self {
            Self::Pull { error, .. } => error.unreachable(),
            Self::Shared(inner) => inner.unreachable(),
            _ => false,
        }
    }
}

/// A pull that succeeded this recently answers an `Always` caller: a burst
/// of pods on one tag (a restart after a power cut) resolves it once.
pub const RECENT_PULL: Duration = Duration::from_secs(2);

/// Pulls that run at once by default (`[images] parallel-pulls`).
pub const DEFAULT_PARALLEL_PULLS: usize = 4;

/// What [`ImageManager::ensure`] found or fetched.
#[derive(Debug, Clone)]
pub struct EnsuredImage {
    pub record: ImageRecord,
    /// Whether this call downloaded it (for events and status).
    pub pulled: bool,
    /// Why the stored copy is used although the policy asked for a pull:
    /// no host of its registry answered.
    pub offline: Option<String>,
}

impl EnsuredImage {
    fn stored(record: ImageRecord) -> Self {
        Self {
            record,
            pulled: false,
            offline: None,
        }
    }
}

pub struct ImageManager {
    service: ImageService,
    resolver: Arc<Resolver>,
    puller: Puller,
    /// The node's own credentials; a pod's pull secrets are merged over them.
    node_credentials: Credentials,
    platform: Platform,
    pulls: Pulls,
    /// Pulls running at once.
    slots: Arc<Semaphore>,
    offline_fallback: bool,
    /// Every pull's disk pre-flight.
    preflight: DiskPreflight,
}

impl ImageManager {
    /// `hosts` is the registry configuration known at start (it may be
    /// replaced later with [`ImageManager::set_hosts`]).
    pub fn new(
        service: ImageService,
        hosts: HostsConfig,
        credentials: Credentials,
        concurrency: usize,
    ) -> Result<Self, HostsError> {
        let resolver = Arc::new(Resolver::new(hosts)?);
        let puller = Puller::new(
            Arc::clone(&resolver),
            credentials.clone(),
            service.content().clone(),
        )
        .with_concurrency(concurrency);
        Ok(Self {
            preflight: DiskPreflight {
                service: service.clone(),
                min_free: MinFree::default(),
            },
            service,
            resolver,
            puller,
            node_credentials: credentials,
            platform: Platform::host(),
            pulls: Pulls::default(),
            slots: Arc::new(Semaphore::new(DEFAULT_PARALLEL_PULLS)),
            offline_fallback: true,
        })
    }

    /// At most `n` pulls at once (`[images] parallel-pulls`).
    pub fn with_parallel_pulls(mut self, n: usize) -> Self {
        self.slots = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// Whether a stored image is used when its registry is out of reach
    /// (`[images] offline-fallback`).
    pub fn with_offline_fallback(mut self, fallback: bool) -> Self {
        self.offline_fallback = fallback;
        self
    }

    /// How long a registry may send nothing before its host is given up
    /// (`[images] stall-timeout`).
    pub fn with_stall_timeout(mut self, stall_timeout: std::time::Duration) -> Self {
        self.puller = self.puller.with_stall_timeout(stall_timeout);
        self
    }

    /// Free space every pull leaves on the store's file system (`[store]
    /// min-free`).
    pub fn with_min_free(mut self, min_free: MinFree) -> Self {
        self.preflight.min_free = min_free;
        self
    }

    /// Every download together at most `bytes_per_second` (`[images]
    /// max-download-rate`; 0: no limit).
    pub fn with_max_download_rate(mut self, bytes_per_second: u64) -> Self {
        self.puller = self.puller.with_max_download_rate(bytes_per_second);
        self
    }

    pub fn service(&self) -> &ImageService {
        &self.service
    }

    /// Applies a new registry configuration to the next pull. On error the
    /// previous configuration stays in effect.
    pub fn set_hosts(&self, hosts: HostsConfig) -> Result<(), HostsError> {
        self.resolver.set_config(hosts)
    }

    /// The registry configuration in effect.
    pub fn hosts(&self) -> Arc<HostsConfig> {
        self.resolver.config()
    }

    /// Makes `reference` present as `pull_policy` asks: uses the stored copy,
    /// pulls it (with the node's credentials, and a pod's image pull secrets
    /// merged over them when given), or fails when it is absent and the
    /// policy is `Never`.
    pub async fn ensure(
        &self,
        reference: &ImageReference,
        pull_policy: ImagePullPolicy,
        pull_secrets: Option<Credentials>,
    ) -> Result<EnsuredImage, EnsureError> {
        self.ensure_platform(reference, None, pull_policy, pull_secrets)
            .await
    }

    /// [`ImageManager::ensure`] for a given platform (an Image object's
    /// `platform`): a stored copy counts only if it is for that platform.
    /// `None` is the host's platform, and any stored copy counts.
    pub async fn ensure_platform(
        &self,
        reference: &ImageReference,
        platform: Option<&Platform>,
        pull_policy: ImagePullPolicy,
        pull_secrets: Option<Credentials>,
    ) -> Result<EnsuredImage, EnsureError> {
        self.ensure_with(reference, platform, pull_policy, pull_secrets, false)
            .await
    }

    /// Asks the registry where the tag points now and pulls what is new:
    /// [`ImageManager::ensure`] with `Always`, except that a pull that
    /// ended before this call does not answer it (an auto-update check,
    /// `berth auto-update`, must see a tag pushed a moment ago). A pull in
    /// flight is still joined.
    pub async fn refresh(
        &self,
        reference: &ImageReference,
        pull_secrets: Option<Credentials>,
    ) -> Result<EnsuredImage, EnsureError> {
        self.ensure_with(reference, None, ImagePullPolicy::Always, pull_secrets, true)
            .await
    }

    async fn ensure_with(
        &self,
        reference: &ImageReference,
        platform: Option<&Platform>,
        pull_policy: ImagePullPolicy,
        pull_secrets: Option<Credentials>,
        fresh: bool,
    ) -> Result<EnsuredImage, EnsureError> {
        let present = self.resolve_for(reference, platform).await?;
        match policy::decide(pull_policy, reference, present.is_some()) {
            PullDecision::UseLocal => {
                if let Some(record) = present {
                    return Ok(EnsuredImage::stored(record));
                }
            }
            decision @ PullDecision::NotPresent { .. } => {
                return Err(EnsureError::NeverPull(
                    decision.error_message().unwrap_or_default(),
                ));
            }
            PullDecision::Pull => {}
        }
        let platform = platform.unwrap_or(&self.platform);
        let pull = self.pulls.entry(&format!("{reference} {platform}"));
        let asked = Instant::now();
        let _only_pull_of_this_reference = pull.gate.lock().await;
        // A pull that ended while this call waited (or succeeded just
        // before) answers it: the same outcome, at once.
        if let Some(ended) = pull.last() {
            match ended.outcome {
                Outcome::Pulled(record)
                    if ended.at >= asked || (!fresh && ended.at.elapsed() < RECENT_PULL) =>
                {
                    return Ok(EnsuredImage::stored(record));
                }
                Outcome::Offline(record, why) if ended.at >= asked => {
                    return Ok(EnsuredImage {
                        offline: Some(why),
                        ..EnsuredImage::stored(record)
                    });
                }
                Outcome::Failed(err) if ended.at >= asked => return Err(EnsureError::Shared(err)),
                _ => {}
            }
        }
        // Someone else may have pulled it while this call waited.
        if pull_policy != ImagePullPolicy::Always
            && let Some(record) = self
                .resolve_for(reference, platform_filter(platform))
                .await?
        {
            return Ok(EnsuredImage::stored(record));
        }
        let credentials = pull_secrets.map(|secrets| merged(&self.node_credentials, secrets));
        let _slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the pull slots are never closed");
        match self.pull(reference, platform, credentials.as_ref()).await {
            Ok(record) => {
                pull.ended(Outcome::Pulled(record.clone()));
                Ok(EnsuredImage {
                    pulled: true,
                    ..EnsuredImage::stored(record)
                })
            }
            Err(err) => match present.filter(|_| self.offline_fallback && err.unreachable()) {
                Some(record) => {
                    let why = format!(
                        "no host of its registry answered ({}); the stored {} is used, and whether the tag still points to it is checked again later",
                        one_line(&crate::status::chain(&err)),
                        record.manifest_digest
                    );
                    tracing::warn!(image = %reference, %why, "pulled from the local store");
                    pull.ended(Outcome::Offline(record.clone(), why.clone()));
                    Ok(EnsuredImage {
                        offline: Some(why),
                        ..EnsuredImage::stored(record)
                    })
                }
                None => {
                    let err = Arc::new(err);
                    pull.ended(Outcome::Failed(Arc::clone(&err)));
                    Err(EnsureError::Shared(err))
                }
            },
        }
    }

    /// Imports `archive` (an OCI archive or a `docker save` tarball of one
    /// image) under the name `reference`, single-flight with pulls of the
    /// same reference. When `reference` has a digest, the archive must hold
    /// that image.
    pub async fn import(
        &self,
        reference: &ImageReference,
        archive: &Path,
    ) -> Result<ImageRecord, EnsureError> {
        let name = reference.to_string();
        let pull = self.pulls.entry(&format!("{name} {}", self.platform));
        let _only_pull_of_this_reference = pull.gate.lock().await;
        let service = self.service.clone();
        let wanted = reference.clone();
        let archive_shown = archive.display().to_string();
        let archive = archive.to_path_buf();
        let records = self
            .blocking(&name, move || service.import(&archive, Some(&wanted)))
            .await?;
        let Some(record) = records.into_iter().next() else {
            return Err(EnsureError::Store {
                reference: name.clone(),
                error: ServiceError::NotFound { name },
            });
        };
        if let Some(digest) = reference.digest()
            && record.manifest_digest.as_ref() != digest
            && record
                .index_digest
                .as_ref()
                .is_none_or(|d| d.as_ref() != digest)
        {
            return Err(EnsureError::Store {
                reference: name,
                error: ServiceError::BadImage {
                    name: record.name,
                    reason: format!(
                        "the archive holds manifest {}, not {digest}",
                        record.manifest_digest
                    ),
                },
            });
        }
        tracing::info!(image = %name, archive = %archive_shown, "imported an image archive");
        Ok(record)
    }

    /// Whether [`ImageManager::ensure`] would download `reference` under
    /// `pull_policy` (for a status that says a pull runs).
    pub async fn would_pull(
        &self,
        reference: &ImageReference,
        pull_policy: ImagePullPolicy,
    ) -> bool {
        let present = matches!(self.resolve_for(reference, None).await, Ok(Some(_)));
        policy::decide(pull_policy, reference, present) == PullDecision::Pull
    }

    /// The stored image's configuration (entrypoint, env, user, …).
    pub async fn config(&self, record: &ImageRecord) -> Result<ImageConfiguration, EnsureError> {
        let service = self.service.clone();
        let digest = record.config_digest.clone();
        let name = record.name.clone();
        self.blocking(&record.name, move || {
            let bytes = service
                .content()
                .read_blob(&digest)
                .map_err(ServiceError::from)?;
            serde_json::from_slice(&bytes).map_err(|err| ServiceError::BadImage {
                name,
                reason: format!("config {digest} is not an OCI image configuration: {err}"),
            })
        })
        .await
    }

    /// The stored image `reference` names, when it is for `platform` (any
    /// platform when `None`).
    async fn resolve_for(
        &self,
        reference: &ImageReference,
        platform: Option<&Platform>,
    ) -> Result<Option<ImageRecord>, EnsureError> {
        let service = self.service.clone();
        let wanted = reference.clone();
        let found = self
            .blocking(&reference.to_string(), move || service.resolve(&wanted))
            .await?;
        Ok(found.filter(|record| {
            platform.is_none_or(|platform| {
                record
                    .platform
                    .parse::<Platform>()
                    .is_ok_and(|stored| platform.matches(&stored))
            })
        }))
    }

    /// One pull, in a span naming the image (its parent names the pod or
    /// object that asked).
    async fn pull(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        credentials: Option<&Credentials>,
    ) -> Result<ImageRecord, EnsureError> {
        let span = tracing::info_span!("pull", image = %reference, %platform);
        let started = std::time::Instant::now();
        let pulled =
            tracing::Instrument::instrument(self.pull_now(reference, platform, credentials), span)
                .await;
        let bytes = pulled.as_ref().map_or(0, |(_, bytes)| *bytes);
        crate::activity::pulled(pulled.is_ok(), bytes, started.elapsed());
        pulled.map(|(record, _)| record)
    }

    async fn pull_now(
        &self,
        reference: &ImageReference,
        platform: &Platform,
        credentials: Option<&Credentials>,
    ) -> Result<(ImageRecord, u64), EnsureError> {
        let name = reference.to_string();
        let service = self.service.clone();
        let purpose = format!("pull {name}");
        let lease = self
            .blocking(&name, move || service.lease(&purpose))
            .await?;
        let progress = TracingProgress::new(&name, PROGRESS_LOG_INTERVAL);
        let streaming = self.service.streaming_unpack(&lease);
        let options = FetchOptions {
            credentials,
            guard: Some(&lease),
            tee: Some(&streaming),
            preflight: Some(&self.preflight),
            ..FetchOptions::new(&progress)
        };
        let fetched = self.puller.fetch_with(reference, platform, options).await;
        // Also after a failure: its unpack tasks clean up their staging.
        let streamed = streaming.finish().await;
        let fetched = fetched.map_err(|error| EnsureError::Pull {
            reference: name.clone(),
            error,
        })?;
        tracing::info!(image = %name, stats = %fetched.stats, streamed, "pulled");
        let bytes = fetched.stats.bytes_transferred;
        let service = self.service.clone();
        let record = self
            .blocking(&name, move || {
                let record = service.install_fetched_under(&fetched, &lease);
                // Recorded images protect their blobs from now on.
                drop(lease);
                record
            })
            .await?;
        Ok((record, bytes))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        reference: &str,
        work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, EnsureError> {
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(|err| EnsureError::Task {
                reference: reference.to_string(),
                reason: err.to_string(),
            })?
            .map_err(|error| EnsureError::Store {
                reference: reference.to_string(),
                error,
            })
    }
}

/// The node's credentials with a pod's pull secrets merged over them (a
/// secret's entry for a host replaces the node's).
fn merged(node: &Credentials, pull_secrets: Credentials) -> Credentials {
    let mut merged = node.clone();
    merged.merge(pull_secrets);
    merged
}

/// The platform filter for a stored copy: any copy counts for the host's
/// own platform.
fn platform_filter(platform: &Platform) -> Option<&Platform> {
    (*platform != Platform::host()).then_some(platform)
}

/// Joins a multi-line error (one line per registry host tried) into one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How the last pull of a reference ended.
#[derive(Debug, Clone)]
enum Outcome {
    Pulled(ImageRecord),
    /// No host answered; the stored copy was used (and why).
    Offline(ImageRecord, String),
    Failed(Arc<EnsureError>),
}

#[derive(Debug, Clone)]
struct Ended {
    at: Instant,
    outcome: Outcome,
}

/// One entry per reference (and platform) pulled: a gate (pulls of it run
/// one at a time) and how the last one ended.
#[derive(Default)]
struct Pull {
    gate: tokio::sync::Mutex<()>,
    last: Mutex<Option<Ended>>,
}

impl Pull {
    fn lock_last(&self) -> MutexGuard<'_, Option<Ended>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last(&self) -> Option<Ended> {
        self.lock_last().clone()
    }

    fn ended(&self, outcome: Outcome) {
        *self.lock_last() = Some(Ended {
            at: Instant::now(),
            outcome,
        });
    }
}

#[derive(Default)]
struct Pulls {
    entries: Mutex<HashMap<String, Arc<Pull>>>,
}

impl Pulls {
    fn entry(&self, key: &str) -> Arc<Pull> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget entries nobody waits on whose outcome is no news any more,
        // so the map stays as small as the set of recent pulls.
        entries.retain(|_, pull| {
            Arc::strong_count(pull) > 1
                || pull
                    .last()
                    .is_some_and(|ended| ended.at.elapsed() < RECENT_PULL)
        });
        Arc::clone(entries.entry(key.to_owned()).or_default())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_pull_per_reference_at_a_time_and_others_in_parallel() {
        let gates = Arc::new(Pulls::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most_inside = Arc::new(AtomicUsize::new(0));
        let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (gates, inside, most_inside, entered_tx, release) = (
                Arc::clone(&gates),
                Arc::clone(&inside),
                Arc::clone(&most_inside),
                entered_tx.clone(),
                Arc::clone(&release),
            );
            tasks.push(tokio::spawn(async move {
                let pull = gates.entry("registry.local/app:1");
                let _held = pull.gate.lock().await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most_inside.fetch_max(now, Ordering::SeqCst);
                entered_tx.send(()).expect("test alive");
                release.notified().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        entered_rx.recv().await.expect("the first caller gets in");
        // Another reference is not held up by the first one.
        let other = gates.entry("registry.local/other:1");
        let other_held = tokio::time::timeout(Duration::from_secs(5), other.gate.lock())
            .await
            .expect("a different reference's gate is free");
        drop(other_held);
        drop(other);
        for _ in 0..2 {
            release.notify_one();
            entered_rx.recv().await.expect("the next caller gets in");
        }
        release.notify_one();
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(most_inside.load(Ordering::SeqCst), 1, "never two at once");
        // Entries nobody holds, with no recent outcome, are forgotten.
        drop(gates.entry("registry.local/third:1"));
        assert_eq!(gates.len(), 1, "only the entry just handed out");
        drop(gates.entry("registry.local/fourth:1"));
        assert_eq!(gates.len(), 1);
    }

    #[test]
    fn pull_secrets_win_per_host_over_the_node_credentials() {
        let node = Credentials::from_docker_config(
            br#"{"auths": {
                "registry.local:5000": {"username": "node", "password": "node-pw"},
                "mirror.local": {"username": "node-m", "password": "m-pw"}
            }}"#,
            "node config.json",
        )
        .expect("node credentials");
        let secrets = Credentials::from_docker_config(
            br#"{"auths": {
                "registry.local:5000": {"username": "pod", "password": "pod-pw"},
                "other.local": {"username": "pod-o", "password": "o-pw"}
            }}"#,
            "Secret pull",
        )
        .expect("pod credentials");
        let merged = merged(&node, secrets);
        let user = |host: &str| merged.for_host(host).map(|c| c.username.clone());
        assert_eq!(user("registry.local:5000").as_deref(), Some("pod"));
        assert_eq!(user("mirror.local").as_deref(), Some("node-m"));
        assert_eq!(user("other.local").as_deref(), Some("pod-o"));
        assert_eq!(user("unknown.local"), None);
        assert_eq!(
            node.for_host("registry.local:5000")
                .map(|c| c.username.as_str()),
            Some("node"),
            "the node's own credentials are not changed"
        );
    }
}
