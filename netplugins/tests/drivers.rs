//! The `host` and `none` drivers, and host-port claims across drivers (root).

mod support;

use std::collections::HashSet;
use std::net::IpAddr;

use berth_e2e::require_root;
use netplugins::driver::NetworkDriver;
use netplugins::factory::{DriverKind, NetworkConfig, build};
use netplugins::ports::Protocol;
use support::{TestNet, host_port, pod, run};

fn config(net: &TestNet) -> NetworkConfig {
    NetworkConfig {
        bridge: net.config.clone(),
        ..NetworkConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pods_see_the_hosts_interfaces_and_files() {
    require_root();
    let net = TestNet::new();
    let host = build(DriverKind::Host, &config(&net), &net.env)
        .await
        .expect("host driver");
    let mut p = pod("hostnet");
    p.host_aliases = vec![netplugins::dns::HostAlias {
        ip: "10.9.9.9".parse().expect("ip"),
        hostnames: vec!["alias.local".into()],
    }];
    let status = host.setup(&p).await.expect("setup");
    assert_eq!(status.netns, None, "containers join the host's namespace");
    assert_eq!(status.driver, "host");
    let primary = IpAddr::V4(support::primary_address());
    assert!(
        status.pod_ips().contains(&primary),
        "{:?}",
        status.pod_ips()
    );
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(
        status.hosts.starts_with(host_hosts.trim_end()),
        "{}",
        status.hosts
    );
    assert!(status.hosts.contains("10.9.9.9\talias.local"));
    host.check(&p).await.expect("check");
    host.teardown(&p).await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_pods_have_only_loopback_and_it_is_up() {
    require_root();
    let net = TestNet::new();
    let none = build(DriverKind::None, &config(&net), &net.env)
        .await
        .expect("none driver");
    let status = none.setup(&pod("isolated")).await.expect("setup");
    let netns = status.netns.clone().expect("own netns");
    assert!(status.ips.is_empty());
    let links = run(
        "nsenter",
        &[
            &format!("--net={}", netns.display()),
            "ip",
            "-o",
            "link",
            "show",
        ],
    );
    let names: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(names, vec!["lo"], "{links}");
    assert!(links.contains("UP"), "lo is up: {links}");
    none.check(&pod("isolated")).await.expect("check");

    // An orphan (not alive) is cleaned, an alive one kept.
    none.setup(&pod("kept")).await.expect("setup kept");
    let alive: HashSet<String> = ["kept".to_string()].into();
    let report = none.cleanup_orphans(&alive).await.expect("cleanup");
    assert_eq!(report.netns, vec![netns.clone()]);
    assert!(!netns.exists());
    none.check(&pod("kept")).await.expect("kept");
    none.teardown(&pod("kept")).await.expect("teardown");
    assert!(support::mounts_under(&net.env.netns_dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_port_blocks_the_same_host_port_on_the_bridge() {
    require_root();
    let net = TestNet::new();
    let port = support::free_port();
    let host = build(DriverKind::Host, &config(&net), &net.env)
        .await
        .expect("host driver");
    let bridge = net.driver().await;
    let mut listener = pod("host-listener");
    listener.ports = vec![host_port(port, 0, Protocol::Tcp, None)];
    host.setup(&listener).await.expect("setup host pod");
    let mut web = pod("bridged-web");
    web.ports = vec![host_port(80, port, Protocol::Tcp, None)];
    let err = bridge.setup(&web).await.expect_err("conflict");
    assert!(err.to_string().contains("host-listener"), "{err}");
    host.teardown(&listener).await.expect("teardown host pod");
    bridge.setup(&web).await.expect("free now");
    bridge.teardown(&web).await.expect("teardown");
}
