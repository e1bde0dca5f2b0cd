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
