//! Removing a directory tree whose shape someone else chose.
//!
//! `std::fs::remove_dir_all` recurses once per directory level, so a tree
//! 20,000 directories deep (a hostile layer makes one in seconds)
//! overflows the stack of the thread removing it and aborts the process,
//! at every start, because the leftover is still there. It also descends
//! into whatever is mounted inside, so a hostPath bind-mounted under a
//! container's bundle would lose its files. This removal:
//!
//! - is iterative: memory grows by one name per level, the stack never;
//! - holds at most [`OPEN_LEVELS`] directory fds; below that it climbs
//!   back up through `..`, checking each time that `..` is the very
//!   directory (device and inode) it came down from, and stops otherwise;
//! - opens every directory relative to its parent's fd with
//!   `openat2(RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS)` and checks its
//!   device and mount ID against the tree's own: it never enters another
//!   mount (bind mounts of the same filesystem included) and never follows
//!   a symlink (symlinks are unlinked like files);
//! - leaves a mount point it finds in place (and the directories above
//!   it), goes on with the rest, and reports what it left.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;

/// Directory levels whose fd (and listing position) stay open while a
/// deeper level is worked on. Deeper levels are reopened through `..`.
pub const OPEN_LEVELS: usize = 32;
/// How often a directory that keeps getting new entries while it is being
/// emptied is emptied again before it is reported.
const MAX_PASSES: u32 = 8;
/// Places left in place that an error names (the rest are counted).
const MAX_REPORTED: usize = 16;
/// Longer paths are shown shortened in errors (a hostile tree's paths can
/// be megabytes long).
const SHOWN_PATH_BYTES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("refusing to remove {}: the path has no final name", shown(.path))]
    BadPath { path: PathBuf },
    #[error("{op} {}", shown(.path))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} was not removed entirely: {}", shown(.path), summary(.left, *.more))]
    LeftInPlace {
        path: PathBuf,
        left: Vec<Left>,
        /// Places left in place beyond those in `left`.
        more: usize,
    },
    #[error(
        "stopped removing {}: {} was moved while it was being removed",
        shown(.path),
        shown(.moved)
    )]
    Moved { path: PathBuf, moved: PathBuf },
}

impl RemoveError {
    /// Every place left in place is a mount point (nothing failed).
    pub fn only_mount_points(&self) -> bool {
        matches!(self, Self::LeftInPlace { left, .. } if left.iter().all(|l| matches!(l.why, Why::MountPoint)))
    }
}

/// Something the removal left in place.
#[derive(Debug)]
pub struct Left {
    pub path: PathBuf,
    pub why: Why,
}

#[derive(Debug)]
pub enum Why {
    /// Another filesystem or a bind mount: never entered.
    MountPoint,
    Failed {
        op: &'static str,
        errno: Errno,
    },
}

impl fmt::Display for Left {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.why {
            Why::MountPoint => write!(f, "{} is a mount point", shown(&self.path)),
            Why::Failed { op, errno } => {
                write!(f, "{op} {}: {}", shown(&self.path), io::Error::from(*errno))
            }
        }
    }
}

fn summary(left: &[Left], more: usize) -> String {
    let mut text = left
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if more > 0 {
        text.push_str(&format!(" (and {more} more)"));
    }
    text
}

/// A path for a message: long ones keep their start and end.
fn shown(path: &Path) -> String {
    super::abbreviate(path.as_os_str().as_bytes(), SHOWN_PATH_BYTES)
}

/// Removes `path` and everything below it (a file or symlink is simply
/// unlinked). A missing `path` is success. The parent directories of
/// `path` are trusted (symlinks in them are followed); nothing below is.
pub fn remove_tree(path: &Path) -> Result<(), RemoveError> {
    let Some(name) = path.file_name() else {
        return Err(RemoveError::BadPath {
            path: path.to_path_buf(),
        });
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let parent_fd = match rfs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(errno) => {
            return Err(RemoveError::Io {
                op: "opening the parent directory of",
                path: path.to_path_buf(),
                source: errno.into(),
            });
        }
    };
    remove_tree_at(parent_fd.as_fd(), name, path)
}

/// Removes the entry `name` of the directory `parent` and everything below
/// it. `shown` is how errors name it.
pub fn remove_tree_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
) -> Result<(), RemoveError> {
    if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
        return Err(RemoveError::BadPath {
            path: shown.to_path_buf(),
        });
    }
    let io_err = |op: &'static str| {
        move |errno: Errno| RemoveError::Io {
            op,
            path: shown.to_path_buf(),
            source: errno.into(),
        }
    };
    let kind = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => FileType::from_raw_mode(stat.st_mode),
        Err(Errno::NOENT) => return Ok(()),
        Err(errno) => return Err(io_err("inspecting")(errno)),
    };
    if kind != FileType::Directory {
        return match rfs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(errno) => Err(io_err("removing")(errno)),
        };
    }
    // The tree belongs to its parent's mount: if the root itself is a
    // mount point, nothing of it is ours to delete.
    let home = identify(parent).map_err(io_err("inspecting the parent directory of"))?;
    let mut removal = Removal {
        shown: shown.to_path_buf(),
        home,
        left: Vec::new(),
        more: 0,
    };
    match open_subdir(parent, name, &home) {
        Opened::Dir(dir, id) => removal.run(parent, name, dir, id)?,
        Opened::Gone => {}
        Opened::NotDir => {
            match rfs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(errno) => return Err(io_err("removing")(errno)),
            };
        }
        Opened::MountPoint => removal.leave(shown.to_path_buf(), Why::MountPoint),
        Opened::Failed(op, errno) => return Err(io_err(op)(errno)),
    }
    removal.finish()
}

/// Which filesystem and mount a directory is on, and which inode it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    /// The mount ID, where the kernel reports it (Linux ≥ 5.8).
    mount: Option<u64>,
}

fn identify(fd: BorrowedFd<'_>) -> Result<Identity, Errno> {
    let stat = rfs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::INO | StatxFlags::MNT_ID,
    )?;
    Ok(Identity {
        dev: rfs::makedev(stat.stx_dev_major, stat.stx_dev_minor),
        ino: stat.stx_ino,
        mount: (stat.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(stat.stx_mnt_id),
    })
}

impl Identity {
    fn same_mount(&self, other: &Identity) -> bool {
        self.dev == other.dev
            && match (self.mount, other.mount) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

enum Opened {
    Dir(Dir, Identity),
    /// Gone meanwhile.
    Gone,
    /// A symlink or not (any more) a directory: unlink it.
    NotDir,
    MountPoint,
    Failed(&'static str, Errno),
}

/// Kernels without openat2 (before 5.6) get `openat(O_NOFOLLOW)` plus the
/// device and mount ID check alone.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens the subdirectory `name` of `dir` if it is a plain directory on
/// the same mount as `home`.
fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr, home: &Identity) -> Opened {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut opened = Err(Errno::NOSYS);
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        opened = rfs::openat2(
            dir,
            name,
            flags,
            Mode::empty(),
            ResolveFlags::NO_XDEV
                | ResolveFlags::NO_SYMLINKS
                | ResolveFlags::NO_MAGICLINKS
                | ResolveFlags::BENEATH,
        );
        if matches!(opened, Err(Errno::NOSYS)) {
            NO_OPENAT2.store(true, Ordering::Relaxed);
        }
    }
    if matches!(opened, Err(Errno::NOSYS)) {
        opened = rfs::openat(dir, name, flags, Mode::empty());
    }
    let fd: OwnedFd = match opened {
        Ok(fd) => fd,
        Err(Errno::XDEV) => return Opened::MountPoint,
        Err(Errno::NOTDIR | Errno::LOOP) => return Opened::NotDir,
        Err(Errno::NOENT) => return Opened::Gone,
        Err(errno) => return Opened::Failed("opening directory", errno),
    };
    let id = match identify(fd.as_fd()) {
        Ok(id) => id,
        Err(errno) => return Opened::Failed("inspecting directory", errno),
    };
    if !id.same_mount(home) {
        return Opened::MountPoint;
    }
    match Dir::new(fd) {
        Ok(dir) => Opened::Dir(dir, id),
        Err(errno) => Opened::Failed("listing directory", errno),
    }
}

/// One directory on the way down.
struct Level {
    /// Its name in its parent.
    name: OsString,
    id: Identity,
    /// Its open listing; `None` while a deeper level is worked on and this
    /// one is below [`OPEN_LEVELS`] (then it is reopened through `..`).
    dir: Option<Dir>,
    /// Entries left in place: skipped when the listing is read again.
    kept: HashSet<OsString>,
    /// The listing failed: this directory cannot be emptied.
    failed: bool,
    passes: u32,
}

struct Removal {
    shown: PathBuf,
    home: Identity,
    left: Vec<Left>,
    more: usize,
}

/// What became of an emptied directory.
enum Emptied {
    Removed,
    /// Entries appeared while it was emptied: empty it again.
    Again,
    /// It holds something left in place.
    Kept,
    /// It cannot be removed.
    Failed(Errno),
}

/// What to do with the deepest level after reading its next entry.
enum Step {
    Continue,
    Descend(Level),
    Done,
}

impl Removal {
    /// Empties and removes the directory `name` of `parent`, opened as `dir`.
    fn run(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        dir: Dir,
        id: Identity,
    ) -> Result<(), RemoveError> {
        let mut levels = vec![Level::new(name.to_owned(), id, dir)];
        loop {
            match self.step(&mut levels) {
                Step::Continue => {}
                Step::Descend(child) => descend(&mut levels, child),
                Step::Done => {
                    let mut done = levels.pop().expect("a level was worked on");
                    let outcome = match levels.last_mut() {
                        // The root: its parent is the caller's directory.
                        None => remove_emptied(parent, &mut done),
                        Some(up) => {
                            if up.dir.is_none() {
                                let reopened = self.climb(&done, &levels)?;
                                if let Some(up) = levels.last_mut() {
                                    up.dir = Some(reopened);
                                }
                            }
                            let up_fd = levels
                                .last()
                                .and_then(|up| up.dir.as_ref())
                                .map(|dir| dir.fd().expect("a directory stream has an fd"))
                                .expect("reopened just above");
                            remove_emptied(up_fd, &mut done)
                        }
                    };
                    if let Emptied::Failed(errno) = outcome {
                        let path = self.path_of(&levels, Some(&done.name));
                        self.leave(
                            path,
                            Why::Failed {
                                op: "removing directory",
                                errno,
                            },
                        );
                    }
                    match outcome {
                        Emptied::Removed => {}
                        Emptied::Again => descend(&mut levels, done),
                        Emptied::Kept | Emptied::Failed(_) => {
                            if let Some(up) = levels.last_mut() {
                                up.kept.insert(done.name);
                            }
                        }
                    }
                    if levels.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads the next entry of the deepest level and removes it (files,
    /// symlinks, devices), or returns the subdirectory to descend into.
    fn step(&mut self, levels: &mut [Level]) -> Step {
        let level = levels.last_mut().expect("there is a deepest level");
        let dir = level.dir.as_mut().expect("the deepest level is open");
        let entry = match dir.read() {
            None => return Step::Done,
            Some(Err(errno)) => {
                level.failed = true;
                let path = self.path_of(levels, None);
                self.leave(
                    path,
                    Why::Failed {
                        op: "listing",
                        errno,
                    },
                );
                return Step::Done;
            }
            Some(Ok(entry)) => entry,
        };
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            return Step::Continue;
        }
        let name = os_str(name);
        if level.kept.contains(name) {
            return Step::Continue;
        }
        let fd = dir.fd().expect("a directory stream has an fd");
        let is_dir = matches!(entry.file_type(), FileType::Directory | FileType::Unknown);
        if is_dir {
            match open_subdir(fd, name, &self.home) {
                Opened::Dir(child, id) => {
                    return Step::Descend(Level::new(name.to_owned(), id, child));
                }
                Opened::Gone => return Step::Continue,
                Opened::NotDir => {}
                Opened::MountPoint => {
                    let name = name.to_owned();
                    level.kept.insert(name.clone());
                    let path = self.path_of(levels, Some(&name));
                    self.leave(path, Why::MountPoint);
                    return Step::Continue;
                }
                Opened::Failed(op, errno) => {
                    let name = name.to_owned();
                    level.kept.insert(name.clone());
                    let path = self.path_of(levels, Some(&name));
                    self.leave(path, Why::Failed { op, errno });
                    return Step::Continue;
                }
            }
        }
        match rfs::unlinkat(fd, name, AtFlags::empty()) {
            // EISDIR: it became a directory meanwhile; the next pass over
            // this listing finds it again.
            Ok(()) | Err(Errno::NOENT | Errno::ISDIR) => {}
            Err(errno) => {
                let name = name.to_owned();
                level.kept.insert(name.clone());
                let path = self.path_of(levels, Some(&name));
                self.leave(
                    path,
                    Why::Failed {
                        op: "removing",
                        errno,
                    },
                );
            }
        }
        Step::Continue
    }

    /// Reopens `up`, the parent of `done`, through `done`'s `..`, and
    /// checks it is the directory `done` was entered from.
    fn climb(&self, done: &Level, levels: &[Level]) -> Result<Dir, RemoveError> {
        let up = levels.last().expect("a level above");
        let dir = done.dir.as_ref().expect("the finished level is open");
        let fd = dir.fd().expect("a directory stream has an fd");
        let moved = || RemoveError::Moved {
            path: self.shown.clone(),
            moved: self.path_of(levels, None),
        };
        let parent = rfs::openat(
            fd,
            "..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| moved())?;
        let id = identify(parent.as_fd()).map_err(|_| moved())?;
        if id.dev != up.id.dev || id.ino != up.id.ino {
            return Err(moved());
        }
        Dir::new(parent).map_err(|errno| RemoveError::Io {
            op: "listing",
            path: self.path_of(levels, None),
            source: errno.into(),
        })
    }

    /// The path of the deepest level (plus `child`), for a message.
    fn path_of(&self, levels: &[Level], child: Option<&OsStr>) -> PathBuf {
        let mut path = self.shown.clone();
        for level in levels.iter().skip(1) {
            path.push(&level.name);
        }
        if let Some(child) = child {
            path.push(child);
        }
        path
    }

    fn leave(&mut self, path: PathBuf, why: Why) {
        if self.left.len() < MAX_REPORTED {
            self.left.push(Left { path, why });
        } else {
            self.more += 1;
        }
    }

    fn finish(self) -> Result<(), RemoveError> {
        if self.left.is_empty() {
            return Ok(());
        }
        Err(RemoveError::LeftInPlace {
            path: self.shown,
            left: self.left,
            more: self.more,
        })
    }
}

/// Removes the emptied directory `done` from `parent`.
fn remove_emptied(parent: BorrowedFd<'_>, done: &mut Level) -> Emptied {
    if done.failed || !done.kept.is_empty() {
        // What it holds was reported; the directory stays for it.
        return Emptied::Kept;
    }
    match rfs::unlinkat(parent, &done.name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Emptied::Removed,
        Err(Errno::NOTEMPTY | Errno::EXIST) if done.passes < MAX_PASSES => {
            done.passes += 1;
            if let Some(dir) = done.dir.as_mut() {
                dir.rewind();
            }
            Emptied::Again
        }
        Err(errno) => Emptied::Failed(errno),
    }
}

/// Makes `child` the deepest level; the one above it keeps its fd only
/// within [`OPEN_LEVELS`].
fn descend(levels: &mut Vec<Level>, child: Level) {
    if levels.len() > OPEN_LEVELS
        && let Some(deepest) = levels.last_mut()
    {
        deepest.dir = None;
    }
    levels.push(child);
}

impl Level {
    fn new(name: OsString, id: Identity, dir: Dir) -> Self {
        Self {
            name,
            id,
            dir: Some(dir),
            kept: HashSet::new(),
            failed: false,
            passes: 0,
        }
    }
}

fn os_str(name: &CStr) -> &OsStr {
    OsStr::from_bytes(name.to_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// Builds a chain of `depth` nested directories named `d` under `dir`
    /// with fds (paths that long cannot be named), a file at the bottom.
    fn deep_chain(dir: &Path, depth: usize) {
        let mut at =
            rfs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).expect("open");
        for _ in 0..depth {
            rfs::mkdirat(&at, "d", Mode::from_raw_mode(0o755)).expect("mkdir");
            at = rfs::openat(&at, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .expect("open child");
        }
        rfs::openat(
            &at,
            "bottom",
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
        )
        .expect("bottom file");
    }

    /// Runs `f` on a thread with a small stack: a removal that recursed
    /// per level would overflow it and abort the test binary.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no panic")
    }

    #[test]
    fn removes_files_symlinks_fifos_and_nested_directories() {
        let temp = tempfile::tempdir().expect("tempdir");
        let outside = temp.path().join("outside");
        std::fs::create_dir(&outside).expect("outside");
        std::fs::write(outside.join("keep"), b"keep").expect("keep");
        let tree = temp.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b/c")).expect("dirs");
        std::fs::write(tree.join("a/b/c/file"), b"x").expect("file");
        std::fs::write(tree.join("top"), b"x").expect("file");
        symlink(&outside, tree.join("a/to-outside-dir")).expect("symlink");
        symlink(outside.join("keep"), tree.join("a/b/to-outside-file")).expect("symlink");
        symlink("/", tree.join("root-link")).expect("symlink");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            tree.join("a/fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("fifo");
        remove_tree(&tree).expect("removed");
        assert!(!tree.exists());
        assert_eq!(std::fs::read(outside.join("keep")).expect("kept"), b"keep");
    }

    #[test]
    fn a_missing_path_is_success_and_a_file_is_unlinked() {
        let temp = tempfile::tempdir().expect("tempdir");
        remove_tree(&temp.path().join("missing/deeper")).expect("nothing to do");
        let file = temp.path().join("file");
        std::fs::write(&file, b"x").expect("file");
        remove_tree(&file).expect("unlinked");
        assert!(!file.exists());
        assert!(matches!(
            remove_tree(Path::new("/")),
            Err(RemoveError::BadPath { .. })
        ));
    }

    #[test]
    fn a_tree_100000_levels_deep_is_removed_on_a_small_stack() {
        // tmpfs: ext4 makes directories slowly after many were deleted.
        let temp = tempfile::tempdir_in("/dev/shm").expect("tempdir");
        let tree = temp.path().join("deep");
        std::fs::create_dir(&tree).expect("root");
        deep_chain(&tree, 100_000);
        let target = tree.clone();
        on_small_stack(move || remove_tree(&target)).expect("removed");
        assert!(!tree.exists());
    }

    #[test]
    fn wide_directories_below_the_open_levels_are_emptied() {
        let temp = tempfile::tempdir().expect("tempdir");
        let tree = temp.path().join("tree");
        let mut bottom = tree.clone();
        for _ in 0..OPEN_LEVELS + 5 {
            bottom.push("d");
        }
        for i in 0..40 {
            let sub = bottom.join(format!("sub{i}"));
            std::fs::create_dir_all(sub.join("inner")).expect("sub");
            std::fs::write(sub.join("inner/f"), b"x").expect("file");
            std::fs::write(bottom.join(format!("file{i}")), b"x").expect("file");
        }
        remove_tree(&tree).expect("removed");
        assert!(!tree.exists());
    }

    #[test]
    fn long_paths_are_shortened_in_messages() {
        let long = PathBuf::from("a/".repeat(10_000));
        let text = shown(&long);
        assert!(text.len() < SHOWN_PATH_BYTES + 64, "{}", text.len());
        assert!(text.contains("(20000 bytes)"), "{text}");
    }
}
