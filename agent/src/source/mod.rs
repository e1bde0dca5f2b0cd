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
    #[serde(with = "manifests::duration::config")]
    pub resync_interval: Duration,
    /// A whole change (a file renamed into place, removed, or closed after
    /// writing) is rescanned at once; further events within this long are
    /// coalesced into one more rescan, and a file still being written is
    /// rescanned once the directory has been quiet this long. So a burst
    /// (`git checkout`, an editor's save) costs two rescans, and a single
    /// rename costs no waiting.
    #[serde(with = "manifests::duration::config")]
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
