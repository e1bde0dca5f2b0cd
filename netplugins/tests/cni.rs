//! The `cni` driver with Debian's containernetworking-plugins (root):
//! bridge + host-local + portmap, with a bridge name, subnet and host-local
//! data dir of this test's own.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;

use berth_e2e::{require_root, unique_name};
use netplugins::cni::{CniConfig, CniDriver};
use netplugins::driver::NetworkDriver;
use netplugins::ports::Protocol;
use support::{TestNet, host_port, pod, tcp_ask, tcp_echo};

/// A CNI network of the test's own; its bridge is deleted on drop (the
/// bridge plugin leaves it on DEL, as it should for other pods).
struct CniNet {
    net: TestNet,
    bridge: String,
    config: CniConfig,
}

impl CniNet {
    fn new() -> Self {
        let net = TestNet::new();
        let bridge = unique_name("cni");
        let conflist = net.dir.path().join("test.conflist");
        let list = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": net.config.network,
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.config.subnet.to_string()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": net.dir.path().join("host-local").display().to_string()
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(&conflist, serde_json::to_vec_pretty(&list).expect("json"))
            .expect("write conflist");
        let config = CniConfig {
            conflist,
            ..CniConfig::default()
        };
        CniNet {
            net,
            bridge,
            config,
        }
    }

    async fn driver(&self) -> CniDriver {
        CniDriver::new(self.config.clone(), self.net.env.clone())
            .await
            .expect("cni driver")
    }

    /// Ports of the CNI bridge (the pods' host-side veths).
    fn bridge_ports(&self) -> usize {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// Address leases host-local keeps on disk.
    fn host_local_leases(&self) -> usize {
        let dir = self
            .net
            .dir
            .path()
            .join("host-local")
            .join(&self.net.config.network);
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<IpAddr>().is_ok())
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for CniNet {
    /// DEL every pod the cache still knows (a failed test leaves iptables
    /// rules and host-local leases otherwise), then delete the bridge.
    fn drop(&mut self) {
        let (config, env) = (self.config.clone(), self.net.env.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(driver) = CniDriver::new(config, env).await {
                    let _ = driver.cleanup_orphans(&Default::default()).await;
                }
            });
        })
        .join();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn cache_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("results"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_plugin_chain_gives_a_working_pod_and_del_cleans_up() {
    require_root();
    let cni = CniNet::new();
    let driver = cni.driver().await;
    let port = support::free_port();
    let mut web = pod("cni-web");
    web.ports = vec![host_port(8080, port, Protocol::Tcp, None)];
    let status = driver.setup(&web).await.expect("ADD");
    assert_eq!(status.driver, "cni");
    let ip = status.pod_ips()[0];
    assert!(
        ipnet::IpNet::from(cni.net.config.subnet).contains(&ip),
        "{ip} from host-local's range"
    );
    assert_eq!(status.ips[0].gateway, Some(IpAddr::V4(cni.net.gateway())));
    assert_eq!(cni.host_local_leases(), 1);
    assert_eq!(cache_files(&cni.net.env.cni_cache_dir), 1);

    let netns = status.netns.clone().expect("netns");
    tcp_echo(Some(&netns), SocketAddr::new(ip, 8080), "cni");
    let reply = tcp_ask(None, SocketAddr::new(ip, 8080), "direct").expect("host -> pod");
    assert_eq!(reply, "cni:direct");
    let primary = IpAddr::V4(support::primary_address());
    let reply =
        tcp_ask(None, SocketAddr::new(primary, port), "mapped").expect("hostPort through portmap");
    assert_eq!(reply, "cni:mapped");

    // CHECK of a pod with host ports is not asserted: Debian's portmap
    // 1.1.1 fails it for IPv4-only pods (containernetworking/plugins#819,
    // it looks for ip6tables rules it never made). The orphan test below
    // runs CHECK through the whole chain for a pod without host ports.
    let mut rival = pod("cni-rival");
    rival.ports = vec![host_port(80, port, Protocol::Tcp, None)];
    let err = driver.setup(&rival).await.expect_err("conflict");
    assert!(err.to_string().contains("cni-web"), "{err}");
    assert_eq!(cni.host_local_leases(), 1, "the rival got no address");

    driver.teardown(&web).await.expect("DEL");
    assert_eq!(cni.bridge_ports(), 0, "veth gone");
    assert_eq!(cni.host_local_leases(), 0, "lease released");
    assert_eq!(
        cache_files(&cni.net.env.cni_cache_dir),
        0,
        "cache entry gone"
    );
    assert!(support::mounts_under(&cni.net.env.netns_dir).is_empty());
    assert!(tcp_ask(None, SocketAddr::new(primary, port), "gone").is_err());
    driver.teardown(&web).await.expect("DEL again is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_the_cni_chain_are_deleted_through_the_cache() {
    require_root();
    let cni = CniNet::new();
    let driver = cni.driver().await;
    driver.setup(&pod("cni-orphan")).await.expect("ADD");
    driver.setup(&pod("cni-alive")).await.expect("ADD");
    assert_eq!(cni.bridge_ports(), 2);

    // A new driver (an agent restart) learns what to delete from the cache.
    let restarted = cni.driver().await;
    let alive = ["cni-alive".to_string()].into();
    let report = restarted.cleanup_orphans(&alive).await.expect("cleanup");
    assert_eq!(report.pods, vec!["cni-orphan"]);
    assert_eq!(cni.bridge_ports(), 1);
    assert_eq!(cni.host_local_leases(), 1);
    restarted
        .check(&pod("cni-alive"))
        .await
        .expect("alive pod untouched");
    restarted.teardown(&pod("cni-alive")).await.expect("DEL");
    assert_eq!(cni.bridge_ports(), 0);
}
