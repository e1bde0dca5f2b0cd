//! The default driver: every pod gets a network namespace, a veth pair whose
//! host end sits on a Linux bridge and whose pod end is `eth0` with an
//! address from [`crate::ipam`], a default route via the bridge, and NAT and
//! host ports in berth's own nftables table. All over netlink.
//!
//! Order matters for crash safety: the lease is committed before any
//! interface uses the address; the veth is created already attached to the
//! bridge (so [`BridgeDriver::cleanup_orphans`] can find it by bridge and
//! name); the firewall is rendered last, from the database.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::dns;
pub use crate::driver::Environment;
use crate::driver::{
    self, CleanupReport, IpConfig, NetError, NetworkDriver, NetworkStatus, PodNetwork, blocking,
    netns_path, teardown_result,
};
use crate::firewall::{self, FirewallSpec};
use crate::ipam::{IpamStore, Pool};
use crate::netlink::{self, Link, Netlink};
use crate::ns::{self, NsKind};
use crate::ports;
use crate::sysctl;

/// The pod's end of its veth pair.
pub const POD_INTERFACE: &str = "eth0";
/// IFNAMSIZ is 16 bytes including the terminating NUL.
const MAX_IFNAME: usize = 15;
/// Enough hash characters to keep veth names apart (at least 32 bits).
const MIN_HASH_CHARS: usize = 8;

/// `[network]` settings of the bridge driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BridgeConfig {
    /// Names the network in the IPAM tables and veth aliases.
    pub network: String,
    /// The Linux bridge (created if missing).
    pub bridge: String,
    /// IPv4 subnet of the pods. The default stays clear of podman
    /// (10.88/16, 10.89.x/24), docker (172.17/16) and Kubernetes' usual
    /// service range (10.96/12).
    pub subnet: Ipv4Net,
    /// The bridge's address; the subnet's first address when unset.
    pub gateway: Option<Ipv4Addr>,
    /// MTU of the bridge and veths; the kernel's default (1500) when unset.
    pub mtu: Option<u32>,
    /// Host-side veth names are this prefix plus a hash of the pod id.
    pub veth_prefix: String,
    /// berth's own nftables table (family `ip`) for this network.
    pub nft_table: String,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            network: "berth".to_string(),
            bridge: "berth0".to_string(),
            subnet: Ipv4Net::new(Ipv4Addr::new(10, 213, 0, 0), 16).expect("16 is a valid prefix"),
            gateway: None,
            mtu: None,
            veth_prefix: "bv".to_string(),
            nft_table: "berth".to_string(),
        }
    }
}

/// Points in [`BridgeDriver::setup`] a test hook can observe (and crash at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStage {
    /// The pod's netns file exists.
    Namespace,
    /// The address lease and host ports are committed.
    Lease,
    /// The veth pair exists.
    Veth,
    /// `eth0` has its address and route.
    PodInterface,
    /// The firewall table includes the pod.
    Firewall,
}

impl SetupStage {
    pub const ALL: [SetupStage; 5] = [
        SetupStage::Namespace,
        SetupStage::Lease,
        SetupStage::Veth,
        SetupStage::PodInterface,
        SetupStage::Firewall,
    ];

    /// The stage's name in pause switches (`BERTH_NETCTL_PAUSE_AT`).
    pub fn name(self) -> &'static str {
        match self {
            SetupStage::Namespace => "namespace",
            SetupStage::Lease => "lease",
            SetupStage::Veth => "veth",
            SetupStage::PodInterface => "pod-interface",
            SetupStage::Firewall => "firewall",
        }
    }

    /// The stage called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|stage| stage.name() == name)
    }
}

type StageHook = Arc<dyn Fn(SetupStage) + Send + Sync>;

pub struct BridgeDriver {
    config: BridgeConfig,
    pool: Pool,
    env: Environment,
    store: Arc<IpamStore>,
    host: Netlink,
    firewall_lock: tokio::sync::Mutex<()>,
    /// Firewall applies asked for, and the count the last apply covered.
    firewall_asked: std::sync::atomic::AtomicU64,
    firewall_applied: std::sync::atomic::AtomicU64,
    startup_warnings: Vec<String>,
    hook: Option<StageHook>,
}

fn config_err(message: String) -> NetError {
    NetError::Config(message)
}

impl BridgeConfig {
    /// Checks names and numbers before anything touches the host.
    pub fn validate(&self) -> Result<Pool, NetError> {
        let ifname_ok = |name: &str| {
            !name.is_empty()
                && name.len() <= MAX_IFNAME
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !ifname_ok(&self.bridge) {
            return Err(config_err(format!(
                "bridge name {:?} must be 1 to {MAX_IFNAME} letters, digits, '-', '_' or '.'",
                self.bridge
            )));
        }
        if self.veth_prefix.is_empty()
            || self.veth_prefix.len() > MAX_IFNAME - MIN_HASH_CHARS
            || !ifname_ok(&self.veth_prefix)
        {
            return Err(config_err(format!(
                "veth-prefix {:?} must be 1 to {} interface-name characters",
                self.veth_prefix,
                MAX_IFNAME - MIN_HASH_CHARS
            )));
        }
        if self.network.is_empty()
            || self.network.len() > 64
            || !self
                .network
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(config_err(format!(
                "network name {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                self.network
            )));
        }
        if self.nft_table.is_empty()
            || self.nft_table.len() > 64
            || !self
                .nft_table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(config_err(format!(
                "nft-table {:?} must be 1 to 64 letters, digits, '-' or '_'",
                self.nft_table
            )));
        }
        if let Some(mtu) = self.mtu
            && !(576..=65535).contains(&mtu)
        {
            return Err(config_err(format!(
                "mtu {mtu} must be between 576 and 65535"
            )));
        }
        Pool::new(self.subnet, self.gateway).map_err(|err| config_err(format!("subnet: {err}")))
    }

    /// The host-side veth of `pod_id`: prefix + hash, within IFNAMSIZ.
    pub fn veth_name(&self, pod_id: &str) -> String {
        let hash = fnv1a64(format!("{}\0{pod_id}", self.network).as_bytes());
        let mut name = format!("{}{hash:016x}", self.veth_prefix);
        name.truncate(MAX_IFNAME);
        name
    }

    /// The label on a pod's host-side veth (`ip link` shows it).
    fn veth_alias(&self, pod_id: &str) -> String {
        format!("berth:{}:{pod_id}", self.network)
    }
}

/// Refuses a subnet that overlaps a route of another interface (a LAN, a
/// VPN, docker0, podman's cni-podman0…): pods would shadow those hosts.
async fn check_subnet_is_free(
    host: &Netlink,
    config: &BridgeConfig,
    subnet: Ipv4Net,
) -> Result<(), NetError> {
    let links = host.links().await?;
    let name_of = |index: Option<u32>| {
        index
            .and_then(|i| links.iter().find(|l| l.index == i))
            .map(|l| l.name.clone())
            .unwrap_or_else(|| "?".to_string())
    };
    for (route, oif) in host.ipv4_routes().await? {
        let overlaps = route.contains(&subnet.network()) || subnet.contains(&route.network());
        let interface = name_of(oif);
        if overlaps && interface != config.bridge {
            return Err(config_err(format!(
                "subnet {subnet} overlaps the route to {route} on {interface}; choose another subnet for bridge {}",
                config.bridge
            )));
        }
    }
    Ok(())
}

/// FNV-1a: a stable hash (std's hasher may change between releases, and
/// veth names must stay the same across agent upgrades).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl BridgeDriver {
    /// Validates `config`, checks that `nft` runs, opens the IPAM tables and
    /// connects to netlink. Touches nothing on the host yet. Call inside a
    /// tokio runtime.
    pub async fn new(config: BridgeConfig, env: Environment) -> Result<Self, NetError> {
        let pool = config.validate()?;
        firewall::check_nft().await?;
        let database = env.database.clone();
        let store = Arc::new(blocking(move || Ok(IpamStore::open(&database)?)).await?);
        let host = Netlink::connect()?;
        check_subnet_is_free(&host, &config, pool.subnet()).await?;
        let startup_warnings = firewall::detect_foreign_forward_drops(&config.nft_table)
            .await?
            .iter()
            .map(|drop| drop.warning(&config.bridge))
            .collect();
        Ok(BridgeDriver {
            config,
            pool,
            env,
            store,
            host,
            firewall_lock: tokio::sync::Mutex::new(()),
            firewall_asked: std::sync::atomic::AtomicU64::new(0),
            firewall_applied: std::sync::atomic::AtomicU64::new(0),
            startup_warnings,
            hook: None,
        })
    }

    /// Calls `hook` as setup passes each [`SetupStage`] (for crash tests).
    pub fn with_stage_hook(mut self, hook: impl Fn(SetupStage) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// Warnings found at start (another firewall's drop policy).
    pub fn startup_warnings(&self) -> &[String] {
        &self.startup_warnings
    }

    fn stage(&self, stage: SetupStage) {
        if let Some(hook) = &self.hook {
            hook(stage);
        }
    }

    fn netns(&self, pod_id: &str) -> PathBuf {
        netns_path(&self.env.netns_dir, pod_id)
    }

    /// The bridge, up with its gateway address, forwarding on.
    async fn ensure_bridge(&self) -> Result<Link, NetError> {
        let bridge = self
            .host
            .ensure_bridge(&self.config.bridge, self.config.mtu)
            .await?;
        self.host
            .ensure_address(
                bridge.index,
                IpAddr::V4(self.pool.gateway()),
                self.pool.subnet().prefix_len(),
            )
            .await?;
        sysctl::enable_ip_forward()?;
        sysctl::enable_route_localnet(&self.config.bridge)?;
        Ok(bridge)
    }

    /// Renders the table from every pod in the database and applies it.
    /// Serialised, so the last apply always sees the latest pods; and
    /// coalesced: a caller whose change an apply that began after it asked
    /// already covered returns at once (twenty pods set up together after a
    /// reboot cost a couple of applies, not twenty).
    async fn sync_firewall(&self) -> Result<(), NetError> {
        use std::sync::atomic::Ordering;
        let asked = self.firewall_asked.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.firewall_lock.lock().await;
        if self.firewall_applied.load(Ordering::SeqCst) >= asked {
            return Ok(());
        }
        // Every request counted so far changed the database before it
        // asked: the render below sees all of them.
        let covers = self.firewall_asked.load(Ordering::SeqCst);
        let store = self.store.clone();
        let network = self.config.network.clone();
        let pods = blocking(move || Ok(store.attachments(&network)?)).await?;
        firewall::apply(&FirewallSpec {
            table: self.config.nft_table.clone(),
            bridge: self.config.bridge.clone(),
            subnet: self.pool.subnet(),
            pods,
        })
        .await?;
        self.firewall_applied.store(covers, Ordering::SeqCst);
        Ok(())
    }

    /// The pod's veth pair, attached to `bridge`: kept if both ends exist,
    /// otherwise (re)created.
    async fn ensure_veth(&self, pod_id: &str, netns: &Path, bridge: &Link) -> Result<(), NetError> {
        let name = self.config.veth_name(pod_id);
        let alias = self.config.veth_alias(pod_id);
        if let Some(link) = self.host.link(&name).await? {
            if let Some(other) = link.alias.as_deref().filter(|a| *a != alias) {
                return Err(config_err(format!(
                    "veth {name} for pod {pod_id} already exists for {other:?}; pick another veth-prefix"
                )));
            }
            let peer = netlink::in_netns(netns, |nl| async move {
                Ok(nl.link(POD_INTERFACE).await?.is_some())
            })
            .await?;
            if peer && link.controller == Some(bridge.index) {
                self.host.set_up(&name, self.config.mtu).await?;
                self.host.set_hairpin(&name).await?;
                return Ok(());
            }
            // Half made (a crash, or the netns was recreated): start over.
            self.host.delete_link(&name).await?;
        }
        self.host
            .add_veth_into(
                &name,
                POD_INTERFACE,
                netns,
                bridge.index,
                self.config.mtu,
                &alias,
            )
            .await?;
        self.host.set_hairpin(&name).await?;
        Ok(())
    }

    async fn setup_pod(&self, pod: &PodNetwork) -> Result<NetworkStatus, NetError> {
        let pod_id = pod.pod_id.clone();
        // Validate everything before touching the host.
        driver::validate_pod_id(&pod_id)?;
        let published = ports::published(&pod.ports);
        ports::validate(&published).map_err(|source| NetError::Ports {
            pod_id: pod_id.clone(),
            source,
        })?;
        firewall::ruleset::check_mappings(&pod_id, &published)
            .map_err(firewall::FirewallError::from)?;
        let resolv = driver::pod_resolv_conf(pod, false)?;

        let bridge = self.ensure_bridge().await?;
        let netns = self.netns(&pod_id);
        let path = netns.clone();
        blocking(move || Ok(ns::create(NsKind::Net, &path)?)).await?;
        self.stage(SetupStage::Namespace);

        let (store, network, pool, id, wanted) = (
            self.store.clone(),
            self.config.network.clone(),
            self.pool.clone(),
            pod_id.clone(),
            published.clone(),
        );
        let lease = blocking(move || Ok(store.allocate(&network, &pool, &id, &wanted)?)).await?;
        self.stage(SetupStage::Lease);

        self.ensure_veth(&pod_id, &netns, &bridge).await?;
        self.stage(SetupStage::Veth);

        let (address, prefix, gateway, mtu) = (
            lease.address,
            self.pool.subnet().prefix_len(),
            self.pool.gateway(),
            self.config.mtu,
        );
        netlink::in_netns(&netns, move |nl| async move {
            nl.set_up("lo", None).await?;
            let eth0 = nl.set_up(POD_INTERFACE, mtu).await?;
            nl.ensure_address(eth0.index, IpAddr::V4(address), prefix)
                .await?;
            nl.ensure_default_route(gateway, eth0.index).await
        })
        .await?;
        self.stage(SetupStage::PodInterface);

        self.sync_firewall().await?;
        self.stage(SetupStage::Firewall);

        let mut warnings = self.startup_warnings.clone();
        warnings.extend(resolv.warnings);
        Ok(NetworkStatus {
            driver: "bridge".to_string(),
            netns: Some(netns),
            interface: Some(POD_INTERFACE.to_string()),
            ips: vec![IpConfig {
                address: IpNet::V4(
                    Ipv4Net::new(address, prefix).expect("the pool's prefix is valid"),
                ),
                gateway: Some(IpAddr::V4(gateway)),
            }],
            ports: published,
            resolv_conf: resolv.text,
            hosts: dns::hosts(&[IpAddr::V4(address)], &pod.hostname, &pod.host_aliases),
            warnings,
        })
    }

    async fn teardown_pod(&self, pod_id: &str) -> Result<(), NetError> {
        driver::validate_pod_id(pod_id)?;
        let mut errors: Vec<NetError> = Vec::new();
        if let Err(err) = self.host.delete_link(&self.config.veth_name(pod_id)).await {
            errors.push(err.into());
        }
        let path = self.netns(pod_id);
        if let Err(err) = blocking(move || Ok(ns::remove(&path)?)).await {
            errors.push(err);
        }
        let (store, network, id) = (
            self.store.clone(),
            self.config.network.clone(),
            pod_id.to_string(),
        );
        if let Err(err) = blocking(move || Ok(store.release(&network, &id)?)).await {
            errors.push(err);
        }
        if let Err(err) = self.sync_firewall().await {
            errors.push(err);
        }
        teardown_result(pod_id, errors)
    }

    async fn check_pod(&self, pod_id: &str) -> Result<(), NetError> {
        let problem = |problem: String| NetError::Check {
            pod_id: pod_id.to_string(),
            problem,
        };
        let (store, network, id) = (
            self.store.clone(),
            self.config.network.clone(),
            pod_id.to_string(),
        );
        let address = blocking(move || Ok(store.lease_of(&network, &id)?))
            .await?
            .ok_or_else(|| problem("it holds no address lease".to_string()))?;
        let netns = self.netns(pod_id);
        if !ns::is_namespace(&netns) {
            return Err(problem(format!(
                "its network namespace {} is gone",
                netns.display()
            )));
        }
        let veth = self.config.veth_name(pod_id);
        let bridge = self
            .host
            .link(&self.config.bridge)
            .await?
            .ok_or_else(|| problem(format!("bridge {} is gone", self.config.bridge)))?;
        match self.host.link(&veth).await? {
            Some(link) if link.controller == Some(bridge.index) && link.up => {}
            Some(_) => {
                return Err(problem(format!(
                    "veth {veth} is down or off bridge {}",
                    self.config.bridge
                )));
            }
            None => return Err(problem(format!("veth {veth} is gone"))),
        }
        let addresses = netlink::in_netns(&netns, |nl| async move {
            match nl.link(POD_INTERFACE).await? {
                Some(link) => nl.addresses(link.index).await.map(Some),
                None => Ok(None),
            }
        })
        .await?
        .ok_or_else(|| problem(format!("{POD_INTERFACE} is missing in its namespace")))?;
        if !addresses.iter().any(|(ip, _)| *ip == IpAddr::V4(address)) {
            return Err(problem(format!(
                "{POD_INTERFACE} lost its address {address}"
            )));
        }
        // A firewall reload (`nft flush ruleset`) takes NAT and host ports away.
        if !firewall::table_exists(&self.config.nft_table).await? {
            return Err(problem(format!(
                "nftables table ip {} is gone (was the firewall reloaded?)",
                self.config.nft_table
            )));
        }
        Ok(())
    }

    async fn cleanup(&self, alive: &HashSet<String>) -> Result<CleanupReport, NetError> {
        let mut report = CleanupReport::default();
        let mut errors = Vec::new();
        // Veths: ours are on our bridge with our prefix; keep the alive pods'.
        let keep: HashSet<String> = alive.iter().map(|pod| self.config.veth_name(pod)).collect();
        match self.host.link(&self.config.bridge).await {
            Ok(Some(bridge)) => match self.host.links().await {
                Ok(links) => {
                    for link in links {
                        let ours = link.controller == Some(bridge.index)
                            && link.kind.as_deref() == Some("veth")
                            && link.name.starts_with(&self.config.veth_prefix);
                        if !ours || keep.contains(&link.name) {
                            continue;
                        }
                        match self.host.delete_link(&link.name).await {
                            Ok(_) => report.links.push(link.name),
                            Err(err) => errors.push(err.into()),
                        }
                    }
                }
                Err(err) => errors.push(err.into()),
            },
            Ok(None) => {}
            Err(err) => errors.push(err.into()),
        }
        driver::remove_orphan_netns(&self.env.netns_dir, alive, &mut report, &mut errors).await;
        let (store, network, alive_ids) = (
            self.store.clone(),
            self.config.network.clone(),
            alive.clone(),
        );
        match blocking(move || Ok(store.reclaim(&network, &alive_ids)?)).await {
            Ok(pods) => report.pods = pods,
            Err(err) => errors.push(err),
        }
        // An agent that never ran a bridge pod has no table and nothing to
        // take out of one: creating an empty table would leave a firewall
        // table behind on hosts (and test machines) that never use it.
        let table_needed = !report.pods.is_empty()
            || firewall::table_exists(&self.config.nft_table)
                .await
                .unwrap_or(true);
        if table_needed && let Err(err) = self.sync_firewall().await {
            errors.push(err);
        }
        driver::cleanup_result(report, errors)
    }
}

impl NetworkDriver for BridgeDriver {
    fn name(&self) -> &'static str {
        "bridge"
    }

    fn setup<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<NetworkStatus, NetError>> {
        driver::setup_or_undo(&pod.pod_id, self.setup_pod(pod), || {
            self.teardown_pod(&pod.pod_id)
        })
        .boxed()
    }

    fn teardown<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), NetError>> {
        self.teardown_pod(&pod.pod_id).boxed()
    }

    fn check<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), NetError>> {
        self.check_pod(&pod.pod_id).boxed()
    }

    fn cleanup_orphans<'a>(
        &'a self,
        alive: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<CleanupReport, NetError>> {
        self.cleanup(alive).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip() {
        for stage in SetupStage::ALL {
            assert_eq!(SetupStage::from_name(stage.name()), Some(stage));
        }
        assert_eq!(
            SetupStage::from_name("pod-interface"),
            Some(SetupStage::PodInterface)
        );
        assert_eq!(SetupStage::from_name("nope"), None);
    }

    #[test]
    fn veth_names_fit_ifnamsiz_and_differ_per_pod_and_network() {
        let config = BridgeConfig::default();
        let a = config.veth_name("default_web");
        assert_eq!(a.len(), MAX_IFNAME);
        assert!(a.starts_with("bv"));
        assert_eq!(a, config.veth_name("default_web"), "stable");
        assert_ne!(a, config.veth_name("default_web2"));
        let other = BridgeConfig {
            network: "other".into(),
            ..BridgeConfig::default()
        };
        assert_ne!(a, other.veth_name("default_web"));
    }

    #[test]
    fn bad_configuration_is_rejected_naming_the_field() {
        let cases = [
            BridgeConfig {
                bridge: "a-very-long-bridge-name".into(),
                ..BridgeConfig::default()
            },
            BridgeConfig {
                veth_prefix: "toolongpfx".into(),
                ..BridgeConfig::default()
            },
            BridgeConfig {
                nft_table: "bad table".into(),
                ..BridgeConfig::default()
            },
            BridgeConfig {
                mtu: Some(100),
                ..BridgeConfig::default()
            },
            BridgeConfig {
                subnet: "10.0.0.0/31".parse().expect("net"),
                ..BridgeConfig::default()
            },
        ];
        let fields = ["bridge name", "veth-prefix", "nft-table", "mtu", "subnet"];
        for (config, field) in cases.iter().zip(fields) {
            let err = config.validate().expect_err(field);
            assert!(err.to_string().contains(field), "{err}");
        }
        BridgeConfig::default()
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn config_parses_from_kebab_case_toml_like_json() {
        let config: BridgeConfig = serde_json::from_value(serde_json::json!({
            "bridge": "br1", "subnet": "10.5.0.0/24", "mtu": 1400, "nft-table": "t1"
        }))
        .expect("parse");
        assert_eq!(config.bridge, "br1");
        assert_eq!(config.mtu, Some(1400));
        assert_eq!(config.network, "berth");
        let unknown = serde_json::from_value::<BridgeConfig>(serde_json::json!({"bridg": "x"}));
        assert!(unknown.is_err());
    }
}
