//! The `host` driver (`hostNetwork: true`): no namespace of its own; the
//! containers join the host's. Its container ports are host ports, so they
//! are claimed like other pods' hostPorts: a bridge pod's DNAT cannot then
//! silently steal a port a host-network pod listens on.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use ipnet::IpNet;

use crate::dns;
use crate::driver::{
    self, CleanupReport, Environment, IpConfig, NetError, NetworkDriver, NetworkStatus, PodNetwork,
    blocking,
};
use crate::ipam::IpamStore;
use crate::netlink::Netlink;
use crate::ports::{self, PortMapping};

/// The claims of host-network pods live under this network name.
const CLAIMS_NETWORK: &str = "host";

pub struct HostDriver {
    store: Arc<IpamStore>,
    netlink: Netlink,
}

impl HostDriver {
    pub async fn new(env: Environment) -> Result<Self, NetError> {
        let database = env.database.clone();
        let store = Arc::new(blocking(move || Ok(IpamStore::open(&database)?)).await?);
        Ok(HostDriver {
            store,
            netlink: Netlink::connect()?,
        })
    }

    /// The host's global addresses, IPv4 first (status.podIPs of a
    /// host-network pod, as the kubelet reports the node's addresses).
    async fn host_addresses(&self) -> Result<Vec<IpConfig>, NetError> {
        let mut ips = Vec::new();
        for link in self.netlink.links().await? {
            if link.name == "lo" || !link.up {
                continue;
            }
            for (ip, prefix) in self.netlink.addresses(link.index).await? {
                let global = match ip {
                    IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
                    IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
                };
                if global && let Ok(address) = IpNet::new(ip, prefix) {
                    ips.push(IpConfig {
                        address,
                        gateway: None,
                    });
                }
            }
        }
        ips.sort_by_key(|ip| ip.address.addr().is_ipv6());
        Ok(ips)
    }

    /// A host-network container port is a host port on every address.
    fn host_ports(pod: &PodNetwork) -> Vec<PortMapping> {
        pod.ports
            .iter()
            .map(|m| PortMapping {
                host_port: m.container_port,
                ..*m
            })
            .collect()
    }

    async fn setup_pod(&self, pod: &PodNetwork) -> Result<NetworkStatus, NetError> {
        driver::validate_pod_id(&pod.pod_id)?;
        let wanted = ports::published(&Self::host_ports(pod));
        let resolv = driver::pod_resolv_conf(pod, true)?;
        let (store, id, claims) = (self.store.clone(), pod.pod_id.clone(), wanted.clone());
        blocking(move || Ok(store.claim_ports(CLAIMS_NETWORK, &id, &claims)?)).await?;
        Ok(NetworkStatus {
            driver: "host".to_string(),
            netns: None,
            interface: None,
            ips: self.host_addresses().await?,
            ports: wanted,
            resolv_conf: resolv.text,
            hosts: dns::host_network_hosts(&dns::read_host_hosts(), &pod.host_aliases),
            warnings: resolv.warnings,
        })
    }

    async fn release(&self, pod_id: &str) -> Result<(), NetError> {
        driver::validate_pod_id(pod_id)?;
        let (store, id) = (self.store.clone(), pod_id.to_string());
        blocking(move || Ok(store.release(CLAIMS_NETWORK, &id).map(|_| ())?)).await
    }

    async fn cleanup(&self, alive: &HashSet<String>) -> Result<CleanupReport, NetError> {
        let (store, alive) = (self.store.clone(), alive.clone());
        let pods = blocking(move || Ok(store.reclaim(CLAIMS_NETWORK, &alive)?)).await?;
        Ok(CleanupReport {
            pods,
            ..CleanupReport::default()
        })
    }
}

impl NetworkDriver for HostDriver {
    fn name(&self) -> &'static str {
        "host"
    }

    fn setup<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<NetworkStatus, NetError>> {
        self.setup_pod(pod).boxed()
    }

    fn teardown<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), NetError>> {
        self.release(&pod.pod_id).boxed()
    }

    /// The host's network is always there.
    fn check<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), NetError>> {
        async move { driver::validate_pod_id(&pod.pod_id) }.boxed()
    }

    fn cleanup_orphans<'a>(
        &'a self,
        alive: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<CleanupReport, NetError>> {
        self.cleanup(alive).boxed()
    }
}
