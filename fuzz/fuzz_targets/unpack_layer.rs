//! Fuzzes the layer unpacker with arbitrary bytes as an uncompressed layer
//! (the tar parser, the limits and the confined writer), into a fresh root
//! inside a fresh parent directory. The oracle:
//!
//! - nothing outside the root changed: the parent's listing (every entry
//!   but the root, with type, mode, owner, size, link count, mtime and
//!   content hash) and a sentinel file's bytes are what they were;
//! - the limits hold for what was written: no entry deeper than
//!   `max_depth`, no more than `max_entries`, no file and no total above
//!   `max_layer_bytes`;
//! - whatever was unpacked (even half of a refused layer) is removed by
//!   berth's own removal primitive without an error.
//!
//! Run (nightly): `cargo fuzz run unpack_layer fuzz/corpus/unpack_layer`.
//! As root, like the agent: ownership, device nodes and xattrs are then
//! really applied.

#![no_main]

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth::image::unpack::{UnpackLimits, unpack_layer};
use libfuzzer_sys::fuzz_target;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const SENTINEL: &[u8] = b"outside the root: must never change";

/// Small limits keep each run fast; the checks are the same at any size.
fn limits() -> UnpackLimits {
    UnpackLimits {
        max_entries: 2_000,
        max_layer_bytes: 8 << 20,
        ..UnpackLimits::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = limits();
    let parent = tempfile::Builder::new()
        .prefix("fuzz-unpack-")
        .tempdir()
        .expect("parent dir");
    let root = parent.path().join("root");
    std::fs::create_dir(&root).expect("root");
    std::fs::write(parent.path().join("sentinel"), SENTINEL).expect("sentinel");
    std::fs::create_dir(parent.path().join("neighbour")).expect("neighbour");
    std::os::unix::fs::symlink("sentinel", parent.path().join("neighbour/link")).expect("link");
    let before = listing(parent.path(), &root);

    // Refusals and errors are fine; escapes, broken limits and panics are not.
    let _ = unpack_layer(data, LAYER, &root, &limits);

    assert_eq!(
        listing(parent.path(), &root),
        before,
        "something outside the root changed"
    );
    assert_eq!(
        std::fs::read(parent.path().join("sentinel")).expect("sentinel"),
        SENTINEL
    );
    check_limits(&root, &limits);
    berth::fsutil::remove_tree(&root).expect("the unpacked tree is removable");
});

/// Every entry under `dir` except `skip` (and what is below it): path →
/// what it is. Iterative: `dir` is ours and shallow.
fn listing(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("listing the parent") {
            let path = entry.expect("entry").path();
            if path == skip {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let mut hash = DefaultHasher::new();
            if meta.is_file() {
                std::fs::read(&path).expect("reading").hash(&mut hash);
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(&path).expect("readlink").hash(&mut hash);
            } else if meta.is_dir() {
                pending.push(path.clone());
            }
            out.insert(
                path,
                format!(
                    "mode={:o} uid={} gid={} size={} nlink={} mtime={}.{} hash={:x}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.len(),
                    meta.nlink(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    hash.finish()
                ),
            );
        }
    }
    out
}

/// What was written stays within the limits the layer was unpacked under.
fn check_limits(root: &Path, limits: &UnpackLimits) {
    let mut entries = 0u64;
    let mut total = 0u64;
    let mut inodes = std::collections::HashSet::new();
    let mut pending = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("listing the root") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("lstat");
            let depth = depth + 1;
            entries += 1;
            assert!(
                depth <= limits.max_depth,
                "{} is {depth} levels deep",
                entry.path().display()
            );
            if meta.is_file() {
                assert!(
                    meta.len() <= limits.max_layer_bytes,
                    "{} has {} bytes",
                    entry.path().display(),
                    meta.len()
                );
                // A hardlinked file holds its bytes once.
                if inodes.insert(meta.ino()) {
                    total += meta.len();
                }
            } else if meta.is_dir() {
                pending.push((entry.path(), depth));
            }
        }
    }
    // Directories an entry's path implies are created without an entry of
    // their own: at most `max_depth` per entry.
    let max_names = limits.max_entries * limits.max_depth as u64;
    assert!(entries <= max_names, "{entries} names under the root");
    assert!(
        total <= limits.max_layer_bytes,
        "{total} bytes of files under the root"
    );
}
