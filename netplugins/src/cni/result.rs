//! Reading a CNI result (spec 1.0 "Success" object; 0.4.0/0.3.x look the
//! same for these fields) and a plugin's error object.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::driver::IpConfig;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    /// The netns path for interfaces inside the sandbox; absent on the host.
    #[serde(default)]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpEntry {
    pub address: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

/// The parts of a result berth reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpEntry>,
}

impl CniResult {
    pub fn parse(value: &serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(value.clone()).map_err(|err| format!("unreadable result: {err}"))
    }

    /// The addresses on the pod's interface `ifname` (all addresses when
    /// the result does not say which interface they belong to).
    pub fn pod_ips(&self, ifname: &str) -> Vec<IpConfig> {
        self.ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    Some(iface) => iface.name == ifname && iface.sandbox.is_some(),
                    None => true,
                },
            )
            .map(|ip| IpConfig {
                address: ip.address,
                gateway: ip.gateway,
            })
            .collect()
    }
}

/// A plugin's error object (`{"code": 7, "msg": "...", "details": "..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PluginError {
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bridge_plugin_result_gives_the_pod_address() {
        // What Debian's bridge + host-local 1.1.1 print for ADD.
        let value = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "7e:a1:00:00:00:01"},
                {"name": "veth1234", "mac": "7e:a1:00:00:00:02"},
                {"name": "eth0", "mac": "7e:a1:00:00:00:03", "sandbox": "/run/berth/netns/p"}
            ],
            "ips": [{"interface": 2, "address": "10.22.0.5/24", "gateway": "10.22.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let result = CniResult::parse(&value).expect("parse");
        let ips = result.pod_ips("eth0");
        assert_eq!(ips.len(), 1);
        assert_eq!(ips[0].address.to_string(), "10.22.0.5/24");
        assert_eq!(ips[0].gateway, Some("10.22.0.1".parse().expect("ip")));
        assert!(result.pod_ips("eth1").is_empty());
    }

    #[test]
    fn old_results_without_interfaces_still_give_addresses() {
        let value =
            json!({"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.1.0.2/16"}]});
        let result = CniResult::parse(&value).expect("parse");
        assert_eq!(result.pod_ips("eth0")[0].address.to_string(), "10.1.0.2/16");
        assert!(CniResult::parse(&json!({"ips": [{"address": "nope"}]})).is_err());
    }

    #[test]
    fn plugin_errors_read_well() {
        let err: PluginError = serde_json::from_value(json!({
            "cniVersion": "1.0.0", "code": 11, "msg": "failed to allocate", "details": "range full"
        }))
        .expect("parse");
        assert_eq!(err.to_string(), "failed to allocate (code 11): range full");
    }
}
