//! Content store: blobs addressed by sha256 digest, the containerd way.
//!
//! A blob is first written to `ingest/<hex>.partial` while it is hashed, then
//! checked against the expected digest and size, fsynced (or covered by a
//! `syncfs` of the whole filesystem, when a pull commits many files at once)
//! and renamed to `sha256/<hex>`. A blob path therefore only ever holds verified content: a
//! crash, a full disk or a wrong digest leaves at most a partial file in
//! `ingest/`, never a corrupt blob. Partial files are kept so that an
//! interrupted download resumes where it stopped (HTTP Range), and removed
//! when their content turns out to be wrong.
//!
//! The API is synchronous; async callers move writes to a blocking thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("unsupported digest algorithm in {digest} (berth stores sha256 content only)")]
    UnsupportedAlgorithm { digest: String },
    #[error("blob {expected} failed verification: content hashes to sha256:{actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} has {actual} bytes, but {expected} were expected")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is not in the content store")]
    NotFound { digest: String },
    #[error(
        "blob {digest} has {size} bytes, more than the {limit} bytes a manifest, index or config may have"
    )]
    TooLarge {
        digest: String,
        size: u64,
        limit: u64,
    },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, ContentError>;

/// The most [`ContentStore::read_blob`] reads into memory: manifests,
/// indexes and configs are kilobytes; one this large is hostile.
pub const MAX_SMALL_BLOB: u64 = 16 << 20;

/// A blob being written has its disk writes started every this many bytes,
/// so its final sync has little left to do.
const WRITEBACK_STEP: u64 = 8 << 20;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ContentError + 'a {
    move |source| ContentError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens the store rooted at `root` (normally `Paths::content()`).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the verified blob for `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self.root.join("sha256").join(sha256_hex(digest)?))
    }

    fn partial_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self
            .root
            .join("ingest")
            .join(format!("{}.partial", sha256_hex(digest)?)))
    }

    /// Size of the stored blob, or `None` when it is not stored.
    pub fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_err("stat", &path)(err)),
        }
    }

    pub fn contains(&self, digest: &Digest) -> Result<bool> {
        Ok(self.size(digest)?.is_some())
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound {
                digest: digest.to_string(),
            },
            _ => io_err("opening", &path)(err),
        })
    }

    /// Reads a small blob (manifest, index, config) whole; one over
    /// [`MAX_SMALL_BLOB`] is refused before it is read.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let file = self.open_blob(digest)?;
        let size = file.metadata().map_err(io_err("inspecting", &path))?.len();
        if size > MAX_SMALL_BLOB {
            return Err(ContentError::TooLarge {
                digest: digest.to_string(),
                size,
                limit: MAX_SMALL_BLOB,
            });
        }
        let mut bytes = Vec::new();
        file.take(MAX_SMALL_BLOB)
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &path))?;
        Ok(bytes)
    }

    /// Stores `bytes` as a blob; the digest is computed here and returned.
    /// A stored copy whose bytes differ (a corrupt blob) is replaced: the
    /// right bytes are at hand, and these blobs are small.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = sha256_digest_of(bytes);
        if self.size(&digest)? == Some(bytes.len() as u64)
            && self.read_blob(&digest).is_ok_and(|stored| stored == bytes)
        {
            return Ok(digest);
        }
        let mut ingest = self.ingest(&digest, Some(bytes.len() as u64))?;
        ingest.restart()?;
        ingest.write_all(bytes)?;
        ingest.commit()?;
        Ok(digest)
    }

    /// Starts (or resumes) writing the blob `digest`. If a partial file from
    /// an earlier attempt exists, its bytes are kept and re-hashed, and
    /// [`Ingest::offset`] says where to resume.
    pub fn ingest(&self, digest: &Digest, expected_size: Option<u64>) -> Result<Ingest> {
        let path = self.partial_path(digest)?;
        let mut file = open_locked_partial(&path)?;
        let mut hasher = Sha256::new();
        let offset = io::copy(&mut file, &mut HashWriter(&mut hasher))
            .map_err(io_err("re-reading partial", &path))?;
        let mut ingest = Ingest {
            store: self.clone(),
            digest: digest.clone(),
            expected_size,
            path,
            file,
            hasher,
            written: offset,
            writeback_from: offset,
        };
        if expected_size.is_some_and(|size| offset > size) {
            ingest.restart()?;
        }
        Ok(ingest)
    }

    /// Re-hashes the stored blob `digest` (`berth images --check`, and a
    /// pull that must not trust what it finds stored).
    pub fn verify(&self, digest: &Digest) -> Result<BlobHealth> {
        let path = self.blob_path(digest)?;
        let mut file = match self.open_blob(digest) {
            Ok(file) => file,
            Err(ContentError::NotFound { .. }) => return Ok(BlobHealth::Missing),
            Err(err) => return Err(err),
        };
        let mut hasher = Sha256::new();
        let size = io::copy(&mut file, &mut HashWriter(&mut hasher))
            .map_err(io_err("re-reading", &path))?;
        let actual = hex::encode(hasher.finalize());
        if actual == sha256_hex(digest)? {
            Ok(BlobHealth::Intact)
        } else {
            Ok(BlobHealth::Corrupt {
                actual: format!("sha256:{actual}"),
                size,
            })
        }
    }

    /// Removes a blob (garbage collection). Missing blobs are not an error.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_err("removing", &path)(err)),
        }
    }

    /// Makes the renames of [`VerifiedIngest::commit_synced`] durable.
    pub fn sync_blob_dir(&self) -> Result<()> {
        sync_dir(&self.root.join("sha256"))
    }

    /// Every stored blob's digest.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("sha256");
        let mut digests = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            if let Some(name) = entry.file_name().to_str()
                && let Ok(digest) = format!("sha256:{name}").parse::<Digest>()
            {
                digests.push(digest);
            }
        }
        Ok(digests)
    }
}

/// What [`ContentStore::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobHealth {
    Intact,
    Missing,
    /// The file's bytes hash to `actual` (a disk error, or someone wrote
    /// into the store).
    Corrupt {
        actual: String,
        size: u64,
    },
}

/// Opens a partial file for appending, holding an exclusive lock on it for
/// as long as the [`Ingest`] lives, so two pulls of one blob (the agent and a
/// `berth pull`) never interleave their bytes; the second waits. When the
/// first one committed (renamed the file into place) meanwhile, the lock was
/// taken on the committed blob, so the partial path is opened afresh.
fn open_locked_partial(path: &Path) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io_err("opening", path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|errno| io_err("locking", path)(errno.into()))?;
        let locked = file.metadata().map_err(io_err("stat", path))?;
        match fs::metadata(path) {
            Ok(current) if current.ino() == locked.ino() && current.dev() == locked.dev() => {
                return Ok(file);
            }
            Ok(_) => continue,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(io_err("stat", path)(err)),
        }
    }
}

/// A blob being written. Dropping it without [`Ingest::commit`] keeps the
/// partial bytes for a later resume; [`Ingest::abort`] discards them.
pub struct Ingest {
    store: ContentStore,
    digest: Digest,
    expected_size: Option<u64>,
    path: PathBuf,
    file: File,
    hasher: Sha256,
    written: u64,
    /// Where the last early writeback started (see `image::writeback`).
    writeback_from: u64,
}

impl Ingest {
    /// Bytes already written (from this or an earlier attempt).
    pub fn offset(&self) -> u64 {
        self.written
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Throws away partial bytes, e.g. when the server ignores a Range request.
    pub fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(io_err("truncating", &self.path))?;
        self.hasher = Sha256::new();
        self.written = 0;
        self.writeback_from = 0;
        Ok(())
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(io_err("writing", &self.path))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        if self.written - self.writeback_from >= WRITEBACK_STEP {
            super::writeback::start_range(
                &self.file,
                self.writeback_from,
                self.written - self.writeback_from,
            );
            self.writeback_from = self.written;
        }
        Ok(())
    }

    /// Verifies size and digest, then makes the blob visible atomically. On a
    /// mismatch the partial file is removed and nothing is stored.
    pub fn commit(self) -> Result<PathBuf> {
        self.verify()?.commit()
    }

    /// Checks size and digest without making the blob visible yet (see
    /// [`VerifiedIngest`]). On a mismatch the partial file is removed.
    pub fn verify(self) -> Result<VerifiedIngest> {
        let actual = hex::encode(self.hasher.clone().finalize());
        let expected = sha256_hex(&self.digest)?.to_owned();
        let size_problem = self.expected_size.filter(|&size| size != self.written);
        if actual != expected || size_problem.is_some() {
            let err = match size_problem {
                Some(expected_size) => ContentError::SizeMismatch {
                    digest: self.digest.to_string(),
                    expected: expected_size,
                    actual: self.written,
                },
                None => ContentError::DigestMismatch {
                    expected: self.digest.to_string(),
                    actual,
                },
            };
            self.abort()?;
            return Err(err);
        }
        Ok(VerifiedIngest { ingest: self })
    }

    /// Discards the partial bytes.
    pub fn abort(self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_err("removing", &self.path)(err)),
        }
    }
}

/// A complete blob whose size and digest checked out, still in `ingest/`
/// (and still locked). It becomes visible with [`VerifiedIngest::commit`],
/// or, when the caller makes a whole batch durable with one `syncfs`, with
/// [`VerifiedIngest::commit_synced`]. Dropping it keeps the partial file
/// (a later attempt finds every byte there and only commits).
pub struct VerifiedIngest {
    ingest: Ingest,
}

impl VerifiedIngest {
    pub fn digest(&self) -> &Digest {
        &self.ingest.digest
    }

    /// Syncs the blob, renames it into place and syncs the directory.
    pub fn commit(self) -> Result<PathBuf> {
        let ingest = &self.ingest;
        let target = ingest.store.blob_path(&ingest.digest)?;
        publish(&ingest.file, &ingest.path, &target)?;
        Ok(target)
    }

    /// Renames the blob into place without syncing it: only for a caller
    /// that synced the filesystem (`syncfs`) after the blob was written,
    /// and that syncs the blob directory ([`ContentStore::sync_blob_dir`])
    /// before relying on the blob being there after a crash.
    pub fn commit_synced(self) -> Result<PathBuf> {
        self.rename()
    }

    fn rename(&self) -> Result<PathBuf> {
        let ingest = &self.ingest;
        let target = ingest.store.blob_path(&ingest.digest)?;
        rename_into_place(&ingest.path, &target)?;
        Ok(target)
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The hex part of a sha256 digest; other algorithms are refused.
pub fn sha256_hex(digest: &Digest) -> Result<&str> {
    match digest.algorithm() {
        DigestAlgorithm::Sha256 => Ok(digest.digest()),
        _ => Err(ContentError::UnsupportedAlgorithm {
            digest: digest.to_string(),
        }),
    }
}

pub fn sha256_digest_of(bytes: &[u8]) -> Digest {
    let hex = hex::encode(Sha256::digest(bytes));
    format!("sha256:{hex}")
        .parse()
        .expect("a sha256 hex string is a valid digest")
}

/// Makes a verified blob written to `temp` (still open as `file`) durable
/// and visible as `target`: fsync, rename, fsync of the directory. Only
/// bytes that reached the disk ever get a blob's name.
pub(crate) fn publish(file: &File, temp: &Path, target: &Path) -> Result<()> {
    file.sync_all().map_err(io_err("syncing", temp))?;
    crate::fsutil::crash_point("blob synced", &temp.display());
    rename_into_place(temp, target)?;
    sync_dir(target.parent().unwrap_or(target))
}

fn rename_into_place(temp: &Path, target: &Path) -> Result<()> {
    fs::rename(temp, target).map_err(io_err("renaming into place", target))?;
    crate::fsutil::crash_point("blob renamed into place", &target.display());
    Ok(())
}

/// Makes a rename durable: the directory entry itself must reach the disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))?;
    crate::fsutil::crash_point("directory synced", &dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(dir.path().join("content")).expect("open");
        (dir, store)
    }

    #[test]
    fn write_then_read_round_trips() {
        let (_dir, store) = store();
        let digest = store.write_blob(b"hello").expect("write");
        assert_eq!(
            digest.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.read_blob(&digest).expect("read"), b"hello");
        assert_eq!(store.list().expect("list"), vec![digest]);
    }

    #[test]
    fn wrong_digest_stores_nothing() {
        let (_dir, store) = store();
        let claimed = sha256_digest_of(b"the real thing");
        let mut ingest = store.ingest(&claimed, None).expect("ingest");
        ingest.write_all(b"an impostor").expect("write");
        let err = ingest.commit().expect_err("must not verify");
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&claimed).expect("contains"));
        let leftovers = fs::read_dir(store.root().join("ingest"))
            .expect("ls")
            .count();
        assert_eq!(leftovers, 0, "a rejected blob leaves no partial file");
    }

    #[test]
    fn wrong_size_stores_nothing() {
        let (_dir, store) = store();
        let digest = sha256_digest_of(b"abc");
        let mut ingest = store.ingest(&digest, Some(4)).expect("ingest");
        ingest.write_all(b"abc").expect("write");
        let err = ingest.commit().expect_err("size must be checked");
        assert!(matches!(err, ContentError::SizeMismatch { .. }), "{err}");
        assert!(!store.contains(&digest).expect("contains"));
    }

    #[test]
    fn interrupted_ingest_resumes_at_its_offset() {
        let (_dir, store) = store();
        let data = vec![7u8; 10_000];
        let digest = sha256_digest_of(&data);
        let mut first = store.ingest(&digest, Some(10_000)).expect("ingest");
        first.write_all(&data[..4_000]).expect("write");
        drop(first); // the connection dropped

        let mut second = store.ingest(&digest, Some(10_000)).expect("resume");
        assert_eq!(second.offset(), 4_000);
        second.write_all(&data[4_000..]).expect("write rest");
        second.commit().expect("verified");
        assert_eq!(store.read_blob(&digest).expect("read"), data);
    }

    #[test]
    fn a_second_ingest_of_one_blob_waits_for_the_first() {
        let (_dir, store) = store();
        let data = b"shared layer".to_vec();
        let digest = sha256_digest_of(&data);
        let mut first = store
            .ingest(&digest, Some(data.len() as u64))
            .expect("first");
        first.write_all(&data).expect("write");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let store = store.clone();
            let digest = digest.clone();
            std::thread::spawn(move || {
                let second = store.ingest(&digest, None).expect("second");
                tx.send(()).expect("send");
                (second.offset(), store.contains(&digest).expect("contains"))
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "the second ingest must wait while the first holds the lock"
        );
        first.commit().expect("commit");
        let (offset, stored) = waiter.join().expect("join");
        assert!(stored, "the second ingest sees the committed blob");
        assert_eq!(
            offset, 0,
            "and starts a fresh partial, not the committed file"
        );
        assert_eq!(store.read_blob(&digest).expect("read"), data);
    }

    #[test]
    fn verify_finds_corruption_and_write_blob_repairs_it() {
        let (_dir, store) = store();
        let digest = store.write_blob(b"manifest").expect("write");
        assert_eq!(store.verify(&digest).expect("verify"), BlobHealth::Intact);
        fs::write(store.blob_path(&digest).expect("path"), b"manifesT").expect("corrupt");
        assert!(matches!(
            store.verify(&digest).expect("verify"),
            BlobHealth::Corrupt { size: 8, .. }
        ));
        store.write_blob(b"manifest").expect("rewrite");
        assert_eq!(store.verify(&digest).expect("verify"), BlobHealth::Intact);
        store.delete(&digest).expect("delete");
        assert_eq!(store.verify(&digest).expect("verify"), BlobHealth::Missing);
    }

    #[test]
    fn a_huge_small_blob_is_refused_before_it_is_read() {
        let (_dir, store) = store();
        let data = vec![b'{'; usize::try_from(MAX_SMALL_BLOB).expect("fits") + 1];
        let digest = store.write_blob(&data).expect("write");
        let err = store.read_blob(&digest).expect_err("too large");
        assert!(matches!(err, ContentError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn non_sha256_digests_are_refused() {
        let (_dir, store) = store();
        let digest: Digest = format!("sha512:{}", "a".repeat(128))
            .parse()
            .expect("digest");
        assert!(matches!(
            store.blob_path(&digest),
            Err(ContentError::UnsupportedAlgorithm { .. })
        ));
    }
}
