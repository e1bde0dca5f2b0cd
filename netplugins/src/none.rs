//! The `none` driver: the pod gets a network namespace of its own with
//! only `lo` (up), for workloads that must not talk to the network.

use std::collections::HashSet;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::dns;
use crate::driver::{
    self, CleanupReport, Environment, NetError, NetworkDriver, NetworkStatus, PodNetwork,
    netns_path, teardown_result,
};
use crate::netlink;
use crate::ns::{self, NsKind};

pub struct NoneDriver {
    env: Environment,
}

impl NoneDriver {
    pub fn new(env: Environment) -> Self {
        NoneDriver { env }
    }

    async fn setup_pod(&self, pod: &PodNetwork) -> Result<NetworkStatus, NetError> {
        driver::validate_pod_id(&pod.pod_id)?;
        let resolv = driver::pod_resolv_conf(pod, false)?;
        let netns = netns_path(&self.env.netns_dir, &pod.pod_id);
        let path = netns.clone();
        driver::blocking(move || Ok(ns::create(NsKind::Net, &path)?)).await?;
        netlink::in_netns(&netns, |nl| async move {
            nl.set_up("lo", None).await.map(|_| ())
        })
        .await?;
        let mut warnings = resolv.warnings;
        if !pod.ports.is_empty() {
            warnings.push("hostPorts are ignored: the pod's network is `none`".to_string());
        }
        Ok(NetworkStatus {
            driver: "none".to_string(),
            netns: Some(netns),
            interface: None,
            ips: Vec::new(),
            ports: Vec::new(),
            resolv_conf: resolv.text,
            hosts: dns::hosts(&[], &pod.hostname, &pod.host_aliases),
            warnings,
        })
    }

    /// Unmounts and removes the pod's netns file, on a blocking thread.
    async fn remove(&self, pod_id: &str) -> Result<(), NetError> {
        driver::validate_pod_id(pod_id)?;
        let path = netns_path(&self.env.netns_dir, pod_id);
        let result = driver::blocking(move || Ok(ns::remove(&path)?)).await;
        teardown_result(pod_id, result.err().into_iter().collect())
    }
}

impl NetworkDriver for NoneDriver {
    fn name(&self) -> &'static str {
        "none"
    }

    fn setup<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<NetworkStatus, NetError>> {
        driver::setup_or_undo(&pod.pod_id, self.setup_pod(pod), || {
            self.remove(&pod.pod_id)
        })
        .boxed()
    }

    fn teardown<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), NetError>> {
        async move { self.remove(&pod.pod_id).await }.boxed()
    }

    fn check<'a>(&'a self, pod: &'a PodNetwork) -> BoxFuture<'a, Result<(), NetError>> {
        async move {
            driver::validate_pod_id(&pod.pod_id)?;
            let netns = netns_path(&self.env.netns_dir, &pod.pod_id);
            if ns::is_namespace(&netns) {
                Ok(())
            } else {
                Err(NetError::Check {
                    pod_id: pod.pod_id.clone(),
                    problem: format!("its network namespace {} is gone", netns.display()),
                })
            }
        }
        .boxed()
    }

    fn cleanup_orphans<'a>(
        &'a self,
        alive: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<CleanupReport, NetError>> {
        async move {
            let mut report = CleanupReport::default();
            let mut errors = Vec::new();
            driver::remove_orphan_netns(&self.env.netns_dir, alive, &mut report, &mut errors).await;
            driver::cleanup_result(report, errors)
        }
        .boxed()
    }
}
