//! `hostNetwork: true` through the real agent: the pod is in the host's
//! network namespace and sees the host's interfaces (an interface the test
//! adds among them), while a bridge pod beside it sees only its own.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use berth_e2e::net::{DataDir, NetWorld, host_links, primary_address, run};
use berth_e2e::pods::running_pid;
use berth_e2e::unique_name;

/// An interface of the test's own in the host netns (a bridge: this
/// kernel has no dummy module), deleted on drop.
struct Marker(String);

impl Marker {
    fn new() -> Self {
        let name = unique_name("mk");
        run("ip", &["link", "add", &name, "type", "bridge"]);
        Self(name)
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Interface names in `/proc/net/dev` text (the reader's netns).
fn proc_net_dev_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect()
}

#[test]
fn a_host_network_pod_sees_the_host_interfaces_and_a_bridge_pod_only_its_own() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();
    let marker = Marker::new();
    let before: BTreeSet<String> = host_links().into_iter().collect();

    let script = "cat /proc/net/dev > /data/dev.tmp; mv /data/dev.tmp /data/dev; exec sleep 3600";
    let host_data = net.data_dir("host");
    let mut containers = net.world.shell_container("app", script);
    containers.push_str(DataDir::MOUNT);
    // PodWorld's manifests are hostNetwork pods.
    net.world.write_manifest(
        "host.yaml",
        &net.world
            .pod_yaml("hostnet", &host_data.volume, &containers),
    );
    let bridge_data = net.data_dir("bridge");
    let mut containers = net.world.shell_container("app", script);
    containers.push_str(DataDir::MOUNT);
    net.world.write_manifest(
        "bridge.yaml",
        &net.pod_yaml("bridged", &bridge_data.volume, &containers),
    );

    let pod = net
        .world
        .wait_pod("hostnet", "running", |p| running_pid(p, "app").is_some());
    let inside = proc_net_dev_names(&host_data.wait_file("dev"));
    let after: BTreeSet<String> = host_links().into_iter().collect();
    // Other tests add and remove interfaces all the time: those present
    // before and after the pod looked must all be seen inside.
    let stable: BTreeSet<String> = before.intersection(&after).cloned().collect();
    let missing: Vec<&String> = stable.difference(&inside).collect();
    assert!(
        missing.is_empty(),
        "the host-network pod misses host interfaces {missing:?}; it saw {inside:?}"
    );
    assert!(inside.contains(&marker.0), "{inside:?}");

    let details = &pod["details"]["pod"];
    assert_eq!(details["hostNetwork"], true, "{pod:#}");
    assert_eq!(details["network"], "host", "{pod:#}");
    let primary = primary_address().to_string();
    assert!(
        details["podIPs"]
            .as_array()
            .is_some_and(|ips| ips.iter().any(|ip| ip == primary.as_str())),
        "a host-network pod's IPs are the host's: {pod:#}"
    );
    let pid = running_pid(&pod, "app").expect("pid");
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns link");
    assert_eq!(
        netns(&pid.to_string()),
        netns("self"),
        "the container runs in the host's network namespace"
    );

    let (bridged, ip) = net.wait_running_ip("bridged");
    let own = proc_net_dev_names(&bridge_data.wait_file("dev"));
    assert_eq!(
        own,
        BTreeSet::from(["lo".to_string(), "eth0".to_string()]),
        "a bridge pod sees only its own interfaces"
    );
    let bridged_pid = running_pid(&bridged, "app").expect("pid");
    assert_ne!(netns(&bridged_pid.to_string()), netns("self"));
    assert!(net.net.contains(ip));
    assert_ne!(IpAddr::V4(ip).to_string(), primary);
}
