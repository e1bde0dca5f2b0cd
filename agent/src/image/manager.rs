//! The agent's image manager: where the desired state's registry
//! configuration, the node's credentials and a pod's pull policy meet the
//! image service. The pod and image reconcilers call [`ImageManager::ensure`];
//! the registry reconciler calls [`ImageManager::set_hosts`].
//!
//! Pulls of one reference are single-flight: concurrent callers (two pods on
//! one image, a pod and an Image object) wait for the first pull and then
//! find the image present, instead of downloading it twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    #[error("pulling {reference}: {source}")]
    Pull {
        reference: String,
        #[source]
        source: RemoteError,
    },
    #[error("image {reference}: {source}")]
    Store {
        reference: String,
        #[source]
        source: ServiceError,
    },
    #[error("the image store task for {reference} stopped unexpectedly: {reason}")]
    Task { reference: String, reason: String },
}

/// What [`ImageManager::ensure`] found or fetched.
#[derive(Debug, Clone)]
pub struct EnsuredImage {
    pub record: ImageRecord,
    /// Whether this call downloaded it (for events and status).
    pub pulled: bool,
}

pub struct ImageManager {
    service: ImageService,
    resolver: Arc<Resolver>,
    puller: Puller,
    /// The node's own credentials; a pod's pull secrets are merged over them.
    node_credentials: Credentials,
    platform: Platform,
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
            service,
            resolver,
            puller,
            node_credentials: credentials,
            platform: Platform::host(),
            pulls: Mutex::new(HashMap::new()),
        })
    }

    pub fn service(&self) -> &ImageService {
        &self.service
    }

    /// Applies a new registry configuration to the next pull. On error the
    /// previous configuration stays in effect.
    pub fn set_hosts(&self, hosts: HostsConfig) -> Result<(), HostsError> {
        self.resolver.set_config(hosts)
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
        let present = self.resolve(reference).await?;
        match policy::decide(pull_policy, reference, present.is_some()) {
            PullDecision::UseLocal => {
                if let Some(record) = present {
                    return Ok(EnsuredImage {
                        record,
                        pulled: false,
                    });
                }
            }
            decision @ PullDecision::NotPresent { .. } => {
                return Err(EnsureError::NeverPull(
                    decision.error_message().unwrap_or_default(),
                ));
            }
            PullDecision::Pull => {}
        }
        let gate = self.pull_gate(reference);
        let _only_pull_of_this_reference = gate.lock().await;
        // Someone else may have pulled it while this call waited.
        if pull_policy != ImagePullPolicy::Always
            && let Some(record) = self.resolve(reference).await?
        {
            return Ok(EnsuredImage {
                record,
                pulled: false,
            });
        }
        let credentials = pull_secrets.map(|secrets| {
            let mut merged = self.node_credentials.clone();
            merged.merge(secrets);
            merged
        });
        let record = self.pull(reference, credentials.as_ref()).await?;
        Ok(EnsuredImage {
            record,
            pulled: true,
        })
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

    async fn resolve(
        &self,
        reference: &ImageReference,
    ) -> Result<Option<ImageRecord>, EnsureError> {
        let service = self.service.clone();
        let wanted = reference.clone();
        self.blocking(&reference.to_string(), move || service.resolve(&wanted))
            .await
    }

    async fn pull(
        &self,
        reference: &ImageReference,
        credentials: Option<&Credentials>,
    ) -> Result<ImageRecord, EnsureError> {
        let name = reference.to_string();
        let service = self.service.clone();
        let purpose = format!("pull {name}");
        let lease = self
            .blocking(&name, move || service.lease(&purpose))
            .await?;
        let progress = TracingProgress::new(&name, PROGRESS_LOG_INTERVAL);
        let options = FetchOptions {
            credentials,
            guard: Some(&lease),
            ..FetchOptions::new(&progress)
        };
        let fetched = self
            .puller
            .fetch_with(reference, &self.platform, options)
            .await
            .map_err(|source| EnsureError::Pull {
                reference: name.clone(),
                source,
            })?;
        tracing::info!(image = %name, stats = %fetched.stats, "pulled");
        let service = self.service.clone();
        let record = self
            .blocking(&name, move || {
                let record = service.install_fetched(&fetched);
                // Recorded images protect their blobs from now on.
                drop(lease);
                record
            })
            .await?;
        Ok(record)
    }

    fn pull_gate(&self, reference: &ImageReference) -> Arc<tokio::sync::Mutex<()>> {
        let mut pulls = self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget gates nobody holds, so the map stays as small as the set of
        // pulls in progress.
        pulls.retain(|_, gate| Arc::strong_count(gate) > 1);
        Arc::clone(pulls.entry(reference.to_string()).or_default())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        reference: &str,
        work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, EnsureError> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|err| EnsureError::Task {
                reference: reference.to_string(),
                reason: err.to_string(),
            })?
            .map_err(|source| EnsureError::Store {
                reference: reference.to_string(),
                source,
            })
    }
}
