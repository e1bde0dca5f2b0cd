//! Image objects' pins (`image_pins`): a pinned name survives rmi and prune.

use super::{MetaStore, Result, sql, strings};

impl MetaStore {
    /// An Image object (`owner`, e.g. `Image/busybox`) pins `name`: rmi and
    /// prune leave it alone.
    pub fn pin(&self, owner: &str, name: &str) -> Result<()> {
        self.execute_one(
            "pinning an image",
            "INSERT INTO image_pins (owner, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            [owner, name],
        )?;
        Ok(())
    }

    /// Whether any owner pins `name`.
    pub fn is_pinned(&self, name: &str) -> Result<bool> {
        Ok(!strings(
            &self.lock(),
            "SELECT owner FROM image_pins WHERE name = ?1",
            name,
        )?
        .is_empty())
    }

    /// Drops every pin `owner` holds (its Image object was deleted or now
    /// names another image).
    pub fn unpin_owner(&self, owner: &str) -> Result<()> {
        self.execute_one(
            "unpinning",
            "DELETE FROM image_pins WHERE owner = ?1",
            [owner],
        )?;
        Ok(())
    }

    /// Makes `names` exactly what `owner` pins, in one transaction (so no
    /// moment exists where neither the old nor the new name is pinned).
    pub fn set_pins(&self, owner: &str, names: &[&str]) -> Result<()> {
        self.write(|tx| -> Result<()> {
            for name in names {
                tx.execute(
                    "INSERT INTO image_pins (owner, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    [owner, name],
                )
                .map_err(sql("pinning an image"))?;
            }
            let pinned = strings(tx, "SELECT name FROM image_pins WHERE owner = ?1", owner)?;
            for name in pinned.iter().filter(|n| !names.contains(&n.as_str())) {
                tx.execute(
                    "DELETE FROM image_pins WHERE owner = ?1 AND name = ?2",
                    [owner, name.as_str()],
                )
                .map_err(sql("unpinning"))?;
            }
            Ok(())
        })
    }

    /// The names `owner` pins.
    pub fn pins_of(&self, owner: &str) -> Result<Vec<String>> {
        strings(
            &self.lock(),
            "SELECT name FROM image_pins WHERE owner = ?1 ORDER BY name",
            owner,
        )
    }
}
