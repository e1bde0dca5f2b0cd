//! File-system watching for the manifest directory. Events are only level
//! triggers ("something may have changed, rescan"): ConfigMap-style `..data`
//! swaps and git-sync symlink swaps never produce an event for the manifest
//! files themselves (CRATES.md §5).
//!
//! Two watches: the resolved directory, recursively; and the parent of the
//! configured path, non-recursively, because when the configured path is a
//! symlink that gets swapped the old target's watch just goes silent. Each
//! [`DirWatcher::refresh`] re-resolves the path and moves the recursive
//! watch if the target changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::Notify;
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("starting the file watcher")]
    Start(#[source] notify::Error),
    #[error("watching {path}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

pub struct DirWatcher {
    configured: PathBuf,
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    /// The resolved directory the recursive watch is on, shared with the
    /// event filter.
    target: Arc<Mutex<Option<PathBuf>>>,
    /// (device, inode) of the watched target: a directory deleted and
    /// re-created at the same path is a new directory whose watch is gone.
    target_identity: Option<(u64, u64)>,
    parent_watched: bool,
}

impl DirWatcher {
    /// Starts watching; `wake` is notified (debounced) whenever something
    /// relevant may have changed. Call [`Self::refresh`] to place the watches.
    pub fn new(
        configured: &Path,
        debounce: Duration,
        wake: Arc<Notify>,
    ) -> Result<Self, WatchError> {
        let target: Arc<Mutex<Option<PathBuf>>> = Arc::new(Mutex::new(None));
        let filter_target = Arc::clone(&target);
        let filter_configured = configured.to_owned();
        let debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
            let relevant = match result {
                Ok(events) => events.iter().any(|event| {
                    if event.need_rescan() {
                        return true;
                    }
                    if matches!(event.kind, EventKind::Access(_)) {
                        return false;
                    }
                    let target = filter_target.lock().unwrap_or_else(|p| p.into_inner());
                    event.paths.iter().any(|path| {
                        path == &filter_configured
                            || target.as_ref().is_some_and(|t| path.starts_with(t))
                    })
                }),
                Err(errors) => {
                    for error in errors {
                        warn!(%error, "file watcher error; rescanning");
                    }
                    true
                }
            };
            if relevant {
                wake.notify_one();
            }
        })
        .map_err(WatchError::Start)?;
        Ok(Self {
            configured: configured.to_owned(),
            debouncer,
            target,
            target_identity: None,
            parent_watched: false,
        })
    }

    /// Makes the watches match where the configured path points now.
    /// `resolved` is its canonical target (the caller resolved it for the
    /// scan), `None` if it does not exist at the moment.
    pub fn refresh(&mut self, resolved: Option<&Path>) -> Result<(), WatchError> {
        if !self.parent_watched
            && let Some(parent) = self
                .configured
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
        {
            self.debouncer
                .watch(parent, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    path: parent.to_owned(),
                    source,
                })?;
            self.parent_watched = true;
        }
        let current = self
            .target
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let identity = resolved.and_then(|path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
        });
        if current.as_deref() == resolved && identity == self.target_identity {
            return Ok(());
        }
        if let Some(old) = current {
            // The old target may be gone already; its watch died with it.
            let _ = self.debouncer.unwatch(&old);
        }
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(new) = resolved {
            debug!(path = %new.display(), "watching manifest directory");
            self.debouncer
                .watch(new, RecursiveMode::Recursive)
                .map_err(|source| WatchError::Watch {
                    path: new.to_owned(),
                    source,
                })?;
            *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(new.to_owned());
        }
        self.target_identity = identity;
        Ok(())
    }
}
