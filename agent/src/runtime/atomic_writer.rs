//! The kubelet's `AtomicWriter` for configMap, secret, downwardAPI and
//! projected volumes: each version of the files goes into a new
//! timestamped directory (`..2026_12_07_23_55_13.3141592`), a `..data`
//! symlink is renamed over to point at it, and the names a container sees
//! are symlinks through `..data` (`app.conf -> ..data/app.conf`). A reader
//! therefore sees the old set of files or the new one, never a mix, a
//! partial file or a missing one; tools that watch `..data` (as for a
//! Kubernetes ConfigMap) work unchanged.

use std::collections::BTreeSet;
use std::fs::Permissions;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One file of a volume berth writes.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeFile {
    /// Relative to the volume (subdirectories allowed, no `..`).
    pub path: String,
    pub data: Vec<u8>,
    /// Permission bits (already masked to 0o777).
    pub mode: u32,
}

/// Never prints the content (it may be secret).
impl std::fmt::Debug for VolumeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFile")
            .field("path", &self.path)
            .field("bytes", &self.data.len())
            .field("mode", &format_args!("{:#o}", self.mode))
            .finish()
    }
}

/// What failed on which file of which volume.
#[derive(Debug, thiserror::Error)]
#[error("volume {volume:?}: {action} {}", path.display())]
pub struct IoError {
    volume: String,
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// The symlink to the current version.
pub const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Writes `files` as the volume's new version in `dir` (which exists),
/// each file with its mode and, with `gid`, that group (directories then
/// setgid, 0o2755). Old versions and names no longer written are removed
/// after the swap. File names are checked by the caller.
pub fn write(
    volume: &str,
    dir: &Path,
    files: &[VolumeFile],
    gid: Option<u32>,
) -> Result<(), IoError> {
    let version = new_version_dir(volume, dir)?;
    let written = write_version(volume, &version, files, gid);
    if let Err(err) = written {
        let _ = crate::fsutil::remove_dir_all_if_exists(&version);
        return Err(err);
    }
    let version_name = version
        .file_name()
        .expect("a version directory has a name")
        .to_owned();
    let tmp = dir.join(DATA_TMP);
    remove_if_exists(volume, &tmp)?;
    std::os::unix::fs::symlink(&version_name, &tmp)
        .map_err(|source| io_err(volume, "linking", &tmp, source))?;
    let data = dir.join(DATA_DIR);
    // rename(2) replaces the old symlink atomically.
    std::fs::rename(&tmp, &data).map_err(|source| io_err(volume, "swapping in", &data, source))?;

    let visible: BTreeSet<String> = files
        .iter()
        .map(|f| top_level(&f.path).to_string())
        .collect();
    for name in &visible {
        link_visible(volume, dir, name)?;
    }
    // Older versions, and what a berth that wrote files in place left.
    let entries =
        std::fs::read_dir(dir).map_err(|source| io_err(volume, "listing", dir, source))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let text = name.to_string_lossy();
        let stale = if text.starts_with("..") {
            text != DATA_DIR && name != version_name
        } else {
            !visible.contains(text.as_ref())
        };
        if stale {
            remove_if_exists(volume, &entry.path())?;
        }
    }
    Ok(())
}

fn new_version_dir(volume: &str, dir: &Path) -> Result<PathBuf, IoError> {
    // `..2026-12-07T23:55:13.123Z` → `..2026_12_07_23_55_13.`, as kubelet names them.
    let stamp: String = crate::status::time::now()
        .chars()
        .take(19)
        .map(|c| if c.is_ascii_digit() { c } else { '_' })
        .collect();
    loop {
        let path = dir.join(format!("..{stamp}.{}", fastrand::u32(..)));
        match std::fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => return Ok(path),
            Err(err) if err.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(io_err(volume, "creating", &path, source)),
        }
    }
}

fn write_version(
    volume: &str,
    version: &Path,
    files: &[VolumeFile],
    gid: Option<u32>,
) -> Result<(), IoError> {
    let mut dirs = BTreeSet::from([version.to_path_buf()]);
    for file in files {
        let path = version.join(&file.path);
        if let Some(parent) = path.parent() {
            crate::fsutil::create_dir_all_with_mode(parent, 0o755)
                .map_err(|source| io_err(volume, "creating", parent, source))?;
            dirs.extend(
                parent
                    .ancestors()
                    .take_while(|d| d.starts_with(version))
                    .map(Path::to_path_buf),
            );
        }
        let mut created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&path)
            .map_err(|source| io_err(volume, "creating", &path, source))?;
        std::io::Write::write_all(&mut created, &file.data)
            .map_err(|source| io_err(volume, "writing", &path, source))?;
        // The umask may have narrowed the mode given at creation.
        created
            .set_permissions(Permissions::from_mode(file.mode))
            .map_err(|source| io_err(volume, "setting permissions of", &path, source))?;
        if let Some(gid) = gid {
            std::os::unix::fs::fchown(&created, None, Some(gid))
                .map_err(|source| io_err(volume, "changing the group of", &path, source))?;
        }
    }
    if let Some(gid) = gid {
        for dir in &dirs {
            std::os::unix::fs::chown(dir, None, Some(gid))
                .map_err(|source| io_err(volume, "changing the group of", dir, source))?;
            std::fs::set_permissions(dir, Permissions::from_mode(0o2755))
                .map_err(|source| io_err(volume, "setting permissions of", dir, source))?;
        }
    }
    Ok(())
}

/// `name -> ..data/name`, replacing whatever else is there.
fn link_visible(volume: &str, dir: &Path, name: &str) -> Result<(), IoError> {
    let path = dir.join(name);
    let target = Path::new(DATA_DIR).join(name);
    match std::fs::read_link(&path) {
        Ok(existing) if existing == target => return Ok(()),
        Ok(_) => remove_if_exists(volume, &path)?,
        // A file or directory an older berth wrote in place.
        Err(err) if err.kind() == ErrorKind::InvalidInput => remove_if_exists(volume, &path)?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&target, &path)
        .map_err(|source| io_err(volume, "linking", &path, source))
}

/// The first component of a relative path (`sub/b` → `sub`).
fn top_level(path: &str) -> &str {
    path.trim_start_matches("./")
        .split('/')
        .find(|c| !c.is_empty() && *c != ".")
        .unwrap_or(path)
}

fn remove_if_exists(volume: &str, path: &Path) -> Result<(), IoError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_err(volume, "inspecting", path, source)),
    };
    let removed = if meta.is_dir() {
        crate::fsutil::remove_dir_all_if_exists(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(|source| io_err(volume, "removing", path, source))
}

pub(super) fn io_err(
    volume: &str,
    action: &'static str,
    path: &Path,
    source: std::io::Error,
) -> IoError {
    IoError {
        volume: volume.to_string(),
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            data: data.to_vec(),
            mode: 0o644,
        }
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn each_version_is_swapped_in_through_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            "v",
            dir.path(),
            &[file("a", b"1"), file("sub/b", b"2")],
            None,
        )
        .expect("v1");
        let first = std::fs::read_link(dir.path().join(DATA_DIR)).expect("..data");
        assert!(first.to_string_lossy().starts_with(".."), "{first:?}");
        assert_eq!(
            std::fs::read_link(dir.path().join("a")).expect("a is a link"),
            Path::new("..data/a")
        );
        assert_eq!(std::fs::read(dir.path().join("sub/b")).expect("read"), b"2");

        write("v", dir.path(), &[file("a", b"new"), file("c", b"3")], None).expect("v2");
        let second = std::fs::read_link(dir.path().join(DATA_DIR)).expect("..data");
        assert_ne!(first, second);
        assert_eq!(std::fs::read(dir.path().join("a")).expect("read"), b"new");
        let listed = names(dir.path());
        let expected: BTreeSet<String> = [
            "..data".to_string(),
            second.to_string_lossy().into_owned(),
            "a".into(),
            "c".into(),
        ]
        .into();
        assert_eq!(listed, expected, "the old version and `sub` are gone");
    }

    #[test]
    fn files_written_in_place_by_an_older_berth_become_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a"), "old").expect("write");
        std::fs::create_dir(dir.path().join("gone")).expect("mkdir");
        write("v", dir.path(), &[file("a", b"new")], None).expect("written");
        assert!(
            std::fs::symlink_metadata(dir.path().join("a"))
                .expect("a")
                .is_symlink()
        );
        assert_eq!(std::fs::read(dir.path().join("a")).expect("read"), b"new");
        assert!(!dir.path().join("gone").exists());
    }
}
