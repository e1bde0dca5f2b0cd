//! The metadata store: one SQLite database under `--root`, shared by the
//! agent and the CLI (WAL mode lets them work at the same time). Each
//! subsystem owns its tables and creates them with `ensure_schema` on open.

use std::path::Path;
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
    let conn = Connection::open(path)
        .with_context(|| format!("opening metadata database {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed transaction survives power loss, as DESIGN.md promises.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    restrict_permissions(path)?;
    Ok(conn)
}

/// The database holds image names, leases and addresses; only root reads it.
fn restrict_permissions(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting permissions on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_in_wal_mode_with_tight_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/berth.db");
        let conn = open(&path).expect("open");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        let perms = std::fs::metadata(&path).expect("stat").permissions();
        assert_eq!(perms.mode() & 0o777, 0o600);
    }
}
