//! How much disk a container's writable layer takes: `du` of its overlay
//! upper directory (allocated blocks; a hard-linked file counted once;
//! other mounts not entered), as cAdvisor's `container_fs_usage_bytes`.
//!
//! The walk is bounded ([`MAX_ENTRIES`]) and goes through file
//! descriptors (`openat` with `O_NOFOLLOW`), never paths: the tree belongs
//! to the container, which may swap a directory for a symlink under us.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags};

/// Entries one walk visits at most: past it the figure is a lower bound,
/// and a container with millions of files cannot make a scrape slow.
pub const MAX_ENTRIES: u64 = 200_000;

/// Bytes on disk under a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    /// False when the walk stopped at its bound or at an unreadable
    /// directory: `bytes` is then a lower bound.
    pub complete: bool,
}

/// Allocated bytes of `dir` and everything below it on the same file
/// system, visiting at most `max_entries` entries. `None` when `dir`
/// cannot be opened (the container has gone).
pub fn usage(dir: &Path, max_entries: u64) -> Option<DiskUsage> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root = rfs::open(dir, flags, Mode::empty()).ok()?;
    let top = rfs::fstat(&root).ok()?;
    let mut total = DiskUsage {
        bytes: allocated(&top),
        complete: true,
    };
    let mut seen_links = HashSet::new();
    let mut visited = 0_u64;
    // Each pending directory keeps its parent open, so open descriptors
    // stay about as many as the tree is deep.
    let mut pending: Vec<(Arc<OwnedFd>, std::ffi::CString)> = Vec::new();
    let mut current = Some(Arc::new(root));
    while let Some(parent) = current.take().or_else(|| {
        let (grand, name) = pending.pop()?;
        match rfs::openat(&*grand, name.as_c_str(), flags, Mode::empty()) {
            Ok(fd) => Some(Arc::new(fd)),
            Err(_) => {
                total.complete = false;
                None
            }
        }
    }) {
        let Ok(mut listing) = Dir::read_from(&*parent) else {
            total.complete = false;
            continue;
        };
        while let Some(entry) = listing.read() {
            let Ok(entry) = entry else {
                total.complete = false;
                break;
            };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            visited += 1;
            if visited > max_entries {
                total.complete = false;
                return Some(total);
            }
            let Ok(stat) = rfs::statat(&*parent, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if stat.st_dev != top.st_dev {
                continue;
            }
            let kind = FileType::from_raw_mode(stat.st_mode);
            if kind != FileType::Directory
                && stat.st_nlink > 1
                && !seen_links.insert((stat.st_dev, stat.st_ino))
            {
                continue;
            }
            total.bytes = total.bytes.saturating_add(allocated(&stat));
            if kind == FileType::Directory {
                pending.push((Arc::clone(&parent), name.to_owned()));
            }
        }
    }
    Some(total)
}

fn allocated(stat: &rfs::Stat) -> u64 {
    u64::try_from(stat.st_blocks)
        .unwrap_or(0)
        .saturating_mul(512)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn du(dir: &Path) -> u64 {
        let out = std::process::Command::new("du")
            .args(["-s", "-B1", "-x"])
            .arg(dir)
            .output()
            .expect("du runs");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("du prints a number")
    }

    #[test]
    fn counts_what_du_counts() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b/c")).expect("dirs");
        std::fs::write(root.join("a/one"), vec![1_u8; 100_000]).expect("file");
        std::fs::write(root.join("a/b/c/two"), vec![2_u8; 50_000]).expect("file");
        std::fs::hard_link(root.join("a/one"), root.join("a/b/one-again")).expect("link");
        std::os::unix::fs::symlink("/usr", root.join("a/usr")).expect("symlink");
        let found = usage(root, MAX_ENTRIES).expect("readable");
        assert!(found.complete);
        assert_eq!(found.bytes, du(root));
        assert!(found.bytes >= 150_000, "{found:?}");
    }

    #[test]
    fn the_walk_stops_at_its_bound() {
        let tmp = tempfile::tempdir().expect("tmp");
        for i in 0..10 {
            std::fs::write(tmp.path().join(i.to_string()), [0_u8; 10]).expect("file");
        }
        let found = usage(tmp.path(), 5).expect("readable");
        assert!(!found.complete);
        assert_eq!(usage(&tmp.path().join("missing"), 5), None);
    }
}
