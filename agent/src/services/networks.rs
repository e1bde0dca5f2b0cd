//! The agent's pod network drivers: the configured default for ordinary
//! pods and `host` for `hostNetwork: true` ones, as the pod layer's
//! [`Networks`](crate::pod::host::Networks).
//!
//! A driver that cannot be built (no `nft`, a subnet that overlaps a LAN
//! route) does not stop the agent: the pods that need it report why, and
//! the others run.

use std::collections::HashSet;

use futures::future::BoxFuture;
use netplugins::bridge::{BridgeDriver, SetupStage};
use netplugins::driver::{
    CleanupReport, Environment, NetError, NetworkDriver, NetworkStatus, PodNetwork,
};
use netplugins::factory::{DriverKind, NetworkConfig, build};
use netplugins::ipam::IpamError;
use netplugins::ports::PortError;

use crate::paths::Paths;
use crate::pod::host::{HostError, HostResult, Networks, Repaired};
use crate::pod::state::PodState;

#[derive(Debug, thiserror::Error)]
#[error("the {driver} network driver is not available: {reason}")]
pub struct Unavailable {
    driver: String,
    reason: String,
}

/// The agent's network drivers.
pub struct NetworkDrivers {
    kind: DriverKind,
    default: Result<Box<dyn NetworkDriver>, String>,
    host: Result<Box<dyn NetworkDriver>, String>,
    /// Where pod records are, to name the pod holding a host port.
    paths: Paths,
}

impl NetworkDrivers {
    /// Builds the drivers of `[network]`; a failure is kept and reported
    /// by the pods that need that driver.
    pub async fn new(config: &NetworkConfig, paths: &Paths) -> Self {
        let env = Environment {
            database: paths.database(),
            netns_dir: paths.netns(),
            cni_cache_dir: paths.cni_cache(),
        };
        let default = if config.driver == DriverKind::Host {
            Err("driver \"host\" cannot be the default; set hostNetwork: true on the pods that need it".to_string())
        } else {
            build_default(config, &env)
                .await
                .map_err(|err| crate::status::chain(&err))
        };
        let host = build(DriverKind::Host, config, &env)
            .await
            .map_err(|err| crate::status::chain(&err));
        for (name, result) in [("default", &default), ("host", &host)] {
            if let Err(reason) = result {
                tracing::warn!(driver = name, %reason, "a network driver is not available");
            }
        }
        Self {
            kind: config.driver,
            default,
            host,
            paths: paths.clone(),
        }
    }

    /// The driver for a pod.
    pub fn for_pod(&self, host_network: bool) -> Result<&dyn NetworkDriver, Unavailable> {
        let (result, name) = if host_network {
            (&self.host, "host".to_string())
        } else {
            (&self.default, format!("{:?}", self.kind).to_lowercase())
        };
        result.as_deref().map_err(|reason| Unavailable {
            driver: name,
            reason: reason.clone(),
        })
    }

    /// Problems building drivers, for the agent's start-up event.
    pub fn problems(&self) -> Vec<String> {
        [&self.default, &self.host]
            .into_iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect()
    }

    /// A driver's error with the pod holding a conflicting host port named
    /// (see [`explain`]).
    async fn explained(&self, err: NetError) -> HostError {
        let paths = self.paths.clone();
        tokio::task::spawn_blocking(move || explain(&err, &paths))
            .await
            .unwrap_or_else(|join| format!("network driver error (explaining it failed: {join})"))
            .into()
    }
}

impl Networks for NetworkDrivers {
    fn setup<'a>(
        &'a self,
        request: &'a PodNetwork,
        host_network: bool,
    ) -> BoxFuture<'a, HostResult<NetworkStatus>> {
        Box::pin(async move {
            let driver = self.for_pod(host_network)?;
            match driver.setup(request).await {
                Ok(status) => Ok(status),
                Err(err) => Err(self.explained(err).await),
            }
        })
    }

    fn verify<'a>(
        &'a self,
        request: &'a PodNetwork,
        host_network: bool,
    ) -> BoxFuture<'a, HostResult<Option<Repaired>>> {
        Box::pin(async move {
            // A driver that cannot be built now cannot check either; the
            // pods it set up keep running.
            let Ok(driver) = self.for_pod(host_network) else {
                return Ok(None);
            };
            match verify(driver, request).await {
                Ok(repaired) => Ok(repaired),
                Err(err) => Err(self.explained(err).await),
            }
        })
    }

    fn teardown<'a>(
        &'a self,
        request: &'a PodNetwork,
        host_network: bool,
    ) -> BoxFuture<'a, HostResult<()>> {
        Box::pin(async move {
            self.for_pod(host_network)?.teardown(request).await?;
            Ok(())
        })
    }

    /// Removes the network state of pods not in `alive` from every
    /// available driver; all run even if one fails.
    fn cleanup_orphans<'a>(&'a self, alive: &'a HashSet<String>) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let mut problems = Vec::new();
            for driver in [&self.default, &self.host].into_iter().flatten() {
                match driver.cleanup_orphans(alive).await {
                    Ok(report) => log_cleanup(driver.name(), &report),
                    Err(err) => problems.push(crate::status::chain(&err)),
                }
            }
            problems
        })
    }
}

/// Checks a pod network set up earlier and, when it is not as set up (a
/// firewall reload took berth's table, someone deleted the veth), runs the
/// driver's setup again: it is idempotent and repairs in place, keeping
/// the pod's netns and address, so the containers keep running.
///
/// CNI networks are left to their plugins: CHECK runs the whole chain,
/// Debian's portmap 1.1.1 fails it for every IPv4 pod with hostPorts
/// (containernetworking/plugins#819), and a chain must not be ADDed twice.
pub async fn verify(
    driver: &dyn NetworkDriver,
    request: &PodNetwork,
) -> Result<Option<Repaired>, NetError> {
    if driver.name() == "cni" {
        return Ok(None);
    }
    let Err(problem) = driver.check(request).await else {
        return Ok(None);
    };
    let problem = crate::status::chain(&problem);
    tracing::warn!(pod_id = %request.pod_id, %problem, "the pod's network is broken; setting it up again");
    let status = driver.setup(request).await?;
    Ok(Some(Repaired { problem, status }))
}

/// Test-only: with `BERTH_TEST_PAUSE_NETWORK_AT=<stage>` (`namespace`,
/// `lease`, `veth`, `pod-interface` or `firewall`), the bridge driver stops
/// for good at that stage of the next pod's setup and prints
/// `berth: paused at network stage <stage>` on stderr, so a crash test can
/// kill -9 the agent exactly there. Debug builds only: release builds
/// ignore the variable (with a warning), so it is never active by accident.
pub const PAUSE_ENV: &str = "BERTH_TEST_PAUSE_NETWORK_AT";

fn pause_stage() -> Option<SetupStage> {
    let value = std::env::var(PAUSE_ENV).ok()?;
    if !cfg!(debug_assertions) {
        tracing::warn!("{PAUSE_ENV} is set but ignored: the test pause works in debug builds only");
        return None;
    }
    let stage = SetupStage::from_name(&value);
    match stage {
        Some(_) => tracing::warn!(
            stage = %value,
            "{PAUSE_ENV}: TEST HOOK ACTIVE, pod network setup will stop at this stage for good"
        ),
        None => tracing::warn!(stage = %value, "{PAUSE_ENV}: unknown stage, ignored"),
    }
    stage
}

/// The configured default driver (with the test pause, if asked for, and
/// its setup stages as crash points while those are counted).
async fn build_default(
    config: &NetworkConfig,
    env: &Environment,
) -> Result<Box<dyn NetworkDriver>, NetError> {
    let pause = pause_stage();
    let crash_points = crate::fsutil::crash::armed();
    if config.driver != DriverKind::Bridge || (pause.is_none() && !crash_points) {
        return build(config.driver, config, env).await;
    }
    let driver = BridgeDriver::new(config.bridge.clone(), env.clone()).await?;
    Ok(Box::new(driver.with_stage_hook(move |reached| {
        if crash_points {
            crate::fsutil::crash_point("network stage passed", &reached.name());
        }
        if pause == Some(reached) {
            eprintln!("berth: paused at network stage {}", reached.name());
            // Parks this worker thread until the test kills the agent.
            loop {
                std::thread::park();
            }
        }
    })))
}

fn log_cleanup(driver: &str, report: &CleanupReport) {
    if !(report.pods.is_empty() && report.links.is_empty() && report.netns.is_empty()) {
        tracing::info!(
            driver,
            pods = ?report.pods,
            links = ?report.links,
            netns = ?report.netns,
            "removed the network state of pods that no longer exist"
        );
    }
}

/// A driver's error as the pod's status shows it. Drivers know pods only
/// by uid, so a hostPort conflict is reworded to name the pod that holds
/// the port by namespace/name (from the pods' records).
pub fn explain(err: &NetError, paths: &Paths) -> String {
    explain_with(err, |uid| {
        let (states, _) = PodState::list(paths);
        states
            .iter()
            .find(|state| state.incarnations().any(|i| i.uid == uid))
            .map(|state| format!("{}/{}", state.namespace, state.name))
    })
}

fn explain_with(err: &NetError, owner_of: impl Fn(&str) -> Option<String>) -> String {
    match port_conflict(err) {
        Some(PortError::Conflict {
            wanted,
            held,
            holder,
        }) => {
            let owner = owner_of(holder).unwrap_or_else(|| format!("with uid {holder}"));
            format!(
                "hostPort {wanted} is already held by pod {owner} ({held}); pick another hostPort or hostIP"
            )
        }
        _ => crate::status::chain(err),
    }
}

/// The hostPort conflict that made a setup fail, unless undoing the setup
/// failed too (then the whole chain is worth reading).
fn port_conflict(err: &NetError) -> Option<&PortError> {
    match err {
        NetError::Setup {
            error, rollback, ..
        } if rollback.is_empty() => port_conflict(error),
        NetError::Ipam(IpamError::Ports { source, .. }) | NetError::Ports { source, .. } => {
            matches!(source, PortError::Conflict { .. }).then_some(source)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netplugins::ports::{PortMapping, Protocol};

    /// A driver whose check fails or not, counting setups (pure logic of
    /// [`verify`]; the real repair is proven end to end).
    struct Fake {
        name: &'static str,
        broken: bool,
        setups: std::sync::atomic::AtomicUsize,
    }

    impl NetworkDriver for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn setup<'a>(
            &'a self,
            _: &'a PodNetwork,
        ) -> futures::future::BoxFuture<'a, Result<NetworkStatus, NetError>> {
            self.setups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(NetworkStatus::default()) })
        }
        fn teardown<'a>(
            &'a self,
            _: &'a PodNetwork,
        ) -> futures::future::BoxFuture<'a, Result<(), NetError>> {
            Box::pin(async { Ok(()) })
        }
        fn check<'a>(
            &'a self,
            pod: &'a PodNetwork,
        ) -> futures::future::BoxFuture<'a, Result<(), NetError>> {
            let broken = self.broken.then(|| NetError::Check {
                pod_id: pod.pod_id.clone(),
                problem: "veth x is gone".into(),
            });
            Box::pin(async move { broken.map_or(Ok(()), Err) })
        }
        fn cleanup_orphans<'a>(
            &'a self,
            _: &'a HashSet<String>,
        ) -> futures::future::BoxFuture<'a, Result<CleanupReport, NetError>> {
            Box::pin(async { Ok(CleanupReport::default()) })
        }
    }

    #[tokio::test]
    async fn verify_sets_up_again_only_what_its_check_finds_broken_and_leaves_cni_alone() {
        let pod = PodNetwork {
            pod_id: "uid1".into(),
            ..PodNetwork::default()
        };
        for (name, broken, repairs) in [("bridge", false, 0), ("bridge", true, 1), ("cni", true, 0)]
        {
            let driver = Fake {
                name,
                broken,
                setups: Default::default(),
            };
            let verified = verify(&driver, &pod).await.expect("verify");
            assert_eq!(
                driver.setups.load(std::sync::atomic::Ordering::SeqCst),
                repairs,
                "{name} broken={broken}"
            );
            match verified {
                Some(repaired) => assert!(repaired.problem.contains("veth x is gone")),
                None => assert_eq!(repairs, 0),
            }
        }
    }

    #[test]
    fn a_host_port_conflict_names_the_holder_by_namespace_and_name() {
        let mapping = |host_ip: Option<&str>| PortMapping {
            container_port: 80,
            host_port: 8080,
            host_ip: host_ip.map(|ip| ip.parse().expect("ip")),
            protocol: Protocol::Tcp,
        };
        let conflict = NetError::Setup {
            pod_id: "uid2".into(),
            error: Box::new(NetError::Ipam(IpamError::Ports {
                pod_id: "uid2".into(),
                source: PortError::Conflict {
                    wanted: mapping(Some("127.0.0.1")),
                    held: mapping(None),
                    holder: "uid1".into(),
                },
            })),
            rollback: Vec::new(),
        };
        let owner = |uid: &str| (uid == "uid1").then(|| "default/first".to_string());
        assert_eq!(
            explain_with(&conflict, owner),
            "hostPort 127.0.0.1:8080->80/tcp is already held by pod default/first (8080->80/tcp); pick another hostPort or hostIP"
        );
        let text = explain_with(&conflict, |_| None);
        assert!(text.contains("pod with uid uid1"), "{text}");
        let other = NetError::Config("no bridge".into());
        assert_eq!(explain_with(&other, owner), crate::status::chain(&other));
    }
}
