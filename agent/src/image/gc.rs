//! Garbage collection: mark-and-sweep of blobs and snapshots, plus
//! leftovers of interrupted work.
//!
//! Roots (see `meta`): manifests an image name or a container points at,
//! and every unexpired lease. The mark (reading roots) and the sweep
//! (deleting blob files, moving snapshot directories aside) run inside one
//! `BEGIN IMMEDIATE` transaction, so a pull or import in another process
//! that adds to its lease either does so before the mark (and is kept) or
//! waits until the sweep is over (and then finds, and re-creates, anything
//! missing). The slow part, deleting the moved-aside snapshot trees, runs
//! after the commit.
//!
//! Leftovers: `content/ingest/*.partial` that no download holds locked and
//! that are older than [`GcOptions::leftover_age`], and staging directories
//! whose owner process is gone, or that are that old and that no unpack
//! holds locked.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::content::{ContentError, ContentStore};
use super::meta::{self, MetaError, MetaStore};
use super::snapshot::{self, SnapshotError, Snapshotter};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("listing {}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Partial downloads and staging directories older than this are
    /// removed even when their owner might still be alive.
    pub leftover_age: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        // A day: long enough that an interrupted pull over a flaky edge
        // link still resumes, short enough to not hoard disk.
        Self {
            leftover_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Something GC deleted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    /// Digest, chain ID or path.
    pub id: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub blobs: Vec<Removed>,
    pub snapshots: Vec<Removed>,
    pub leftovers: Vec<Removed>,
}

impl GcReport {
    pub fn bytes_freed(&self) -> u64 {
        self.blobs
            .iter()
            .chain(&self.snapshots)
            .chain(&self.leftovers)
            .map(|removed| removed.bytes)
            .sum()
    }
}

/// Runs one collection.
pub fn collect(
    meta: &MetaStore,
    content: &ContentStore,
    snapshots: &Snapshotter,
    options: &GcOptions,
) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    let mut detached = Vec::new();
    meta.write(|tx| -> Result<(), GcError> {
        let roots = meta::collect_roots(tx)?;
        sweep_blobs(content, &roots, &mut report.blobs)?;
        for hex in snapshots.list()? {
            let chain_id = format!("sha256:{hex}");
            if roots.snapshots.contains(&chain_id) {
                continue;
            }
            let size: Option<i64> = tx
                .query_row(
                    "SELECT size FROM snapshots WHERE chain_id = ?1",
                    [&chain_id],
                    |row| row.get(0),
                )
                .ok();
            if let Some(path) = snapshots.detach(&hex)? {
                detached.push(path);
                report.snapshots.push(Removed {
                    id: chain_id.clone(),
                    bytes: size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            }
            meta::forget_snapshot(tx, &chain_id)?;
        }
        // A collection killed before its commit moved snapshots aside
        // but kept their records: forget every record whose directory is
        // gone (a record is only ever written after its directory).
        for chain_id in meta::snapshot_records(tx)? {
            if !snapshots.exists(&chain_id)? {
                meta::forget_snapshot(tx, chain_id.as_ref())?;
            }
        }
        // Files are gone, the transaction that forgets them is not yet
        // committed: the next collection must cope with either outcome.
        crate::fsutil::crash_point("garbage swept", &content.root().display());
        Ok(())
    })?;
    for path in detached {
        snapshot::remove_tree(&path);
    }
    report.leftovers = sweep_leftovers(content, snapshots, options)?;
    tracing::info!(
        blobs = report.blobs.len(),
        snapshots = report.snapshots.len(),
        leftovers = report.leftovers.len(),
        bytes = report.bytes_freed(),
        "garbage collection finished"
    );
    Ok(report)
}

fn sweep_blobs(
    content: &ContentStore,
    roots: &meta::Roots,
    removed: &mut Vec<Removed>,
) -> Result<(), GcError> {
    for digest in content.list()? {
        if roots.blobs.contains(&digest.to_string()) {
            continue;
        }
        let bytes = content.size(&digest)?.unwrap_or(0);
        content.delete(&digest)?;
        removed.push(Removed {
            id: digest.to_string(),
            bytes,
        });
    }
    Ok(())
}

fn sweep_leftovers(
    content: &ContentStore,
    snapshots: &Snapshotter,
    options: &GcOptions,
) -> Result<Vec<Removed>, GcError> {
    let mut removed = Vec::new();
    let ingest = content.root().join("ingest");
    for entry in read_dir(&ingest)? {
        let path = entry.path();
        if !is_older_than(&path, options.leftover_age) || is_locked(&path) {
            continue;
        }
        let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => removed.push(Removed {
                id: path.display().to_string(),
                bytes,
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "could not remove a stale partial download")
            }
        }
    }
    let staging = snapshots.staging_dir();
    for entry in read_dir(&staging)? {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = snapshot::staging_owner(&name);
        if owner == Some(std::process::id()) {
            continue;
        }
        let orphaned = owner.is_none_or(|pid| !crate::fsutil::process_alive(pid));
        // An unpack in progress holds a lock on its directory, however
        // long it takes (a slow registry, a loaded machine).
        let stale = orphaned || (is_older_than(&path, options.leftover_age) && !is_locked(&path));
        if stale && snapshot::remove_tree(&path) {
            removed.push(Removed {
                id: path.display().to_string(),
                bytes: 0,
            });
        }
    }
    Ok(removed)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, GcError> {
    let list = |source| GcError::List {
        path: dir.to_path_buf(),
        source,
    };
    match fs::read_dir(dir) {
        Ok(entries) => entries.collect::<Result<Vec<_>, _>>().map_err(list),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(list(err)),
    }
}

fn is_older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// A download in progress holds an exclusive flock on its partial file.
fn is_locked(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gc_killed_before_its_commit_leaves_no_record_of_a_snapshot_it_removed() {
        let crate::image::TestStore {
            content,
            snapshots,
            meta,
            dir: _dir,
        } = crate::image::TestStore::new();
        let gone: oci_spec::image::Digest = format!("sha256:{}", "a".repeat(64))
            .parse()
            .expect("digest");
        let kept: oci_spec::image::Digest = format!("sha256:{}", "b".repeat(64))
            .parse()
            .expect("digest");
        // What the killed collection left: the first snapshot moved aside
        // (its directory is gone), its record still there (the
        // transaction that forgot it rolled back).
        fs::create_dir(snapshots.path(&kept).expect("path")).expect("mkdir");
        let lease = meta.lease("keep", Duration::from_secs(60)).expect("lease");
        lease.add_snapshot(&kept).expect("add");
        meta.record_snapshots(&[(&gone, 5), (&kept, 7)])
            .expect("record");
        collect(&meta, &content, &snapshots, &GcOptions::default()).expect("gc");
        assert_eq!(meta.recorded_snapshots().expect("records"), [kept]);
        lease.release().expect("release");
    }

    /// A pull on a loaded machine took longer than the leftover age to
    /// unpack a layer, and a collection in the agent removed its staging
    /// directory under it: the pull failed renaming it into place.
    #[test]
    fn a_staging_directory_an_unpack_holds_is_kept_however_old() {
        let crate::image::TestStore {
            content,
            snapshots,
            dir: _dir,
            ..
        } = crate::image::TestStore::new();
        let no_age = GcOptions {
            leftover_age: Duration::ZERO,
        };
        let (held, claim) = snapshots.new_staging("held-").expect("staging");
        // Another process's: this one's own are always skipped.
        let foreign =
            held.with_file_name(format!("held-{}-x", std::os::unix::process::parent_id()));
        fs::rename(&held, &foreign).expect("rename");
        sweep_leftovers(&content, &snapshots, &no_age).expect("sweep");
        assert!(foreign.is_dir(), "a claimed directory stays");
        drop(claim);
        sweep_leftovers(&content, &snapshots, &no_age).expect("sweep");
        assert!(!foreign.exists(), "an unclaimed old one goes");
    }
}
