//! Image names, the manifests they point at and those manifests' layers
//! (`images`, `image_manifests`, `image_layers`).

use oci_spec::image::Digest;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{MetaStore, Result, now, parse_digest, sql, strings, to_i64, to_u64};

/// A layer of a stored manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    pub blob: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// What to record for a manifest (from a pull or an import).
#[derive(Debug, Clone)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub config_digest: Digest,
    /// `os/arch[/variant]`.
    pub platform: String,
    pub compressed_size: u64,
    pub created: Option<String>,
    /// Base layer first.
    pub layers: Vec<LayerRecord>,
}

/// A stored image as `berth images` shows it (`-o json`: camelCase keys,
/// as every JSON berth prints).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub name: String,
    #[serde(serialize_with = "as_string")]
    pub manifest_digest: Digest,
    #[serde(serialize_with = "opt_as_string")]
    pub index_digest: Option<Digest>,
    #[serde(serialize_with = "as_string")]
    pub config_digest: Digest,
    pub platform: String,
    /// Manifest + config + layer blobs.
    pub compressed_size: u64,
    /// File bytes of all layers, once every layer is unpacked.
    pub unpacked_size: Option<u64>,
    pub created: Option<String>,
    pub recorded_at: i64,
    pub last_used: i64,
    /// Image objects pinning this name.
    pub pinned_by: Vec<String>,
    /// Containers created from this image's manifest.
    pub used_by: Vec<String>,
}

fn as_string<S: serde::Serializer>(digest: &Digest, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(digest.as_ref())
}

fn opt_as_string<S: serde::Serializer>(
    digest: &Option<Digest>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match digest {
        Some(digest) => s.serialize_str(digest.as_ref()),
        None => s.serialize_none(),
    }
}

impl MetaStore {
    /// Records `manifest` and points `name` at it.
    pub fn record_image(
        &self,
        name: &str,
        manifest: &ManifestRecord,
        index_digest: Option<&Digest>,
    ) -> Result<()> {
        self.write(|tx| -> Result<()> {
            insert_manifest(tx, manifest)?;
            let now = now();
            tx.execute(
                "INSERT INTO images (name, manifest_digest, index_digest, recorded_at, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                     index_digest = excluded.index_digest, recorded_at = excluded.recorded_at,
                     last_used = excluded.last_used",
                params![
                    name,
                    manifest.digest.to_string(),
                    index_digest.map(ToString::to_string),
                    now
                ],
            )
            .map_err(sql("recording an image"))?;
            Ok(())
        })
    }

    /// Points the new name `name` at the stored manifest `digest` (a
    /// rollback target kept by its digest); false when that manifest is not
    /// stored. An existing name is left as it is.
    pub fn name_manifest(&self, name: &str, digest: &str) -> Result<bool> {
        self.write(|tx| -> Result<bool> {
            let now = now();
            tx.execute(
                "INSERT INTO images (name, manifest_digest, index_digest, recorded_at, last_used)
                 SELECT ?1, digest, NULL, ?3, ?3 FROM image_manifests WHERE digest = ?2
                 ON CONFLICT(name) DO NOTHING",
                params![name, digest, now],
            )
            .map_err(sql("naming a kept image"))?;
            let named: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM images WHERE name = ?1",
                    params![name],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql("naming a kept image"))?;
            Ok(named.is_some())
        })
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("{IMAGE_SELECT} WHERE i.name = ?1"),
                [name],
                raw_image,
            )
            .optional()
            .map_err(sql("reading an image"))?;
        row.map(|raw| finish_image(&conn, raw)).transpose()
    }

    /// Every stored image, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!("{IMAGE_SELECT} ORDER BY i.name"))
            .map_err(sql("listing images"))?;
        let raws = stmt
            .query_map([], raw_image)
            .map_err(sql("listing images"))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sql("listing images"))?;
        drop(stmt);
        raws.into_iter()
            .map(|raw| finish_image(&conn, raw))
            .collect()
    }

    /// The layers of a stored manifest, base first.
    pub fn layers(&self, manifest_digest: &Digest) -> Result<Vec<LayerRecord>> {
        let conn = self.lock();
        layers_of(&conn, manifest_digest)
    }

    /// Removes the name (not the content: GC does that). Returns whether it
    /// existed.
    pub fn remove_image(&self, name: &str) -> Result<bool> {
        self.write(|tx| -> Result<bool> {
            let removed = tx
                .execute("DELETE FROM images WHERE name = ?1", [name])
                .map_err(sql("removing an image"))?;
            Ok(removed > 0)
        })
    }

    /// Points `target` at the manifest (and index) `source` names, in one
    /// transaction, replacing what `target` named before. Returns whether
    /// `source` exists.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<bool> {
        self.write(|tx| -> Result<bool> {
            let tagged = tx
                .execute(
                    "INSERT INTO images (name, manifest_digest, index_digest, recorded_at, last_used)
                     SELECT ?2, manifest_digest, index_digest, ?3, ?3 FROM images WHERE name = ?1
                     ON CONFLICT(name) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                         index_digest = excluded.index_digest, recorded_at = excluded.recorded_at,
                         last_used = excluded.last_used",
                    params![source, target, now()],
                )
                .map_err(sql("tagging an image"))?;
            Ok(tagged > 0)
        })
    }

    pub fn touch(&self, name: &str) -> Result<()> {
        self.execute_one(
            "updating last use",
            "UPDATE images SET last_used = ?2 WHERE name = ?1",
            params![name, now()],
        )?;
        Ok(())
    }
}

const IMAGE_SELECT: &str = "SELECT i.name, i.manifest_digest, i.index_digest, m.config_digest,
        m.platform, m.compressed_size, m.created, i.recorded_at, i.last_used
     FROM images i JOIN image_manifests m ON m.digest = i.manifest_digest";

struct RawImage {
    name: String,
    manifest_digest: String,
    index_digest: Option<String>,
    config_digest: String,
    platform: String,
    compressed_size: i64,
    created: Option<String>,
    recorded_at: i64,
    last_used: i64,
}

fn raw_image(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawImage> {
    Ok(RawImage {
        name: row.get(0)?,
        manifest_digest: row.get(1)?,
        index_digest: row.get(2)?,
        config_digest: row.get(3)?,
        platform: row.get(4)?,
        compressed_size: row.get(5)?,
        created: row.get(6)?,
        recorded_at: row.get(7)?,
        last_used: row.get(8)?,
    })
}

fn finish_image(conn: &Connection, raw: RawImage) -> Result<ImageRecord> {
    let manifest_digest = parse_digest(&raw.name, raw.manifest_digest)?;
    let pinned_by = strings(
        conn,
        "SELECT owner FROM image_pins WHERE name = ?1 ORDER BY owner",
        &raw.name,
    )?;
    let used_by = strings(
        conn,
        "SELECT container_id FROM container_images WHERE manifest_digest = ?1 ORDER BY container_id",
        manifest_digest.as_ref(),
    )?;
    let unpacked_size: Option<i64> = conn
        .query_row(
            "SELECT CASE WHEN COUNT(s.chain_id) = COUNT(*) THEN SUM(s.size) END
             FROM image_layers l LEFT JOIN snapshots s ON s.chain_id = l.chain_id
             WHERE l.manifest_digest = ?1",
            [manifest_digest.to_string()],
            |row| row.get(0),
        )
        .map_err(sql("summing snapshot sizes"))?;
    Ok(ImageRecord {
        index_digest: raw
            .index_digest
            .map(|value| parse_digest(&raw.name, value))
            .transpose()?,
        config_digest: parse_digest(&raw.name, raw.config_digest)?,
        manifest_digest,
        platform: raw.platform,
        compressed_size: to_u64(raw.compressed_size),
        unpacked_size: unpacked_size.map(to_u64),
        created: raw.created,
        recorded_at: raw.recorded_at,
        last_used: raw.last_used,
        pinned_by,
        used_by,
        name: raw.name,
    })
}
fn layers_of(conn: &Connection, manifest_digest: &Digest) -> Result<Vec<LayerRecord>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT blob_digest, media_type, size, diff_id, chain_id FROM image_layers
             WHERE manifest_digest = ?1 ORDER BY position",
        )
        .map_err(sql("reading layers"))?;
    let rows = stmt
        .query_map([manifest_digest.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
            ))
        })
        .map_err(sql("reading layers"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(sql("reading layers"))?;
    let what = || format!("a layer of {manifest_digest}");
    rows.into_iter()
        .map(|(blob, media_type, size, diff_id, chain_id)| {
            Ok(LayerRecord {
                blob: parse_digest(what(), blob)?,
                media_type,
                size: to_u64(size),
                diff_id: parse_digest(what(), diff_id)?,
                chain_id: parse_digest(what(), chain_id)?,
            })
        })
        .collect()
}

fn insert_manifest(tx: &Transaction<'_>, manifest: &ManifestRecord) -> Result<()> {
    let digest = manifest.digest.to_string();
    let inserted = tx
        .execute(
            "INSERT INTO image_manifests (digest, config_digest, platform, compressed_size, created)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(digest) DO NOTHING",
            params![
                digest,
                manifest.config_digest.to_string(),
                manifest.platform,
                to_i64(manifest.compressed_size),
                manifest.created
            ],
        )
        .map_err(sql("recording a manifest"))?;
    if inserted == 0 {
        // Content-addressed: an existing row already says the same.
        return Ok(());
    }
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO image_layers (manifest_digest, position, blob_digest, media_type, size, diff_id, chain_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(sql("recording layers"))?;
    for (position, layer) in manifest.layers.iter().enumerate() {
        stmt.execute(params![
            digest,
            i64::try_from(position).unwrap_or(i64::MAX),
            layer.blob.to_string(),
            layer.media_type,
            to_i64(layer.size),
            layer.diff_id.to_string(),
            layer.chain_id.to_string()
        ])
        .map_err(sql("recording layers"))?;
    }
    Ok(())
}

/// Whether a name is pinned or used; rmi and prune ask before removing.
pub fn users_of(tx: &Transaction<'_>, name: &str) -> Result<(Vec<String>, Vec<String>)> {
    let pins = strings(
        tx,
        "SELECT owner FROM image_pins WHERE name = ?1 ORDER BY owner",
        name,
    )?;
    let containers = strings(
        tx,
        "SELECT c.container_id FROM container_images c JOIN images i ON i.manifest_digest = c.manifest_digest
         WHERE i.name = ?1 ORDER BY c.container_id",
        name,
    )?;
    Ok((pins, containers))
}

/// Deletes an image name inside a transaction.
pub fn delete_image(tx: &Transaction<'_>, name: &str) -> Result<bool> {
    let removed = tx
        .execute("DELETE FROM images WHERE name = ?1", [name])
        .map_err(sql("removing an image"))?;
    Ok(removed > 0)
}

/// Every image name, inside a transaction.
pub fn image_names(tx: &Transaction<'_>) -> Result<Vec<String>> {
    let mut stmt = tx
        .prepare("SELECT name FROM images ORDER BY name")
        .map_err(sql("listing images"))?;
    stmt.query_map([], |row| row.get(0))
        .map_err(sql("listing images"))?
        .collect::<std::result::Result<Vec<String>, _>>()
        .map_err(sql("listing images"))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{digest, manifest, store};
    use super::*;

    #[test]
    fn images_survive_reopening_the_database() {
        let (dir, store) = store();
        store
            .record_image(
                "docker.io/library/a:1",
                &manifest('1', &['a', 'b']),
                Some(&digest('9')),
            )
            .expect("record");
        store.pin("Image/a", "docker.io/library/a:1").expect("pin");
        drop(store);
        let store = MetaStore::open(&dir.path().join("berth.db")).expect("reopen");
        let image = store
            .image("docker.io/library/a:1")
            .expect("read")
            .expect("present");
        assert_eq!(image.manifest_digest, digest('1'));
        assert_eq!(image.index_digest, Some(digest('9')));
        assert_eq!(image.pinned_by, ["Image/a"]);
        assert_eq!(image.unpacked_size, None, "no snapshot recorded yet");
        let layers = store.layers(&digest('1')).expect("layers");
        assert_eq!(
            layers.iter().map(|l| l.blob.clone()).collect::<Vec<_>>(),
            [digest('a'), digest('b')]
        );
    }

    #[test]
    fn a_tag_points_a_second_name_at_the_same_manifest_and_moves_an_existing_one() {
        let (_dir, store) = store();
        store
            .record_image("a:1", &manifest('1', &['a']), Some(&digest('9')))
            .expect("record");
        store
            .record_image("b:1", &manifest('2', &['b']), None)
            .expect("record");
        assert!(store.tag_image("a:1", "b:1").expect("tag"));
        assert!(store.tag_image("a:1", "c:1").expect("tag"));
        for name in ["b:1", "c:1"] {
            let image = store.image(name).expect("read").expect("present");
            assert_eq!(image.manifest_digest, digest('1'), "{name}");
            assert_eq!(image.index_digest, Some(digest('9')), "{name}");
        }
        assert!(!store.tag_image("missing:1", "d:1").expect("tag"));
        assert!(store.image("d:1").expect("read").is_none());
    }
}
