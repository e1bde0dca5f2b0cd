//! The long-lived subsystems reconcilers act through, built once at start:
//! the image manager, the registry configuration, the container runtime
//! and the network drivers — and, over them, the host the pod layer acts
//! through ([`pod_host`]). A reconciler reaches them through its
//! [`Context`](crate::reconcile::Context).
//!
//! A runtime or network driver that cannot work on this host does not stop
//! the agent: the pods that need it report why in their status, and
//! everything else (images, other pods) goes on.

pub mod networks;
pub mod pod_host;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, StoreConfig};
use crate::image::auth::Credentials;
use crate::image::manager::ImageManager;
use crate::image::registries::{RegistrySet, load_hosts_dir};
use crate::image::remote::DEFAULT_CONCURRENCY;
use crate::image::service::ImageService;
use crate::paths::Paths;
use crate::pod::config::PodsConfig;
use crate::runtime::Runtime;
use crate::status::{Event, EventLog, EventType, chain};
use networks::NetworkDrivers;

/// How long after the start the first garbage collection runs (at most).
const GC_AFTER_START: Duration = Duration::from_secs(10);

/// How often `[images] hosts-dir` is read again for changes (a few small
/// files; Registry objects in the manifest directory apply immediately).
const HOSTS_DIR_POLL: Duration = Duration::from_secs(10);

pub struct Services {
    pub paths: Paths,
    pub images: ImageManager,
    /// The registry configuration: `[images] hosts-dir` and the manifest
    /// directory's Registry objects (the registry reconciler applies them).
    pub registries: RegistrySet,
    /// The container runtime, or why there is none on this host.
    pub runtime: Result<Arc<Runtime>, String>,
    /// The pod network drivers (`[network]`).
    pub network: Arc<NetworkDrivers>,
    /// `[pods]`: restart back-off, parallel work.
    pub pods: PodsConfig,
    store: StoreConfig,
}

impl Services {
    /// Opens the image store, builds the image manager, the runtime and the
    /// network drivers from the agent config. Registry objects from the
    /// manifest directory are applied later, by the registry reconciler.
    pub async fn open(paths: &Paths, config: &AgentConfig) -> anyhow::Result<Self> {
        let service = ImageService::with_options(paths, config.store.service_options())
            .with_context(|| format!("opening the image store under {}", paths.root.display()))?;
        let hosts_dir = config.images.hosts_dir.as_deref();
        let hosts = load_hosts_dir(hosts_dir).with_context(|| {
            let dir = hosts_dir.map(|d| d.display().to_string());
            format!("reading [images] hosts-dir {}", dir.unwrap_or_default())
        })?;
        let credentials = Credentials::discover(config.images.auth_file.as_deref())
            .context("reading the node's registry credentials")?;
        let concurrency = config
            .images
            .max_concurrent_downloads
            .unwrap_or(DEFAULT_CONCURRENCY);
        let images = ImageManager::new(service, hosts.clone(), credentials, concurrency)
            .context("applying the registry host configuration")?
            .with_stall_timeout(config.images.stall_timeout)
            .with_parallel_pulls(config.images.parallel_pulls)
            .with_offline_fallback(config.images.offline_fallback)
            .with_max_download_rate(config.images.max_download_rate)
            .with_min_free(config.store.min_free);
        let runtime_paths = paths.clone();
        let runtime_config = config.runtime.clone();
        let runtime =
            tokio::task::spawn_blocking(move || Runtime::new(runtime_paths, runtime_config))
                .await
                .context("looking at the host's container runtimes")?
                .map(Arc::new)
                .map_err(|err| crate::status::chain(&err));
        if let Err(reason) = &runtime {
            tracing::warn!(%reason, "the container runtime is not available; pods cannot run");
        }
        let network = Arc::new(NetworkDrivers::new(&config.network, paths).await);
        Ok(Self {
            paths: paths.clone(),
            images,
            registries: RegistrySet::new(config.images.hosts_dir.clone(), hosts),
            runtime,
            network,
            pods: crate::pod::PodsConfig {
                auto_update_interval: config.images.auto_update_interval,
                ..config.pods
            },
            store: config.store.clone(),
        })
    }

    /// Why the agent cannot run some pods (for its start-up event).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.network.problems();
        if let Err(reason) = &self.runtime {
            problems.insert(0, reason.clone());
        }
        problems
    }

    /// Starts the periodic work of the services until `stop`: garbage
    /// collection of the image store every `[store] gc-interval` (the first
    /// 10 s after the start, when the pods are up, to clear what a
    /// crash left), and re-reading `[images] hosts-dir`.
    pub fn start_background(
        self: &Arc<Self>,
        events: EventLog,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let services = Arc::clone(self);
        tokio::spawn(async move { services.background(events, stop).await })
    }

    async fn background(&self, events: EventLog, stop: CancellationToken) {
        let gc_enabled = !self.store.gc_interval.is_zero();
        let period = if gc_enabled {
            self.store.gc_interval
        } else {
            Duration::from_secs(3600)
        };
        // The first collection waits a little: after a reboot the pods come
        // first, and nothing a crash left stops them (leftovers are only
        // disk space until then).
        let first = tokio::time::Instant::now() + period.min(GC_AFTER_START);
        let mut gc = tokio::time::interval_at(first, period);
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hosts_dir = tokio::time::interval(HOSTS_DIR_POLL);
        hosts_dir.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        hosts_dir.tick().await; // the first tick is now: just loaded
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = gc.tick(), if gc_enabled => self.collect_garbage(&events).await,
                _ = hosts_dir.tick() => {
                    self.registries.reload_hosts_dir(&self.images).await;
                }
            }
        }
    }

    /// One GC run; logs (and records as an event) what it freed. Pinned
    /// images, containers' images and leases are GC roots, so none of
    /// their content is touched.
    async fn collect_garbage(&self, events: &EventLog) {
        let service = self.images.service().clone();
        match tokio::task::spawn_blocking(move || service.gc()).await {
            Ok(Ok(report)) => {
                for removed in report
                    .blobs
                    .iter()
                    .chain(&report.snapshots)
                    .chain(&report.leftovers)
                {
                    tracing::debug!(id = %removed.id, bytes = removed.bytes, "garbage collected");
                }
                let count = report.blobs.len() + report.snapshots.len() + report.leftovers.len();
                if count > 0 {
                    events.record(Event::new(
                        EventType::Normal,
                        "agent",
                        "GarbageCollected",
                        format!(
                            "freed {:.1} MB: {} blobs, {} snapshots, {} leftovers of interrupted work",
                            report.bytes_freed() as f64 / 1e6,
                            report.blobs.len(),
                            report.snapshots.len(),
                            report.leftovers.len()
                        ),
                    ));
                }
            }
            Ok(Err(err)) => {
                let text = chain(&err);
                tracing::warn!(error = %text, "garbage collection failed; retrying at the next interval");
                events.record(Event::new(
                    EventType::Warning,
                    "agent",
                    "GarbageCollectionFailed",
                    text,
                ));
            }
            Err(err) => tracing::warn!(error = %err, "garbage collection stopped unexpectedly"),
        }
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}
