//! Image metadata: which names point at which manifests, what those
//! manifests consist of, and who holds what (leases, containers, pins), in
//! the shared SQLite database (`agent/src/db.rs`). The agent and CLI
//! processes use it at the same time; SQLite's locking makes every
//! transaction here atomic across processes.
//!
//! Table layout, version [`SCHEMA_VERSION`] (stored in `store_schema`):
//!
//! ```text
//! store_schema     (version)                       one row
//! image_manifests  (digest PK, config_digest, platform, compressed_size, created)
//!                  one row per stored image manifest; compressed_size covers
//!                  manifest + config + layer blobs; created = config.created
//! image_layers     (manifest_digest FK→image_manifests ON DELETE CASCADE,
//!                   position, blob_digest, media_type, size, diff_id, chain_id)
//!                  position 0 is the base layer
//! images           (name PK, manifest_digest FK→image_manifests, index_digest,
//!                   recorded_at, last_used)   name = normalised reference
//! snapshots        (chain_id PK, size, created_at)   size = file bytes unpacked
//! image_pins       (owner, name)   an Image object (owner = its key) pins a name
//! container_images (container_id PK, name, manifest_digest)
//!                  a container's hold on the manifest it was created from
//!                  (by digest, so a later re-tag does not pull its layers away)
//! leases           (id PK, purpose, pid, expires_at)
//! lease_resources  (lease_id FK→leases ON DELETE CASCADE, kind 'blob'|'snapshot', key)
//! image_sources    (owner PK, archive, fingerprint, name)
//!                  the archive an Image object (owner) last imported as name,
//!                  so it is imported again only when the file changed
//! ```
//!
//! Times are unix seconds. Digests and chain IDs are stored as
//! `sha256:<hex>` text.
//!
//! GC roots are: every manifest an image name or a container points at (its
//! manifest, config and layer blobs, its layers' snapshots, the index blob
//! of the name), and every resource of an unexpired lease.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oci_spec::image::Digest;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

/// Bump when a table changes incompatibly (and migrate in `ensure_schema`).
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS store_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS image_manifests (
    digest TEXT PRIMARY KEY,
    config_digest TEXT NOT NULL,
    platform TEXT NOT NULL,
    compressed_size INTEGER NOT NULL,
    created TEXT
);
CREATE TABLE IF NOT EXISTS image_layers (
    manifest_digest TEXT NOT NULL REFERENCES image_manifests(digest) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    blob_digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    diff_id TEXT NOT NULL,
    chain_id TEXT NOT NULL,
    PRIMARY KEY (manifest_digest, position)
);
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL REFERENCES image_manifests(digest),
    index_digest TEXT,
    recorded_at INTEGER NOT NULL,
    last_used INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    chain_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_pins (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE TABLE IF NOT EXISTS container_images (
    container_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    manifest_digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_resources (
    lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('blob', 'snapshot')),
    key TEXT NOT NULL,
    PRIMARY KEY (lease_id, kind, key)
);
CREATE TABLE IF NOT EXISTS image_sources (
    owner TEXT PRIMARY KEY,
    archive TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    name TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_manifest ON images(manifest_digest);
CREATE INDEX IF NOT EXISTS containers_by_manifest ON container_images(manifest_digest);
";

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("image metadata database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("image metadata: {op}: {source}")]
    Sql {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "image metadata schema version {found} is newer than this berth understands ({SCHEMA_VERSION})"
    )]
    SchemaTooNew { found: i64 },
    #[error("lease {id} expired and was collected; the work it protected must start again")]
    LeaseGone { id: String },
    #[error("image metadata row for {what} holds an invalid digest {value:?}")]
    BadDigest { what: String, value: String },
}

type Result<T> = std::result::Result<T, MetaError>;

fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> MetaError {
    move |source| MetaError::Sql { op, source }
}

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

/// A stored image as `berth images` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

/// Everything GC must keep, read in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Roots {
    pub blobs: std::collections::HashSet<String>,
    pub snapshots: std::collections::HashSet<String>,
}

/// The metadata store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct MetaStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore").finish_non_exhaustive()
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn parse_digest(what: impl Into<String>, value: String) -> Result<Digest> {
    value.parse().map_err(|_| MetaError::BadDigest {
        what: what.into(),
        value,
    })
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl MetaStore {
    /// Opens the database at `path` (normally `Paths::database()`).
    pub fn open(path: &Path) -> Result<Self> {
        let conn = crate::db::open(path).map_err(|source| MetaError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_connection(conn)
    }

    pub fn from_connection(conn: Connection) -> Result<Self> {
        ensure_schema(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the
        // transaction rolls back on drop), so the poison carries no meaning.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in a write transaction (`BEGIN IMMEDIATE`: other processes'
    /// writers wait until it commits).
    pub fn write<T, E: From<MetaError>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a write transaction"))?;
        let value = f(&tx)?;
        tx.commit().map_err(sql("committing"))?;
        Ok(value)
    }

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

    pub fn touch(&self, name: &str) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE images SET last_used = ?2 WHERE name = ?1",
                params![name, now()],
            )
            .map_err(sql("updating last use"))?;
        Ok(())
    }

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

    /// An Image object (`owner`, e.g. `Image/busybox`) pins `name`: rmi and
    /// prune leave it alone.
    pub fn pin(&self, owner: &str, name: &str) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO image_pins (owner, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                [owner, name],
            )
            .map_err(sql("pinning an image"))?;
        Ok(())
    }

    /// Drops every pin `owner` holds (its Image object was deleted or now
    /// names another image).
    pub fn unpin_owner(&self, owner: &str) -> Result<()> {
        self.lock()
            .execute("DELETE FROM image_pins WHERE owner = ?1", [owner])
            .map_err(sql("unpinning"))?;
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
        self.lock()
            .execute(
                "INSERT INTO image_sources (owner, archive, fingerprint, name) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(owner) DO UPDATE SET archive = excluded.archive,
                     fingerprint = excluded.fingerprint, name = excluded.name",
                [owner, archive, fingerprint, name],
            )
            .map_err(sql("recording an imported source"))?;
        Ok(())
    }

    pub fn forget_imported_source(&self, owner: &str) -> Result<()> {
        self.lock()
            .execute("DELETE FROM image_sources WHERE owner = ?1", [owner])
            .map_err(sql("forgetting an imported source"))?;
        Ok(())
    }

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
        self.lock()
            .execute(
                "DELETE FROM container_images WHERE container_id = ?1",
                [container_id],
            )
            .map_err(sql("releasing a container's image"))?;
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

    /// Starts a lease that keeps the blobs and snapshots added to it from
    /// GC until it is dropped or `ttl` passes without a renewal.
    pub fn lease(&self, purpose: &str, ttl: Duration) -> Result<Lease> {
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.lock()
            .execute(
                "INSERT INTO leases (id, purpose, pid, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![
                    id,
                    purpose,
                    std::process::id(),
                    now().saturating_add(ttl_secs)
                ],
            )
            .map_err(sql("creating a lease"))?;
        Ok(Lease {
            store: self.clone(),
            id,
            ttl_secs,
        })
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

fn strings(conn: &Connection, query: &'static str, key: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached(query)
        .map_err(sql("reading references"))?;
    stmt.query_map([key], |row| row.get(0))
        .map_err(sql("reading references"))?
        .collect::<std::result::Result<Vec<String>, _>>()
        .map_err(sql("reading references"))
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

/// Reads GC roots inside the caller's write transaction, after dropping
/// expired leases and manifests nothing points at any more.
pub fn collect_roots(tx: &Transaction<'_>) -> Result<Roots> {
    tx.execute("DELETE FROM leases WHERE expires_at < ?1", [now()])
        .map_err(sql("expiring leases"))?;
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

/// Forgets the size records of snapshots GC removed.
pub fn forget_snapshot(tx: &Transaction<'_>, chain_id: &str) -> Result<()> {
    tx.execute("DELETE FROM snapshots WHERE chain_id = ?1", [chain_id])
        .map_err(sql("forgetting a snapshot"))?;
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

fn ensure_schema(conn: &Connection) -> Result<()> {
    // One transaction: each statement on its own would be a disk sync.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(sql("starting to create tables"))?;
    tx.execute_batch(SCHEMA).map_err(sql("creating tables"))?;
    let version: Option<i64> = tx
        .query_row("SELECT version FROM store_schema", [], |row| row.get(0))
        .optional()
        .map_err(sql("reading the schema version"))?;
    match version {
        None => {
            tx.execute(
                "INSERT INTO store_schema (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )
            .map_err(sql("writing the schema version"))?;
        }
        Some(found) if found > SCHEMA_VERSION => return Err(MetaError::SchemaTooNew { found }),
        Some(_) => {}
    }
    tx.commit().map_err(sql("creating tables"))
}

/// Keeps blobs and snapshots from GC while a pull or import writes them.
/// Add a resource *before* writing it; GC holds the write lock while it
/// sweeps, so an addition either happens before GC reads the roots (and is
/// kept) or after GC finished (and the writer then sees what is missing).
pub struct Lease {
    store: MetaStore,
    id: String,
    ttl_secs: i64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).finish()
    }
}

impl Lease {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn add_blob(&self, digest: &Digest) -> Result<()> {
        self.add(std::iter::once(("blob", digest)))
    }

    pub fn add_snapshot(&self, chain_id: &Digest) -> Result<()> {
        self.add(std::iter::once(("snapshot", chain_id)))
    }

    /// Adds blobs and snapshots in one transaction.
    pub fn add_all(&self, blobs: &[&Digest], snapshots: &[&Digest]) -> Result<()> {
        let resources = blobs
            .iter()
            .map(|d| ("blob", *d))
            .chain(snapshots.iter().map(|d| ("snapshot", *d)));
        self.add(resources)
    }

    /// Adds resources and extends the lease (a long pull keeps it alive by
    /// making progress). Fails if the lease has expired and was collected:
    /// then a resource may already be gone and the caller must restart.
    fn add<'d>(&self, resources: impl Iterator<Item = (&'static str, &'d Digest)>) -> Result<()> {
        self.store.write(|tx| -> Result<()> {
            let renewed = tx
                .execute(
                    "UPDATE leases SET expires_at = ?2 WHERE id = ?1",
                    params![self.id, now().saturating_add(self.ttl_secs)],
                )
                .map_err(sql("renewing a lease"))?;
            if renewed == 0 {
                return Err(MetaError::LeaseGone {
                    id: self.id.clone(),
                });
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO lease_resources (lease_id, kind, key) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )
                .map_err(sql("adding to a lease"))?;
            for (kind, digest) in resources {
                stmt.execute(params![self.id, kind, digest.to_string()])
                    .map_err(sql("adding to a lease"))?;
            }
            Ok(())
        })
    }

    /// Ends the lease now (dropping does the same, logging errors).
    pub fn release(self) -> Result<()> {
        let result = self.delete();
        std::mem::forget(self);
        result
    }

    fn delete(&self) -> Result<()> {
        self.store
            .lock()
            .execute("DELETE FROM leases WHERE id = ?1", [&self.id])
            .map_err(sql("releasing a lease"))?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(err) = self.delete() {
            tracing::warn!(lease = %self.id, %err, "could not release a lease; it expires on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .expect("digest")
    }

    fn manifest(m: char, layers: &[char]) -> ManifestRecord {
        ManifestRecord {
            digest: digest(m),
            config_digest: digest('c'),
            platform: "linux/amd64".into(),
            compressed_size: 100,
            created: Some("2023-11-14T22:13:20Z".into()),
            layers: layers
                .iter()
                .map(|&l| LayerRecord {
                    blob: digest(l),
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    size: 10,
                    diff_id: digest(l),
                    chain_id: digest(l),
                })
                .collect(),
        }
    }

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(&dir.path().join("berth.db")).expect("open");
        (dir, store)
    }

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

    #[test]
    fn expired_leases_are_no_roots() {
        let (_dir, store) = store();
        let live = store
            .lease("test", Duration::from_secs(3600))
            .expect("lease");
        live.add_blob(&digest('a')).expect("add");
        let dead = store.lease("test", Duration::ZERO).expect("lease");
        dead.add_snapshot(&digest('b')).expect("add");
        store
            .write(|tx| -> Result<()> {
                tx.execute(
                    "UPDATE leases SET expires_at = 0 WHERE id = ?1",
                    [dead.id()],
                )
                .map_err(sql("test"))?;
                Ok(())
            })
            .expect("expire");
        let roots = store.write(collect_roots).expect("roots");
        assert!(roots.blobs.contains(&digest('a').to_string()));
        assert!(!roots.snapshots.contains(&digest('b').to_string()));
        assert!(
            dead.add_blob(&digest('c')).is_err(),
            "a collected lease cannot grow"
        );
        live.release().expect("release");
        let roots = store.write(collect_roots).expect("roots");
        assert!(roots.blobs.is_empty());
    }
}
