//! The berth agent as a library: the `berth` binary (`src/main.rs`) is a thin
//! shell over these modules. See ARCHITECTURE.md for how data flows.

pub mod cli;
pub mod config;
pub mod db;
pub mod image;
pub mod paths;
pub mod rootfs;
pub mod runtime;
