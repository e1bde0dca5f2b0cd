//! The long-lived subsystems reconcilers act through, built once at start.
//! Each later subsystem (the runtime, the network drivers) joins here, so a
//! reconciler reaches everything through its [`Context`](crate::reconcile::Context).

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

pub struct Services {
    pub paths: Paths,
    pub images: ImageManager,
}

impl Services {
    /// Opens the image store and builds the image manager from the agent
    /// config. Registry objects from the manifest directory are applied
    /// later, by the registry reconciler.
    pub fn open(paths: &Paths, config: &AgentConfig) -> anyhow::Result<Self> {
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
        Ok(Self {
            paths: paths.clone(),
            images,
        })
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}
