//! Preparing the state directories: `--root` and `--run-root` are 0700
//! (they hold Secret volumes, container layers, sockets) and the database
//! files 0600 — created so, or fixed at start, or the agent refuses to
//! start — and the persistent layout version checked so an older berth
//! never misreads a newer layout.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::fsutil::{remove_stale_temps, write_atomic};
use crate::paths::{LAYOUT_VERSION, Paths};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("creating state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is mode {mode:04o}, open to users other than root, and could not be made {wanted:04o}; fix its owner or mode"
    )]
    NotPrivate {
        path: PathBuf,
        mode: u32,
        wanted: u32,
        #[source]
        source: io::Error,
    },
    #[error("reading layout version {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing layout version {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "layout version file {path} holds {content:?}, not a version number; was --root pointed at something else?"
    )]
    Garbled { path: PathBuf, content: String },
    #[error(
        "{root} has state layout version {found}, but this berth understands up to {LAYOUT_VERSION}: it was written by a newer berth; run that version (or point --root elsewhere)"
    )]
    Newer { root: PathBuf, found: u32 },
}

/// Creates `--root` and `--run-root` if needed, makes them and the
/// database files private, and checks or writes the layout version.
pub fn prepare(paths: &Paths) -> Result<(), LayoutError> {
    for dir in [&paths.root, &paths.run_root] {
        create_private_dir(dir)?;
    }
    crate::db::restrict_permissions(&paths.database()).map_err(|(path, source)| {
        LayoutError::NotPrivate {
            mode: mode_of(&path),
            path,
            wanted: 0o600,
            source,
        }
    })?;
    remove_interrupted_writes(paths);
    check_layout_version(paths)
}

/// A file write a crash interrupted leaves its temp file next to the file
/// (see [`remove_stale_temps`]); those of the state files are removed
/// here. Not fatal: they only take space.
fn remove_interrupted_writes(paths: &Paths) {
    for dir in [&paths.root, &paths.pod_states(), &paths.run_root] {
        match remove_stale_temps(dir) {
            Ok(removed) => {
                for path in removed {
                    info!(path = %path.display(), "removed the temp file of a write a crash interrupted");
                }
            }
            Err(err) => {
                warn!(dir = %dir.display(), %err, "could not look for temp files of interrupted writes")
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), LayoutError> {
    let mode = match std::fs::metadata(dir) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => {
            return DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| LayoutError::CreateDir {
                    path: dir.to_owned(),
                    source,
                });
        }
    };
    if mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        LayoutError::NotPrivate {
            path: dir.to_owned(),
            mode,
            wanted: 0o700,
            source,
        }
    })?;
    info!(path = %dir.display(), was = format!("{mode:04o}"), "state directory made private (0700)");
    Ok(())
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0, |meta| meta.permissions().mode() & 0o7777)
}

fn check_layout_version(paths: &Paths) -> Result<(), LayoutError> {
    let path = paths.layout_version_file();
    match std::fs::read_to_string(&path) {
        Ok(content) => {
            let found: u32 = content.trim().parse().map_err(|_| LayoutError::Garbled {
                path: path.clone(),
                content: content.chars().take(40).collect(),
            })?;
            if found > LAYOUT_VERSION {
                return Err(LayoutError::Newer {
                    root: paths.root.clone(),
                    found,
                });
            }
            // Older layouts: none exist yet; migrations go here when one does.
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            write_atomic(&path, format!("{LAYOUT_VERSION}\n").as_bytes(), 0o644)
                .map_err(|source| LayoutError::Write { path, source })
        }
        Err(source) => Err(LayoutError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths::new(&dir.join("root"), &dir.join("run"))
    }

    #[test]
    fn creates_private_dirs_and_writes_the_version_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = paths(dir.path());
        prepare(&paths).expect("prepare");
        for d in [&paths.root, &paths.run_root] {
            let mode = std::fs::metadata(d).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", d.display());
        }
        let version = std::fs::read_to_string(paths.layout_version_file()).expect("version");
        assert_eq!(version, format!("{LAYOUT_VERSION}\n"));
        prepare(&paths).expect("prepare again");
    }

    #[test]
    fn open_state_dirs_and_database_files_are_made_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = paths(dir.path());
        for d in [&paths.root, &paths.run_root] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        for file in crate::db::files(&paths.database()) {
            std::fs::write(&file, "").expect("write");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        prepare(&paths).expect("prepare");
        for d in [&paths.root, &paths.run_root] {
            assert_eq!(mode_of(d), 0o700, "{}", d.display());
        }
        for file in crate::db::files(&paths.database()) {
            assert_eq!(mode_of(&file), 0o600, "{}", file.display());
        }
    }

    #[test]
    fn refuses_a_state_dir_it_cannot_make_private() {
        // /proc/sys is 0555 and no one may chmod it.
        let err = create_private_dir(Path::new("/proc/sys")).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "/proc/sys is mode 0555, open to users other than root, and could not be made 0700; fix its owner or mode"
        );
    }

    #[test]
    fn refuses_a_newer_layout_and_garbage_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = paths(dir.path());
        prepare(&paths).expect("prepare");
        std::fs::write(
            paths.layout_version_file(),
            format!("{}\n", LAYOUT_VERSION + 1),
        )
        .expect("write");
        let err = prepare(&paths).expect_err("newer layout");
        assert!(
            err.to_string().contains("written by a newer berth"),
            "{err}"
        );
        std::fs::write(paths.layout_version_file(), "banana").expect("write");
        let err = prepare(&paths).expect_err("garbage");
        assert!(err.to_string().contains("layout-version"), "{err}");
    }
}
