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
//!
//! The watcher only sorts events ([`Changes`]); the source decides when to
//! rescan. A change that is whole as it stands — a rename (how careful
//! writers and git-sync publish), a removal, a visible file closed after
//! writing — can be acted on at once. A visible file created or modified
//! but not yet closed is being written: reading it now would see half of
//! it, so while any such file is open the rescan waits for quiet instead.
//! Everything else that is relevant (hidden temp files, new directories,
//! metadata) waits for quiet too.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
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

/// What the watcher saw since the source last rescanned.
#[derive(Debug, Default)]
struct Seen {
    /// When the last relevant event arrived (`None`: nothing seen).
    last: Option<Instant>,
    /// When the first change that is whole as it stands arrived.
    first_whole: Option<Instant>,
    /// Visible files created or modified and not closed since.
    writing: HashSet<PathBuf>,
}

/// The watcher's findings, shared between its event thread and the source.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    seen: Arc<Mutex<Seen>>,
}

/// When the source should rescan for what was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Only whole changes (and no file mid-write): since `at`.
    Whole { at: Instant },
    /// Something may still be changing; the last event came at `last`.
    Settling { last: Instant },
}

impl Changes {
    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is waiting for a rescan, if anything.
    pub fn pending(&self) -> Option<Pending> {
        let seen = self.lock();
        let last = seen.last?;
        Some(match seen.first_whole {
            Some(at) if seen.writing.is_empty() => Pending::Whole { at },
            _ => Pending::Settling { last },
        })
    }

    /// Forgets everything seen: a rescan starts now. Events from here on
    /// ask for the next one. A file still open for writing sends more
    /// events when it is written again.
    pub fn clear(&self) {
        *self.lock() = Seen::default();
    }

    fn record(&self, kind: Kind, now: Instant) {
        let mut seen = self.lock();
        seen.last = Some(now);
        match kind {
            Kind::Whole(path) => {
                if let Some(path) = path {
                    seen.writing.remove(&path);
                }
                seen.first_whole.get_or_insert(now);
            }
            Kind::Writing(path) => {
                seen.writing.insert(path);
            }
            Kind::Settling => {}
        }
    }
}

/// How one event counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Whole as it stands: a rename, a removal, a visible file closed
    /// after writing (that path is no longer being written), a lost event
    /// queue.
    Whole(Option<PathBuf>),
    /// A visible file created or written, not closed yet.
    Writing(PathBuf),
    /// Relevant, but only after things have been quiet for a while.
    Settling,
}

/// Sorts one event; `None` for events that change nothing a scan reads
/// (opens and reads, including the scan's own).
fn classify(event: &Event, target: Option<&Path>, configured: &Path) -> Option<Kind> {
    if event.need_rescan() {
        return Some(Kind::Whole(None));
    }
    let path = event
        .paths
        .iter()
        .find(|path| *path == configured || target.is_some_and(|t| path.starts_with(t)))?;
    let hidden = target
        .and_then(|t| path.strip_prefix(t).ok())
        .is_some_and(is_hidden);
    Some(match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) if !hidden => {
            Kind::Whole(Some(path.clone()))
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Kind::Settling,
        EventKind::Access(_) => return None,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
            Kind::Whole(Some(path.clone()))
        }
        EventKind::Create(CreateKind::File | CreateKind::Any | CreateKind::Other)
        | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other)
            if !hidden =>
        {
            Kind::Writing(path.clone())
        }
        _ => Kind::Settling,
    })
}

/// Whether a path relative to the manifest directory is one the scan never
/// enters or reads directly (`.x.tmp`, `..data`, `.git/…`).
fn is_hidden(relative: &Path) -> bool {
    relative.components().any(|c| match c {
        Component::Normal(name) => name.as_encoded_bytes().first() == Some(&b'.'),
        _ => false,
    })
}

pub struct DirWatcher {
    configured: PathBuf,
    watcher: RecommendedWatcher,
    changes: Changes,
    /// The resolved directory the recursive watch is on, shared with the
    /// event filter.
    target: Arc<Mutex<Option<PathBuf>>>,
    /// (device, inode) of the watched target: a directory deleted and
    /// re-created at the same path is a new directory whose watch is gone.
    target_identity: Option<(u64, u64)>,
    parent_watched: bool,
}

impl DirWatcher {
    /// Starts watching; `wake` is notified whenever something relevant was
    /// recorded in [`Self::changes`]. Call [`Self::refresh`] to place the
    /// watches.
    pub fn new(configured: &Path, wake: Arc<Notify>) -> Result<Self, WatchError> {
        let target: Arc<Mutex<Option<PathBuf>>> = Arc::new(Mutex::new(None));
        let changes = Changes::default();
        let filter_target = Arc::clone(&target);
        let filter_configured = configured.to_owned();
        let recorder = changes.clone();
        let watcher = notify::recommended_watcher(move |result: notify::Result<Event>| {
            let kind = match result {
                Ok(event) => {
                    let target = filter_target.lock().unwrap_or_else(|p| p.into_inner());
                    classify(&event, target.as_deref(), &filter_configured)
                }
                Err(error) => {
                    warn!(%error, "file watcher error; rescanning");
                    Some(Kind::Whole(None))
                }
            };
            if let Some(kind) = kind {
                recorder.record(kind, Instant::now());
                wake.notify_one();
            }
        })
        .map_err(WatchError::Start)?;
        Ok(Self {
            configured: configured.to_owned(),
            watcher,
            changes,
            target,
            target_identity: None,
            parent_watched: false,
        })
    }

    /// What the watcher has seen since the last [`Changes::clear`].
    pub fn changes(&self) -> &Changes {
        &self.changes
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
            self.watcher
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
            let _ = self.watcher.unwatch(&old);
        }
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(new) = resolved {
            debug!(path = %new.display(), "watching manifest directory");
            self.watcher
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use notify::event::{DataChange, RemoveKind, RenameMode};

    use super::*;

    const DIR: &str = "/m";

    fn event(kind: EventKind, paths: &[&str]) -> Event {
        paths
            .iter()
            .fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
    }

    fn kind_of(kind: EventKind, paths: &[&str]) -> Option<Kind> {
        classify(&event(kind, paths), Some(Path::new(DIR)), Path::new(DIR))
    }

    const CLOSE_WRITE: EventKind = EventKind::Access(AccessKind::Close(AccessMode::Write));
    const WRITE: EventKind = EventKind::Modify(ModifyKind::Data(DataChange::Any));

    #[test]
    fn events_are_sorted_by_whether_the_change_is_whole() {
        let path = |p: &str| PathBuf::from(p);
        assert_eq!(
            kind_of(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/m/.a.tmp", "/m/a.yaml"]
            ),
            Some(Kind::Whole(Some(path("/m/.a.tmp")))),
            "a rename into place"
        );
        assert_eq!(
            kind_of(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &["/m/..data"]
            ),
            Some(Kind::Whole(Some(path("/m/..data")))),
            "a ConfigMap-style swap acts at once too"
        );
        assert_eq!(
            kind_of(CLOSE_WRITE, &["/m/a.yaml"]),
            Some(Kind::Whole(Some(path("/m/a.yaml"))))
        );
        assert_eq!(
            kind_of(EventKind::Remove(RemoveKind::File), &["/m/a.yaml"]),
            Some(Kind::Whole(Some(path("/m/a.yaml"))))
        );
        assert_eq!(
            kind_of(WRITE, &["/m/apps/a.yaml"]),
            Some(Kind::Writing(path("/m/apps/a.yaml")))
        );
        assert_eq!(
            kind_of(EventKind::Create(CreateKind::File), &["/m/a.yaml"]),
            Some(Kind::Writing(path("/m/a.yaml")))
        );
        for hidden in ["/m/.a.yaml.tmp", "/m/..2026_01_01/a.yaml", "/m/.git/x"] {
            assert_eq!(kind_of(WRITE, &[hidden]), Some(Kind::Settling), "{hidden}");
            assert_eq!(
                kind_of(CLOSE_WRITE, &[hidden]),
                Some(Kind::Settling),
                "{hidden}"
            );
        }
        assert_eq!(
            kind_of(EventKind::Create(CreateKind::Folder), &["/m/apps"]),
            Some(Kind::Settling),
            "files written into a new directory before its watch exists are only found by a later scan"
        );
        assert_eq!(
            kind_of(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/m/a.yaml"]
            ),
            None,
            "the scan's own reads"
        );
        assert_eq!(kind_of(WRITE, &["/elsewhere/a.yaml"]), None);
        assert_eq!(
            kind_of(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &["/m"]),
            Some(Kind::Whole(Some(path("/m")))),
            "the configured path itself (a swapped symlink)"
        );
    }

    #[test]
    fn a_file_mid_write_holds_back_the_immediate_rescan() {
        let changes = Changes::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(changes.pending(), None);

        changes.record(Kind::Writing("/m/b.yaml".into()), ms(0));
        changes.record(Kind::Whole(None), ms(1));
        assert_eq!(
            changes.pending(),
            Some(Pending::Settling { last: ms(1) }),
            "b.yaml is still being written"
        );
        changes.record(Kind::Whole(Some("/m/b.yaml".into())), ms(3));
        assert_eq!(changes.pending(), Some(Pending::Whole { at: ms(1) }));

        changes.clear();
        assert_eq!(changes.pending(), None);
        changes.record(Kind::Settling, ms(5));
        assert_eq!(changes.pending(), Some(Pending::Settling { last: ms(5) }));
    }
}
