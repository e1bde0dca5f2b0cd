//! berth's pod networking: namespace files, and the network drivers behind
//! one trait (`bridge` over netlink, `host`, `none`, `cni`).

pub mod dns;
pub mod firewall;
pub mod ipam;
pub mod ns;
pub mod ports;
