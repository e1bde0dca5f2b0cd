//! Filesystem side of unpacking: every operation on the layer root goes
//! through a directory fd that `pathrs` resolved with openat2
//! `RESOLVE_IN_ROOT` (or its emulation), followed by an `*at()` call on a
//! single, already sanitised name with no-follow semantics. A symlink an
//! entry planted can therefore redirect a later write only to somewhere
//! inside the same root, never out of it.
//!
//! Nothing here fsyncs: the snapshotter calls `syncfs` once per layer.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pathrs::Root;
use pathrs::flags::OpenFlags;
use rustix::fs::{
    self as rfs, AtFlags, Dev, FileType, Gid, Mode, OFlags, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use super::entry_path::EntryPath;
use super::{CopyError, UnpackError, copy_chunks};

/// The xattr overlayfs reads to treat a directory of a lower layer as opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// xattrs overlayfs interprets (redirects, metacopy, origin, opaque...). A
/// layer must not smuggle them in: only our whiteout conversion sets them.
const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// Copy buffer for file contents: large reads keep the decompressor busy.
const COPY_BUFFER: usize = 1 << 20;
/// Directory fds [`Dirs`] keeps open (the deepest levels of the last
/// parent): a layer's depth must not decide how many fds an unpack holds.
const MAX_OPEN_DIRS: usize = 32;
/// Path bytes of directories whose mtime is set at the end. A layer of
/// many deep directories would otherwise decide how much memory this
/// takes; past it, directories keep the time of their unpacking.
const MAX_DIR_TIMES_BYTES: usize = 64 << 20;

/// Ownership, permissions, xattrs and times of one entry.
#[derive(Debug, Clone)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits incl. setuid/setgid/sticky (no file type bits).
    pub mode: u32,
    pub mtime: rfs::Timespec,
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        (Some(Uid::from_raw(self.uid)), Some(Gid::from_raw(self.gid)))
    }

    fn perm(&self) -> Mode {
        Mode::from_raw_mode(self.mode & 0o7777)
    }

    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }
}

/// Device and fifo entries.
#[derive(Debug, Clone, Copy)]
pub enum NodeKind {
    Char(Dev),
    Block(Dev),
    Fifo,
}

/// Resolves (and creates) parent directories inside the root.
///
/// Tar entries come depth-first, so the next entry's parent is almost
/// always the last one or close to it: the open directories from the root
/// down to the last parent are kept as a stack, and a new parent is reached
/// from its deepest common ancestor on the stack, one component at a time
/// with `openat(O_NOFOLLOW | O_DIRECTORY)` (creating what is missing, as
/// `mkdir -p` would). Components are sanitised names (never `..`) and a
/// symlink is never followed, so this cannot leave the root. A parent that
/// passes through a symlink (`lib -> usr/lib`, then `lib/x.so`) is resolved
/// by `pathrs` (openat2 `RESOLVE_IN_ROOT`) instead, which follows it inside
/// the root only. Only the deepest [`MAX_OPEN_DIRS`] levels of the stack
/// stay open; a level above them is reopened from the root when needed.
struct Dirs {
    root: Root,
    root_dir: File,
    root_setgid: bool,
    /// Directories from the root down to the last parent.
    stack: Vec<Level>,
    /// The last parent `pathrs` resolved (through a symlink), with its
    /// setgid bit.
    resolved: Option<(PathBuf, OwnedFd, bool)>,
    /// Whether the parent [`Dirs::parent`] returned last has the setgid
    /// bit (new files in it get its group, not ours).
    last_setgid: bool,
}

/// A directory on the [`Dirs`] stack.
struct Level {
    name: OsString,
    /// Open while the level is among the deepest [`MAX_OPEN_DIRS`].
    fd: Option<OwnedFd>,
    setgid: bool,
}

impl Level {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("the deepest levels of the stack are open")
            .as_fd()
    }
}

/// Why the fast walk stopped.
enum Walk {
    /// A component is a symlink or not a directory: ask `pathrs`.
    NotPlain,
    Failed(Errno),
}

impl Dirs {
    fn parent(&mut self, parent: &Path) -> Result<BorrowedFd<'_>, UnpackError> {
        if parent.as_os_str().is_empty() {
            self.last_setgid = self.root_setgid;
            return Ok(self.root_dir.as_fd());
        }
        if matches!(&self.resolved, Some((path, _, _)) if path == parent) {
            let (_, fd, setgid) = self.resolved.as_ref().expect("matched just above");
            self.last_setgid = *setgid;
            return Ok(fd.as_fd());
        }
        match self.walk(parent, true) {
            Ok(()) => {
                let level = self.stack.last().expect("a non-empty parent was walked");
                self.last_setgid = level.setgid;
                Ok(level.fd())
            }
            Err(Walk::NotPlain) => {
                self.stack.clear();
                let handle = self.mkdir_all(parent, "creating parent directory")?;
                let fd = OwnedFd::from(handle);
                let setgid = is_setgid(&fd);
                self.resolved = Some((parent.to_path_buf(), fd, setgid));
                self.last_setgid = setgid;
                let (_, fd, _) = self.resolved.as_ref().expect("set just above");
                Ok(fd.as_fd())
            }
            Err(Walk::Failed(errno)) => Err(io_err("creating parent directory", parent)(errno)),
        }
    }

    /// The directory `path` if it still is one (never created, never
    /// followed if it is a symlink).
    fn existing(&mut self, path: &Path) -> Option<BorrowedFd<'_>> {
        match self.walk(path, false) {
            Ok(()) => self.stack.last().map(Level::fd),
            Err(Walk::NotPlain) => {
                self.stack.clear();
                let dir = self
                    .root
                    .resolve_nofollow(path)
                    .and_then(|handle| handle.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY))
                    .ok()?;
                let fd = OwnedFd::from(dir);
                let setgid = is_setgid(&fd);
                self.resolved = Some((path.to_path_buf(), fd, setgid));
                self.resolved.as_ref().map(|(_, fd, _)| fd.as_fd())
            }
            Err(Walk::Failed(_)) => None,
        }
    }

    /// Makes the stack hold `parent` and its ancestors, creating missing
    /// ones when `create`.
    fn walk(&mut self, parent: &Path, create: bool) -> Result<(), Walk> {
        let names: Vec<&OsStr> = parent.iter().collect();
        let common = self
            .stack
            .iter()
            .zip(&names)
            .take_while(|(have, want)| have.name.as_os_str() == **want)
            .count();
        self.stack.truncate(common);
        self.reopen_last()?;
        for name in &names[common..] {
            let at = match self.stack.last() {
                Some(level) => level.fd(),
                None => self.root_dir.as_fd(),
            };
            let fd = open_dir(at, name, create)?;
            let setgid = is_setgid(&fd);
            self.stack.push(Level {
                name: (*name).to_owned(),
                fd: Some(fd),
                setgid,
            });
            if let Some(leaving) = self.stack.len().checked_sub(MAX_OPEN_DIRS + 1) {
                self.stack[leaving].fd = None;
            }
        }
        Ok(())
    }

    /// Opens the deepest level again if it was closed: from the root down,
    /// each component without following a symlink. Then only the deepest
    /// [`MAX_OPEN_DIRS`] stay open.
    fn reopen_last(&mut self) -> Result<(), Walk> {
        if self.stack.last().is_none_or(|level| level.fd.is_some()) {
            return Ok(());
        }
        for index in 0..self.stack.len() {
            if self.stack[index].fd.is_some() {
                continue;
            }
            let at = match index.checked_sub(1) {
                Some(above) => self.stack[above].fd(),
                None => self.root_dir.as_fd(),
            };
            let fd = open_dir(at, &self.stack[index].name, false)?;
            self.stack[index].fd = Some(fd);
        }
        let closing = self.stack.len().saturating_sub(MAX_OPEN_DIRS);
        for level in &mut self.stack[..closing] {
            level.fd = None;
        }
        Ok(())
    }

    /// Creates `dir` and its missing parents inside the root (as Docker
    /// does for entries whose directories the layer does not list).
    fn mkdir_all(&self, dir: &Path, op: &'static str) -> Result<pathrs::Handle, UnpackError> {
        self.root
            .mkdir_all(dir, &Permissions::from_mode(0o755))
            .map_err(|source| UnpackError::Confined {
                op,
                path: dir.to_path_buf(),
                source,
            })
    }

    /// Anything removed may have been (or contained) a cached directory.
    fn forget(&mut self) {
        self.stack.clear();
        self.resolved = None;
    }
}

/// Whether a directory has the setgid bit (unknown counts as set: then the
/// owner is always set explicitly).
fn is_setgid(dir: &impl AsFd) -> bool {
    rfs::fstat(dir).map_or(true, |stat| stat.st_mode & 0o2000 != 0)
}

/// Opens the directory `name` in `at` without following a symlink,
/// creating it (mode 0755, like `mkdir -p`) when it is missing and `create`.
fn open_dir(at: BorrowedFd<'_>, name: &OsStr, create: bool) -> Result<OwnedFd, Walk> {
    let open = || {
        rfs::openat(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let classify = |errno: Errno| match errno {
        Errno::LOOP | Errno::NOTDIR => Walk::NotPlain,
        other => Walk::Failed(other),
    };
    match open() {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) if create => {
            match rfs::mkdirat(at, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(errno) => return Err(classify(errno)),
            }
            open().map_err(classify)
        }
        Err(errno) => Err(classify(errno)),
    }
}

pub struct LayerWriter {
    dirs: Dirs,
    /// Directory mtimes are set last: creating children changes them.
    dir_times: Vec<(PathBuf, Timestamps)>,
    /// Path bytes in `dir_times`, bounded by [`MAX_DIR_TIMES_BYTES`].
    dir_times_bytes: usize,
    buf: Vec<u8>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |errno| UnpackError::Io {
        op,
        path: path.to_path_buf(),
        source: io::Error::from(errno),
    }
}

impl LayerWriter {
    /// `dest` must be an existing directory that only this writer uses.
    pub fn new(dest: &Path) -> Result<Self, UnpackError> {
        let root = Root::open(dest).map_err(|source| UnpackError::Confined {
            op: "opening layer root",
            path: dest.to_path_buf(),
            source,
        })?;
        let root_dir = File::open(dest).map_err(|source| UnpackError::Io {
            op: "opening layer root",
            path: dest.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dirs: Dirs {
                root,
                root_setgid: is_setgid(&root_dir),
                root_dir,
                stack: Vec::new(),
                resolved: None,
                last_setgid: true,
            },
            dir_times: Vec::new(),
            dir_times_bytes: 0,
            buf: vec![0; COPY_BUFFER],
        })
    }

    /// The root entry (`./`) carries the layer root's own metadata.
    pub fn root_dir(&mut self, meta: &Meta) -> Result<(), UnpackError> {
        let root = Path::new(".");
        apply_fd_meta(&self.dirs.root_dir, meta, root)?;
        self.dir_times.push((PathBuf::from("."), meta.times()));
        Ok(())
    }

    pub fn regular(
        &mut self,
        path: &EntryPath,
        name: &OsStr,
        meta: &Meta,
        data: &mut dyn Read,
    ) -> Result<u64, UnpackError> {
        let full = path.full();
        // Created with its final mode when nothing can alter it (no umask
        // bits, no setuid/setgid/sticky, which a chown would clear): saves
        // a chmod per file. Otherwise 0600 until the chmod below.
        let final_mode = meta.mode & 0o7000 == 0 && meta.mode & process_umask() == 0;
        let create_mode = if final_mode { meta.mode } else { 0o600 };
        let mut file = File::from(self.create(path, name, "creating file", &full, |parent| {
            rfs::openat(
                parent,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(create_mode),
            )
        })?);
        // A new file is ours, in our group unless the parent is setgid.
        let owner_is_ours =
            !self.dirs.last_setgid && meta.uid == own_ids().0 && meta.gid == own_ids().1;
        let written = copy_chunks(data, &mut self.buf, |chunk| file.write_all(chunk)).map_err(
            |err| match err {
                CopyError::Read(source) => UnpackError::Read {
                    path: full.clone(),
                    source,
                },
                CopyError::Write(source) => UnpackError::Io {
                    op: "writing file",
                    path: full.clone(),
                    source,
                },
            },
        )?;
        if owner_is_ours && final_mode && meta.xattrs.is_empty() {
            // Owner and mode are already right.
        } else {
            apply_fd_meta(&file, meta, &full)?;
        }
        rfs::futimens(&file, &meta.times()).map_err(io_err("setting times of", &full))?;
        if written > 0 {
            crate::image::writeback::start(file);
        }
        Ok(written)
    }

    pub fn directory(
        &mut self,
        path: &EntryPath,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let full = path.full();
        loop {
            let parent = self.dirs.parent(&path.parent)?;
            match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => break,
                Err(Errno::EXIST) => {
                    let existing = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(io_err("inspecting", &full))?;
                    if FileType::from_raw_mode(existing.st_mode) == FileType::Directory {
                        // Directories merge: a later entry only updates metadata.
                        break;
                    }
                    self.replace(path, name)?;
                }
                Err(errno) => return Err(io_err("creating directory", &full)(errno)),
            }
        }
        let parent = self.dirs.parent(&path.parent)?;
        let dir = rfs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err("opening directory", &full))?;
        apply_fd_meta(&dir, meta, &full)?;
        if meta.mode & 0o2000 != 0 {
            // The open-directory cache may know this directory without its
            // setgid bit; files created in it from now on take its group.
            self.dirs.forget();
        }
        self.remember_time(full, meta);
        Ok(())
    }

    fn remember_time(&mut self, path: PathBuf, meta: &Meta) {
        let bytes = path.as_os_str().len();
        if self.dir_times_bytes + bytes > MAX_DIR_TIMES_BYTES {
            if self.dir_times_bytes <= MAX_DIR_TIMES_BYTES {
                tracing::warn!(path = %path.display(), "too many directories to restore all their times; the rest keep the time of unpacking");
                // Warned once.
                self.dir_times_bytes = MAX_DIR_TIMES_BYTES + 1;
            }
            return;
        }
        self.dir_times_bytes += bytes;
        self.dir_times.push((path, meta.times()));
    }

    pub fn symlink(
        &mut self,
        path: &EntryPath,
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let full = path.full();
        // The target is stored verbatim: it is only ever followed inside the
        // container's root (or, while unpacking, inside this layer's root).
        let target = OsStr::from_bytes(target);
        self.create(path, name, "creating symlink", &full, |parent| {
            rfs::symlinkat(target, parent, name)
        })?;
        self.apply_at_meta(path, name, meta, false)
    }

    pub fn hardlink(
        &mut self,
        path: &EntryPath,
        name: &OsStr,
        target: &EntryPath,
    ) -> Result<(), UnpackError> {
        let full = path.full();
        let target_full = target.full();
        let Some(target_name) = &target.name else {
            return Err(UnpackError::Io {
                op: "linking to the layer root from",
                path: full,
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        };
        // Resolved inside the root: a link to `/etc/passwd` means this
        // layer's own etc/passwd, and fails if the layer has none.
        let resolve_err = |source| UnpackError::Confined {
            op: "resolving hardlink target",
            path: target_full.clone(),
            source,
        };
        let target_dir: OwnedFd = if target.parent.as_os_str().is_empty() {
            self.dirs
                .root_dir
                .try_clone()
                .map_err(|source| UnpackError::Io {
                    op: "reopening layer root",
                    path: target_full.clone(),
                    source,
                })?
                .into()
        } else {
            self.dirs
                .root
                .resolve(&target.parent)
                .map_err(resolve_err)?
                .into()
        };
        let shown = PathBuf::from(format!("{} -> {}", full.display(), target_full.display()));
        self.create(path, name, "hardlinking", &shown, |parent| {
            rfs::linkat(&target_dir, target_name, parent, name, AtFlags::empty())
        })
    }

    pub fn node(
        &mut self,
        path: &EntryPath,
        name: &OsStr,
        kind: NodeKind,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let full = path.full();
        let (file_type, dev) = match kind {
            NodeKind::Char(dev) => (FileType::CharacterDevice, dev),
            NodeKind::Block(dev) => (FileType::BlockDevice, dev),
            NodeKind::Fifo => (FileType::Fifo, 0),
        };
        self.create(path, name, "creating device node", &full, |parent| {
            rfs::mknodat(parent, name, file_type, Mode::from_raw_mode(0o600), dev)
        })?;
        self.apply_at_meta(path, name, meta, true)
    }

    /// `.wh.<name>` becomes what overlayfs reads as a whiteout: a 0/0
    /// character device named `<name>`. A file of that name earlier in the
    /// same layer stays: whiteouts only hide lower layers' files.
    pub fn whiteout(
        &mut self,
        path: &EntryPath,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let full = path.full();
        let parent = self.dirs.parent(&path.parent)?;
        match rfs::mknodat(
            parent,
            name,
            FileType::CharacterDevice,
            Mode::empty(),
            rfs::makedev(0, 0),
        ) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                tracing::debug!(path = %full.display(), "whiteout of a file in its own layer: kept the file");
                return Ok(());
            }
            Err(errno) => return Err(io_err("creating whiteout", &full)(errno)),
        }
        let (uid, gid) = meta.owner();
        rfs::chownat(parent, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("changing owner of", &full))?;
        Ok(())
    }

    /// `.wh..wh..opq` marks its directory opaque for overlayfs.
    pub fn opaque(&mut self, dir: &Path) -> Result<(), UnpackError> {
        if dir.as_os_str().is_empty() {
            return rfs::fsetxattr(&self.dirs.root_dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(io_err("marking opaque", Path::new(".")));
        }
        let handle = self.dirs.mkdir_all(dir, "creating opaque directory")?;
        let file = handle
            .reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY)
            .map_err(|source| UnpackError::Confined {
                op: "opening opaque directory",
                path: dir.to_path_buf(),
                source,
            })?;
        rfs::fsetxattr(&file, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(io_err("marking opaque", dir))
    }

    /// Sets directory times, deepest (latest created) first.
    pub fn finish(mut self) -> Result<(), UnpackError> {
        let dir_times = std::mem::take(&mut self.dir_times);
        for (path, times) in dir_times.iter().rev() {
            if path == Path::new(".") {
                rfs::futimens(&self.dirs.root_dir, times)
                    .map_err(io_err("setting times of", path))?;
                continue;
            }
            // A later entry may have replaced the directory: nothing to date.
            let Some(dir) = self.dirs.existing(path) else {
                continue;
            };
            rfs::futimens(dir, times).map_err(io_err("setting times of", path))?;
        }
        Ok(())
    }

    /// Runs `create` in the entry's parent directory. A later entry
    /// replaces an earlier one of the same name, as in Docker: whatever is
    /// in the way (EEXIST) is removed and `create` runs again.
    fn create<T>(
        &mut self,
        path: &EntryPath,
        name: &OsStr,
        op: &'static str,
        shown: &Path,
        mut create: impl FnMut(BorrowedFd<'_>) -> rustix::io::Result<T>,
    ) -> Result<T, UnpackError> {
        loop {
            let parent = self.dirs.parent(&path.parent)?;
            match create(parent) {
                Ok(value) => return Ok(value),
                Err(Errno::EXIST) => self.replace(path, name)?,
                Err(errno) => return Err(io_err(op, shown)(errno)),
            }
        }
    }

    /// Removes whatever sits at `parent/name` so an entry can take its place.
    fn replace(&mut self, path: &EntryPath, name: &OsStr) -> Result<(), UnpackError> {
        let full = path.full();
        let parent = self.dirs.parent(&path.parent)?;
        let existing = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("inspecting", &full))?;
        if FileType::from_raw_mode(existing.st_mode) == FileType::Directory {
            self.dirs.forget();
            let parent = self.dirs.parent(&path.parent)?;
            crate::fsutil::remove_tree_at(parent, name, &full).map_err(|source| {
                UnpackError::Replace {
                    path: full,
                    source: Box::new(source),
                }
            })?;
        } else {
            rfs::unlinkat(parent, name, AtFlags::empty()).map_err(io_err("replacing", &full))?;
        }
        Ok(())
    }

    /// Metadata for inodes we must not open (symlinks, devices, fifos):
    /// every call names the entry relative to its parent fd, without
    /// following it.
    fn apply_at_meta(
        &mut self,
        path: &EntryPath,
        name: &OsStr,
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        let full = path.full();
        let parent = self.dirs.parent(&path.parent)?;
        let (uid, gid) = meta.owner();
        rfs::chownat(parent, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("changing owner of", &full))?;
        if chmod {
            // After chown, which clears setuid/setgid. The node was just
            // created by mknodat, so following "it" cannot leave the root.
            rfs::chmodat(parent, name, meta.perm(), AtFlags::empty())
                .map_err(io_err("changing mode of", &full))?;
        }
        if !meta.xattrs.is_empty() {
            // lsetxattr through the parent's /proc/self/fd link: the link
            // pins the directory we resolved, and the last component is
            // not followed.
            let proc_path = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&parent)
            ))
            .join(name);
            for (key, value) in &meta.xattrs {
                if skip_xattr(key, &full) {
                    continue;
                }
                match rfs::lsetxattr(&proc_path, key.as_os_str(), value, XattrFlags::empty()) {
                    Ok(()) => {}
                    Err(errno) if ignorable_xattr_error(errno) => {
                        log_skipped_xattr(key, &full, errno);
                    }
                    Err(errno) => return Err(io_err("setting xattr on", &full)(errno)),
                }
            }
        }
        rfs::utimensat(parent, name, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("setting times of", &full))
    }
}

/// This process's umask, read once (from /proc: setting it to read it
/// would race with other threads creating files). Unknown: every bit.
fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
            })
            .unwrap_or(0o777)
    })
}

/// The user and group new files get (the filesystem ids are the effective ones).
fn own_ids() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// Owner, then mode (chown clears setuid/setgid), then xattrs, on an open fd.
fn apply_fd_meta(fd: &impl AsFd, meta: &Meta, path: &Path) -> Result<(), UnpackError> {
    let (uid, gid) = meta.owner();
    rfs::fchown(fd, uid, gid).map_err(io_err("changing owner of", path))?;
    rfs::fchmod(fd, meta.perm()).map_err(io_err("changing mode of", path))?;
    for (key, value) in &meta.xattrs {
        if skip_xattr(key, path) {
            continue;
        }
        match rfs::fsetxattr(fd, key.as_os_str(), value, XattrFlags::empty()) {
            Ok(()) => {}
            Err(errno) if ignorable_xattr_error(errno) => log_skipped_xattr(key, path, errno),
            Err(errno) => return Err(io_err("setting xattr on", path)(errno)),
        }
    }
    Ok(())
}

fn skip_xattr(key: &OsStr, path: &Path) -> bool {
    let key = key.to_string_lossy();
    let overlay = OVERLAY_XATTR_PREFIXES
        .iter()
        .any(|prefix| key.starts_with(prefix));
    if overlay {
        tracing::warn!(path = %path.display(), xattr = %key, "ignored an overlayfs xattr carried by the layer");
    }
    overlay
}

/// Filesystems without xattr support, and user.* xattrs on symlinks or
/// devices, are not worth failing a pull for (Docker ignores them too).
fn ignorable_xattr_error(errno: Errno) -> bool {
    matches!(errno, Errno::NOTSUP | Errno::PERM)
}

fn log_skipped_xattr(key: &OsStr, path: &Path, errno: Errno) {
    tracing::debug!(path = %path.display(), xattr = %key.to_string_lossy(), %errno, "xattr not supported here; skipped");
}
