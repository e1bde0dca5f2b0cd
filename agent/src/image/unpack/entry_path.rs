//! Turning the path bytes of a tar entry into something safe to create
//! inside a root, and recognising OCI whiteouts. Pure logic, no I/O.
//!
//! Rules (documented in the module doc of `unpack`):
//! - A `..` component anywhere is rejected, even one that would stay inside
//!   (`a/../b`): no legitimate image builder writes one, and refusing is
//!   simpler to reason about than normalising.
//! - Absolute paths are confined: `/etc/passwd` means `etc/passwd` inside
//!   the snapshot, the way Docker and containerd read layer paths.
//! - Empty and `.` components are dropped, so `./usr//bin/` is `usr/bin`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The OCI whiteout prefix: `.wh.<name>` deletes `<name>` from lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Marks a directory opaque: lower layers' contents of it are hidden.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Other `.wh..wh.` names are aufs bookkeeping (e.g. `.wh..wh.plnk`) that
/// Docker skips as well.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// Why an entry path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    #[error("it contains a `..` component, which could climb out of the layer root")]
    ParentComponent,
    #[error("it is a whiteout of `{0}`, which names no file in this directory")]
    BadWhiteout(String),
    #[error("it contains a NUL byte")]
    NulByte,
}

/// A sanitised path: the directory that holds the entry (relative to the
/// root, possibly empty) and the entry's own name (`None` for the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPath {
    pub parent: PathBuf,
    pub name: Option<OsString>,
}

impl EntryPath {
    /// The whole relative path (`.` for the root).
    pub fn full(&self) -> PathBuf {
        match &self.name {
            Some(name) => self.parent.join(name),
            None => PathBuf::from("."),
        }
    }
}

/// What an entry means once whiteouts are recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryTarget {
    /// An ordinary entry at this path.
    Plain(EntryPath),
    /// `.wh.<name>`: hide `<name>` (the path given is that of `<name>`).
    Whiteout(EntryPath),
    /// `.wh..wh..opq`: make this directory opaque.
    Opaque(PathBuf),
    /// Aufs metadata that has no meaning for overlay.
    Ignored,
}

impl EntryTarget {
    /// Directory levels the entry reaches below the root (`a/b` is 2).
    pub fn depth(&self) -> usize {
        match self {
            Self::Plain(path) | Self::Whiteout(path) => path.depth(),
            Self::Opaque(dir) => dir.components().count() + 1,
            Self::Ignored => 0,
        }
    }
}

impl EntryPath {
    /// Components of the whole path (0 for the root).
    pub fn depth(&self) -> usize {
        self.parent.components().count() + usize::from(self.name.is_some())
    }
}

/// Splits raw path bytes into safe components.
pub fn sanitize(raw: &[u8]) -> Result<EntryPath, PathProblem> {
    if raw.contains(&0) {
        return Err(PathProblem::NulByte);
    }
    let mut components: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(PathProblem::ParentComponent),
            _ => components.push(part),
        }
    }
    let name = components
        .pop()
        .map(|n| OsStr::from_bytes(n).to_os_string());
    let parent: PathBuf = components
        .iter()
        .map(|part| OsStr::from_bytes(part))
        .collect();
    Ok(EntryPath { parent, name })
}

/// Sanitises `raw` and recognises OCI whiteout names.
pub fn classify(raw: &[u8]) -> Result<EntryTarget, PathProblem> {
    let path = sanitize(raw)?;
    let Some(name) = &path.name else {
        return Ok(EntryTarget::Plain(path));
    };
    let bytes = name.as_bytes();
    let top = path
        .parent
        .components()
        .next()
        .map_or(bytes, |first| first.as_os_str().as_bytes());
    let top_level_opaque = path.parent.as_os_str().is_empty() && bytes == OPAQUE_MARKER;
    if top.starts_with(AUFS_META_PREFIX) && !top_level_opaque {
        return Ok(EntryTarget::Ignored);
    }
    if bytes == OPAQUE_MARKER {
        return Ok(EntryTarget::Opaque(path.parent));
    }
    if let Some(hidden) = bytes.strip_prefix(WHITEOUT_PREFIX) {
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(PathProblem::BadWhiteout(
                String::from_utf8_lossy(hidden).into_owned(),
            ));
        }
        return Ok(EntryTarget::Whiteout(EntryPath {
            parent: path.parent,
            name: Some(OsStr::from_bytes(hidden).to_os_string()),
        }));
    }
    Ok(EntryTarget::Plain(path))
}

/// For error messages: the entry path as the archive spells it.
pub fn display(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(parent: &str, name: &str) -> EntryTarget {
        EntryTarget::Plain(EntryPath {
            parent: PathBuf::from(parent),
            name: Some(name.into()),
        })
    }

    #[test]
    fn relative_paths_keep_their_components() {
        assert_eq!(
            classify(b"usr/bin/env").expect("ok"),
            plain("usr/bin", "env")
        );
        assert_eq!(classify(b"./usr//bin/").expect("ok"), plain("usr", "bin"));
        assert_eq!(classify(b"top").expect("ok"), plain("", "top"));
    }

    #[test]
    fn absolute_paths_are_confined_to_the_root() {
        assert_eq!(
            classify(b"/etc/passwd").expect("ok"),
            plain("etc", "passwd")
        );
        assert_eq!(classify(b"//abs.txt").expect("ok"), plain("", "abs.txt"));
    }

    #[test]
    fn the_root_itself_has_no_name() {
        for raw in [&b"./"[..], b".", b"/", b""] {
            let path = sanitize(raw).expect("root");
            assert_eq!(path.name, None, "{raw:?}");
            assert_eq!(path.full(), PathBuf::from("."));
        }
    }

    #[test]
    fn parent_components_are_rejected_anywhere() {
        for raw in [
            &b"../../escape"[..],
            b"a/../b",
            b"a/b/..",
            b"/..",
            b"./../x",
        ] {
            assert_eq!(
                classify(raw),
                Err(PathProblem::ParentComponent),
                "{}",
                display(raw)
            );
        }
    }

    #[test]
    fn depth_counts_every_level() {
        assert_eq!(classify(b"a/b/c").expect("ok").depth(), 3);
        assert_eq!(classify(b"./").expect("ok").depth(), 0);
        assert_eq!(classify(b"a/.wh.b").expect("ok").depth(), 2);
        assert_eq!(classify(b"a/b/.wh..wh..opq").expect("ok").depth(), 3);
    }

    #[test]
    fn nul_bytes_are_rejected() {
        assert_eq!(sanitize(b"a\0b"), Err(PathProblem::NulByte));
    }

    #[test]
    fn whiteouts_name_the_hidden_file() {
        assert_eq!(
            classify(b"etc/.wh.remove.conf").expect("ok"),
            EntryTarget::Whiteout(EntryPath {
                parent: PathBuf::from("etc"),
                name: Some("remove.conf".into()),
            })
        );
    }

    #[test]
    fn opaque_markers_name_their_directory() {
        assert_eq!(
            classify(b"var/cache/.wh..wh..opq").expect("ok"),
            EntryTarget::Opaque(PathBuf::from("var/cache"))
        );
        assert_eq!(
            classify(b".wh..wh..opq").expect("ok"),
            EntryTarget::Opaque(PathBuf::new())
        );
    }

    #[test]
    fn aufs_metadata_is_ignored() {
        assert_eq!(
            classify(b".wh..wh.plnk/123.4").expect("ok"),
            EntryTarget::Ignored
        );
        assert_eq!(classify(b".wh..wh.aufs").expect("ok"), EntryTarget::Ignored);
        assert_eq!(
            classify(b".wh..wh.plnk/.wh..wh..opq").expect("ok"),
            EntryTarget::Ignored
        );
    }

    #[test]
    fn whiteouts_of_dot_entries_are_rejected() {
        assert_eq!(
            classify(b"dir/.wh..."),
            Err(PathProblem::BadWhiteout("..".into()))
        );
        assert_eq!(
            classify(b".wh.."),
            Err(PathProblem::BadWhiteout(".".into()))
        );
        assert_eq!(
            classify(b"a/.wh."),
            Err(PathProblem::BadWhiteout(String::new()))
        );
    }
}
