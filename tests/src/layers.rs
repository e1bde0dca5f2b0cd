//! Layer fixtures for the image store's tests, on top of the registry kit
//! (`images`): layer tars with what the store must preserve or refuse
//! (owners, devices, xattrs, whiteouts, hostile entries the `tar` crate's
//! own builder will not write), in any compression, written into OCI
//! layouts; bombs assembled from gzip members ([`GzipBomb`]: a 256 MiB
//! header for a few KiB); a listing of a directory tree with hashes (to
//! prove nothing outside a root changed); trees 20,000 levels deep; an
//! overlay mount and a tmpfs that unmount themselves; and the peak memory
//! of a child process ([`run_measured`]).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::images;

/// Every entry gets this mtime, so layers (and their digests) are
/// reproducible.
pub const MTIME: u64 = 1_700_000_000;

pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";

/// Builds one layer tar, entry by entry, in the order given.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(size);
    header
}

impl LayerBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Complete);
        Self { tar }
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.dir_owned(path, mode, 0, 0)
    }

    pub fn dir_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar
            .append_data(&mut h, path, &[][..])
            .expect("directory entry");
        self
    }

    pub fn file(self, path: &str, contents: &[u8], mode: u32) -> Self {
        self.file_owned(path, contents, mode, 0, 0)
    }

    pub fn file_owned(
        mut self,
        path: &str,
        contents: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, contents.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar
            .append_data(&mut h, path, contents)
            .expect("file entry");
        self
    }

    /// A regular file carrying PAX `SCHILY.xattr.<name>` records.
    pub fn file_with_xattrs(
        mut self,
        path: &str,
        contents: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> Self {
        let records: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(name, value)| (format!("SCHILY.xattr.{name}"), *value))
            .collect();
        self.tar
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax extensions");
        self.file(path, contents, 0o644)
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("symlink entry");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("hardlink entry");
        self
    }

    pub fn char_device(self, path: &str, major: u32, minor: u32, mode: u32) -> Self {
        self.node(tar::EntryType::Char, path, major, minor, mode)
    }

    pub fn block_device(self, path: &str, major: u32, minor: u32, mode: u32) -> Self {
        self.node(tar::EntryType::Block, path, major, minor, mode)
    }

    pub fn fifo(self, path: &str, mode: u32) -> Self {
        self.node(tar::EntryType::Fifo, path, 0, 0, mode)
    }

    fn node(mut self, kind: tar::EntryType, path: &str, major: u32, minor: u32, mode: u32) -> Self {
        let mut h = header(kind, mode, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.tar
            .append_data(&mut h, path, &[][..])
            .expect("node entry");
        self
    }

    /// The OCI whiteout `<dir>/.wh.<name>`.
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&path, b"", 0o644)
    }

    /// The OCI opaque marker `<dir>/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> Self {
        self.whiteout(dir, ".wh..opq")
    }

    /// An entry written byte for byte, bypassing the tar crate's path
    /// checks (which refuse `..` and absolute paths): for hostile layers.
    /// `path` and `link` must fit the 100-byte header fields.
    pub fn raw(mut self, kind: tar::EntryType, path: &[u8], link: &[u8], contents: &[u8]) -> Self {
        let mut h = header(kind, 0o644, contents.len() as u64);
        assert!(
            path.len() < 100 && link.len() < 100,
            "raw names must fit the header"
        );
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path);
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        self.tar.append(&h, contents).expect("raw entry");
        self
    }

    pub fn build(self) -> Layer {
        Layer {
            tar: self.tar.into_inner().expect("finishing the tar"),
        }
    }
}

/// An uncompressed layer tar.
pub struct Layer {
    pub tar: Vec<u8>,
}

impl Layer {
    /// `sha256:<hex>` of the uncompressed tar.
    pub fn diff_id(&self) -> String {
        sha256_digest(&self.tar)
    }

    pub fn gzip(&self) -> Vec<u8> {
        images::gzip(&self.tar)
    }

    pub fn zstd(&self) -> Vec<u8> {
        zstd::encode_all(&self.tar[..], 3).expect("zstd")
    }

    /// The blob for `media_type` (one of [`GZIP`], [`ZSTD`], [`PLAIN`]).
    pub fn compressed(&self, media_type: &str) -> Vec<u8> {
        match media_type {
            GZIP => self.gzip(),
            ZSTD => self.zstd(),
            PLAIN => self.tar.clone(),
            other => panic!("no compression for media type {other}"),
        }
    }
}

pub use images::sha256 as sha256_digest;

/// A minimal runnable root filesystem (busybox-static and friends), as the
/// registry test kit builds it.
pub fn busybox_layer() -> Layer {
    Layer {
        tar: images::tar(&images::busybox_entries()),
    }
}

/// Writes an image of `layers` (each with its media type) for this host's
/// platform into a new OCI layout at `dir`, tagged `tag`.
pub fn write_oci_layout(dir: &Path, tag: &str, layers: &[(&Layer, &str)]) -> images::OciLayout {
    let diff_ids: Vec<String> = layers.iter().map(|(layer, _)| layer.diff_id()).collect();
    write_oci_layout_claiming(dir, tag, layers, &diff_ids)
}

/// Like [`write_oci_layout`], but the config claims `diff_ids` (to test
/// what happens when a config lies about its layers).
pub fn write_oci_layout_claiming(
    dir: &Path,
    tag: &str,
    layers: &[(&Layer, &str)],
    diff_ids: &[String],
) -> images::OciLayout {
    let raw: Vec<RawLayer> = layers
        .iter()
        .zip(diff_ids)
        .map(|((layer, media_type), diff_id)| RawLayer {
            blob: layer.compressed(media_type),
            media_type: (*media_type).to_owned(),
            diff_id: diff_id.clone(),
        })
        .collect();
    write_oci_layout_raw(dir, tag, &raw)
}

/// A layer as its blob, already compressed: for layers too large to build
/// uncompressed (see [`GzipBomb`]).
pub struct RawLayer {
    pub blob: Vec<u8>,
    pub media_type: String,
    /// What the image config claims as the layer's diffID.
    pub diff_id: String,
}

impl RawLayer {
    /// The blob's digest (what errors about the layer name).
    pub fn digest(&self) -> String {
        sha256_digest(&self.blob)
    }
}

/// Writes an image of `layers` for this host's platform into a new OCI
/// layout at `dir`, tagged `tag`.
pub fn write_oci_layout_raw(dir: &Path, tag: &str, layers: &[RawLayer]) -> images::OciLayout {
    let mut layout = images::OciLayout::create(dir);
    let descriptor = |blob: &images::Blob| serde_json::json!({"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size});
    let layer_blobs: Vec<images::Blob> = layers
        .iter()
        .map(|layer| layout.write_blob(&layer.blob, &layer.media_type))
        .collect();
    let diff_ids: Vec<&str> = layers.iter().map(|layer| layer.diff_id.as_str()).collect();
    let spec = images::ImageSpec::new(Vec::new());
    let config = serde_json::json!({
        "created": "2023-11-14T22:13:20Z",
        "architecture": spec.architecture,
        "os": spec.os,
        "config": {"Cmd": spec.cmd, "Env": spec.env},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = layout.write_blob(
        &serde_json::to_vec(&config).expect("config"),
        images::OCI_CONFIG,
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": images::OCI_MANIFEST,
        "config": descriptor(&config),
        "layers": layer_blobs.iter().map(descriptor).collect::<Vec<_>>(),
    });
    let manifest = layout.write_blob(
        &serde_json::to_vec(&manifest).expect("manifest"),
        images::OCI_MANIFEST,
    );
    layout.tag(tag, &manifest);
    layout
}

/// A gzip layer blob assembled from pieces, each its own gzip member
/// (members concatenate into one stream): a run of hundreds of MiB of one
/// pattern costs a few KiB, so a test can serve a 256 MiB header or file
/// without ever holding it. The layer's true diffID is not computed: a
/// layer built this way is meant to be refused before its diffID matters.
pub struct GzipBomb {
    blob: Vec<u8>,
    /// Uncompressed bytes so far (to pad to tar blocks).
    len: u64,
}

/// The run length [`GzipBomb::repeat`] compresses once and reuses.
const BOMB_CHUNK: usize = 1 << 20;

impl Default for GzipBomb {
    fn default() -> Self {
        Self::new()
    }
}

impl GzipBomb {
    pub fn new() -> Self {
        Self {
            blob: Vec::new(),
            len: 0,
        }
    }

    /// Appends `bytes` as they are.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        if !bytes.is_empty() {
            self.blob.extend(images::gzip(bytes));
            self.len += bytes.len() as u64;
        }
        self
    }

    /// Appends `count` bytes of `pattern` repeated (the pattern must
    /// divide 1 MiB: `a`, `a/`, …).
    pub fn repeat(mut self, pattern: &[u8], count: u64) -> Self {
        assert!(
            BOMB_CHUNK.is_multiple_of(pattern.len()),
            "the pattern must divide 1 MiB"
        );
        let chunk = images::gzip(&pattern.repeat(BOMB_CHUNK / pattern.len()));
        let full = count / BOMB_CHUNK as u64;
        for _ in 0..full {
            self.blob.extend_from_slice(&chunk);
        }
        self.len += full * BOMB_CHUNK as u64;
        let rest = usize::try_from(count % BOMB_CHUNK as u64).expect("below 1 MiB");
        self.bytes(&pattern.repeat(BOMB_CHUNK / pattern.len())[..rest])
    }

    /// Appends a tar header block (its checksum is set here).
    pub fn header(self, mut header: tar::Header) -> Self {
        header.set_cksum();
        self.bytes(header.as_bytes())
    }

    /// A GNU header block for an entry of `kind` at `path` (at most 99
    /// bytes) claiming `size` bytes of data.
    pub fn entry_header(kind: tar::EntryType, path: &[u8], size: u64) -> tar::Header {
        let mut h = header(kind, 0o644, size);
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h
    }

    /// Zeros up to the next 512-byte block.
    pub fn pad(self) -> Self {
        let rest = (512 - self.len % 512) % 512;
        self.bytes(&vec![0; usize::try_from(rest).expect("below a block")])
    }

    /// The end-of-archive marker: two zero blocks.
    pub fn end(self) -> Self {
        self.pad().bytes(&[0; 1024])
    }

    /// The blob, as a gzip layer whose config claims an arbitrary diffID.
    pub fn build(self) -> RawLayer {
        RawLayer {
            blob: self.blob,
            media_type: GZIP.to_owned(),
            diff_id: sha256_digest(b""),
        }
    }
}

/// A tmpfs mounted for one test, unmounted when dropped (even when the
/// test fails): a store that fills up fast, or one where making 20,000
/// directories is quick (this host's ext4 is slow at that after many
/// deletions).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("tmpfs mount point");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .unwrap_or_else(|err| panic!("mounting a tmpfs at {}: {err}", path.display()));
        Self {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(err) = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {err}", self.path.display());
        }
    }
}

pub use peak_memory::{Measured, run_measured};

/// The peak memory of one child process, from the kernel's own count
/// (`wait4`'s rusage): polling `/proc` could miss a short spike.
mod peak_memory {
    #![allow(unsafe_code)]

    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, ExitStatus, Stdio};

    /// What [`run_measured`] saw.
    pub struct Measured {
        pub status: ExitStatus,
        pub stdout: String,
        pub stderr: String,
        /// The child's peak resident set size (VmHWM), in bytes.
        pub max_rss: u64,
    }

    /// Runs `command` to its end (stdout and stderr captured) and reports
    /// its peak memory.
    pub fn run_measured(mut command: Command) -> Measured {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Reaped below by wait4, which std's Child cannot do.
        #[allow(clippy::zombie_processes)]
        let mut child = command.spawn().expect("spawning the measured command");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let mut status = 0;
        // SAFETY: rusage is plain data; all zeros is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `pid` is our own unreaped child (std's Child never
            // reaps on its own); both pointers are to live locals.
            let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            if reaped == pid {
                break;
            }
            let err = std::io::Error::last_os_error();
            assert!(
                err.kind() == std::io::ErrorKind::Interrupted,
                "waiting for {pid}: {err}"
            );
        }
        Measured {
            status: ExitStatus::from_raw(status),
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
            max_rss: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        }
    }
}
/// One line per entry under `root` (relative path → type, mode, owner,
/// size, content hash or link target), sorted. Comparing two listings
/// proves a tree did not change.
pub fn tree_listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut listing = BTreeMap::new();
    walk(root, root, &mut listing);
    listing
}

fn walk(root: &Path, dir: &Path, listing: &mut BTreeMap<PathBuf, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        let kind = meta.file_type();
        let detail = if kind.is_symlink() {
            format!(
                "link -> {}",
                std::fs::read_link(&path).expect("readlink").display()
            )
        } else if kind.is_file() {
            let bytes = std::fs::read(&path).expect("reading file");
            format!("file {}", sha256_digest(&bytes))
        } else if kind.is_dir() {
            "dir".to_owned()
        } else if kind.is_char_device() {
            format!("char {:x}", meta.rdev())
        } else {
            "other".to_owned()
        };
        let rel = path.strip_prefix(root).expect("under root").to_path_buf();
        listing.insert(
            rel,
            format!(
                "{detail} mode={:o} uid={} gid={} size={}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.len()
            ),
        );
        if kind.is_dir() {
            walk(root, &path, listing);
        }
    }
}

/// The relative paths of every entry under `root`, sorted, directories
/// included (`["bin", "bin/sh", …]`).
pub fn file_list(root: &Path) -> Vec<String> {
    tree_listing(root)
        .into_keys()
        .map(|path| path.to_string_lossy().into_owned())
        .collect()
}

/// An overlay of `lowerdirs` (top first) with an empty upper layer, as a
/// container would get it, at a fresh mountpoint under `parent`;
/// unmounted when dropped (even when the test fails).
pub struct OverlayMount {
    pub mountpoint: PathBuf,
}

impl OverlayMount {
    pub fn new(parent: &Path, lowerdirs: &[PathBuf]) -> Self {
        let name = crate::unique_name("ov");
        let mountpoint = parent.join(&name);
        let upper = parent.join(format!("{name}-upper"));
        let work = parent.join(format!("{name}-work"));
        for dir in [&mountpoint, &upper, &work] {
            std::fs::create_dir_all(dir).expect("creating overlay dirs");
        }
        let lower: Vec<String> = lowerdirs
            .iter()
            .map(|dir| dir.to_string_lossy().into_owned())
            .collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &mountpoint,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .unwrap_or_else(|err| {
            panic!(
                "mount -t overlay -o {options} {}: {err}",
                mountpoint.display()
            )
        });
        Self { mountpoint }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        if let Err(err) = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {err}", self.mountpoint.display());
        }
        let _ = std::fs::remove_dir(&self.mountpoint);
    }
}

/// Makes a chain of `depth` nested directories `d/d/d/…` under the
/// existing directory `dir`, with a file at the bottom, as a half-unpacked
/// hostile layer leaves one. Built through fds: paths that long cannot be
/// named.
pub fn deep_tree(dir: &Path, depth: usize) {
    use rustix::fs::{Mode, OFlags, mkdirat, open, openat};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut at = open(dir, flags, Mode::empty())
        .unwrap_or_else(|err| panic!("opening {}: {err}", dir.display()));
    for level in 0..depth {
        mkdirat(&at, "d", Mode::from_raw_mode(0o755))
            .unwrap_or_else(|err| panic!("making level {level} under {}: {err}", dir.display()));
        at = openat(&at, "d", flags, Mode::empty()).expect("opening the new level");
    }
    openat(
        &at,
        "bottom",
        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .expect("the file at the bottom");
}
