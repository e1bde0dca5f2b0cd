//! IP address management, host-local style, persisted in the agent's SQLite
//! database (`<root>/berth.db`). This module owns the tables named `ipam_*`:
//!
//! ```text
//! ipam_leases  (network, address) -> pod_id      one IPv4 address per pod and network
//! ipam_cursor  network -> last address handed out (round-robin allocation)
//! ipam_ports   (network, pod_id) -> its hostPort mappings
//! ```
//!
//! An address is committed to the database before it is configured on any
//! interface, so a crash can leak a lease (reclaimed at start by
//! [`IpamStore::reclaim`]) but never hand one address to two pods. The host
//! port claims live here too, so that a lease and its ports are taken in one
//! transaction and a port conflict leaves nothing behind.

pub mod pool;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

pub use pool::{Pool, PoolError};

use crate::ports::{self, PortClaim, PortError, PortMapping};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("opening the IPAM database {path}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("IPAM database {path}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("network {network}: no free address left in {subnet} for pod {pod_id}")]
    Exhausted {
        network: String,
        subnet: ipnet::Ipv4Net,
        pod_id: String,
    },
    #[error("restricting permissions of the IPAM database {path}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("IPAM database {path}: lease row {row:?} is corrupt")]
    Corrupt { path: PathBuf, row: String },
    #[error("pod {pod_id}")]
    Ports { pod_id: String, source: PortError },
}

/// An address held by a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub network: String,
    pub pod_id: String,
    pub address: Ipv4Addr,
}

/// A pod of one network as the firewall needs it: its address and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub pod_id: String,
    pub address: Ipv4Addr,
    pub ports: Vec<PortMapping>,
}

/// The `ipam_*` tables of one database. Blocking: call it from
/// `spawn_blocking` in async code.
pub struct IpamStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ipam_leases (
    network      TEXT NOT NULL,
    address      TEXT NOT NULL,
    pod_id       TEXT NOT NULL,
    allocated_at INTEGER NOT NULL,
    PRIMARY KEY (network, address),
    UNIQUE (network, pod_id)
);
CREATE TABLE IF NOT EXISTS ipam_cursor (
    network      TEXT PRIMARY KEY,
    last_address TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ipam_ports (
    network        TEXT NOT NULL,
    pod_id         TEXT NOT NULL,
    protocol       TEXT NOT NULL,
    host_ip        TEXT NOT NULL,
    host_port      INTEGER NOT NULL,
    container_port INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ipam_ports_by_pod ON ipam_ports (network, pod_id);
";

impl IpamStore {
    /// Opens the database at `path` (created if missing) with the settings
    /// the agent uses (WAL, full sync, a busy timeout for concurrent
    /// processes) and creates the `ipam_*` tables.
    pub fn open(path: &Path) -> Result<Self, IpamError> {
        let open_err = |source| IpamError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        // Leases and host ports are the agent's business: root only, as the
        // agent's own opening of the database sets.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| IpamError::Permissions {
                path: path.to_path_buf(),
                source,
            },
        )?;
        Ok(IpamStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> IpamError + '_ {
        |source| IpamError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, IpamError>,
    ) -> Result<T, IpamError> {
        // A panic while holding the lock cannot leave a transaction open
        // (rusqlite rolls back on drop), so a poisoned lock is still usable.
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut conn)
    }

    /// Gives `pod_id` an address of `pool` in `network` and records its host
    /// ports, in one transaction. Idempotent: a pod that already holds an
    /// address keeps it (and its port claims are replaced by `ports`). Fails,
    /// changing nothing, if another pod holds one of the host ports.
    pub fn allocate(
        &self,
        network: &str,
        pool: &Pool,
        pod_id: &str,
        ports: &[PortMapping],
    ) -> Result<Lease, IpamError> {
        let sql = self.sql();
        self.with_conn(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&sql)?;
            self.replace_ports(&tx, network, pod_id, ports)?;
            let address = match self.lease_in(&tx, network, pod_id)? {
                Some(address) => address,
                None => {
                    let used = self.addresses_in(&tx, network)?;
                    let last: Option<String> = tx
                        .query_row(
                            "SELECT last_address FROM ipam_cursor WHERE network = ?1",
                            params![network],
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(&sql)?;
                    let last = last.and_then(|text| text.parse().ok());
                    let address =
                        pool.next_free(&used, last)
                            .ok_or_else(|| IpamError::Exhausted {
                                network: network.to_string(),
                                subnet: pool.subnet(),
                                pod_id: pod_id.to_string(),
                            })?;
                    tx.execute(
                        "INSERT INTO ipam_leases (network, address, pod_id, allocated_at)
                         VALUES (?1, ?2, ?3, strftime('%s','now'))",
                        params![network, address.to_string(), pod_id],
                    )
                    .map_err(&sql)?;
                    tx.execute(
                        "INSERT INTO ipam_cursor (network, last_address) VALUES (?1, ?2)
                         ON CONFLICT (network) DO UPDATE SET last_address = excluded.last_address",
                        params![network, address.to_string()],
                    )
                    .map_err(&sql)?;
                    address
                }
            };
            tx.commit().map_err(&sql)?;
            Ok(Lease {
                network: network.to_string(),
                pod_id: pod_id.to_string(),
                address,
            })
        })
    }

    /// Records `ports` as `pod_id`'s host ports (replacing earlier claims)
    /// unless another pod in any network holds one of them. For drivers
    /// whose addresses come from elsewhere (CNI).
    pub fn claim_ports(
        &self,
        network: &str,
        pod_id: &str,
        ports: &[PortMapping],
    ) -> Result<(), IpamError> {
        let sql = self.sql();
        self.with_conn(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&sql)?;
            self.replace_ports(&tx, network, pod_id, ports)?;
            tx.commit().map_err(&sql)
        })
    }

    fn replace_ports(
        &self,
        tx: &rusqlite::Transaction<'_>,
        network: &str,
        pod_id: &str,
        ports: &[PortMapping],
    ) -> Result<(), IpamError> {
        let sql = self.sql();
        let port_err = |source| IpamError::Ports {
            pod_id: pod_id.to_string(),
            source,
        };
        let wanted = ports::published(ports);
        ports::validate(&wanted).map_err(port_err)?;
        // Host ports are one space for the whole host, whatever the network.
        let held = self.claims(tx, None)?;
        ports::find_conflict(pod_id, &wanted, &held).map_err(port_err)?;
        tx.execute(
            "DELETE FROM ipam_ports WHERE network = ?1 AND pod_id = ?2",
            params![network, pod_id],
        )
        .map_err(&sql)?;
        for mapping in &wanted {
            tx.execute(
                "INSERT INTO ipam_ports (network, pod_id, protocol, host_ip, host_port, container_port)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    network,
                    pod_id,
                    mapping.protocol.as_str(),
                    mapping.bound_ip().map(|ip| ip.to_string()).unwrap_or_default(),
                    mapping.host_port,
                    mapping.container_port,
                ],
            )
            .map_err(&sql)?;
        }
        Ok(())
    }

    /// Port claims of every pod, or of one network's pods.
    fn claims(
        &self,
        conn: &Connection,
        network: Option<&str>,
    ) -> Result<Vec<PortClaim>, IpamError> {
        let sql = self.sql();
        let mut stmt = conn
            .prepare(
                "SELECT pod_id, protocol, host_ip, host_port, container_port FROM ipam_ports
                 WHERE ?1 IS NULL OR network = ?1 ORDER BY rowid",
            )
            .map_err(&sql)?;
        let rows = stmt
            .query_map(params![network], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u16>(3)?,
                    row.get::<_, u16>(4)?,
                ))
            })
            .map_err(&sql)?;
        let mut claims = Vec::new();
        for row in rows {
            let (pod_id, protocol, host_ip, host_port, container_port) = row.map_err(&sql)?;
            let corrupt = || IpamError::Corrupt {
                path: self.path.clone(),
                row: format!("{pod_id} {protocol} {host_ip}:{host_port}->{container_port}"),
            };
            let host_ip = match host_ip.as_str() {
                "" => None,
                text => Some(text.parse::<IpAddr>().map_err(|_| corrupt())?),
            };
            claims.push(PortClaim {
                mapping: PortMapping {
                    container_port,
                    host_port,
                    host_ip,
                    protocol: protocol.parse().map_err(|_| corrupt())?,
                },
                pod_id,
            });
        }
        Ok(claims)
    }

    fn addresses_in(
        &self,
        conn: &Connection,
        network: &str,
    ) -> Result<HashSet<Ipv4Addr>, IpamError> {
        Ok(self
            .leases_in(conn, network)?
            .into_iter()
            .map(|l| l.address)
            .collect())
    }

    fn leases_in(&self, conn: &Connection, network: &str) -> Result<Vec<Lease>, IpamError> {
        let sql = self.sql();
        let mut stmt = conn
            .prepare("SELECT pod_id, address FROM ipam_leases WHERE network = ?1 ORDER BY allocated_at, rowid")
            .map_err(&sql)?;
        let rows = stmt
            .query_map(params![network], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(&sql)?;
        let mut leases = Vec::new();
        for row in rows {
            let (pod_id, address) = row.map_err(&sql)?;
            leases.push(Lease {
                network: network.to_string(),
                address: self.parse_address(&address)?,
                pod_id,
            });
        }
        Ok(leases)
    }

    fn parse_address(&self, text: &str) -> Result<Ipv4Addr, IpamError> {
        text.parse().map_err(|_| IpamError::Corrupt {
            path: self.path.clone(),
            row: text.to_string(),
        })
    }

    /// Every lease in `network`, oldest first.
    pub fn leases(&self, network: &str) -> Result<Vec<Lease>, IpamError> {
        self.with_conn(|conn| self.leases_in(conn, network))
    }

    /// The address `pod_id` holds in `network`, if any.
    pub fn lease_of(&self, network: &str, pod_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        self.with_conn(|conn| self.lease_in(conn, network, pod_id))
    }

    fn lease_in(
        &self,
        conn: &Connection,
        network: &str,
        pod_id: &str,
    ) -> Result<Option<Ipv4Addr>, IpamError> {
        let text: Option<String> = conn
            .query_row(
                "SELECT address FROM ipam_leases WHERE network = ?1 AND pod_id = ?2",
                params![network, pod_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        text.map(|t| self.parse_address(&t)).transpose()
    }

    /// Pods of `network` with their addresses and host ports: what the
    /// firewall is rendered from. Pods that hold ports but no lease (CNI)
    /// are left out.
    pub fn attachments(&self, network: &str) -> Result<Vec<Attachment>, IpamError> {
        self.with_conn(|conn| {
            let claims = self.claims(conn, Some(network))?;
            Ok(self
                .leases_in(conn, network)?
                .into_iter()
                .map(|lease| Attachment {
                    ports: claims
                        .iter()
                        .filter(|c| c.pod_id == lease.pod_id)
                        .map(|c| c.mapping)
                        .collect(),
                    pod_id: lease.pod_id,
                    address: lease.address,
                })
                .collect())
        })
    }

    /// Drops `pod_id`'s lease and port claims in `network`. Idempotent;
    /// returns the address it held.
    pub fn release(&self, network: &str, pod_id: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let sql = self.sql();
        self.with_conn(|conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&sql)?;
            let address: Option<String> = tx
                .query_row(
                    "DELETE FROM ipam_leases WHERE network = ?1 AND pod_id = ?2 RETURNING address",
                    params![network, pod_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(&sql)?;
            tx.execute(
                "DELETE FROM ipam_ports WHERE network = ?1 AND pod_id = ?2",
                params![network, pod_id],
            )
            .map_err(&sql)?;
            tx.commit().map_err(&sql)?;
            address.map(|t| self.parse_address(&t)).transpose()
        })
    }

    /// Every pod id that holds a lease or a port in `network`.
    pub fn pods(&self, network: &str) -> Result<Vec<String>, IpamError> {
        let sql = self.sql();
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT pod_id FROM ipam_leases WHERE network = ?1
                     UNION SELECT pod_id FROM ipam_ports WHERE network = ?1",
                )
                .map_err(&sql)?;
            let rows = stmt
                .query_map(params![network], |row| row.get::<_, String>(0))
                .map_err(&sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(&sql)
        })
    }

    /// Releases the leases and ports of every pod in `network` that is not
    /// in `alive` (run at agent start). Returns the pods released.
    pub fn reclaim(
        &self,
        network: &str,
        alive: &HashSet<String>,
    ) -> Result<Vec<String>, IpamError> {
        let dead: Vec<String> = self
            .pods(network)?
            .into_iter()
            .filter(|pod| !alive.contains(pod))
            .collect();
        for pod in &dead {
            self.release(network, pod)?;
        }
        Ok(dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Protocol;

    fn store() -> (tempfile::TempDir, IpamStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = IpamStore::open(&dir.path().join("berth.db")).expect("open");
        (dir, store)
    }

    fn pool() -> Pool {
        Pool::new("10.9.0.0/29".parse().expect("net"), None).expect("pool")
    }

    fn port(host_port: u16) -> PortMapping {
        PortMapping {
            container_port: 80,
            host_port,
            host_ip: None,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn allocation_is_idempotent_per_pod_and_unique_across_pods() {
        let (_dir, store) = store();
        let a = store.allocate("n", &pool(), "a", &[]).expect("a");
        let again = store.allocate("n", &pool(), "a", &[]).expect("a again");
        assert_eq!(a, again);
        let b = store.allocate("n", &pool(), "b", &[]).expect("b");
        assert_ne!(a.address, b.address);
        // Networks are separate address spaces.
        let other = store
            .allocate("m", &pool(), "a", &[])
            .expect("other network");
        assert_eq!(other.address, a.address);
    }

    #[test]
    fn released_addresses_come_back_last_and_exhaustion_is_reported() {
        let (_dir, store) = store();
        let pool = pool(); // 5 assignable: .2-.6
        let first = store.allocate("n", &pool, "p0", &[]).expect("p0").address;
        store.release("n", "p0").expect("release");
        let mut handed = Vec::new();
        for i in 1..=5 {
            handed.push(
                store
                    .allocate("n", &pool, &format!("p{i}"), &[])
                    .expect("alloc")
                    .address,
            );
        }
        assert_eq!(
            handed.last(),
            Some(&first),
            "the released address is reused last"
        );
        let err = store.allocate("n", &pool, "p6", &[]).expect_err("full");
        assert!(err.to_string().contains("p6"), "{err}");
        assert!(err.to_string().contains("10.9.0.0/29"), "{err}");
    }

    #[test]
    fn the_database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, _store) = store();
        let mode = std::fs::metadata(dir.path().join("berth.db"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn leases_survive_reopening_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        let a = IpamStore::open(&path)
            .expect("open")
            .allocate("n", &pool(), "a", &[port(8080)])
            .expect("a");
        let store = IpamStore::open(&path).expect("reopen");
        assert_eq!(store.lease_of("n", "a").expect("lease"), Some(a.address));
        let b = store.allocate("n", &pool(), "b", &[]).expect("b");
        assert_ne!(b.address, a.address);
        let attachments = store.attachments("n").expect("attachments");
        assert_eq!(attachments[0].ports, vec![port(8080)]);
    }

    #[test]
    fn a_port_conflict_allocates_nothing() {
        let (_dir, store) = store();
        store
            .allocate("n", &pool(), "web", &[port(8080)])
            .expect("web");
        let err = store
            .allocate("other-net", &pool(), "web2", &[port(8080)])
            .expect_err("conflict across networks too");
        assert!(err.to_string().contains("web"), "{err}");
        assert_eq!(store.lease_of("other-net", "web2").expect("lease"), None);
        assert!(store.pods("other-net").expect("pods").is_empty());
        // Once the holder is gone, the port is free.
        store.release("n", "web").expect("release");
        store
            .allocate("other-net", &pool(), "web2", &[port(8080)])
            .expect("free now");
    }

    #[test]
    fn reclaim_releases_only_dead_pods() {
        let (_dir, store) = store();
        for pod in ["a", "b", "c"] {
            store.allocate("n", &pool(), pod, &[]).expect("alloc");
        }
        store
            .claim_ports("n", "d", &[port(9000)])
            .expect("ports only");
        let alive: HashSet<String> = ["b".to_string()].into();
        let mut dead = store.reclaim("n", &alive).expect("reclaim");
        dead.sort();
        assert_eq!(dead, vec!["a", "c", "d"]);
        let left: Vec<String> = store
            .leases("n")
            .expect("leases")
            .into_iter()
            .map(|l| l.pod_id)
            .collect();
        assert_eq!(left, vec!["b"]);
        assert!(store.release("n", "a").expect("again").is_none());
    }
}
