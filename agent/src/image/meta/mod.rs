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
//!
//! One file per resource, as containerd's `core/metadata` does it:
//! `images` (names, manifests, layers), `snapshots` (unpacked sizes),
//! `leases`, `pins` (Image objects), `containers` (holds), `sources`
//! (imported archives) and `roots` (what GC keeps). This file owns the
//! connection, the schema and the errors.

mod containers;
mod images;
mod leases;
mod pins;
mod roots;
mod snapshots;
mod sources;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use oci_spec::image::Digest;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

pub use images::{ImageRecord, LayerRecord, ManifestRecord, delete_image, image_names, users_of};
pub use leases::Lease;
pub use roots::{Roots, collect_roots, lease_holders};
pub use snapshots::{forget_snapshot, snapshot_records};

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
    #[error("image metadata database {path}")]
    Open {
        path: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("image metadata: {op}")]
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
    crate::status::time::unix_secs()
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

    /// Runs one statement on its own (SQLite commits it by itself), for
    /// a change that needs no transaction around it.
    fn execute_one(
        &self,
        op: &'static str,
        statement: &str,
        params: impl rusqlite::Params,
    ) -> Result<usize> {
        let changed = self.lock().execute(statement, params).map_err(sql(op))?;
        crate::fsutil::crash_point("metadata committed", &"berth.db");
        Ok(changed)
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
        crate::fsutil::crash_point("metadata committed", &"berth.db");
        Ok(value)
    }
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

#[cfg(test)]
pub(crate) mod test_support {
    use oci_spec::image::Digest;

    use super::{LayerRecord, ManifestRecord, MetaStore};

    pub fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .expect("digest")
    }

    pub fn manifest(m: char, layers: &[char]) -> ManifestRecord {
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

    pub fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(&dir.path().join("berth.db")).expect("open");
        (dir, store)
    }
}
