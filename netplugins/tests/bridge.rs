//! The bridge driver against the real kernel (root): real namespaces, a
//! real bridge and veths, real nftables, real sockets inside the pods.

mod support;

use std::net::{IpAddr, SocketAddr};

use berth_e2e::require_root;
use netplugins::driver::{NetError, NetworkDriver};
use netplugins::ports::Protocol;
use support::{TestNet, host_port, pod, tcp_ask, tcp_echo};

fn pod_ip(status: &netplugins::driver::NetworkStatus) -> IpAddr {
    status.pod_ips()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_reach_each_other_and_the_host() {
    require_root();
    let net = TestNet::new();
    let driver = net.driver().await;
    let a = driver.setup(&pod("pod-a")).await.expect("setup a");
    let b = driver.setup(&pod("pod-b")).await.expect("setup b");
    assert_ne!(pod_ip(&a), pod_ip(&b));
    assert_eq!(a.interface.as_deref(), Some("eth0"));
    assert_eq!(a.ips[0].gateway, Some(IpAddr::V4(net.gateway())));
    assert!(
        a.hosts.contains(&format!("{}\tpod-a", pod_ip(&a))),
        "{}",
        a.hosts
    );

    let netns_a = a.netns.clone().expect("netns");
    let netns_b = b.netns.clone().expect("netns");
    tcp_echo(Some(&netns_a), SocketAddr::new(pod_ip(&a), 7000), "a");
    let reply = tcp_ask(Some(&netns_b), SocketAddr::new(pod_ip(&a), 7000), "hi").expect("b -> a");
    assert_eq!(reply, "a:hi");

    // The host, through the bridge address.
    let host = tcp_echo(None, SocketAddr::new(IpAddr::V4(net.gateway()), 0), "host");
    let reply = tcp_ask(Some(&netns_a), host, "hello").expect("a -> host");
    assert_eq!(reply, "host:hello");

    driver.check(&pod("pod-a")).await.expect("check a");
    for id in ["pod-a", "pod-b"] {
        driver.teardown(&pod(id)).await.expect("teardown");
    }
    assert!(net.our_links().is_empty(), "{:?}", net.our_links());
    assert!(support::mounts_under(&net.env.netns_dir).is_empty());
    assert_eq!(net.lease_count(), 0);
    assert_eq!(net.rule_count(), 0, "the table goes with the last pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_answer_on_localhost_the_primary_address_and_from_pods() {
    require_root();
    let net = TestNet::new();
    let driver = net.driver().await;
    let (tcp_port, udp_port) = (support::free_port(), support::free_port());
    let mut web = pod("web");
    web.ports = vec![
        host_port(8080, tcp_port, Protocol::Tcp, None),
        host_port(5353, udp_port, Protocol::Udp, None),
    ];
    let status = driver.setup(&web).await.expect("setup web");
    assert_eq!(status.ports.len(), 2);
    let netns = status.netns.clone().expect("netns");
    tcp_echo(Some(&netns), SocketAddr::new(pod_ip(&status), 8080), "web");
    support::udp_echo(Some(&netns), SocketAddr::new(pod_ip(&status), 5353), "dns");

    let primary = support::primary_address();
    for target in [IpAddr::from([127, 0, 0, 1]), IpAddr::V4(primary)] {
        let reply =
            tcp_ask(None, SocketAddr::new(target, tcp_port), "GET").expect("host -> hostPort");
        assert_eq!(reply, "web:GET", "via {target}");
    }
    let reply =
        support::udp_ask(SocketAddr::new([127, 0, 0, 1].into(), udp_port), "q").expect("udp");
    assert_eq!(reply, "dns:q");
    let reply = support::udp_ask(SocketAddr::new(IpAddr::V4(primary), udp_port), "q2")
        .expect("udp primary");
    assert_eq!(reply, "dns:q2");

    // Hairpin: another pod on the same bridge, through the host's address.
    let client = driver.setup(&pod("client")).await.expect("setup client");
    let client_ns = client.netns.clone().expect("netns");
    let reply = tcp_ask(
        Some(&client_ns),
        SocketAddr::new(IpAddr::V4(primary), tcp_port),
        "hairpin",
    )
    .expect("pod -> host:hostPort");
    assert_eq!(reply, "web:hairpin");
    // And the pod itself through its own host port.
    let reply = tcp_ask(
        Some(&netns),
        SocketAddr::new(IpAddr::V4(primary), tcp_port),
        "self",
    )
    .expect("self");
    assert_eq!(reply, "web:self");

    let with_ports = net.rule_count();
    driver
        .teardown(&pod("client"))
        .await
        .expect("teardown client");
    assert_eq!(net.rule_count(), with_ports, "client had no ports");
    driver.teardown(&web).await.expect("teardown web");
    assert_eq!(net.rule_count(), 0);
    assert!(
        tcp_ask(
            None,
            SocketAddr::new([127, 0, 0, 1].into(), tcp_port),
            "gone"
        )
        .is_err(),
        "the host port is closed after teardown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ip_limits_a_host_port_to_that_address() {
    require_root();
    let net = TestNet::new();
    let driver = net.driver().await;
    let port = support::free_port();
    let mut local_only = pod("local-only");
    local_only.ports = vec![host_port(80, port, Protocol::Tcp, Some("127.0.0.1"))];
    let status = driver.setup(&local_only).await.expect("setup");
    tcp_echo(
        status.netns.as_deref(),
        SocketAddr::new(pod_ip(&status), 80),
        "lo",
    );
    let reply =
        tcp_ask(None, SocketAddr::new([127, 0, 0, 1].into(), port), "x").expect("localhost");
    assert_eq!(reply, "lo:x");
    let err = tcp_ask(
        None,
        SocketAddr::new(IpAddr::V4(support::primary_address()), port),
        "x",
    )
    .expect_err("not on the primary address");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    driver.teardown(&local_only).await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_pod_asking_for_a_held_host_port_fails_and_the_first_keeps_it() {
    require_root();
    let net = TestNet::new();
    let driver = net.driver().await;
    let port = support::free_port();
    let mut first = pod("first");
    first.ports = vec![host_port(80, port, Protocol::Tcp, None)];
    let status = driver.setup(&first).await.expect("setup first");
    tcp_echo(
        status.netns.as_deref(),
        SocketAddr::new(pod_ip(&status), 80),
        "first",
    );
    let rules = net.rule_count();

    let mut second = pod("second");
    second.ports = vec![host_port(8000, port, Protocol::Tcp, Some("127.0.0.1"))];
    let err = driver.setup(&second).await.expect_err("conflict");
    let text = err.to_string();
    assert!(
        text.contains("first") && text.contains(&port.to_string()),
        "{text}"
    );
    assert!(
        matches!(err, NetError::Setup { ref rollback, .. } if rollback.is_empty()),
        "{err:?}"
    );

    // Nothing of the second pod is left, nothing of the first was touched.
    assert!(!net.netns("second").exists());
    assert_eq!(net.lease_count(), 1);
    assert_eq!(net.our_links().len(), 1);
    assert_eq!(net.rule_count(), rules);
    let reply =
        tcp_ask(None, SocketAddr::new([127, 0, 0, 1].into(), port), "still").expect("first works");
    assert_eq!(reply, "first:still");
    driver.teardown(&first).await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_converges_when_run_again_and_check_notices_damage() {
    require_root();
    let net = TestNet::new();
    let driver = net.driver().await;
    let first = driver.setup(&pod("again")).await.expect("setup");
    let second = driver.setup(&pod("again")).await.expect("setup again");
    assert_eq!(first, second);
    assert_eq!(net.our_links().len(), 1);
    driver.check(&pod("again")).await.expect("healthy");

    // Someone deletes the veth: check says so, setup repairs it.
    let veth = net.config.veth_name("again");
    support::run("ip", &["link", "del", &veth]);
    let err = driver.check(&pod("again")).await.expect_err("damaged");
    assert!(err.to_string().contains(&veth), "{err}");
    let repaired = driver.setup(&pod("again")).await.expect("repair");
    assert_eq!(
        repaired.pod_ips(),
        first.pod_ips(),
        "same address after repair"
    );
    driver.check(&pod("again")).await.expect("repaired");
    tcp_echo(
        repaired.netns.as_deref(),
        SocketAddr::new(pod_ip(&repaired), 80),
        "r",
    );
    let reply = tcp_ask(None, SocketAddr::new(pod_ip(&repaired), 80), "ok").expect("reachable");
    assert_eq!(reply, "r:ok");

    // A firewall reload drops the table: check says so, setup restores it.
    support::run("nft", &["delete", "table", "ip", &net.config.nft_table]);
    let err = driver.check(&pod("again")).await.expect_err("table gone");
    assert!(err.to_string().contains(&net.config.nft_table), "{err}");
    driver.setup(&pod("again")).await.expect("restore");
    driver.check(&pod("again")).await.expect("restored");

    driver.teardown(&pod("again")).await.expect("teardown");
    driver
        .teardown(&pod("again"))
        .await
        .expect("teardown again is fine");
    let err = driver.check(&pod("again")).await.expect_err("gone");
    assert!(err.to_string().contains("lease"), "{err}");
}

/// CVE-2020-8558: with `route_localnet=1` on the bridge, a pod that crafts
/// packets to 127.0.0.1 (raw sockets, or its own routes) would reach
/// services the host binds to localhost only. The table's input rule stops
/// that; without it the same connection goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_cannot_reach_the_hosts_localhost_services() {
    require_root();
    let net = TestNet::new();
    let driver = net.driver().await;
    let status = driver.setup(&pod("prober")).await.expect("setup");
    let netns = status.netns.clone().expect("netns");
    let ns_arg = format!("--net={}", netns.display());
    let gateway = net.gateway().to_string();
    // Inside the pod: send 127.0.0.0/8 to the host instead of lo.
    for cmd in [
        vec!["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"],
        vec!["sysctl", "-qw", "net.ipv4.conf.eth0.route_localnet=1"],
        vec![
            "ip",
            "route",
            "del",
            "local",
            "127.0.0.0/8",
            "dev",
            "lo",
            "table",
            "local",
        ],
        vec!["ip", "route", "add", "127.0.0.0/8", "via", &gateway],
    ] {
        let mut args = vec![ns_arg.as_str()];
        args.extend(cmd);
        support::run("nsenter", &args);
    }
    // 127.0.0.2: the pod still has 127.0.0.1 itself (a /32 local route).
    let secret = tcp_echo(None, SocketAddr::from(([127, 0, 0, 2], 0)), "secret");
    let attempt = || {
        netplugins::ns::run_in(netplugins::ns::NsKind::Net, &netns, || {
            std::net::TcpStream::connect_timeout(&secret, std::time::Duration::from_secs(1))
        })
        .expect("enter netns")
    };
    let guarded = attempt();
    assert!(
        matches!(&guarded, Err(err) if err.kind() == std::io::ErrorKind::TimedOut),
        "the pod's packets to the host's localhost must be dropped: {guarded:?}"
    );
    // Prove the path is real: without the guard the pod gets through.
    support::run(
        "nft",
        &["flush", "chain", "ip", &net.config.nft_table, "input"],
    );
    let unguarded = attempt();
    assert!(
        unguarded.is_ok(),
        "without the guard the connection should work: {unguarded:?}"
    );
    driver.teardown(&pod("prober")).await.expect("teardown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_that_overlaps_a_host_route_is_refused() {
    require_root();
    let taken = TestNet::new();
    let driver = taken.driver().await;
    driver.setup(&pod("holder")).await.expect("setup");
    // Another network on another bridge asking for the same subnet.
    let mut clash = TestNet::new();
    clash.config.subnet = taken.config.subnet;
    let err = netplugins::bridge::BridgeDriver::new(clash.config.clone(), clash.env.clone())
        .await
        .err()
        .expect("overlap refused");
    let text = err.to_string();
    assert!(
        text.contains(&taken.config.subnet.to_string()) && text.contains(&taken.config.bridge),
        "{text}"
    );
    driver.teardown(&pod("holder")).await.expect("teardown");
}
