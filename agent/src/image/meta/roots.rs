//! GC roots: what garbage collection must keep, read across every
//! resource inside GC's write transaction.

use rusqlite::Transaction;

use super::{Result, now, sql};

/// Everything GC must keep, read in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Roots {
    pub blobs: std::collections::HashSet<String>,
    pub snapshots: std::collections::HashSet<String>,
}

/// Reads GC roots inside the caller's write transaction, after dropping
/// expired leases, leases of processes that are gone (a pull killed
/// half-way keeps nothing for the rest of its lease's time) and manifests
/// nothing points at any more.
pub fn collect_roots(tx: &Transaction<'_>) -> Result<Roots> {
    tx.execute("DELETE FROM leases WHERE expires_at < ?1", [now()])
        .map_err(sql("expiring leases"))?;
    for (id, pid) in lease_holders(tx)? {
        if !crate::fsutil::process_alive(pid) {
            tx.execute("DELETE FROM leases WHERE id = ?1", [&id])
                .map_err(sql("dropping the lease of a process that is gone"))?;
        }
    }
    tx.execute(
        "DELETE FROM image_manifests WHERE digest NOT IN (SELECT manifest_digest FROM images)
             AND digest NOT IN (SELECT manifest_digest FROM container_images)",
        [],
    )
    .map_err(sql("dropping unreferenced manifests"))?;
    let mut roots = Roots::default();
    let queries: [(&str, bool); 6] = [
        ("SELECT digest FROM image_manifests", true),
        ("SELECT config_digest FROM image_manifests", true),
        ("SELECT blob_digest FROM image_layers", true),
        (
            "SELECT index_digest FROM images WHERE index_digest IS NOT NULL",
            true,
        ),
        ("SELECT key FROM lease_resources WHERE kind = 'blob'", true),
        (
            "SELECT key FROM lease_resources WHERE kind = 'snapshot'",
            false,
        ),
    ];
    for (query, is_blob) in queries {
        let mut stmt = tx.prepare(query).map_err(sql("reading GC roots"))?;
        let keys = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(sql("reading GC roots"))?;
        for key in keys {
            let key = key.map_err(sql("reading GC roots"))?;
            if is_blob {
                roots.blobs.insert(key);
            } else {
                roots.snapshots.insert(key);
            }
        }
    }
    let mut stmt = tx
        .prepare("SELECT chain_id FROM image_layers")
        .map_err(sql("reading GC roots"))?;
    for key in stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(sql("reading GC roots"))?
    {
        roots
            .snapshots
            .insert(key.map_err(sql("reading GC roots"))?);
    }
    Ok(roots)
}

/// Every lease's id and the process that took it.
pub fn lease_holders(conn: &rusqlite::Connection) -> Result<Vec<(String, u32)>> {
    let mut stmt = conn
        .prepare("SELECT id, pid FROM leases ORDER BY id")
        .map_err(sql("listing leases"))?;
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(sql("listing leases"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(sql("listing leases"))
}
