//! The cni driver through the real agent (`[network] driver = "cni"`) with
//! Debian's containernetworking-plugins: bridge + host-local + portmap on a
//! bridge name, subnet and host-local data dir of the test's own. The pod
//! is reachable by its IP and through its hostPort (portmap), and deleting
//! it runs DEL through the chain: no veth on the bridge, no host-local
//! lease, no cache entry, no netns, no iptables rule naming it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use berth_e2e::net::{
    NetWorld, bridge_ports, curl, free_port, host_local_leases, pod_uid, primary_address, run,
    wait_http,
};

/// Lines of the nat table naming `container_id` (portmap's and the bridge
/// plugin's masquerade rules carry it in their comments).
fn nat_rules_naming(container_id: &str) -> Vec<String> {
    run("iptables-save", &["-t", "nat"])
        .lines()
        .filter(|line| line.contains(container_id))
        .map(str::to_string)
        .collect()
}

fn cache_entries(net: &NetWorld) -> usize {
    std::fs::read_dir(net.root().join("cni-cache/results"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn debian_plugin_chain_gives_a_working_pod_and_cleans_up_on_delete() {
    let mut net = NetWorld::cni();
    net.world.start_agent();
    let port = free_port();
    let mut containers = net.web_container("web", 80, "hello-cni");
    containers.push_str(&format!(
        "    ports:\n    - {{containerPort: 80, hostPort: {port}}}\n"
    ));
    net.world
        .write_manifest("web.yaml", &net.pod_yaml("web", "", &containers));
    let (pod, ip) = net.wait_running_ip("web");
    let uid = pod_uid(&pod);
    assert_eq!(pod["details"]["pod"]["network"], "cni", "{pod:#}");
    assert!(
        net.net.contains(ip),
        "{ip} from host-local's range {}",
        net.net.subnet
    );
    let data_dir = net.cni_data_dir();
    assert_eq!(
        host_local_leases(&data_dir, &net.net.network),
        vec![IpAddr::V4(ip)],
        "host-local holds the pod's address"
    );

    assert_eq!(
        wait_http(SocketAddr::from((ip, 80))),
        "hello-cni\n",
        "the host reaches the pod"
    );
    let primary = SocketAddr::from((primary_address(), port));
    let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for host_port in [primary, localhost] {
        assert_eq!(
            curl(host_port).as_deref(),
            Ok("hello-cni\n"),
            "the hostPort through portmap on {host_port}"
        );
    }
    assert_eq!(
        bridge_ports(&net.net.bridge).len(),
        1,
        "one veth on the CNI bridge"
    );
    assert_eq!(cache_entries(&net), 1, "the CNI result cache");
    assert_eq!(net.netns_mounts().len(), 1);
    assert!(
        !nat_rules_naming(&uid).is_empty(),
        "portmap's rules name the container"
    );

    net.world.remove_manifest("web.yaml");
    net.world.wait_pod_gone("web");
    assert_eq!(
        bridge_ports(&net.net.bridge),
        Vec::<String>::new(),
        "veth gone from the bridge"
    );
    assert_eq!(
        host_local_leases(&data_dir, &net.net.network),
        Vec::<IpAddr>::new(),
        "lease released"
    );
    assert_eq!(cache_entries(&net), 0, "cache entry gone");
    assert_eq!(net.netns_mounts(), Vec::<String>::new(), "netns gone");
    assert_eq!(
        nat_rules_naming(&uid),
        Vec::<String>::new(),
        "iptables rules gone"
    );
    for host_port in [primary, localhost] {
        assert!(curl(host_port).is_err(), "{host_port} answers no more");
    }
}
