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

use super::UnpackError;
use super::entry_path::EntryPath;

/// The xattr overlayfs reads to treat a directory of a lower layer as opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// xattrs overlayfs interprets (redirects, metacopy, origin, opaque...). A
/// layer must not smuggle them in: only our whiteout conversion sets them.
const OVERLAY_XATTR_PREFIXES: [&str; 2] = ["trusted.overlay.", "user.overlay."];

/// Copy buffer for file contents: large reads keep the decompressor busy.
const COPY_BUFFER: usize = 1 << 20;

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

/// Resolves (and creates) parent directories inside the root, caching the
/// last one: tar entries come grouped by directory, so most entries reuse it.
struct Dirs {
    root: Root,
    root_dir: File,
    cached: Option<(PathBuf, OwnedFd)>,
}

impl Dirs {
    fn parent(&mut self, parent: &Path) -> Result<BorrowedFd<'_>, UnpackError> {
        if parent.as_os_str().is_empty() {
            return Ok(self.root_dir.as_fd());
        }
        let hit = matches!(&self.cached, Some((path, _)) if path == parent);
        if !hit {
            let handle = self
                .root
                .mkdir_all(parent, &Permissions::from_mode(0o755))
                .map_err(|source| UnpackError::Confined {
                    op: "creating parent directory",
                    path: parent.to_path_buf(),
                    source,
                })?;
            self.cached = Some((parent.to_path_buf(), OwnedFd::from(handle)));
        }
        let (_, fd) = self
            .cached
            .as_ref()
            .expect("the cache was filled just above");
        Ok(fd.as_fd())
    }

    /// Anything removed may have been (or contained) the cached directory.
    fn forget(&mut self) {
        self.cached = None;
    }
}

pub struct LayerWriter {
    dirs: Dirs,
    /// Directory mtimes are set last: creating children changes them.
    dir_times: Vec<(PathBuf, Timestamps)>,
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
                root_dir,
                cached: None,
            },
            dir_times: Vec::new(),
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
        let file = loop {
            let parent = self.dirs.parent(&path.parent)?;
            match rfs::openat(
                parent,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => break File::from(fd),
                Err(Errno::EXIST) => self.replace(path, name)?,
                Err(errno) => return Err(io_err("creating file", &full)(errno)),
            }
        };
        let mut file = file;
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(UnpackError::Read { path: full, source }),
            };
            file.write_all(&self.buf[..n])
                .map_err(|source| UnpackError::Io {
                    op: "writing file",
                    path: full.clone(),
                    source,
                })?;
            written += n as u64;
        }
        apply_fd_meta(&file, meta, &full)?;
        rfs::futimens(&file, &meta.times()).map_err(io_err("setting times of", &full))?;
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
        self.dir_times.push((full, meta.times()));
        Ok(())
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
        loop {
            let parent = self.dirs.parent(&path.parent)?;
            match rfs::symlinkat(target, parent, name) {
                Ok(()) => break,
                Err(Errno::EXIST) => self.replace(path, name)?,
                Err(errno) => return Err(io_err("creating symlink", &full)(errno)),
            }
        }
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
        let target_dir =
            self.dirs
                .root
                .resolve(&target.parent)
                .map_err(|source| UnpackError::Confined {
                    op: "resolving hardlink target",
                    path: target_full.clone(),
                    source,
                })?;
        loop {
            let parent = self.dirs.parent(&path.parent)?;
            match rfs::linkat(&target_dir, target_name, parent, name, AtFlags::empty()) {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST) => self.replace(path, name)?,
                Err(errno) => {
                    return Err(UnpackError::Io {
                        op: "hardlinking",
                        path: PathBuf::from(format!(
                            "{} -> {}",
                            full.display(),
                            target_full.display()
                        )),
                        source: io::Error::from(errno),
                    });
                }
            }
        }
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
        loop {
            let parent = self.dirs.parent(&path.parent)?;
            match rfs::mknodat(parent, name, file_type, Mode::from_raw_mode(0o600), dev) {
                Ok(()) => break,
                Err(Errno::EXIST) => self.replace(path, name)?,
                Err(errno) => return Err(io_err("creating device node", &full)(errno)),
            }
        }
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
        let shown = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let handle = self
            .dirs
            .root
            .mkdir_all(dir, &Permissions::from_mode(0o755))
            .map_err(|source| UnpackError::Confined {
                op: "creating opaque directory",
                path: shown.to_path_buf(),
                source,
            })?;
        let file = handle
            .reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY)
            .map_err(|source| UnpackError::Confined {
                op: "opening opaque directory",
                path: shown.to_path_buf(),
                source,
            })?;
        rfs::fsetxattr(&file, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(io_err("marking opaque", shown))
    }

    /// Sets directory times, deepest (latest created) first.
    pub fn finish(self) -> Result<(), UnpackError> {
        for (path, times) in self.dir_times.iter().rev() {
            let dir =
                if path == Path::new(".") {
                    self.dirs
                        .root_dir
                        .try_clone()
                        .map_err(|source| UnpackError::Io {
                            op: "reopening layer root",
                            path: path.clone(),
                            source,
                        })?
                } else {
                    match self.dirs.root.resolve_nofollow(path).and_then(|handle| {
                        handle.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY)
                    }) {
                        Ok(dir) => dir,
                        // A later entry replaced the directory; nothing to date.
                        Err(_) => continue,
                    }
                };
            rfs::futimens(&dir, times).map_err(io_err("setting times of", path))?;
        }
        Ok(())
    }

    /// Removes whatever sits at `parent/name` so an entry can take its place.
    fn replace(&mut self, path: &EntryPath, name: &OsStr) -> Result<(), UnpackError> {
        let full = path.full();
        let parent = self.dirs.parent(&path.parent)?;
        let existing = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("inspecting", &full))?;
        if FileType::from_raw_mode(existing.st_mode) == FileType::Directory {
            self.dirs.forget();
            self.dirs
                .root
                .remove_all(&full)
                .map_err(|source| UnpackError::Confined {
                    op: "replacing directory",
                    path: full,
                    source,
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
