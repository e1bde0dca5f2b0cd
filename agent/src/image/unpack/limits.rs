//! What one layer may cost, and the error naming the limit a layer broke.
//!
//! A layer is untrusted input that a registry or an archive hands us; its
//! tar stream decides how much memory, disk, time and depth unpacking it
//! takes. Each limit below bounds one of those, and a layer over any of
//! them is refused as a whole (nothing of it is kept).

use std::fmt;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The limits every layer is unpacked under (and, for the parts that
/// apply, every archive `berth import` reads). The defaults suit real
/// images with a wide margin; `[store]` in the agent config can change the
/// size and entry caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// A PAX extended header, PAX global header, GNU long name or GNU long
    /// link name record: refused when its header announces more, before
    /// anything of it is read. 1 MiB, as Go's archive/tar (containerd)
    /// allows; real records hold a path or a few xattrs (bytes to KiBs).
    pub max_header_bytes: u64,
    /// An entry's path or link target: 4096 bytes, Linux's PATH_MAX (the
    /// kernel would refuse anything longer anyway).
    pub max_path_bytes: usize,
    /// Directory levels of an entry's path. 256: the deepest path on a
    /// full Debian development host is 20 levels, deep `node_modules`
    /// trees reach about 50; PATH_MAX alone would allow 2048 levels.
    pub max_depth: usize,
    /// Entries of one layer. 1,000,000: large real layers (a desktop
    /// distribution, a monorepo's `node_modules`) hold a few hundred
    /// thousand; the store's free inodes are checked as well.
    pub max_entries: u64,
    /// Data regions of one sparse file. 65,536 (1 MiB of map in memory);
    /// sparse files in images are rare and have a handful.
    pub max_sparse_regions: usize,
    /// Bytes of one layer, counted twice: the uncompressed tar stream
    /// (so a decompression bomb stops early, before its end) and the file
    /// content written (a sparse file counts at its full size). 64 GiB:
    /// the largest layers of public images (CUDA, bundled ML models) stay
    /// below 20 GiB. The store's free space is checked as well.
    pub max_layer_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: MIB,
            max_path_bytes: 4096,
            max_depth: 256,
            max_entries: 1_000_000,
            max_sparse_regions: 65_536,
            max_layer_bytes: 64 * GIB,
        }
    }
}

/// Which extension record a header-size limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    PaxHeader,
    PaxGlobalHeader,
    GnuLongName,
    GnuLongLink,
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PaxHeader => "PAX header",
            Self::PaxGlobalHeader => "PAX global header",
            Self::GnuLongName => "GNU long name",
            Self::GnuLongLink => "GNU long link name",
        })
    }
}

/// A limit a layer (or archive) broke. Paths in it are shortened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("a {record} of {size} bytes exceeds the limit of {}", Bytes(*.limit))]
    Record {
        record: Record,
        size: u64,
        limit: u64,
    },
    #[error("the {what} of entry `{path}` is {len} bytes long, more than the limit of {limit}")]
    PathTooLong {
        path: String,
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("entry `{path}` is {depth} levels deep, more than the limit of {limit}")]
    TooDeep {
        path: String,
        depth: usize,
        limit: usize,
    },
    #[error("it has more than the limit of {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("sparse file `{path}` has more than the limit of {limit} regions")]
    SparseRegions { path: String, limit: usize },
    #[error("its uncompressed tar stream exceeds the limit of {}", Bytes(*.limit))]
    StreamTooLarge { limit: u64 },
    #[error("its files exceed the limit of {} (at entry `{path}`)", Bytes(*.limit))]
    FilesTooLarge { path: String, limit: u64 },
    #[error(
        "entry `{path}` needs {}, which would leave less than {} free on the store's file system ({} available)",
        Bytes(*.needed),
        Bytes(*.reserve),
        Bytes(*.available)
    )]
    NoSpace {
        path: String,
        needed: u64,
        reserve: u64,
        available: u64,
    },
    #[error("the store's file system is down to {available} free inodes (it keeps {reserve})")]
    NoInodes { available: u64, reserve: u64 },
}

/// Byte counts as people read them: `1 MiB`, `64 GiB`, `1536 bytes`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if n >= unit && n.is_multiple_of(unit) {
                return write!(f, "{} {name}", n / unit);
            }
        }
        if n >= MIB {
            #[allow(clippy::cast_precision_loss)]
            let mib = n as f64 / MIB as f64;
            return write!(f, "{mib:.1} MiB");
        }
        write!(f, "{n} bytes")
    }
}

/// Longest path an error shows (a hostile one can be 4 KiB).
const SHOWN_PATH: usize = 200;

/// A path from the archive, for a message: lossy UTF-8, long ones
/// shortened in the middle.
pub fn shown_path(raw: &[u8]) -> String {
    crate::fsutil::abbreviate(raw, SHOWN_PATH)
}

/// The limit error carried inside an `io::Error` (data readers can only
/// return those), if that is what `err` is.
pub fn limit_in(err: &std::io::Error) -> Option<&LimitError> {
    err.get_ref()?.downcast_ref::<LimitError>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(Bytes(MIB).to_string(), "1 MiB");
        assert_eq!(Bytes(64 * GIB).to_string(), "64 GiB");
        assert_eq!(Bytes(3 * KIB).to_string(), "3 KiB");
        assert_eq!(Bytes(1536).to_string(), "1536 bytes");
        assert_eq!(Bytes(MIB + 1).to_string(), "1.0 MiB");
        assert_eq!(Bytes(0).to_string(), "0 bytes");
    }

    #[test]
    fn the_pax_bomb_message_names_size_and_limit() {
        let err = LimitError::Record {
            record: Record::PaxHeader,
            size: 268_435_456,
            limit: UnpackLimits::default().max_header_bytes,
        };
        assert_eq!(
            err.to_string(),
            "a PAX header of 268435456 bytes exceeds the limit of 1 MiB"
        );
    }

    #[test]
    fn long_paths_are_shortened() {
        let path = "a/".repeat(3000);
        let shown = shown_path(path.as_bytes());
        assert!(shown.len() < 260, "{shown}");
        assert!(shown.contains("(6000 bytes)"), "{shown}");
        assert_eq!(shown_path(b"etc/passwd"), "etc/passwd");
    }

    #[test]
    fn a_limit_survives_a_trip_through_io_error() {
        let err = std::io::Error::other(LimitError::TooManyEntries { limit: 5 });
        assert_eq!(
            limit_in(&err),
            Some(&LimitError::TooManyEntries { limit: 5 })
        );
        assert_eq!(limit_in(&std::io::Error::other("plain")), None);
    }
}
