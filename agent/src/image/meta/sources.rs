//! Archives Image objects imported (`image_sources`), so an unchanged file
//! is not imported again.

use rusqlite::OptionalExtension;

use super::{MetaStore, Result, sql};

impl MetaStore {
    /// The archive `owner` last imported: `(archive, fingerprint, name)`.
    pub fn imported_source(&self, owner: &str) -> Result<Option<(String, String, String)>> {
        self.lock()
            .query_row(
                "SELECT archive, fingerprint, name FROM image_sources WHERE owner = ?1",
                [owner],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(sql("reading an imported source"))
    }

    /// Records that `owner` imported `archive` (in the state `fingerprint`
    /// describes) as `name`.
    pub fn record_imported_source(
        &self,
        owner: &str,
        archive: &str,
        fingerprint: &str,
        name: &str,
    ) -> Result<()> {
        self.execute_one(
            "recording an imported source",
            "INSERT INTO image_sources (owner, archive, fingerprint, name) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(owner) DO UPDATE SET archive = excluded.archive,
                 fingerprint = excluded.fingerprint, name = excluded.name",
            [owner, archive, fingerprint, name],
        )?;
        Ok(())
    }

    pub fn forget_imported_source(&self, owner: &str) -> Result<()> {
        self.execute_one(
            "forgetting an imported source",
            "DELETE FROM image_sources WHERE owner = ?1",
            [owner],
        )?;
        Ok(())
    }
}
