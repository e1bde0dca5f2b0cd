//! The `cni` driver: runs a standard CNI plugin chain (spec 1.0: ADD, DEL,
//! CHECK, `prevResult` chaining, `CNI_ARGS`, `runtimeConfig.portMappings`,
//! a result cache) so users can plug in Calico, Cilium or their own.
//!
//! berth still owns the pod's netns (created at `<netns-dir>/<pod-id>`
//! before ADD, removed after DEL) and checks host-port conflicts against
//! every other berth pod before the chain runs; the chain's plugins (e.g.
//! `portmap`) do the forwarding.

pub mod cache;
pub mod conf;
pub mod exec;
pub mod result;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

pub use conf::{CniConfig, ConfList};
use exec::{CniCommand, Invocation};

use crate::dns;
use crate::driver::{
    self, CleanupReport, Environment, NetError, NetworkDriver, NetworkStatus, PodNetwork, blocking,
    netns_path, teardown_result,
};
use crate::ipam::IpamStore;
use crate::netlink;
use crate::ns::{self, NsKind};
use crate::ports;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("reading CNI configuration list {path}")]
    ReadConf {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI configuration list {path}: {problem}")]
    BadConf { path: PathBuf, problem: String },
    #[error("CNI plugin {plugin:?} not found in {}; install it (Debian: containernetworking-plugins) or set plugin-dirs", exec::describe_dirs(.dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("starting CNI plugin {plugin}")]
    Spawn {
        plugin: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} for {container_id} failed: {detail}")]
    Plugin {
        plugin: String,
        command: &'static str,
        container_id: String,
        detail: String,
    },
    #[error("CNI result cache {path}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {container_id}: the CNI chain returned {problem}")]
    BadResult {
        container_id: String,
        problem: String,
    },
}

pub struct CniDriver {
    config: CniConfig,
    list: ConfList,
    env: Environment,
    store: Arc<IpamStore>,
}

impl CniDriver {
    /// Loads and validates the conflist, checks every plugin binary exists,
    /// and opens the database for host-port claims.
    pub async fn new(config: CniConfig, env: Environment) -> Result<Self, NetError> {
        let list = ConfList::load(&config.conflist)?;
        exec::check_plugins(&list, &config.plugin_dirs)?;
        if config.ifname.is_empty() || config.ifname.len() > 15 {
            return Err(NetError::Config(format!(
                "cni ifname {:?} must be 1 to 15 characters",
                config.ifname
            )));
        }
        let database = env.database.clone();
        let store = Arc::new(blocking(move || Ok(IpamStore::open(&database)?)).await?);
        Ok(CniDriver {
            config,
            list,
            env,
            store,
        })
    }

    /// The network name the conflist declares.
    pub fn network_name(&self) -> &str {
        &self.list.name
    }

    /// Host-port claims live beside the bridge driver's, under this name.
    fn claims_network(&self) -> String {
        format!("cni:{}", self.list.name)
    }

    fn invocation(&self, pod: &PodNetwork, published: &[ports::PortMapping]) -> Invocation {
        Invocation {
            container_id: pod.pod_id.clone(),
            netns: netns_path(&self.env.netns_dir, &pod.pod_id),
            ifname: self.config.ifname.clone(),
            args: exec::cni_args(&pod.namespace, &pod.name, &pod.pod_id),
            port_mappings: exec::port_mappings(published),
            plugin_dirs: self.config.plugin_dirs.clone(),
            timeout: Duration::from_secs(self.config.plugin_timeout_secs),
        }
    }

    fn cache_entry(
        &self,
        inv: &Invocation,
        list: &ConfList,
        result: Option<serde_json::Value>,
    ) -> cache::CacheEntry {
        cache::CacheEntry {
            network_name: list.name.clone(),
            container_id: inv.container_id.clone(),
            if_name: inv.ifname.clone(),
            netns: inv.netns.clone(),
            cni_args: inv.args.clone(),
            port_mappings: inv.port_mappings.clone(),
            config: list.raw.clone(),
            result,
        }
    }

    async fn setup_pod(&self, pod: &PodNetwork) -> Result<NetworkStatus, NetError> {
        driver::validate_pod_id(&pod.pod_id)?;
        let published = ports::published(&pod.ports);
        let resolv = driver::pod_resolv_conf(pod, false)?;
        let (store, network, id, wanted) = (
            self.store.clone(),
            self.claims_network(),
            pod.pod_id.clone(),
            published.clone(),
        );
        blocking(move || Ok(store.claim_ports(&network, &id, &wanted)?)).await?;

        let inv = self.invocation(pod, &published);
        let path = inv.netns.clone();
        blocking(move || Ok(ns::create(NsKind::Net, &path)?)).await?;
        netlink::in_netns(&inv.netns, |nl| async move {
            nl.set_up("lo", None).await.map(|_| ())
        })
        .await?;

        // Recorded before ADD so that a crash during ADD still leads to DEL.
        cache::write(
            &self.env.cni_cache_dir,
            &self.cache_entry(&inv, &self.list, None),
        )?;
        let mut prev: Option<serde_json::Value> = None;
        for plugin in &self.list.plugins {
            let stdin = exec::plugin_config(&self.list, plugin, prev.as_ref(), &inv);
            let result =
                exec::run(CniCommand::Add, conf::plugin_type(plugin), &stdin, &inv).await?;
            prev = result.or(prev);
        }
        let final_result = prev.ok_or_else(|| CniError::BadResult {
            container_id: pod.pod_id.clone(),
            problem: "no result".to_string(),
        })?;
        cache::write(
            &self.env.cni_cache_dir,
            &self.cache_entry(&inv, &self.list, Some(final_result.clone())),
        )?;
        let parsed =
            result::CniResult::parse(&final_result).map_err(|problem| CniError::BadResult {
                container_id: pod.pod_id.clone(),
                problem,
            })?;
        let ips = parsed.pod_ips(&inv.ifname);
        let pod_ips: Vec<IpAddr> = ips.iter().map(|ip| ip.address.addr()).collect();
        Ok(NetworkStatus {
            driver: "cni".to_string(),
            netns: Some(inv.netns.clone()),
            interface: Some(inv.ifname.clone()),
            ips,
            ports: published,
            resolv_conf: resolv.text,
            hosts: dns::hosts(&pod_ips, &pod.hostname, &pod.host_aliases),
            warnings: resolv.warnings,
        })
    }

    /// DEL through the chain ADD ran (from the cache), in reverse order,
    /// then the netns and port claims. Every step runs; errors are collected.
    async fn teardown_pod(&self, pod_id: &str) -> Result<(), NetError> {
        driver::validate_pod_id(pod_id)?;
        let mut errors: Vec<NetError> = Vec::new();
        let cache_dir = &self.env.cni_cache_dir;
        match cache::read(cache_dir, &self.list.name, pod_id, &self.config.ifname) {
            Ok(Some(entry)) => match self.delete_chain(&entry).await {
                Ok(()) => {
                    if let Err(err) =
                        cache::remove(cache_dir, &self.list.name, pod_id, &self.config.ifname)
                    {
                        errors.push(err.into());
                    }
                }
                Err(mut failures) => errors.append(&mut failures),
            },
            Ok(None) => {}
            Err(err) => errors.push(err.into()),
        }
        let path = netns_path(&self.env.netns_dir, pod_id);
        if let Err(err) = blocking(move || Ok(ns::remove(&path)?)).await {
            errors.push(err);
        }
        let (store, network, id) = (
            self.store.clone(),
            self.claims_network(),
            pod_id.to_string(),
        );
        if let Err(err) = blocking(move || Ok(store.release(&network, &id)?)).await {
            errors.push(err);
        }
        teardown_result(pod_id, errors)
    }

    async fn delete_chain(&self, entry: &cache::CacheEntry) -> Result<(), Vec<NetError>> {
        let list = ConfList::from_value(entry.config.clone(), &self.config.conflist)
            .map_err(|err| vec![err.into()])?;
        let inv = Invocation {
            container_id: entry.container_id.clone(),
            netns: entry.netns.clone(),
            ifname: entry.if_name.clone(),
            args: entry.cni_args.clone(),
            port_mappings: entry.port_mappings.clone(),
            plugin_dirs: self.config.plugin_dirs.clone(),
            timeout: Duration::from_secs(self.config.plugin_timeout_secs),
        };
        let mut errors = Vec::new();
        for plugin in list.plugins.iter().rev() {
            let stdin = exec::plugin_config(&list, plugin, entry.result.as_ref(), &inv);
            if let Err(err) =
                exec::run(CniCommand::Del, conf::plugin_type(plugin), &stdin, &inv).await
            {
                errors.push(err.into());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    async fn check_pod(&self, pod: &PodNetwork) -> Result<(), NetError> {
        let problem = |problem: String| NetError::Check {
            pod_id: pod.pod_id.clone(),
            problem,
        };
        let entry = cache::read(
            &self.env.cni_cache_dir,
            &self.list.name,
            &pod.pod_id,
            &self.config.ifname,
        )?
        .ok_or_else(|| problem("it has no CNI result (never set up, or torn down)".to_string()))?;
        let result = entry
            .result
            .clone()
            .ok_or_else(|| problem("its CNI ADD never finished".to_string()))?;
        if !ns::is_namespace(&entry.netns) {
            return Err(problem(format!(
                "its network namespace {} is gone",
                entry.netns.display()
            )));
        }
        let list = ConfList::from_value(entry.config.clone(), &self.config.conflist)?;
        if !list.supports_check() {
            return Ok(());
        }
        let inv = Invocation {
            port_mappings: entry.port_mappings.clone(),
            ..self.invocation(pod, &[])
        };
        for plugin in &list.plugins {
            let stdin = exec::plugin_config(&list, plugin, Some(&result), &inv);
            exec::run(CniCommand::Check, conf::plugin_type(plugin), &stdin, &inv).await?;
        }
        Ok(())
    }

    async fn cleanup(&self, alive: &HashSet<String>) -> Result<CleanupReport, NetError> {
        let mut report = CleanupReport::default();
        let mut errors = Vec::new();
        for entry in cache::list(&self.env.cni_cache_dir, &self.list.name) {
            if alive.contains(&entry.container_id) {
                continue;
            }
            match self.teardown_pod(&entry.container_id).await {
                Ok(()) => report.pods.push(entry.container_id),
                Err(err) => errors.push(err),
            }
        }
        driver::remove_orphan_netns(&self.env.netns_dir, alive, &mut report, &mut errors).await;
        let (store, network, alive_ids) =
            (self.store.clone(), self.claims_network(), alive.clone());
        match blocking(move || Ok(store.reclaim(&network, &alive_ids)?)).await {
            Ok(pods) => report.pods.extend(pods),
            Err(err) => errors.push(err),
        }
        report.pods.sort();
        report.pods.dedup();
        driver::cleanup_result(report, errors)
    }
}

impl NetworkDriver for CniDriver {
    fn name(&self) -> &'static str {
        "cni"
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
        self.check_pod(pod).boxed()
    }

    fn cleanup_orphans<'a>(
        &'a self,
        alive: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<CleanupReport, NetError>> {
        self.cleanup(alive).boxed()
    }
}
