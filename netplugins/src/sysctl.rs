//! The few kernel settings the bridge network needs, written under
//! `/proc/sys/net` (which shows the namespace of the thread that opens it:
//! call these from threads in the host's namespace only).

use std::path::{Path, PathBuf};

use crate::driver::NetError;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Sets `path` to `value` unless it already is.
fn ensure(path: &Path, value: &str) -> Result<(), NetError> {
    let err = |source| NetError::Sysctl {
        path: path.to_path_buf(),
        source,
    };
    let current = std::fs::read_to_string(path).map_err(err)?;
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(path, value).map_err(err)
}

/// Routing between the bridge and the host's other interfaces.
pub fn enable_ip_forward() -> Result<(), NetError> {
    ensure(Path::new(IP_FORWARD), "1")
}

/// Lets packets DNATed from 127.0.0.1 leave through `interface` (they are
/// masqueraded on the way out), so host ports answer on localhost.
pub fn enable_route_localnet(interface: &str) -> Result<(), NetError> {
    ensure(&conf_path(interface, "route_localnet"), "1")
}

fn conf_path(interface: &str, key: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv4/conf")
        .join(interface)
        .join(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_interface_is_named_in_the_error() {
        let err = enable_route_localnet("btnosuchif0").expect_err("missing");
        assert!(
            err.to_string().contains("btnosuchif0/route_localnet"),
            "{err}"
        );
    }
}
