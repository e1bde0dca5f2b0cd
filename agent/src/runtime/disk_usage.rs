//! How much disk a directory tree uses, as `du` counts it: allocated
//! blocks, each inode once, never following symlinks and never entering
//! another file system (a tmpfs or bind mount inside is not this tree's).

use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes allocated under `root`; a missing `root` uses none. Entries that
/// vanish while walking (a container deleting files) are skipped.
pub fn of(root: &Path) -> std::io::Result<u64> {
    let meta = match std::fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err),
    };
    let device = meta.dev();
    let mut seen = HashSet::new();
    let mut total = allocated(&meta, &mut seen);
    if !meta.is_dir() {
        return Ok(total);
    }
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            total = total.saturating_add(allocated(&meta, &mut seen));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

fn allocated(meta: &std::fs::Metadata, seen: &mut HashSet<(u64, u64)>) -> u64 {
    if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
        return 0;
    }
    meta.blocks().saturating_mul(512)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_allocated_blocks_and_hard_links_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = super::of(dir.path()).expect("du");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/big"), vec![1u8; 1 << 20]).expect("write");
        std::fs::hard_link(dir.path().join("sub/big"), dir.path().join("link")).expect("link");
        std::os::unix::fs::symlink("/usr", dir.path().join("usr")).expect("symlink");
        let used = super::of(dir.path()).expect("du") - empty;
        assert!((1 << 20..(1 << 20) + 64 * 1024).contains(&used), "{used}");
        assert_eq!(super::of(&dir.path().join("absent")).expect("du"), 0);
    }
}
