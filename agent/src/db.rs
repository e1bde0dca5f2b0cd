//! The metadata store: one SQLite database under `--root`, shared by the
//! agent and the CLI (WAL mode lets them work at the same time). Each
//! subsystem owns its tables and creates them with `ensure_schema` on open.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

/// Opens (creating if needed) the database at `path` with the settings every
/// user of it relies on.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Created 0600 before SQLite sees it: SQLite gives the -wal and -shm
    // files it makes the database's mode, so none is ever readable by others.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating metadata database {}", path.display()))?;
    let conn = Connection::open(path)
        .with_context(|| format!("opening metadata database {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed transaction survives power loss, as DESIGN.md promises.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    restrict_permissions(path).map_err(|(file, err)| {
        anyhow::Error::new(err).context(format!("setting permissions on {}", file.display()))
    })?;
    Ok(conn)
}

/// The database and the files SQLite keeps next to it in WAL mode.
pub fn files(path: &Path) -> [PathBuf; 3] {
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with_suffix("-wal"), with_suffix("-shm")]
}

/// The database holds image names, leases and addresses: its files that
/// exist are made root-only (0600) if they are not. Returns the file that
/// could not be changed.
pub fn restrict_permissions(path: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    for file in files(path) {
        let mode = match std::fs::metadata(&file) {
            Ok(meta) => meta.permissions().mode(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err((file, err)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                .map_err(|err| (file.clone(), err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_in_wal_mode_with_tight_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/berth.db");
        let conn = open(&path).expect("open");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        // Written to, so SQLite has made its -wal and -shm files.
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .expect("write");
        for file in files(&path) {
            let perms = std::fs::metadata(&file).expect("stat").permissions();
            assert_eq!(perms.mode() & 0o777, 0o600, "{}", file.display());
        }
    }

    #[test]
    fn files_left_readable_by_others_are_made_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        for file in files(&path) {
            std::fs::write(&file, "").expect("write");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        restrict_permissions(&path).expect("restricted");
        for file in files(&path) {
            let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
}
