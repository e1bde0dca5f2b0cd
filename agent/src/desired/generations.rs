//! Object generations, persisted in the metadata DB so that an agent
//! restart does not look like an edit: a generation moves only when the
//! object's content hash changes.
//!
//! Records outlive deletions: an object deleted and re-added with different
//! content gets a higher generation than before, never a reused one.

use std::collections::HashMap;

use manifests::{Kind, ObjectKey};
use rusqlite::{Connection, params};

#[derive(Debug, thiserror::Error)]
pub enum GenerationsError {
    #[error("metadata database: {what}")]
    Db {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

fn db_err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> GenerationsError {
    move |source| GenerationsError::Db { what, source }
}

#[derive(Debug)]
pub struct Generations {
    conn: Connection,
    /// key → (content hash, generation)
    known: HashMap<ObjectKey, (String, u64)>,
    /// Keys changed since the last commit.
    dirty: Vec<ObjectKey>,
}

impl Generations {
    /// Loads the table, creating it on first use.
    pub fn open(conn: Connection) -> Result<Self, GenerationsError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS desired_generations (
                kind TEXT NOT NULL,
                namespace TEXT NOT NULL,
                name TEXT NOT NULL,
                content_hash TEXT NOT NULL,
                generation INTEGER NOT NULL,
                PRIMARY KEY (kind, namespace, name)
            )",
        )
        .map_err(db_err("creating table desired_generations"))?;
        let mut known = HashMap::new();
        {
            let mut stmt = conn
                .prepare("SELECT kind, namespace, name, content_hash, generation FROM desired_generations")
                .map_err(db_err("reading desired_generations"))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })
                .map_err(db_err("reading desired_generations"))?;
            for row in rows {
                let (kind, namespace, name, hash, generation) =
                    row.map_err(db_err("reading desired_generations"))?;
                // Rows of a kind this berth does not know are left alone.
                let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind) else {
                    continue;
                };
                let generation = u64::try_from(generation).unwrap_or(0);
                known.insert(ObjectKey::new(kind, namespace, name), (hash, generation));
            }
        }
        Ok(Self {
            conn,
            known,
            dirty: Vec::new(),
        })
    }

    /// A private in-memory store, for tests and `berth diff` (nothing it
    /// reads is applied).
    pub fn in_memory() -> Self {
        Self::open(Connection::open_in_memory().expect("in-memory sqlite")).expect("schema")
    }

    /// The generation of `key` with content `hash`, bumping and recording
    /// it when the content differs from the last one seen. Several updates
    /// are committed together by [`Self::commit`].
    pub fn generation(&mut self, key: &ObjectKey, hash: &str) -> u64 {
        match self.known.get(key) {
            Some((known_hash, generation)) if known_hash == hash => *generation,
            Some((_, generation)) => {
                let next = generation + 1;
                self.known.insert(key.clone(), (hash.to_owned(), next));
                self.dirty.push(key.clone());
                next
            }
            None => {
                self.known.insert(key.clone(), (hash.to_owned(), 1));
                self.dirty.push(key.clone());
                1
            }
        }
    }

    /// Writes the changed generations in one transaction. Losing them to a
    /// crash is harmless: the next start computes the same numbers again
    /// from the older records.
    pub fn commit(&mut self) -> Result<(), GenerationsError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction()
            .map_err(db_err("starting a transaction"))?;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT OR REPLACE INTO desired_generations
                     (kind, namespace, name, content_hash, generation) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err("writing desired_generations"))?;
            for key in &self.dirty {
                if let Some((hash, generation)) = self.known.get(key) {
                    let generation = i64::try_from(*generation).unwrap_or(i64::MAX);
                    stmt.execute(params![
                        key.kind.as_str(),
                        key.namespace,
                        key.name,
                        hash,
                        generation
                    ])
                    .map_err(db_err("writing desired_generations"))?;
                }
            }
        }
        tx.commit()
            .map_err(db_err("committing desired_generations"))?;
        self.dirty.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::ConfigMap, "default", name)
    }

    #[test]
    fn generation_moves_only_when_the_content_changes() {
        let mut generations = Generations::in_memory();
        assert_eq!(generations.generation(&key("a"), "h1"), 1);
        assert_eq!(generations.generation(&key("a"), "h1"), 1);
        assert_eq!(generations.generation(&key("a"), "h2"), 2);
        assert_eq!(
            generations.generation(&key("a"), "h1"),
            3,
            "going back is a change too"
        );
        assert_eq!(generations.generation(&key("b"), "h1"), 1);
    }

    #[test]
    fn generations_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("berth.db");
        {
            let mut generations =
                Generations::open(crate::db::open(&db).expect("db")).expect("open");
            generations.generation(&key("a"), "h1");
            generations.generation(&key("a"), "h2");
            generations.commit().expect("commit");
            // Not committed: as if the agent died right here.
            generations.generation(&key("a"), "h3");
        }
        let mut generations = Generations::open(crate::db::open(&db).expect("db")).expect("reopen");
        assert_eq!(
            generations.generation(&key("a"), "h2"),
            2,
            "a restart is not an edit"
        );
        assert_eq!(
            generations.generation(&key("a"), "h3"),
            3,
            "the lost bump comes out the same"
        );
    }
}
