//! The agent's own configuration file (TOML, `berth run --config FILE`).
//! Every section has defaults, so no file is needed on a typical host.
//! Each subsystem owns its section.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    pub images: ImagesConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImagesConfig {
    /// A containerd-style `certs.d` directory, in addition to the one inside
    /// the manifest directory.
    pub hosts_dir: Option<PathBuf>,
    /// Docker-style credentials file (`auths`).
    pub auth_file: Option<PathBuf>,
    /// Layers downloaded at the same time per pull (default 3).
    pub max_concurrent_downloads: Option<usize>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading agent config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing agent config {}", path.display()))
    }
}
