//! What one layer has used of its limits so far, and of the store's file
//! system: a layer is refused before it writes the file that would take
//! the store below its reserve, not when the disk is already full (then
//! every container on the host would be failing writes too).

use std::fs::File;

use super::limits::{LimitError, UnpackLimits, shown_path};

/// Free space the store always keeps: a twentieth of its file system, at
/// most 1 GiB (a small edge disk keeps 5%, a big one 1 GiB).
const RESERVE_SHARE: u64 = 20;
const MAX_RESERVE: u64 = 1 << 30;
/// Free space is looked at again after this share of the reserve was
/// written (statvfs is cheap, but not free per small file)...
const RECHECK_SHARE: u64 = 4;
/// ...but at least every 64 KiB and at most every 64 MiB.
const MIN_RECHECK: u64 = 64 << 10;
const MAX_RECHECK: u64 = 64 << 20;
/// Free inodes are looked at every this many entries.
const INODE_RECHECK: u64 = 4096;
/// Inodes the store always keeps, at most (else a twentieth of them).
const MAX_INODE_RESERVE: u64 = 65_536;

pub struct Budget {
    limits: UnpackLimits,
    /// The layer root, for statvfs; `None` where statvfs fails (the
    /// limits still apply).
    root: Option<File>,
    entries: u64,
    file_bytes: u64,
    /// File bytes taken since free space was last checked.
    unchecked: u64,
    reserve: u64,
    recheck: u64,
}

impl Budget {
    /// A budget for one layer unpacked into `root`.
    pub fn new(limits: UnpackLimits, root: Option<File>) -> Self {
        let reserve = root
            .as_ref()
            .and_then(|root| rustix::fs::fstatvfs(root).ok())
            .map_or(0, |fs| {
                (fs.f_blocks.saturating_mul(fs.f_frsize) / RESERVE_SHARE).min(MAX_RESERVE)
            });
        Self {
            limits,
            root,
            entries: 0,
            file_bytes: 0,
            unchecked: 0,
            reserve,
            recheck: (reserve / RECHECK_SHARE).clamp(MIN_RECHECK, MAX_RECHECK),
        }
    }

    /// One more entry.
    pub fn entry(&mut self) -> Result<(), LimitError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(LimitError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        if self.entries.is_multiple_of(INODE_RECHECK)
            && let Some(fs) = self.statvfs()
            && fs.f_files > 0
        {
            let reserve = (fs.f_files / RESERVE_SHARE).min(MAX_INODE_RESERVE);
            if fs.f_favail < reserve {
                return Err(LimitError::NoInodes {
                    available: fs.f_favail,
                    reserve,
                });
            }
        }
        Ok(())
    }

    /// An entry at `depth` directory levels.
    pub fn depth(&self, path: &[u8], depth: usize) -> Result<(), LimitError> {
        if depth > self.limits.max_depth {
            return Err(LimitError::TooDeep {
                path: shown_path(path),
                depth,
                limit: self.limits.max_depth,
            });
        }
        Ok(())
    }

    /// A file of `size` bytes (a sparse file's real size) is about to be
    /// written at `path`.
    pub fn file(&mut self, path: &[u8], size: u64) -> Result<(), LimitError> {
        let total = self.file_bytes.saturating_add(size);
        if total > self.limits.max_layer_bytes {
            return Err(LimitError::FilesTooLarge {
                path: shown_path(path),
                limit: self.limits.max_layer_bytes,
            });
        }
        self.unchecked = self.unchecked.saturating_add(size);
        if self.unchecked >= self.recheck
            && let Some(fs) = self.statvfs()
        {
            // What is not checked yet is mostly written already; only this
            // file is still to come.
            let available = fs.f_bavail.saturating_mul(fs.f_frsize);
            if available < self.reserve.saturating_add(size) {
                return Err(LimitError::NoSpace {
                    path: shown_path(path),
                    needed: size,
                    reserve: self.reserve,
                    available,
                });
            }
            self.unchecked = size;
        }
        self.file_bytes = total;
        Ok(())
    }

    fn statvfs(&self) -> Option<rustix::fs::StatVfs> {
        rustix::fs::fstatvfs(self.root.as_ref()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> UnpackLimits {
        UnpackLimits {
            max_entries: 3,
            max_layer_bytes: 100,
            max_depth: 2,
            ..UnpackLimits::default()
        }
    }

    #[test]
    fn entries_beyond_the_limit_are_refused() {
        let mut budget = Budget::new(limits(), None);
        for _ in 0..3 {
            budget.entry().expect("within the limit");
        }
        assert_eq!(budget.entry(), Err(LimitError::TooManyEntries { limit: 3 }));
    }

    #[test]
    fn file_bytes_beyond_the_limit_are_refused_before_they_are_written() {
        let mut budget = Budget::new(limits(), None);
        budget.file(b"a", 60).expect("fits");
        let err = budget.file(b"b", 41).expect_err("over");
        assert_eq!(
            err,
            LimitError::FilesTooLarge {
                path: "b".into(),
                limit: 100
            }
        );
        budget
            .file(b"c", 40)
            .expect("what was refused was not counted");
    }

    #[test]
    fn depth_beyond_the_limit_is_refused() {
        let budget = Budget::new(limits(), None);
        budget.depth(b"a/b", 2).expect("at the limit");
        assert!(matches!(
            budget.depth(b"a/b/c", 3),
            Err(LimitError::TooDeep {
                depth: 3,
                limit: 2,
                ..
            })
        ));
    }

    #[test]
    fn a_file_that_would_eat_the_reserve_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = File::open(dir.path()).expect("open");
        let fs = rustix::fs::fstatvfs(&root).expect("statvfs");
        let available = fs.f_bavail * fs.f_frsize;
        let mut budget = Budget::new(
            UnpackLimits {
                max_layer_bytes: u64::MAX,
                ..UnpackLimits::default()
            },
            Some(root),
        );
        let err = budget.file(b"huge", available).expect_err("no room");
        assert!(matches!(err, LimitError::NoSpace { .. }), "{err}");
        assert!(err.to_string().contains("huge"), "{err}");
        budget.file(b"small", 1).expect("a small file fits");
    }
}
