//! berth's pod networking: namespace files, and the network drivers behind
//! one trait ([`driver::NetworkDriver`]): `bridge` over netlink (the
//! default), `host`, `none`, and `cni` (standard plugin chains).
//!
//! The agent builds its drivers with [`factory::Drivers::new`] from the
//! `[network]` config section, calls `cleanup_orphans(alive pod ids)` once
//! at start, then `setup`/`teardown`/`check` per pod. Everything is
//! idempotent, and every namespace switch happens on a throw-away thread.

pub mod bridge;
mod chain;
pub mod cni;
pub mod dns;
pub mod driver;
pub mod factory;
pub mod firewall;
pub mod host;
pub mod ipam;
pub mod netlink;
pub mod none;
pub mod ns;
pub mod ports;
mod sysctl;

pub use chain::chain;
