//! A pod's network over its life through the real agent: a hostPort edit
//! (a pod-level change) recreates the pod on a new network with the port
//! moved, and after a reboot (no processes, an empty run root, no bridge,
//! no firewall table) the pods come back with working networks and no
//! stale lease; a firewall reload or a deleted veth is repaired in place by
//! the next reconcile.

use std::net::{Ipv4Addr, SocketAddr};

use berth_e2e::net::{NetWorld, curl, free_port, http_get, pod_ip, pod_uid, run, running_with_ip};
use berth_e2e::pods::{POD_WAIT, running_pid};
use berth_e2e::wait_until;

fn web_pod(net: &NetWorld, name: &str, host_port: u16) -> String {
    let mut containers = net.web_container("web", 80, &format!("hello-{name}"));
    containers.push_str(&format!(
        "    ports:\n    - {{containerPort: 80, hostPort: {host_port}}}\n"
    ));
    net.pod_yaml(name, "", &containers)
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[test]
fn a_host_port_edit_recreates_the_pod_network_and_moves_the_port() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();
    let (old_port, new_port) = (free_port(), free_port());
    net.world
        .write_manifest("web.yaml", &web_pod(&net, "web", old_port));
    let (before, _) = net.wait_running_ip("web");
    assert_eq!(curl(localhost(old_port)).as_deref(), Ok("hello-web\n"));

    net.world
        .write_manifest("web.yaml", &web_pod(&net, "web", new_port));
    let after = net
        .world
        .wait_pod("web", "recreated with the new port", |p| {
            running_with_ip(p) && pod_uid(p) != pod_uid(&before)
        });
    assert_eq!(
        wait_until(POD_WAIT, "the new hostPort", || curl(localhost(new_port))
            .ok()),
        "hello-web\n"
    );
    assert!(
        curl(localhost(old_port)).is_err(),
        "the old hostPort is gone"
    );
    assert_eq!(
        net.leased_pods(),
        vec![pod_uid(&after)],
        "the old incarnation's lease is released"
    );
    assert_eq!(net.net.veths().len(), 1, "one veth");
    assert_eq!(
        net.netns_mounts(),
        vec![net.netns_of(&after).display().to_string()]
    );
}

#[test]
fn after_a_reboot_pods_come_back_with_working_networks_and_their_addresses() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();
    let ports = [free_port(), free_port()];
    for (name, port) in ["one", "two"].into_iter().zip(ports) {
        net.world
            .write_manifest(&format!("{name}.yaml"), &web_pod(&net, name, port));
    }
    let names = ["one".to_string(), "two".to_string()];
    let before = net.wait_pods(&names, "running with an address", POD_WAIT, running_with_ip);

    net.power_cut();
    net.world.start_agent();
    // The same pods (their leases survived in --root), with new containers.
    let after = net.wait_pods(&names, "back after the reboot", POD_WAIT, |p| {
        running_with_ip(p)
            && before
                .iter()
                .any(|b| pod_uid(b) == pod_uid(p) && running_pid(b, "web") != running_pid(p, "web"))
    });
    for pod in &after {
        let old = before
            .iter()
            .find(|b| b["name"] == pod["name"])
            .expect("the same pod");
        assert_eq!(pod_ip(pod), pod_ip(old), "the same address: {pod:#}");
        assert_eq!(pod["details"]["pod"]["containers"][0]["restartCount"], 1);
    }
    for (name, port) in names.iter().zip(ports) {
        assert_eq!(
            wait_until(POD_WAIT, "the hostPort after the reboot", || curl(
                localhost(port)
            )
            .ok()),
            format!("hello-{name}\n")
        );
    }
    let mut uids: Vec<String> = after.iter().map(pod_uid).collect();
    uids.sort();
    assert_eq!(net.leased_pods(), uids, "one lease per pod, kept");
    assert_eq!(net.net.veths().len(), 2, "one veth per pod");
    assert_eq!(net.netns_mounts().len(), 2, "one netns per pod");
}

/// The interface index of host link `name`.
fn ifindex(name: &str) -> u64 {
    let out = run("ip", &["-j", "link", "show", name]);
    let links: serde_json::Value = serde_json::from_str(&out).expect("ip prints JSON");
    links[0]["ifindex"].as_u64().expect("an ifindex")
}

#[test]
fn a_reloaded_firewall_and_a_deleted_veth_are_repaired_without_restarting_the_pod() {
    // Every pod is reconciled each second, as the periodic relist would.
    let mut net = NetWorld::bridge_with("[controller]\nrelist-interval = \"1s\"\n");
    net.world.start_agent();
    let port = free_port();
    net.world
        .write_manifest("web.yaml", &web_pod(&net, "web", port));
    let (pod, ip) = net.wait_running_ip("web");
    let pid = running_pid(&pod, "web");
    assert_eq!(curl(localhost(port)).as_deref(), Ok("hello-web\n"));

    // A firewall reload (Debian's nftables.conf starts with `flush ruleset`).
    // (Whether a request fails in between races with the 1 s relist.)
    run("nft", &["delete", "table", "ip", &net.net.nft_table]);
    assert_eq!(
        wait_until(POD_WAIT, "the hostPort repaired", || curl(localhost(port))
            .ok()),
        "hello-web\n"
    );

    // Someone deletes the pod's veth: the pod is cut off.
    let veth = net.net.veths().pop().expect("the pod's veth");
    let old_index = ifindex(&veth);
    run("ip", &["link", "del", &veth]);
    let direct = SocketAddr::from((ip, 80));
    assert_eq!(
        wait_until(POD_WAIT, "the pod reachable again", || http_get(direct)
            .ok()),
        "hello-web\n"
    );
    // The firewall is applied last in the repair: the hostPort follows.
    assert_eq!(
        wait_until(POD_WAIT, "the hostPort after the repair", || curl(
            localhost(port)
        )
        .ok()),
        "hello-web\n"
    );

    let now = net.world.pod("web").expect("status");
    assert_eq!(
        pod_uid(&now),
        pod_uid(&pod),
        "repaired in place, not recreated"
    );
    assert_eq!(running_pid(&now, "web"), pid, "the container kept running");
    assert_eq!(
        net.net.veths(),
        vec![veth.clone()],
        "the same veth name, once"
    );
    assert_ne!(ifindex(&veth), old_index, "a new veth");
    assert_eq!(
        net.net.leases(net.root()),
        vec![(pod_uid(&pod), ip)],
        "the same address"
    );
    let repaired = net
        .world
        .events("web")
        .into_iter()
        .filter(|e| e["reason"] == "NetworkRepaired")
        .count();
    assert!(
        repaired >= 2,
        "each repair is an event: {:#?}",
        net.world.events("web")
    );
}
