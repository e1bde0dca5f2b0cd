//! The image service: content store (blobs by digest), remote (registry
//! client and hosts.toml resolver), unpacked layer snapshots, metadata, import
//! and garbage collection.

pub mod auth;
pub mod content;
pub mod hosts;
pub mod remote;
pub mod snapshot;
pub mod unpack;
