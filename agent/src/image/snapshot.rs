//! Snapshots: one directory per unpacked layer, keyed by the layer's chain
//! ID, ready to be an overlay lowerdir. Like containerd's snapshotter this
//! returns what to mount ([`Snapshotter::lowerdirs`]) and never mounts.
//!
//! ```text
//! snapshots/<chain-id-hex>/        a complete, verified layer (read-only by convention)
//! snapshots/.staging/<hex>-<pid>-<rand>/   a layer being unpacked by process <pid>
//! snapshots/.staging/gc-<pid>-<rand>/      snapshots GC moved aside, being deleted
//! ```
//!
//! A layer is unpacked into a staging directory, its diffID checked against
//! the image config, the filesystem synced (`syncfs`), and only then
//! renamed into place (`RENAME_NOREPLACE`). A failed or interrupted unpack
//! therefore never leaves a partial snapshot; GC removes stale staging
//! directories (their owner process is gone, or they are old). Unpacking
//! starts the disk writes of each file as soon as it is written, and the
//! layers of one image share one `syncfs` after the last is unpacked, so
//! the disk works while the CPUs decompress and no sync stalls a layer
//! still being written.
//!
//! Layers do not depend on each other's files (each has its own directory),
//! so an image's layers unpack in parallel ([`Snapshotter::unpack_all`]).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use super::content::{ContentError, ContentStore, sha256_hex};
use super::unpack::{LimitError, UnpackError, UnpackLimits, unpack_layer};

const STAGING: &str = ".staging";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("unpacking layer {layer}")]
    Unpack {
        layer: String,
        #[source]
        source: UnpackError,
    },
    /// The layer broke a limit (see [`UnpackLimits`]): nothing was kept.
    #[error("layer {layer} refused")]
    Refused {
        layer: String,
        #[source]
        limit: LimitError,
    },
    #[error(
        "layer {layer} unpacked to diffID {actual}, but the image config says {expected}; nothing was stored"
    )]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("snapshot {chain_id} is not unpacked")]
    Missing { chain_id: String },
    #[error("recording snapshot {chain_id}: {reason}")]
    Record { chain_id: String, reason: String },
    #[error("layer {layer}")]
    Content {
        layer: String,
        #[source]
        source: ContentError,
    },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, SnapshotError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One layer of an image, as the snapshotter needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// The (possibly compressed) blob in the content store.
    pub blob: Digest,
    pub media_type: String,
    /// sha256 of the uncompressed tar, from the image config.
    pub diff_id: Digest,
    /// Identity of this layer stacked on all layers below it.
    pub chain_id: Digest,
}

#[derive(Debug, Clone)]
pub struct Snapshotter {
    dir: PathBuf,
    limits: UnpackLimits,
}

impl Snapshotter {
    /// Opens the snapshot directory (normally `Paths::snapshots()`);
    /// layers are unpacked under the default [`UnpackLimits`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let staging = dir.join(STAGING);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&staging)
            .map_err(io_err("creating", &staging))?;
        Ok(Self {
            dir,
            limits: UnpackLimits::default(),
        })
    }

    /// Unpacks layers under `limits` from now on.
    pub fn with_limits(self, limits: UnpackLimits) -> Self {
        Self { limits, ..self }
    }

    pub fn limits(&self) -> &UnpackLimits {
        &self.limits
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.dir.join(STAGING)
    }

    /// Where the snapshot for `chain_id` lives (whether or not it exists).
    pub fn path(&self, chain_id: &Digest) -> Result<PathBuf> {
        let hex = sha256_hex(chain_id).map_err(|source| SnapshotError::Content {
            layer: chain_id.to_string(),
            source,
        })?;
        Ok(self.dir.join(hex))
    }

    pub fn exists(&self, chain_id: &Digest) -> Result<bool> {
        Ok(self.path(chain_id)?.is_dir())
    }

    /// Overlay lowerdirs for an image whose layers have `chain_ids` (bottom
    /// first, as in the manifest): top layer first, as overlayfs wants them.
    pub fn lowerdirs(&self, chain_ids: &[Digest]) -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::with_capacity(chain_ids.len());
        for chain_id in chain_ids.iter().rev() {
            let path = self.path(chain_id)?;
            if !path.is_dir() {
                return Err(SnapshotError::Missing {
                    chain_id: chain_id.to_string(),
                });
            }
            dirs.push(path);
        }
        Ok(dirs)
    }

    /// Unpacks one layer from the content store into its snapshot unless it
    /// is already there. Returns the bytes of file content written, or
    /// `None` when the snapshot already existed (possibly committed by
    /// another process meanwhile).
    pub fn unpack(&self, content: &ContentStore, layer: &LayerPlan) -> Result<Option<u64>> {
        match self.fill(content, layer)? {
            None => Ok(None),
            Some(filled) => Ok(self.commit(vec![filled])?.pop().flatten()),
        }
    }

    /// Unpacks `layer` into a fresh staging directory and checks its
    /// diffID, without syncing or committing it. `None` when the snapshot
    /// already exists. On failure the staging directory is gone.
    fn fill(&self, content: &ContentStore, layer: &LayerPlan) -> Result<Option<Filled>> {
        if self.exists(&layer.chain_id)? {
            return Ok(None);
        }
        let blob = content
            .open_blob(&layer.blob)
            .map_err(|source| SnapshotError::Content {
                layer: layer.blob.to_string(),
                source,
            })?;
        self.fill_from(blob, layer)
    }

    /// [`Snapshotter::fill`] from the layer blob's bytes as they come (a
    /// download in progress). The result is only as trustworthy as the
    /// bytes: commit it only once the blob verified.
    pub(crate) fn fill_from(
        &self,
        blob: impl Read + Send,
        layer: &LayerPlan,
    ) -> Result<Option<Filled>> {
        let target = self.path(&layer.chain_id)?;
        if target.is_dir() {
            return Ok(None);
        }
        let content_err = |source| SnapshotError::Content {
            layer: layer.blob.to_string(),
            source,
        };
        let (staging, claim) = self.new_staging(&format!(
            "{}-",
            sha256_hex(&layer.chain_id).map_err(content_err)?
        ))?;
        match fill_staging(blob, layer, &staging, &self.limits) {
            Ok(file_bytes) => Ok(Some(Filled {
                staging,
                target,
                file_bytes,
                _claim: claim,
            })),
            Err(err) => {
                remove_tree(&staging);
                Err(err)
            }
        }
    }

    /// Makes filled layers durable with one `syncfs` for all of them, then
    /// renames each into place (`RENAME_NOREPLACE`) and syncs the snapshot
    /// directory once. A layer another process committed meanwhile comes
    /// back as `None` (theirs is just as good).
    pub(crate) fn commit(&self, filled: Vec<Filled>) -> Result<Vec<Option<u64>>> {
        if let Err(err) = self.sync_filesystem() {
            for layer in filled {
                layer.discard();
            }
            return Err(err);
        }
        self.publish_synced(filled)
    }

    /// `syncfs` of the filesystem the snapshots (and the content store,
    /// which lives under the same root) are on.
    pub(crate) fn sync_filesystem(&self) -> Result<()> {
        let dir = File::open(&self.dir).map_err(io_err("opening", &self.dir))?;
        rustix::fs::syncfs(&dir)
            .map_err(|errno| io_err("syncing", &self.dir)(io::Error::from(errno)))?;
        crate::fsutil::crash_point("filesystem synced", &self.dir.display());
        Ok(())
    }

    /// The renames of [`Snapshotter::commit`], for layers a `syncfs` after
    /// their unpacking already made durable.
    pub(crate) fn publish_synced(&self, filled: Vec<Filled>) -> Result<Vec<Option<u64>>> {
        let mut sizes = Vec::with_capacity(filled.len());
        let mut failure = None;
        for layer in filled {
            if failure.is_some() {
                layer.discard();
                continue;
            }
            match rustix::fs::renameat_with(
                rustix::fs::CWD,
                &layer.staging,
                rustix::fs::CWD,
                &layer.target,
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {
                    crate::fsutil::crash_point(
                        "snapshot renamed into place",
                        &layer.target.display(),
                    );
                    sizes.push(Some(layer.file_bytes));
                }
                Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => {
                    layer.discard();
                    sizes.push(None);
                }
                Err(errno) => {
                    failure = Some(io_err("renaming into place", &layer.target)(
                        io::Error::from(errno),
                    ));
                    layer.discard();
                }
            }
        }
        if let Some(err) = failure {
            return Err(err);
        }
        super::content::sync_dir(&self.dir).map_err(|source| SnapshotError::Content {
            layer: self.dir.display().to_string(),
            source,
        })?;
        Ok(sizes)
    }

    /// Unpacks every missing layer, at most `parallelism` at a time, largest
    /// blob first (the largest layer is the critical path), then commits
    /// them all with one `syncfs` (a sync while other layers are being
    /// written stalls them all on the journal). On the first failure the
    /// remaining layers are skipped and that error is returned; layers
    /// already unpacked are still committed (they are valid).
    /// Returns what [`Snapshotter::unpack`] returned for each layer, in
    /// `layers` order.
    pub fn unpack_all(
        &self,
        content: &ContentStore,
        layers: &[LayerPlan],
        parallelism: usize,
    ) -> Result<Vec<Option<u64>>> {
        let mut order: Vec<usize> = (0..layers.len()).collect();
        order.sort_by_key(|&i| {
            std::cmp::Reverse(content.size(&layers[i].blob).ok().flatten().unwrap_or(0))
        });
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let workers = parallelism.clamp(1, layers.len().max(1));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Result<Option<Filled>>)>();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let done_tx = done_tx.clone();
                let (next, failed, order) = (&next, &failed, &order);
                scope.spawn(move || {
                    while let Some(&index) = order.get(next.fetch_add(1, Ordering::SeqCst)) {
                        if failed.load(Ordering::SeqCst) {
                            break;
                        }
                        let filled = self.fill(content, &layers[index]);
                        if filled.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        if done_tx.send((index, filled)).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        drop(done_tx);
        let mut results: Vec<Option<Result<Option<u64>>>> =
            (0..layers.len()).map(|_| None).collect();
        let mut ready = Vec::new();
        for (index, filled) in done_rx {
            match filled {
                Ok(Some(filled)) => ready.push((index, filled)),
                Ok(None) => results[index] = Some(Ok(None)),
                Err(err) => results[index] = Some(Err(err)),
            }
        }
        let mut first_error = None;
        if !ready.is_empty() {
            let (indexes, filled): (Vec<usize>, Vec<Filled>) = ready.into_iter().unzip();
            match self.commit(filled) {
                Ok(sizes) => {
                    for (index, size) in indexes.into_iter().zip(sizes) {
                        results[index] = Some(Ok(size));
                    }
                }
                Err(err) => first_error = Some(err),
            }
        }
        let mut sizes = Vec::with_capacity(layers.len());
        let mut skipped = None;
        for (index, result) in results.into_iter().enumerate() {
            match result {
                Some(Ok(size)) => sizes.push(size),
                Some(Err(err)) => {
                    first_error.get_or_insert(err);
                }
                // Skipped after another layer failed.
                None => {
                    skipped.get_or_insert(SnapshotError::Missing {
                        chain_id: layers[index].chain_id.to_string(),
                    });
                }
            }
        }
        match first_error.or(skipped) {
            Some(err) => Err(err),
            None => Ok(sizes),
        }
    }

    /// Chain IDs (as hex) of every committed snapshot.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("listing", &self.dir))? {
            let entry = entry.map_err(io_err("listing", &self.dir))?;
            if let Some(name) = entry.file_name().to_str()
                && is_sha256_hex(name)
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Moves the snapshot `hex` out of the namespace (a rename, fast enough
    /// to do inside GC's transaction); the caller deletes it later. Returns
    /// `None` when no such snapshot exists.
    pub fn detach(&self, hex: &str) -> Result<Option<PathBuf>> {
        let from = self.dir.join(hex);
        let to = self
            .staging_dir()
            .join(format!("gc-{}-{}", std::process::id(), random_suffix()));
        match fs::rename(&from, &to) {
            Ok(()) => {
                crate::fsutil::crash_point("snapshot moved aside", &from.display());
                Ok(Some(to))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_err("moving aside", &from)(err)),
        }
    }

    /// A fresh staging directory named `<prefix><pid>-<random>`, and the
    /// handle whose exclusive lock claims it until the layer is published
    /// or discarded: however long an unpack takes, GC leaves a claimed
    /// directory alone (the pid in the name is reused once its process is
    /// gone, the lock is not).
    pub(crate) fn new_staging(&self, prefix: &str) -> Result<(PathBuf, File)> {
        let path = self.staging_dir().join(format!(
            "{prefix}{}-{}",
            std::process::id(),
            random_suffix()
        ));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(io_err("creating staging directory", &path))?;
        let claimed = File::open(&path).and_then(|dir| {
            rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive)?;
            Ok(dir)
        });
        match claimed {
            Ok(dir) => Ok((path, dir)),
            Err(err) => {
                remove_tree(&path);
                Err(io_err("claiming staging directory", &path)(err))
            }
        }
    }
}

/// A layer unpacked into its staging directory and verified, not yet
/// durable or visible.
pub(crate) struct Filled {
    staging: PathBuf,
    target: PathBuf,
    file_bytes: u64,
    _claim: File,
}

impl Filled {
    /// Throws the unpacked layer away (its bytes did not verify).
    pub(crate) fn discard(self) {
        remove_tree(&self.staging);
    }
}

/// Unpacks `blob` into `staging` and checks the diffID; returns the file
/// bytes written.
fn fill_staging(
    blob: impl Read + Send,
    layer: &LayerPlan,
    staging: &Path,
    limits: &UnpackLimits,
) -> Result<u64> {
    let unpacked =
        unpack_layer(blob, &layer.media_type, staging, limits).map_err(|source| match source {
            UnpackError::Refused(limit) => SnapshotError::Refused {
                layer: layer.blob.to_string(),
                limit,
            },
            source => SnapshotError::Unpack {
                layer: layer.blob.to_string(),
                source,
            },
        })?;
    if unpacked.diff_id != layer.diff_id {
        return Err(SnapshotError::DiffIdMismatch {
            layer: layer.blob.to_string(),
            expected: layer.diff_id.to_string(),
            actual: unpacked.diff_id.to_string(),
        });
    }
    Ok(unpacked.file_bytes)
}

/// Deletes a detached or failed tree (a layer's files: any depth, any
/// symlinks). Returns whether it is gone; errors are logged, not fatal
/// (GC retries stale staging directories later).
pub fn remove_tree(path: &Path) -> bool {
    match crate::fsutil::remove_tree(path) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %crate::status::chain(&err), "could not remove a staging directory; GC will retry");
            false
        }
    }
}

/// File bytes under `dir` (regular files only, hardlinks counted once per
/// link), for snapshots whose size was never recorded. Iterative: a
/// snapshot's depth is the layer's choice. Paths longer than the kernel
/// accepts are skipped.
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    total += entry.metadata().map_or(0, |m| m.len());
                }
                _ => {}
            }
        }
    }
    total
}

/// The process that created a staging entry (`<anything>-<pid>-<rand>`).
pub fn staging_owner(name: &str) -> Option<u32> {
    let mut parts = name.rsplitn(3, '-');
    let _random = parts.next()?;
    parts.next()?.parse().ok()
}

fn random_suffix() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn is_sha256_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// OCI chain IDs: `chain(L0) = diffID(L0)`,
/// `chain(Ln) = sha256(chain(Ln-1) + " " + diffID(Ln))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let hex = hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()));
                format!("sha256:{hex}")
                    .parse()
                    .expect("a sha256 hex string is a valid digest")
            }
        };
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(hex_char: char) -> Digest {
        format!("sha256:{}", hex_char.to_string().repeat(64))
            .parse()
            .expect("digest")
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let diff_ids = [digest('a'), digest('b')];
        let chain = chain_ids(&diff_ids);
        assert_eq!(chain[0], diff_ids[0]);
        // sha256("sha256:aaa… sha256:bbb…"), computed independently with
        // `printf 'sha256:%s sha256:%s' $(printf 'a%.0s' {1..64}) … | sha256sum`.
        let expected = hex::encode(Sha256::digest(
            format!("sha256:{} sha256:{}", "a".repeat(64), "b".repeat(64)).as_bytes(),
        ));
        assert_eq!(chain[1].to_string(), format!("sha256:{expected}"));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn staging_names_carry_their_owner_pid() {
        assert_eq!(staging_owner("abcdef-1234-00ff00ff00ff00ff"), Some(1234));
        assert_eq!(staging_owner("gc-77-0011223344556677"), Some(77));
        assert_eq!(staging_owner("junk"), None);
    }

    #[test]
    fn lowerdirs_are_top_layer_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = Snapshotter::open(dir.path()).expect("open");
        let chain = [digest('1'), digest('2'), digest('3')];
        for id in &chain {
            fs::create_dir(snapshots.path(id).expect("path")).expect("mkdir");
        }
        let lower = snapshots.lowerdirs(&chain).expect("lowerdirs");
        let names: Vec<String> = lower
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy()[..1].to_owned())
            .collect();
        assert_eq!(names, ["3", "2", "1"]);
        assert_eq!(snapshots.list().expect("list").len(), 3);
    }

    #[test]
    fn a_missing_snapshot_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = Snapshotter::open(dir.path()).expect("open");
        let err = snapshots.lowerdirs(&[digest('9')]).expect_err("missing");
        assert!(err.to_string().contains(&"9".repeat(64)), "{err}");
    }
}
