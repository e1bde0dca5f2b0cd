//! The berth agent as a library: the `berth` binary (`src/main.rs`) is a thin
//! shell over these modules. See ARCHITECTURE.md for how data flows.

pub mod activity;
pub mod agent;
pub mod cli;
pub mod config;
pub mod controller;
pub mod db;
pub mod desired;
pub mod fsutil;
pub mod image;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod paths;
pub mod pod;
pub mod reconcile;
pub mod runtime;
pub mod services;
pub mod source;
pub mod status;
