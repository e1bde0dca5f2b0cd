//! Where the desired state comes from: the manifest directory, scanned at
//! start and then watched.

use std::time::Duration;

use serde::Deserialize;

/// `[source]` in the agent config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceConfig {
    /// A full rescan this often, even without file events: the safety net
    /// for events the kernel dropped or never sent.
    #[serde(with = "crate::config::duration")]
    pub resync_interval: Duration,
    /// File events are collected for this long before a rescan, so one
    /// editor save or one `git checkout` causes one rescan.
    #[serde(with = "crate::config::duration")]
    pub debounce: Duration,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
            debounce: Duration::from_millis(200),
        }
    }
}

pub mod dir;
pub mod scan;
pub mod watch;
