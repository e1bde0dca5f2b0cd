//! Preparing the state directories: created 0700 (they hold image
//! credentials' effects, container layers, sockets), and the persistent
//! layout version checked so an older berth never misreads a newer layout.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::paths::{LAYOUT_VERSION, Paths};
use crate::status::persist::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("creating state directory {path}")]
    CreateDir {
        path: PathBuf,
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

/// Creates `--root` and `--run-root` if needed and checks or writes the
/// layout version.
pub fn prepare(paths: &Paths) -> Result<(), LayoutError> {
    for dir in [&paths.root, &paths.run_root] {
        create_private_dir(dir)?;
    }
    check_layout_version(paths)
}

fn create_private_dir(dir: &Path) -> Result<(), LayoutError> {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o022 != 0 {
                warn!(path = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "state directory is writable by group or others; berth creates it 0700");
            }
            Ok(())
        }
        Err(_) => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| LayoutError::CreateDir {
                path: dir.to_owned(),
                source,
            }),
    }
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
