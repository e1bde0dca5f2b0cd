//! The `cni` driver with Debian's containernetworking-plugins (root):
//! bridge + host-local + portmap, with a bridge name, subnet and host-local
//! data dir of this test's own.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use berth_e2e::require_root;
use netplugins::driver::NetworkDriver;
use netplugins::ports::Protocol;
use support::{CniNet, host_port, pod, tcp_ask, tcp_echo};

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
