//! Crash-safe file replacement (the one helper every file berth replaces
//! goes through): readers see the old file or the new one,
//! never a mix, and after a power loss the new one is either whole or absent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::crash_point;

/// Writes `bytes` to `path` with `mode`: temp file in the same directory
/// (`.NAME.tmp.PID`), fsync, rename over, fsync the directory. A writer
/// killed before its rename leaves the temp file: see [`remove_stale_temps`].
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp.{}", std::process::id()));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        // The umask may have narrowed the creation mode; readers rely on it.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        crash_point("file synced", &temp.display());
        fs::rename(&temp, path)?;
        crash_point("file renamed into place", &path.display());
        File::open(dir)?.sync_all()?;
        crash_point("directory synced", &dir.display());
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Removes the temp files that [`write_atomic`] calls of dead processes
/// left in `dir` (killed between the temp's creation and its rename);
/// a live writer's are kept. Returns what it removed.
pub fn remove_stale_temps(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(writer) = name.to_str().and_then(temp_writer) else {
            continue;
        };
        if super::process_alive(writer) || !entry.file_type()?.is_file() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed.push(entry.path()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed)
}

/// The writer's pid in a [`write_atomic`] temp name (`.NAME.tmp.PID`).
pub fn temp_writer(name: &str) -> Option<u32> {
    let (stem, pid) = name.strip_prefix('.')?.rsplit_once(".tmp.")?;
    if stem.is_empty() {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_with_the_requested_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.json");
        write_atomic(&path, b"one", 0o644).expect("first write");
        write_atomic(&path, b"two", 0o644).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["status.json"]);
    }

    #[test]
    fn temp_files_of_writers_killed_before_their_rename_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Above the kernel's pid_max ceiling (4M): a writer that is gone.
        let dead = dir.path().join(".default_web.json.tmp.5000000");
        let alive = dir
            .path()
            .join(format!(".default_web.json.tmp.{}", std::process::id()));
        let others = [
            "default_web.json",
            ".hidden",
            "x.tmp.5000000",
            ".tmp.5000000",
        ];
        for path in [&dead, &alive] {
            fs::write(path, "half").expect("write");
        }
        for name in others {
            fs::write(dir.path().join(name), "keep").expect("write");
        }
        let removed = remove_stale_temps(dir.path()).expect("sweep");
        assert_eq!(removed, std::slice::from_ref(&dead));
        assert!(!dead.exists() && alive.exists());
        for name in others {
            assert!(dir.path().join(name).exists(), "{name} is kept");
        }
        assert!(
            remove_stale_temps(&dir.path().join("missing"))
                .expect("a missing directory")
                .is_empty()
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            write_atomic(&dir.path().join("nope/status.json"), b"x", 0o644).expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
