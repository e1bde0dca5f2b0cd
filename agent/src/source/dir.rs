//! The directory source: scan at start, then rescan after file events
//! (at once for a whole change, debounced for anything still being
//! written), on request (SIGHUP) and periodically, and publish each new
//! desired state on a watch channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::SourceConfig;
use super::scan::{self, ScanError};
use super::watch::{DirWatcher, Pending};
use crate::status::{Event, EventLog, EventType, StatusStore, chain};

/// When file watching is unavailable (watch limit reached), rescan this
/// often instead.
const POLL_WITHOUT_WATCH: Duration = Duration::from_secs(2);
/// A scan racing a symlink swap of the directory is discarded and redone;
/// this many times at most before accepting it.
const MAX_SCAN_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "manifest directory {path} does not exist or cannot be resolved; create it or pass --manifests"
    )]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest path {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// What the scans of the manifest directory go to (the desired store,
/// which publishes a new desired state when something changed).
pub trait ScanConsumer: Send + 'static {
    /// One consistent scan of the whole directory.
    fn consume(&mut self, scanned: Vec<scan::ScannedFile<manifests::files::ManifestFile>>);
}

pub struct DirSource<C> {
    configured: PathBuf,
    config: SourceConfig,
    consumer: C,
    watcher: Option<DirWatcher>,
    /// Why watching does not work, while it does not.
    watch_problem: Option<String>,
    wake: Arc<Notify>,
    status: StatusStore,
    events: EventLog,
}

impl<C: ScanConsumer> DirSource<C> {
    /// Scans the directory once (failing if it does not exist), handing the
    /// scan to `consumer`, and returns the source.
    pub fn start(
        configured: &Path,
        config: SourceConfig,
        consumer: C,
        status: StatusStore,
        events: EventLog,
    ) -> Result<Self, SourceError> {
        let wake = Arc::new(Notify::new());
        let (watcher, watch_problem) = match DirWatcher::new(configured, Arc::clone(&wake)) {
            Ok(watcher) => (Some(watcher), None),
            Err(err) => (None, Some(chain(&err))),
        };
        let mut source = Self {
            configured: configured.to_owned(),
            config,
            consumer,
            watcher,
            watch_problem,
            wake,
            status,
            events,
        };
        let resolved = source.resolve()?;
        source.scan_and_publish(&resolved)?;
        source.report_source_problem(None);
        Ok(source)
    }

    fn resolve(&self) -> Result<PathBuf, SourceError> {
        let resolved =
            std::fs::canonicalize(&self.configured).map_err(|source| SourceError::Missing {
                path: self.configured.clone(),
                source,
            })?;
        if !resolved.is_dir() {
            return Err(SourceError::NotADirectory {
                path: self.configured.clone(),
            });
        }
        Ok(resolved)
    }

    /// Rescans until `shutdown`: after file events (see [`Self::due`]),
    /// when `resync` is notified, and every `resync_interval`.
    pub async fn run(mut self, resync: Arc<Notify>, shutdown: CancellationToken) {
        // File events within this long after an event-driven scan are
        // coalesced into one scan at its end.
        let mut window_end: Option<Instant> = None;
        let mut next_resync = Instant::now() + self.resync_period();
        loop {
            let due = self.due(window_end);
            let from_events = tokio::select! {
                () = shutdown.cancelled() => break,
                // Look again at what is pending.
                () = self.wake.notified() => continue,
                () = sleep_until_some(due) => {
                    debug!("manifest directory changed; rescanning");
                    true
                }
                () = resync.notified() => {
                    info!("resync requested; rescanning the manifest directory");
                    false
                }
                () = tokio::time::sleep_until(next_resync) => {
                    debug!("periodic resync");
                    false
                }
            };
            let started = Instant::now();
            if let Some(watcher) = &self.watcher {
                watcher.changes().clear();
            }
            self = match tokio::task::spawn_blocking(move || {
                self.rescan();
                self
            })
            .await
            {
                Ok(source) => source,
                Err(err) => {
                    warn!(error = %err, "directory scan task failed; the source stops");
                    return;
                }
            };
            if from_events {
                window_end = Some(started + self.config.debounce);
            }
            next_resync = Instant::now() + self.resync_period();
        }
    }

    fn resync_period(&self) -> Duration {
        if self.watch_problem.is_some() {
            POLL_WITHOUT_WATCH
        } else {
            self.config.resync_interval
        }
    }

    /// When the file events seen so far call for a rescan. A whole change
    /// (a rename into place, a removal, a file closed after writing) is
    /// acted on at once — unless an event-driven scan ran less than
    /// `debounce` ago, then at the end of that window, so a burst costs two
    /// scans, not one per file. Anything that may still be changing (a file
    /// open for writing, hidden temp files) waits until the directory has
    /// been quiet for `debounce`. The scan reads the directory as it is
    /// then, so the events of one operation that arrive after the first
    /// cost nothing more than a look at what is pending.
    fn due(&self, window_end: Option<Instant>) -> Option<Instant> {
        let pending = self.watcher.as_ref()?.changes().pending()?;
        Some(match pending {
            Pending::Whole { at } => {
                let at = Instant::from_std(at);
                window_end.map_or(at, |end| at.max(end))
            }
            Pending::Settling { last } => Instant::from_std(last) + self.config.debounce,
        })
    }

    /// One rescan; problems with the directory as a whole keep the previous
    /// desired state and are reported in status.
    fn rescan(&mut self) {
        let result = self
            .resolve()
            .and_then(|resolved| self.scan_and_publish(&resolved));
        match result {
            Ok(()) => self.report_source_problem(None),
            Err(err) => {
                if let Some(watcher) = &mut self.watcher {
                    let _ = watcher.refresh(None);
                }
                self.report_source_problem(Some(format!(
                    "{}; keeping the last desired state",
                    chain(&err)
                )));
            }
        }
    }

    fn scan_and_publish(&mut self, resolved: &Path) -> Result<(), SourceError> {
        let mut resolved = resolved.to_owned();
        let mut attempt = 1;
        let scanned = loop {
            self.refresh_watch(&resolved);
            let identity = dir_identity(&resolved);
            let scanned = scan::scan(
                &resolved,
                manifests::MAX_FILE_BYTES,
                manifests::classify_path,
            )?;
            // A swap during the scan (git-sync replacing the directory, a
            // ConfigMap volume replacing `..data`) may have mixed two
            // versions or removed files under our feet: only a scan whose
            // directory and symlinks still resolve the same way after it is
            // consistent.
            let after = self.resolve()?;
            let consistent = after == resolved
                && dir_identity(&after) == identity
                && scan::symlinks_unchanged(&resolved, &scanned);
            if consistent || attempt >= MAX_SCAN_ATTEMPTS {
                break scanned;
            }
            debug!(from = %resolved.display(), to = %after.display(), "manifest directory changed during the scan; rescanning");
            resolved = after;
            attempt += 1;
        };
        self.consumer.consume(scanned);
        self.status.update_agent(|agent| {
            agent.resolved_manifests = (resolved != self.configured).then(|| resolved.clone());
        });
        Ok(())
    }

    fn refresh_watch(&mut self, resolved: &Path) {
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        match watcher.refresh(Some(resolved)) {
            Ok(()) => {
                if self.watch_problem.take().is_some() {
                    info!("file watching works again");
                }
            }
            Err(err) => {
                let problem = chain(&err);
                if self.watch_problem.as_deref() != Some(&problem) {
                    warn!(error = %problem, poll = ?POLL_WITHOUT_WATCH, "cannot watch the manifest directory; polling instead");
                }
                self.watch_problem = Some(problem);
            }
        }
    }

    fn report_source_problem(&self, error: Option<String>) {
        let problem = match (error, &self.watch_problem) {
            (Some(error), _) => Some(error),
            (None, Some(watch)) => Some(format!(
                "file watching unavailable ({watch}); rescanning every {}",
                manifests::duration::format(POLL_WITHOUT_WATCH)
            )),
            (None, None) => None,
        };
        let mut changed = None;
        self.status.update_agent(|agent| {
            if agent.source_error != problem {
                changed = Some(problem.clone());
                agent.source_error = problem;
            }
        });
        match changed {
            Some(Some(problem)) => self.events.record(Event::new(
                EventType::Warning,
                self.configured.display().to_string(),
                "SourceProblem",
                problem,
            )),
            Some(None) => self.events.record(Event::new(
                EventType::Normal,
                self.configured.display().to_string(),
                "SourceRecovered",
                "the manifest directory is readable and watched again",
            )),
            None => {}
        }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// (device, inode): tells a directory from a new one at the same path.
fn dir_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
