//! The image service: content store (blobs by digest), remote (registry
//! client and hosts.toml resolver), unpacked layer snapshots, metadata, import
//! and garbage collection.

pub mod auth;
pub mod check;
pub mod content;
pub mod export;
pub mod gc;
pub mod hosts;
pub mod hosts_dir;
pub mod import;
pub mod layout;
pub mod manager;
pub mod meta;
pub mod policy;
pub mod preflight;
pub mod rate;
pub mod registries;
pub mod remote;
pub mod service;
pub mod snapshot;
pub mod streaming;
pub mod unpack;
pub mod writeback;

/// A store's parts in a temporary directory, for the unit tests of what
/// works across them (checks, garbage collection).
#[cfg(test)]
pub(crate) struct TestStore {
    pub content: content::ContentStore,
    pub snapshots: snapshot::Snapshotter,
    pub meta: meta::MetaStore,
    /// Removed on drop, so it goes last.
    pub dir: tempfile::TempDir,
}

#[cfg(test)]
impl TestStore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            content: content::ContentStore::open(dir.path().join("content")).expect("content"),
            snapshots: snapshot::Snapshotter::open(dir.path().join("snapshots"))
                .expect("snapshots"),
            meta: meta::MetaStore::open(&dir.path().join("berth.db")).expect("meta"),
            dir,
        }
    }
}
