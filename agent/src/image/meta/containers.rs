//! Containers' holds on the manifest they were created from
//! (`container_images`).

use rusqlite::{OptionalExtension, params};

use super::{MetaStore, Result, now, sql};

impl MetaStore {
    /// Records that `container_id` runs on `name`'s current manifest.
    /// Returns `false` when no image has that name.
    pub fn hold_for_container(&self, container_id: &str, name: &str) -> Result<bool> {
        self.write(|tx| -> Result<bool> {
            let manifest: Option<String> = tx
                .query_row(
                    "SELECT manifest_digest FROM images WHERE name = ?1",
                    [name],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql("reading an image"))?;
            let Some(manifest) = manifest else {
                return Ok(false);
            };
            tx.execute(
                "INSERT INTO container_images (container_id, name, manifest_digest) VALUES (?1, ?2, ?3)
                 ON CONFLICT(container_id) DO UPDATE SET name = excluded.name,
                     manifest_digest = excluded.manifest_digest",
                params![container_id, name, manifest],
            )
            .map_err(sql("recording a container's image"))?;
            tx.execute(
                "UPDATE images SET last_used = ?2 WHERE name = ?1",
                params![name, now()],
            )
            .map_err(sql("updating last use"))?;
            Ok(true)
        })
    }

    pub fn release_container(&self, container_id: &str) -> Result<()> {
        self.execute_one(
            "releasing a container's image",
            "DELETE FROM container_images WHERE container_id = ?1",
            [container_id],
        )?;
        Ok(())
    }

    /// Every container that holds an image (to release the holds of
    /// containers that no longer exist, after a crash).
    pub fn held_containers(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT container_id FROM container_images ORDER BY container_id")
            .map_err(sql("listing container image holds"))?;
        let ids = stmt
            .query_map([], |row| row.get(0))
            .map_err(sql("listing container image holds"))?
            .collect::<std::result::Result<Vec<String>, _>>()
            .map_err(sql("listing container image holds"))?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::super::collect_roots;
    use super::super::test_support::{digest, manifest, store};

    #[test]
    fn containers_hold_the_manifest_they_started_from() {
        let (_dir, store) = store();
        store
            .record_image("x", &manifest('1', &['a']), None)
            .expect("record");
        assert!(store.hold_for_container("c1", "x").expect("hold"));
        assert!(!store.hold_for_container("c2", "missing").expect("hold"));
        // Re-tag x to another manifest: the container still holds the old one.
        store
            .record_image("x", &manifest('2', &['b']), None)
            .expect("retag");
        let roots = store.write(collect_roots).expect("roots");
        assert!(roots.blobs.contains(&digest('1').to_string()));
        assert!(roots.snapshots.contains(&digest('a').to_string()));
        store.release_container("c1").expect("release");
        let roots = store.write(collect_roots).expect("roots");
        assert!(!roots.blobs.contains(&digest('1').to_string()));
        assert!(roots.snapshots.contains(&digest('b').to_string()));
    }
}
