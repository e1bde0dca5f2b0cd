//! The CNI result cache: what ADD was run with and what it returned, so DEL
//! and CHECK get the same configuration and `prevResult` even after the
//! conflist changed or the agent restarted. An entry is written *before*
//! ADD runs (without a result), so a crash mid-ADD still leaves a record
//! that orphan cleanup turns into a DEL.
//!
//! Layout: `<cache-dir>/results/<network>-<container-id>-<ifname>.json`,
//! mode 0600, written atomically (temp file, fsync, rename).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CniError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub network_name: String,
    pub container_id: String,
    pub if_name: String,
    pub netns: PathBuf,
    pub cni_args: String,
    pub port_mappings: Vec<Value>,
    /// The whole conflist ADD ran.
    pub config: Value,
    /// ADD's final result; `None` while ADD has not finished.
    pub result: Option<Value>,
}

fn results_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("results")
}

pub fn entry_path(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    results_dir(cache_dir).join(format!("{network}-{container_id}-{ifname}.json"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CniError + '_ {
    move |source| CniError::Cache {
        path: path.to_path_buf(),
        source,
    }
}

pub fn write(cache_dir: &Path, entry: &CacheEntry) -> Result<(), CniError> {
    let dir = results_dir(cache_dir);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
    let path = entry_path(
        cache_dir,
        &entry.network_name,
        &entry.container_id,
        &entry.if_name,
    );
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(entry).expect("a cache entry always serialises");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    file.write_all(&body).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    // The rename itself survives a power cut only once the directory is
    // synced; without the entry, DEL after a reboot has nothing to go by.
    std::fs::File::open(&dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err(&dir))
}

pub fn read(
    cache_dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Option<CacheEntry>, CniError> {
    let path = entry_path(cache_dir, network, container_id, ifname);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| CniError::Cache {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, err),
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CniError::Cache { path, source }),
    }
}

pub fn remove(
    cache_dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<(), CniError> {
    let path = entry_path(cache_dir, network, container_id, ifname);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CniError::Cache { path, source }),
    }
}

/// Every readable entry of `network` (unreadable files are skipped: they
/// name no pod we could clean up).
pub fn list(cache_dir: &Path, network: &str) -> Vec<CacheEntry> {
    let Ok(entries) = std::fs::read_dir(results_dir(cache_dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|ext| ext == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<CacheEntry>(&bytes).ok())
        .filter(|entry| entry.network_name == network)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> CacheEntry {
        CacheEntry {
            network_name: "net".into(),
            container_id: id.into(),
            if_name: "eth0".into(),
            netns: "/run/berth/netns/x".into(),
            cni_args: String::new(),
            port_mappings: vec![],
            config: serde_json::json!({"name": "net"}),
            result: None,
        }
    }

    #[test]
    fn entries_round_trip_privately_and_removal_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = entry("p1");
        write(dir.path(), &e).expect("write pending");
        e.result = Some(serde_json::json!({"ips": []}));
        write(dir.path(), &e).expect("write result");
        assert_eq!(
            read(dir.path(), "net", "p1", "eth0").expect("read"),
            Some(e.clone())
        );
        let mode = std::fs::metadata(entry_path(dir.path(), "net", "p1", "eth0"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        write(dir.path(), &entry("p2")).expect("write");
        let mut other = entry("p3");
        other.network_name = "other".into();
        write(dir.path(), &other).expect("write");
        let mut ids: Vec<_> = list(dir.path(), "net")
            .into_iter()
            .map(|e| e.container_id)
            .collect();
        ids.sort();
        assert_eq!(ids, vec!["p1", "p2"]);
        remove(dir.path(), "net", "p1", "eth0").expect("remove");
        remove(dir.path(), "net", "p1", "eth0").expect("remove again");
        assert_eq!(read(dir.path(), "net", "p1", "eth0").expect("read"), None);
    }
}
