//! The bridge driver through the real agent (`berth run`, runc, busybox
//! from a local registry): pods get addresses on the test's own bridge,
//! reach each other and the host, reach another network masqueraded as
//! the host, and leave nothing behind when removed.

use std::net::{SocketAddr, TcpListener};

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use berth_e2e::net::{DataDir, NetWorld, free_subnet, hear_one_line, run, wait_http};
use berth_e2e::pods::POD_WAIT;
use berth_e2e::unique_name;
use netplugins::ns::{self, NsKind};

#[test]
fn two_pods_reach_each_other_and_the_host_over_the_bridge() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();

    let server = net.web_container("web", 80, "hello-from-server");
    net.world
        .write_manifest("server.yaml", &net.pod_yaml("server", "", &server));
    let (pod, server_ip) = net.wait_running_ip("server");
    assert!(
        net.net.contains(server_ip),
        "{server_ip} from {}",
        net.net.subnet
    );
    assert_eq!(pod["details"]["pod"]["network"], "bridge", "{pod:#}");
    assert_eq!(
        wait_http(SocketAddr::from((server_ip, 80))),
        "hello-from-server\n",
        "the host reaches the pod by its IP"
    );

    // A listener on the bridge's gateway address, in the host's netns.
    let gateway = net.net.gateway();
    let listener = TcpListener::bind((gateway, 0)).expect("listening on the gateway");
    let host_port = listener.local_addr().expect("address").port();
    let heard_rx = hear_one_line(listener);

    let data = net.data_dir("client-data");
    // Each finding is complete before its `rc` file appears (renamed into place).
    let script = format!(
        "wget -q -O /data/peer http://{server_ip}/; echo $? > /data/rc.tmp; mv /data/rc.tmp /data/rc; \
         echo hello-host | nc {gateway} {host_port}; exec sleep 3600"
    );
    let mut client = net.world.shell_container("app", &script);
    client.push_str(DataDir::MOUNT);
    net.world.write_manifest(
        "client.yaml",
        &net.pod_yaml("client", &data.volume, &client),
    );
    let (_, client_ip) = net.wait_running_ip("client");
    assert_ne!(client_ip, server_ip, "two pods, two addresses");
    assert!(net.net.contains(client_ip));

    let rc = data.wait_file("rc");
    assert_eq!(
        rc.trim(),
        "0",
        "wget from the client pod to {server_ip} failed"
    );
    assert_eq!(
        data.read("peer"),
        "hello-from-server\n",
        "pod to pod over the bridge"
    );
    let (from, line) = heard_rx
        .recv_timeout(POD_WAIT)
        .expect("the client pod connected to the host's listener on the gateway");
    assert_eq!(line, "hello-host\n");
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(client_ip),
        "pod to host is not masqueraded on the bridge"
    );

    // What the two pods hold, counted from outside.
    assert_eq!(net.net.veths().len(), 2, "one veth per pod on the bridge");
    let mut leased: Vec<_> = net
        .net
        .leases(net.root())
        .into_iter()
        .map(|l| l.1)
        .collect();
    leased.sort();
    let mut ips = vec![server_ip, client_ip];
    ips.sort();
    assert_eq!(leased, ips, "the leases are the pods' addresses");
    assert_eq!(net.netns_mounts().len(), 2, "one netns per pod");
    assert!(net.net.rules().is_some_and(|n| n > 0), "the egress rules");

    for file in ["server.yaml", "client.yaml"] {
        net.world.remove_manifest(file);
    }
    net.world.wait_pod_gone("server");
    net.world.wait_pod_gone("client");
    net.assert_nothing_left("both pods removed");
}

/// "Another network": a namespace of the test's own behind a veth pair,
/// host side `.1`, namespace side `.2` of a free /24, with no route back
/// to the pods' subnet. Removed on drop.
struct Outside {
    netns: PathBuf,
    host_link: String,
    host_ip: Ipv4Addr,
    ip: Ipv4Addr,
}

impl Outside {
    fn new(dir: &std::path::Path) -> Self {
        let netns = dir.join("outside-netns");
        ns::create(NsKind::Net, &netns).expect("creating the outside netns");
        let subnet = free_subnet();
        let base: Ipv4Addr = subnet
            .split('/')
            .next()
            .and_then(|ip| ip.parse().ok())
            .expect("a /24");
        let host_ip = Ipv4Addr::from(u32::from(base) + 1);
        let ip = Ipv4Addr::from(u32::from(base) + 2);
        let (host_link, peer) = (unique_name("oh"), unique_name("op"));
        let outside = Self {
            netns,
            host_link,
            host_ip,
            ip,
        };
        let netns_arg = format!("--net={}", outside.netns.display());
        run(
            "ip",
            &[
                "link",
                "add",
                &outside.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
        );
        run(
            "ip",
            &[
                "link",
                "set",
                &peer,
                "netns",
                &outside.netns.display().to_string(),
            ],
        );
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{host_ip}/24"),
                "dev",
                &outside.host_link,
            ],
        );
        run("ip", &["link", "set", &outside.host_link, "up"]);
        let (address, netns_arg) = (format!("{ip}/24"), netns_arg.as_str());
        run(
            "nsenter",
            &[netns_arg, "ip", "addr", "add", &address, "dev", &peer],
        );
        run("nsenter", &[netns_arg, "ip", "link", "set", &peer, "up"]);
        outside
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
        let _ = ns::remove(&self.netns);
    }
}

#[test]
fn pod_egress_to_another_network_is_masqueraded_as_the_host() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();
    let outside = Outside::new(net.world.dirs.temp.path());
    let listener = ns::run_in(NsKind::Net, &outside.netns, || {
        TcpListener::bind((outside.ip, 0))
    })
    .expect("entering the outside netns")
    .expect("listening outside");
    let port = listener.local_addr().expect("address").port();
    let heard_rx = hear_one_line(listener);

    let script = format!(
        "echo hello-outside | nc {} {port}; exec sleep 3600",
        outside.ip
    );
    let containers = net.world.shell_container("app", &script);
    net.world
        .write_manifest("egress.yaml", &net.pod_yaml("egress", "", &containers));
    let (_, pod_ip) = net.wait_running_ip("egress");
    let (from, line) = heard_rx
        .recv_timeout(POD_WAIT)
        .expect("the pod reached the other network");
    assert_eq!(line, "hello-outside\n");
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(outside.host_ip),
        "the pod ({pod_ip}) appears as the host's address on that network"
    );
}
