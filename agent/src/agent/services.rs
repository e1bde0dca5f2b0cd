//! The long-lived subsystems reconcilers act through, built once at start:
//! the image manager, the container runtime, the network drivers and the
//! pod reconciler's exit watcher. A reconciler reaches everything through
//! its [`Context`](crate::reconcile::Context).
//!
//! A runtime or network driver that cannot work on this host does not stop
//! the agent: the pods that need it report why in their status, and
//! everything else (images, other pods) goes on.

use std::fmt;

use anyhow::Context as _;

use crate::config::AgentConfig;
use crate::image::auth::Credentials;
use crate::image::hosts::HostsConfig;
use crate::image::hosts_dir::load_certs_d;
use crate::image::manager::ImageManager;
use crate::image::remote::DEFAULT_CONCURRENCY;
use crate::image::service::ImageService;
use crate::paths::Paths;
use crate::pod::PodsConfig;
use crate::pod::exits::ExitWatcher;
use crate::pod::network::Networks;
use crate::runtime::Runtime;

pub struct Services {
    pub paths: Paths,
    pub images: ImageManager,
    /// The container runtime, or why there is none on this host.
    pub runtime: Result<Runtime, String>,
    /// The pod network drivers (`[network]`).
    pub network: Networks,
    /// `[pods]`: restart back-off.
    pub pods: PodsConfig,
    /// Turns container exits into reconciles of their pods.
    pub exits: ExitWatcher,
}

impl Services {
    /// Opens the image store, builds the image manager, the runtime and the
    /// network drivers from the agent config. Registry objects from the
    /// manifest directory are applied later, by the registry reconciler.
    pub async fn open(paths: &Paths, config: &AgentConfig) -> anyhow::Result<Self> {
        let service = ImageService::open(paths)
            .with_context(|| format!("opening the image store under {}", paths.root.display()))?;
        let hosts = match &config.images.hosts_dir {
            Some(dir) => load_certs_d(dir)
                .with_context(|| format!("reading [images] hosts-dir {}", dir.display()))?,
            None => HostsConfig::new(),
        };
        let credentials = Credentials::discover(config.images.auth_file.as_deref())
            .context("reading the node's registry credentials")?;
        let concurrency = config
            .images
            .max_concurrent_downloads
            .unwrap_or(DEFAULT_CONCURRENCY);
        let images = ImageManager::new(service, hosts, credentials, concurrency)
            .context("applying the registry host configuration")?;
        let runtime = Runtime::new(paths.clone(), config.runtime.clone())
            .map_err(|err| crate::status::chain(&err));
        if let Err(reason) = &runtime {
            tracing::warn!(%reason, "the container runtime is not available; pods cannot run");
        }
        let network = Networks::new(&config.network, paths).await;
        Ok(Self {
            paths: paths.clone(),
            images,
            runtime,
            network,
            pods: config.pods,
            exits: ExitWatcher::default(),
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
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}
