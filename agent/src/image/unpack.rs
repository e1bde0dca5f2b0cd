//! Unpacking one layer blob into a directory, safely.
//!
//! The `tar` crate is used only as a parser; this module owns the unpack
//! loop (the crate's own `unpack` has had path CVEs and does not follow OCI
//! semantics: no device nodes, deferred directories, `..` silently skipped).
//!
//! Safety rules, enforced for every entry:
//! - paths with a `..` component are **rejected** (the whole layer fails);
//! - absolute paths are **confined**: `/x` is `x` inside the layer root;
//! - every write goes through a directory fd resolved with `pathrs`
//!   (openat2 `RESOLVE_IN_ROOT`), so a symlink planted by the layer —
//!   absolute (`evil -> /`) or relative (`a -> ../../..`) — is followed
//!   only inside the root, never out of it;
//! - hardlink targets are resolved inside the root: a link to `/etc/passwd`
//!   links the layer's own `etc/passwd` or fails;
//! - a whiteout of `.` or `..` is rejected;
//! - xattrs in the overlayfs namespaces (`trusted.overlay.*`) are dropped,
//!   so a layer cannot forge redirects or opaque markers.
//!
//! OCI whiteouts are converted to the overlayfs form, as containerd does:
//! `.wh.<name>` becomes a 0/0 character device `<name>`, `.wh..wh..opq`
//! sets `trusted.overlay.opaque=y` on its directory.
//!
//! Ownership, modes (setuid included), PAX `SCHILY.xattr.*` xattrs, mtimes,
//! hardlinks, symlinks, device nodes and fifos are preserved. The diffID
//! (sha256 of the uncompressed stream) is computed on the way and returned:
//! the caller compares it with the image config.

pub(crate) mod budget;
mod entry_path;
pub mod limits;
pub(crate) mod pipe;
pub mod tarstream;
mod writer;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use rustix::fs::Timespec;
use tar::EntryType;

use budget::Budget;
use entry_path::EntryTarget;
pub use entry_path::PathProblem;
pub use limits::{LimitError, UnpackLimits};
use tarstream::{TarEntry, TarError, TarStream};
pub use writer::OPAQUE_XATTR;
use writer::{LayerWriter, Meta, NodeKind};

/// Read-ahead on the compressed blob.
const BLOB_BUFFER: usize = 1 << 20;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer broke one of its [`UnpackLimits`].
    #[error(transparent)]
    Refused(LimitError),
    #[error(transparent)]
    Tar(TarError),
    #[error("media type {media_type} is not a layer type berth can unpack")]
    UnsupportedMediaType { media_type: String },
    #[error("the layer is declared as {media_type}, but its content is {found}")]
    CompressionMismatch {
        media_type: String,
        found: &'static str,
    },
    #[error("refusing entry `{path}`")]
    UnsafePath {
        path: String,
        #[source]
        problem: PathProblem,
    },
    #[error("refusing hardlink `{path}` -> `{target}`")]
    UnsafeLinkTarget {
        path: String,
        target: String,
        #[source]
        problem: PathProblem,
    },
    #[error("entry `{path}` is a {kind}, which cannot be unpacked")]
    UnsupportedEntry { path: String, kind: String },
    #[error("entry `{path}` has a bad header: {detail}")]
    BadHeader { path: String, detail: String },
    #[error("reading the layer archive at `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("replacing directory `{}`", path.display())]
    Replace {
        path: PathBuf,
        #[source]
        source: Box<crate::fsutil::RemoveError>,
    },
    #[error("{op} `{}` inside the layer root", path.display())]
    Confined {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: pathrs::error::Error,
    },
}

impl From<TarError> for UnpackError {
    fn from(err: TarError) -> Self {
        match err {
            TarError::Limit(limit) => Self::Refused(limit),
            other => Self::Tar(other),
        }
    }
}

impl From<LimitError> for UnpackError {
    fn from(limit: LimitError) -> Self {
        Self::Refused(limit)
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression a layer media type (OCI or Docker) declares.
    pub fn from_media_type(media_type: &str) -> Result<Self, UnpackError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Self::Zstd),
            other => Err(UnpackError::UnsupportedMediaType {
                media_type: other.to_owned(),
            }),
        }
    }

    /// What the first bytes of a blob say it is.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(GZIP_MAGIC) {
            Self::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::None => "not compressed",
            Self::Gzip => "gzip-compressed",
            Self::Zstd => "zstd-compressed",
        }
    }
}

/// What unpacking one layer produced.
#[derive(Debug, Clone)]
pub struct UnpackedLayer {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    pub entries: u64,
    /// Bytes of regular file content written.
    pub file_bytes: u64,
}

/// Unpacks the layer `blob` (of `media_type`) into the existing, empty
/// directory `dest`. Synchronous: async callers use a blocking thread.
/// Decompression and the diffID hash run on a second thread, so a layer
/// uses two cores; each written file's disk writes are started early
/// ([`crate::image::writeback`]).
pub fn unpack_layer(
    blob: impl Read + Send,
    media_type: &str,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackedLayer, UnpackError> {
    let declared = Compression::from_media_type(media_type)?;
    let mut blob = BufReader::with_capacity(BLOB_BUFFER, blob);
    let head = blob.fill_buf().map_err(|source| UnpackError::Read {
        path: PathBuf::new(),
        source,
    })?;
    let found = Compression::sniff(head);
    if found != declared {
        return Err(UnpackError::CompressionMismatch {
            media_type: media_type.to_owned(),
            found: found.describe(),
        });
    }
    let tar_stream: Box<dyn Read + Send> = match declared {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(blob).map_err(
            |source| UnpackError::Read {
                path: PathBuf::new(),
                source,
            },
        )?),
    };
    std::thread::scope(|scope| {
        let (tar_bytes, hashing) = pipe::read_ahead_hashed(scope, tar_stream);
        let extracted = extract(tar_bytes, dest, limits);
        // The reader is gone now, so the hashing thread ends either way.
        let hash = hashing.join().map_err(|_| UnpackError::Read {
            path: PathBuf::from("<decompression>"),
            source: io::Error::other("the decompression thread panicked"),
        })?;
        let (entries, file_bytes) = extracted?;
        let hash = hash.ok_or_else(|| UnpackError::Read {
            path: PathBuf::from("<end of archive>"),
            source: io::Error::other("the layer stream ended before it was read whole"),
        })?;
        let diff_id = format!("sha256:{}", hex::encode(hash))
            .parse()
            .expect("a sha256 hex string is a valid digest");
        Ok(UnpackedLayer {
            diff_id,
            entries,
            file_bytes,
        })
    })
}

/// Extracts the tar stream into `dest` and reads it to its end (the diffID
/// covers what follows the end-of-archive marker too). Returns the entries
/// and regular-file bytes written.
fn extract(
    tar_bytes: impl Read,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<(u64, u64), UnpackError> {
    let mut stream = TarStream::new(tar_bytes, *limits);
    let mut writer = LayerWriter::new(dest)?;
    let mut budget = Budget::new(*limits, File::open(dest).ok());
    let mut entries = 0u64;
    let mut file_bytes = 0u64;
    while let Some(entry) = stream.next_entry()? {
        budget.entry()?;
        file_bytes += unpack_entry(&mut writer, &mut stream, &entry, &mut budget)
            .map_err(refused_if_limit)?;
        entries += 1;
    }
    writer.finish()?;
    stream.drain()?;
    Ok((entries, file_bytes))
}

/// A read error that is a limit the stream enforced (inside file data)
/// is a refusal.
fn refused_if_limit(err: UnpackError) -> UnpackError {
    if let UnpackError::Read { source, .. } = &err
        && let Some(limit) = limits::limit_in(source)
    {
        return UnpackError::Refused(limit.clone());
    }
    err
}

/// Writes one entry; returns the regular-file bytes it wrote.
fn unpack_entry<R: Read>(
    writer: &mut LayerWriter,
    stream: &mut TarStream<R>,
    entry: &TarEntry,
    budget: &mut Budget,
) -> Result<u64, UnpackError> {
    let raw_path = &entry.path;
    let shown = entry_path::display(raw_path);
    let kind = entry.kind;
    let target = entry_path::classify(raw_path).map_err(|problem| UnpackError::UnsafePath {
        path: shown.clone(),
        problem,
    })?;
    budget.depth(raw_path, target.depth())?;
    let meta = read_meta(entry, &shown)?;
    let path = match target {
        EntryTarget::Ignored => return Ok(0),
        EntryTarget::Opaque(dir) => {
            writer.opaque(&dir)?;
            return Ok(0);
        }
        EntryTarget::Whiteout(path) => {
            let name = path.name.clone().expect("a whiteout always names a file");
            writer.whiteout(&path, &name, &meta)?;
            return Ok(0);
        }
        EntryTarget::Plain(path) => path,
    };
    let Some(name) = path.name.clone() else {
        if kind.is_dir() {
            writer.root_dir(&meta)?;
            return Ok(0);
        }
        return Err(UnpackError::UnsupportedEntry {
            path: shown,
            kind: "non-directory entry for the layer root".into(),
        });
    };
    match kind {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            budget.file(raw_path, entry.size)?;
            writer.regular(&path, &name, &meta, &mut stream.data())
        }
        EntryType::Directory => writer.directory(&path, &name, &meta).map(|()| 0),
        EntryType::Symlink => {
            let target = link_target(entry, &shown)?;
            writer.symlink(&path, &name, target, &meta).map(|()| 0)
        }
        EntryType::Link => {
            let raw_target = link_target(entry, &shown)?;
            let target = entry_path::sanitize(raw_target).map_err(|problem| {
                UnpackError::UnsafeLinkTarget {
                    path: shown.clone(),
                    target: entry_path::display(raw_target),
                    problem,
                }
            })?;
            writer.hardlink(&path, &name, &target).map(|()| 0)
        }
        EntryType::Char | EntryType::Block => {
            let dev = device_number(&entry.header, &shown)?;
            let node = if kind == EntryType::Char {
                NodeKind::Char(dev)
            } else {
                NodeKind::Block(dev)
            };
            writer.node(&path, &name, node, &meta).map(|()| 0)
        }
        EntryType::Fifo => writer.node(&path, &name, NodeKind::Fifo, &meta).map(|()| 0),
        other => Err(UnpackError::UnsupportedEntry {
            path: shown,
            kind: format!("tar entry of type {:?}", char::from(other.as_byte())),
        }),
    }
}

fn link_target<'e>(entry: &'e TarEntry, shown: &str) -> Result<&'e [u8], UnpackError> {
    entry
        .link
        .as_deref()
        .filter(|target| !target.is_empty())
        .ok_or_else(|| UnpackError::BadHeader {
            path: shown.to_owned(),
            detail: "link entry without a target".into(),
        })
}

fn device_number(header: &tar::Header, shown: &str) -> Result<rustix::fs::Dev, UnpackError> {
    let bad = |err: io::Error| UnpackError::BadHeader {
        path: shown.to_owned(),
        detail: format!("device number: {err}"),
    };
    let major = header.device_major().map_err(bad)?.unwrap_or(0);
    let minor = header.device_minor().map_err(bad)?.unwrap_or(0);
    Ok(rustix::fs::makedev(major, minor))
}

fn read_meta(entry: &TarEntry, shown: &str) -> Result<Meta, UnpackError> {
    let bad = |detail: String| UnpackError::BadHeader {
        path: shown.to_owned(),
        detail,
    };
    let header = &entry.header;
    let id = |value: io::Result<u64>, field: &str| -> Result<u32, UnpackError> {
        let value = value.map_err(|err| bad(format!("{field}: {err}")))?;
        // u32::MAX means "leave unchanged" to chown, so it is no valid id.
        u32::try_from(value)
            .ok()
            .filter(|&id| id != u32::MAX)
            .ok_or_else(|| bad(format!("{field} {value} is out of range")))
    };
    let uid = id(header.uid(), "uid")?;
    let gid = id(header.gid(), "gid")?;
    let mode = header.mode().map_err(|err| bad(format!("mode: {err}")))? & 0o7777;
    let header_mtime = header.mtime().map_err(|err| bad(format!("mtime: {err}")))?;
    let mut mtime = Timespec {
        tv_sec: i64::try_from(header_mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    if let Some(precise) = entry.pax_mtime.as_deref().and_then(parse_pax_time) {
        mtime = precise;
    }
    let xattrs = entry
        .xattrs
        .iter()
        .map(|(name, value)| (OsString::from_vec(name.clone()), value.clone()))
        .collect();
    Ok(Meta {
        uid,
        gid,
        mode,
        mtime,
        xattrs,
    })
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.25`.
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    // A negative time with a fraction counts down from the second before.
    if tv_sec < 0 && tv_nsec > 0 {
        return Some(Timespec {
            tv_sec: tv_sec - 1,
            tv_nsec: 1_000_000_000 - tv_nsec,
        });
    }
    Some(Timespec { tv_sec, tv_nsec })
}

/// Why a chunked copy stopped.
pub(crate) enum CopyError<E> {
    Read(io::Error),
    Write(E),
}

/// Reads `reader` to its end through `buffer` (large buffers keep a
/// decompressor busy), handing each chunk to `sink`. Returns the bytes
/// copied.
pub(crate) fn copy_chunks<E>(
    reader: &mut dyn Read,
    buffer: &mut [u8],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, CopyError<E>> {
    let mut copied = 0u64;
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(CopyError::Read(err)),
        };
        sink(&buffer[..n]).map_err(CopyError::Write)?;
        copied += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_compressions() {
        for (media_type, expected) in [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
        ] {
            assert_eq!(
                Compression::from_media_type(media_type).expect(media_type),
                expected
            );
        }
        assert!(matches!(
            Compression::from_media_type("application/vnd.oci.image.config.v1+json"),
            Err(UnpackError::UnsupportedMediaType { .. })
        ));
    }

    #[test]
    fn magic_bytes_identify_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/passwd\0"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    #[test]
    fn pax_times_keep_their_fraction() {
        assert_eq!(
            parse_pax_time(b"1700000000.25"),
            Some(Timespec {
                tv_sec: 1_700_000_000,
                tv_nsec: 250_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"12"),
            Some(Timespec {
                tv_sec: 12,
                tv_nsec: 0
            })
        );
        assert_eq!(parse_pax_time(b"x.5"), None);
        assert_eq!(parse_pax_time(b"1.5x"), None);
    }

    #[test]
    fn a_gzip_blob_declared_plain_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = unpack_layer(
            &[0x1f, 0x8b, 8, 0, 0, 0][..],
            "application/vnd.oci.image.layer.v1.tar",
            dir.path(),
            &UnpackLimits::default(),
        )
        .expect_err("mismatch");
        assert!(
            matches!(
                err,
                UnpackError::CompressionMismatch {
                    found: "gzip-compressed",
                    ..
                }
            ),
            "{err}"
        );
    }

    const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";

    /// A tar of regular files (path, content), GNU long names as needed.
    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_700_000_000);
            builder
                .append_data(&mut header, path, *data)
                .expect("appending");
        }
        builder.into_inner().expect("finishing")
    }

    fn refused(tar: &[u8], limits: &UnpackLimits) -> LimitError {
        let dir = tempfile::tempdir().expect("tempdir");
        match unpack_layer(tar, PLAIN, dir.path(), limits) {
            Err(UnpackError::Refused(limit)) => limit,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_path_deeper_than_the_limit_is_refused() {
        let deep = format!("{}f", "d/".repeat(9));
        let limits = UnpackLimits {
            max_depth: 9,
            ..UnpackLimits::default()
        };
        assert!(matches!(
            refused(&tar_of(&[("ok", b"x"), (&deep, b"x")]), &limits),
            LimitError::TooDeep {
                depth: 10,
                limit: 9,
                ..
            }
        ));
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_before_its_data_is_read() {
        // The header claims 2 MiB, and no data follows: a reader that
        // started writing would fail on the missing bytes instead.
        let mut header = tar::Header::new_gnu();
        header.set_path("big").expect("path");
        header.set_size(2 << 20);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        let limits = UnpackLimits {
            max_layer_bytes: 1 << 20,
            ..UnpackLimits::default()
        };
        assert!(matches!(
            refused(header.as_bytes(), &limits),
            LimitError::FilesTooLarge { limit, .. } if limit == 1 << 20
        ));
    }

    #[test]
    fn entries_over_the_limit_are_refused() {
        let limits = UnpackLimits {
            max_entries: 2,
            ..UnpackLimits::default()
        };
        let tar = tar_of(&[("a", b""), ("b", b""), ("c", b"")]);
        assert_eq!(
            refused(&tar, &limits),
            LimitError::TooManyEntries { limit: 2 }
        );
    }

    #[test]
    fn trees_deeper_than_the_open_directories_unpack_whole() {
        // Down past the fds the writer keeps open, back up into levels it
        // closed, and down a second deep branch.
        let deep =
            |top: &str, levels: usize, name: &str| format!("{top}/{}{name}", "l/".repeat(levels));
        let files = [
            (deep("a", 45, "one"), &b"1"[..]),
            ("a/top".to_owned(), b"2"),
            (deep("a", 40, "two"), b"3"),
            (deep("b", 50, "three"), b"4"),
            (deep("a", 3, "four"), b"5"),
        ];
        let listed: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (p.as_str(), *d)).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let unpacked = unpack_layer(
            &tar_of(&listed)[..],
            PLAIN,
            dir.path(),
            &UnpackLimits::default(),
        )
        .expect("unpacked");
        assert_eq!(unpacked.entries, 5);
        for (path, data) in &files {
            assert_eq!(
                std::fs::read(dir.path().join(path)).expect(path),
                *data,
                "{path}"
            );
        }
    }
}
