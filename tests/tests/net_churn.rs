//! Churn through the real agent: 100 bridge pods created and deleted
//! through manifest files, 20 at a time (a rolling window: each round
//! removes the 5 oldest manifests and adds 5 new ones in the same moment),
//! beside an anchor pod that lives throughout. While they live, no address
//! is held by two pods and every pod's address is its lease; afterwards
//! only the anchor's veth, lease, netns and base firewall rules are left,
//! and nothing at all once the anchor goes too.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use berth_e2e::net::{NetWorld, free_port, pod_ip, pod_uid, running_with_ip};

const PODS: usize = 100;
const AT_ONCE: usize = 20;
const PER_ROUND: usize = 5;
const ROUND_WAIT: Duration = Duration::from_secs(180);

fn churn_pod(net: &NetWorld, name: &str, host_port: Option<u16>) -> String {
    let mut container = net.world.shell_container("app", "exec sleep 3600");
    if let Some(port) = host_port {
        container.push_str(&format!(
            "    ports:\n    - {{containerPort: 80, hostPort: {port}}}\n"
        ));
    }
    net.pod_yaml(name, "", &container)
}

/// Every live pod's address is distinct and is the address its lease holds.
fn assert_addresses_unique_and_leased(net: &NetWorld, live: &[serde_json::Value]) {
    let leases: BTreeMap<String, Ipv4Addr> = net.net.leases(net.root()).into_iter().collect();
    let mut holders: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for pod in live {
        let name = pod["name"].as_str().expect("name").to_string();
        let ip = pod_ip(pod).expect("a live pod has an address");
        assert!(
            net.net.contains(ip),
            "{name}: {ip} outside {}",
            net.net.subnet
        );
        if let Some(other) = holders.insert(ip, name.clone()) {
            panic!("{ip} is held by two live pods: {other} and {name}");
        }
        assert_eq!(
            leases.get(&pod_uid(pod)),
            Some(&ip),
            "{name}'s address is its lease"
        );
    }
}

#[test]
fn a_hundred_pods_twenty_at_a_time_leave_only_what_lives() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();
    net.world
        .write_manifest("anchor.yaml", &churn_pod(&net, "anchor", None));
    let (anchor, _) = net.wait_running_ip("anchor");
    let base_rules = net.net.rules().expect("the anchor's table");
    let anchor_veths = net.net.veths();
    assert_eq!(anchor_veths.len(), 1, "the anchor's veth");

    let mut live: VecDeque<String> = VecDeque::new();
    let mut created = 0;
    while created < PODS || !live.is_empty() {
        // This round's changes land in the manifest directory together.
        let leaving: Vec<String> = if live.len() >= AT_ONCE || created >= PODS {
            live.drain(..PER_ROUND.min(live.len())).collect()
        } else {
            Vec::new()
        };
        for name in &leaving {
            net.world.remove_manifest(&format!("{name}.yaml"));
        }
        let mut coming = Vec::new();
        while created < PODS && live.len() + coming.len() < AT_ONCE {
            let name = format!("churn-{created}");
            // Every tenth pod has a hostPort, so host-port rules churn too.
            let port = (created % 10 == 0).then(free_port);
            net.world
                .write_manifest(&format!("{name}.yaml"), &churn_pod(&net, &name, port));
            coming.push(name);
            created += 1;
        }
        live.extend(coming);
        net.wait_pods_gone(&leaving, ROUND_WAIT);
        let mut names: Vec<String> = live.iter().cloned().collect();
        names.push("anchor".to_string());
        let pods = net.wait_pods(
            &names,
            "running with an address",
            ROUND_WAIT,
            running_with_ip,
        );
        assert_addresses_unique_and_leased(&net, &pods);
    }

    // Only the anchor's state is left.
    assert_eq!(net.net.veths(), anchor_veths, "only the anchor's veth");
    assert_eq!(
        net.net.prefixed_links(),
        anchor_veths,
        "no veth off the bridge"
    );
    assert_eq!(
        net.leased_pods(),
        vec![pod_uid(&anchor)],
        "only the anchor's lease"
    );
    assert_eq!(
        net.netns_mounts(),
        vec![net.netns_of(&anchor).display().to_string()],
        "only the anchor's netns"
    );
    assert_eq!(
        net.net.rules(),
        Some(base_rules),
        "only the base firewall rules"
    );

    net.world.remove_manifest("anchor.yaml");
    net.world.wait_pod_gone("anchor");
    net.assert_nothing_left("after the anchor");
    let netns_files: Vec<_> = std::fs::read_dir(net.netns_dir())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(netns_files, Vec::<std::ffi::OsString>::new(), "netns files");
}
