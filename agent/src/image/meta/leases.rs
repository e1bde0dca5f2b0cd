//! Leases (`leases`, `lease_resources`): work in progress (a pull, an
//! import) keeps what it writes from GC.

use std::time::Duration;

use oci_spec::image::Digest;
use rusqlite::params;

use super::{MetaError, MetaStore, Result, now, sql};

impl MetaStore {
    /// Starts a lease that keeps the blobs and snapshots added to it from
    /// GC until it is dropped or `ttl` passes without a renewal.
    pub fn lease(&self, purpose: &str, ttl: Duration) -> Result<Lease> {
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.execute_one(
            "creating a lease",
            "INSERT INTO leases (id, purpose, pid, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                id,
                purpose,
                std::process::id(),
                now().saturating_add(ttl_secs)
            ],
        )?;
        Ok(Lease {
            store: self.clone(),
            id,
            ttl_secs,
        })
    }
}

impl MetaStore {
    /// Every lease held: its id and the process that took it.
    pub fn lease_holders(&self) -> Result<Vec<(String, u32)>> {
        super::lease_holders(&self.lock())
    }
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
        self.store.execute_one(
            "releasing a lease",
            "DELETE FROM leases WHERE id = ?1",
            [&self.id],
        )?;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Err(err) = self.delete() {
            tracing::warn!(lease = %self.id, error = %crate::status::chain(&err), "could not release a lease; it expires on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::collect_roots;
    use super::super::test_support::{digest, store};
    use super::*;

    #[test]
    fn the_lease_of_a_pull_killed_half_way_keeps_nothing_once_its_process_is_gone() {
        let (_dir, store) = store();
        let killed = store
            .lease("pull", Duration::from_secs(3600))
            .expect("lease");
        killed.add_blob(&digest('a')).expect("add");
        let live = store
            .lease("pull", Duration::from_secs(3600))
            .expect("lease");
        live.add_blob(&digest('b')).expect("add");
        // Above the kernel's pid_max ceiling (4M): a process that is gone.
        store
            .write(|tx| -> Result<()> {
                tx.execute(
                    "UPDATE leases SET pid = 5000000 WHERE id = ?1",
                    [killed.id()],
                )
                .map_err(sql("test"))?;
                Ok(())
            })
            .expect("kill");
        let roots = store.write(collect_roots).expect("roots");
        assert!(!roots.blobs.contains(&digest('a').to_string()));
        assert!(roots.blobs.contains(&digest('b').to_string()));
        let holders: Vec<String> = store
            .lease_holders()
            .expect("leases")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(holders, [live.id()]);
        live.release().expect("release");
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
