//! The bridge driver through the real agent (`berth run`, runc, busybox
//! from a local registry): pods get addresses on the test's own bridge,
//! reach each other and the host, and leave nothing behind when removed.

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;

use berth_e2e::net::{DataDir, NetWorld, wait_http};
use berth_e2e::pods::POD_WAIT;

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
    let (heard_tx, heard_rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, peer)) = listener.accept() {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stream).read_line(&mut line);
            let _ = heard_tx.send((peer, line));
        }
    });

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
