//! Unpacked layer sizes (`snapshots`): the snapshot directories themselves
//! belong to the snapshotter; this records their file bytes.

use oci_spec::image::Digest;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{MetaStore, Result, now, parse_digest, sql, to_i64, to_u64};

impl MetaStore {
    pub fn record_snapshot(&self, chain_id: &Digest, size: u64) -> Result<()> {
        self.record_snapshots(&[(chain_id, size)])
    }

    /// [`MetaStore::record_snapshot`] for many, in one transaction.
    pub fn record_snapshots(&self, snapshots: &[(&Digest, u64)]) -> Result<()> {
        if snapshots.is_empty() {
            return Ok(());
        }
        self.write(|tx| -> Result<()> {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO snapshots (chain_id, size, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(chain_id) DO NOTHING",
                )
                .map_err(sql("recording a snapshot"))?;
            let now = now();
            for (chain_id, size) in snapshots {
                stmt.execute(params![chain_id.to_string(), to_i64(*size), now])
                    .map_err(sql("recording a snapshot"))?;
            }
            Ok(())
        })
    }

    /// Chain IDs of every recorded snapshot.
    pub fn recorded_snapshots(&self) -> Result<Vec<Digest>> {
        snapshot_records(&self.lock())
    }

    /// The recorded file bytes of a snapshot, if it was recorded.
    pub fn snapshot_size(&self, chain_id: &str) -> Result<Option<u64>> {
        self.lock()
            .query_row(
                "SELECT size FROM snapshots WHERE chain_id = ?1",
                [chain_id],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|size| size.map(to_u64))
            .map_err(sql("reading a snapshot"))
    }
}

/// Chain IDs of every recorded snapshot (inside GC's transaction too).
pub fn snapshot_records(conn: &rusqlite::Connection) -> Result<Vec<Digest>> {
    let mut stmt = conn
        .prepare("SELECT chain_id FROM snapshots ORDER BY chain_id")
        .map_err(sql("listing snapshots"))?;
    let chain_ids = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(sql("listing snapshots"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(sql("listing snapshots"))?;
    chain_ids
        .into_iter()
        .map(|chain_id| parse_digest("a snapshot record", chain_id))
        .collect()
}

/// Forgets the size records of snapshots GC removed.
pub fn forget_snapshot(tx: &Transaction<'_>, chain_id: &str) -> Result<()> {
    tx.execute("DELETE FROM snapshots WHERE chain_id = ?1", [chain_id])
        .map_err(sql("forgetting a snapshot"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{digest, manifest, store};

    #[test]
    fn unpacked_size_appears_once_every_layer_is_unpacked() {
        let (_dir, store) = store();
        store
            .record_image("x", &manifest('1', &['a', 'b']), None)
            .expect("record");
        store.record_snapshot(&digest('a'), 5).expect("snap");
        assert_eq!(
            store.image("x").expect("read").expect("some").unpacked_size,
            None
        );
        store.record_snapshot(&digest('b'), 7).expect("snap");
        assert_eq!(
            store.image("x").expect("read").expect("some").unpacked_size,
            Some(12)
        );
    }
}
