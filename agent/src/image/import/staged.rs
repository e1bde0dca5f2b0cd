//! Storing a blob whose digest is only known once it has been read (a
//! `docker save` layer or config): it is written under a temporary name in
//! `content/ingest/`, hashed on the way, and made visible only after the
//! caller has added the digest to its lease. The temporary file is locked
//! while it is written, so GC's leftover sweep leaves it alone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use crate::image::content::{ContentError, ContentStore, publish};
use crate::image::unpack::{CopyError, copy_chunks};

fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> ContentError + 'a {
    move |source| ContentError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A fully written, hashed blob that is not in the store yet. Dropping it
/// without [`Staged::commit`] deletes the temporary file.
pub struct Staged {
    store: ContentStore,
    path: PathBuf,
    file: Option<File>,
    digest: Digest,
    size: u64,
}

impl Staged {
    /// Streams `reader` into a temporary file with a `buffer`-sized copy.
    pub fn write(
        store: &ContentStore,
        reader: &mut dyn Read,
        buffer: &mut [u8],
    ) -> Result<Self, ContentError> {
        let path = store.root().join("ingest").join(format!(
            "stage-{}-{:016x}.partial",
            std::process::id(),
            fastrand::u64(..)
        ));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|errno| io_err("locking", &path)(errno.into()))?;
        let mut staged = Self {
            store: store.clone(),
            path,
            file: None,
            digest: crate::image::content::sha256_digest_of(b""),
            size: 0,
        };
        let mut hasher = Sha256::new();
        staged.size = copy_chunks(reader, buffer, |chunk| {
            hasher.update(chunk);
            file.write_all(chunk)
        })
        .map_err(|err| match err {
            CopyError::Read(source) => io_err("reading the source of", &staged.path)(source),
            CopyError::Write(source) => io_err("writing", &staged.path)(source),
        })?;
        staged.digest = format!("sha256:{}", hex::encode(hasher.finalize()))
            .parse()
            .expect("a sha256 hex string is a valid digest");
        staged.file = Some(file);
        Ok(staged)
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the blob visible (fsync, rename). If the store already has
    /// it, the temporary copy is simply dropped.
    pub fn commit(mut self) -> Result<(), ContentError> {
        let target = self.store.blob_path(&self.digest)?;
        if self.store.contains(&self.digest)? {
            return Ok(());
        }
        let file = self
            .file
            .take()
            .expect("a staged blob keeps its file until it is committed");
        publish(&file, &self.path, &target)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a commit the temporary name is gone: NotFound is expected.
        let _ = fs::remove_file(&self.path);
    }
}
