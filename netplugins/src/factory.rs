//! Building drivers from the agent's `[network]` configuration. The agent
//! needs two: the configured default for ordinary pods and `host` for
//! `hostNetwork: true` pods; [`Drivers`] holds both.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::bridge::{BridgeConfig, BridgeDriver};
use crate::cni::{CniConfig, CniDriver};
use crate::driver::{CleanupReport, Environment, NetError, NetworkDriver};
use crate::host::HostDriver;
use crate::none::NoneDriver;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    #[default]
    Bridge,
    Host,
    None,
    Cni,
}

/// The agent config's `[network]` section.
///
/// ```toml
/// [network]
/// driver = "bridge"            # bridge | none | cni (hostNetwork pods always use host)
/// [network.bridge]
/// bridge = "berth0"
/// subnet = "10.213.0.0/16"
/// mtu = 1500
/// [network.cni]
/// conflist = "/etc/cni/net.d/berth.conflist"
/// plugin-dirs = ["/usr/lib/cni", "/opt/cni/bin"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkConfig {
    pub driver: DriverKind,
    pub bridge: BridgeConfig,
    pub cni: CniConfig,
}

/// Builds one driver. Validates its configuration and checks what it needs
/// on the host (`nft`, plugin binaries) without changing anything.
pub async fn build(
    kind: DriverKind,
    config: &NetworkConfig,
    env: &Environment,
) -> Result<Box<dyn NetworkDriver>, NetError> {
    Ok(match kind {
        DriverKind::Bridge => {
            Box::new(BridgeDriver::new(config.bridge.clone(), env.clone()).await?)
        }
        DriverKind::Host => Box::new(HostDriver::new(env.clone()).await?),
        DriverKind::None => Box::new(NoneDriver::new(env.clone())),
        DriverKind::Cni => Box::new(CniDriver::new(config.cni.clone(), env.clone()).await?),
    })
}

/// The drivers an agent runs pods with.
pub struct Drivers {
    pub default: Box<dyn NetworkDriver>,
    pub host: Box<dyn NetworkDriver>,
}

impl Drivers {
    pub async fn new(config: &NetworkConfig, env: &Environment) -> Result<Self, NetError> {
        if config.driver == DriverKind::Host {
            return Err(NetError::Config(
                "driver \"host\" cannot be the default; set hostNetwork: true on the pods that need it".to_string(),
            ));
        }
        Ok(Drivers {
            default: build(config.driver, config, env).await?,
            host: build(DriverKind::Host, config, env).await?,
        })
    }

    /// The driver for a pod.
    pub fn for_pod(&self, host_network: bool) -> &dyn NetworkDriver {
        if host_network {
            self.host.as_ref()
        } else {
            self.default.as_ref()
        }
    }

    /// Runs every driver's orphan cleanup (agent start); all run even if
    /// one fails.
    pub async fn cleanup_orphans(
        &self,
        alive: &HashSet<String>,
    ) -> Result<CleanupReport, NetError> {
        let mut report = CleanupReport::default();
        let mut errors = Vec::new();
        for driver in [&self.default, &self.host] {
            match driver.cleanup_orphans(alive).await {
                Ok(mut part) => {
                    report.pods.append(&mut part.pods);
                    report.links.append(&mut part.links);
                    report.netns.append(&mut part.netns);
                }
                Err(NetError::Cleanup { errors: mut more }) => errors.append(&mut more),
                Err(err) => errors.push(err),
            }
        }
        crate::driver::cleanup_result(report, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_section_parses_with_defaults() {
        let config: NetworkConfig = serde_json::from_value(serde_json::json!({
            "driver": "cni",
            "cni": {"conflist": "/etc/cni/net.d/x.conflist"}
        }))
        .expect("parse");
        assert_eq!(config.driver, DriverKind::Cni);
        assert_eq!(config.bridge, BridgeConfig::default());
        assert_eq!(config.cni.ifname, "eth0");
        assert_eq!(NetworkConfig::default().driver, DriverKind::Bridge);
        assert!(
            serde_json::from_value::<NetworkConfig>(serde_json::json!({"driver": "macvlan"}))
                .is_err()
        );
    }
}
