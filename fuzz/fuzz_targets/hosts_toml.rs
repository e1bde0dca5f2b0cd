//! containerd-style `certs.d/<host>/hosts.toml`, read by the manifests crate
//! and turned into the agent's registry hosts config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for host in ["registry.local:5000", "_default"] {
        let path = format!("certs.d/{host}/hosts.toml");
        let parsed = manifests::parse_hosts_toml(Path::new(&path), host, data);
        berth_fuzz::check_parsed(&parsed, data);
    }
});
