//! kill -9 of the agent in the middle of a pod's setup. A new pod's network
//! is set up before its image is pulled, and the pull goes through the
//! kit's proxy, throttled to a crawl: the test sees from outside that the
//! pod's netns, veth, lease and firewall rules exist while none of its
//! containers runs, and kills the agent right then. After a restart, the
//! pod converges (or, if its manifest went away meanwhile, is removed) and
//! nothing of its network is left twice or left over.

use std::net::{Ipv4Addr, SocketAddr};

use berth_e2e::images::Blob;
use berth_e2e::net::{NetWorld, curl, free_port, pod_ip, pod_uid};
use berth_e2e::proxy::{Fault, Proxy};
use berth_e2e::pull::use_server;
use berth_e2e::wait_until;

/// About 80 s for the busybox layer: far longer than the test needs.
const CRAWL: u64 = 16 * 1024;

/// A world whose image pulls go through a proxy that throttles the first
/// download of the image's largest layer (returned too).
fn crawling_world() -> (NetWorld, Proxy, Blob) {
    let net = NetWorld::bridge();
    let proxy = Proxy::start(&net.world.registry.host());
    use_server(&net.world.dirs, &net.world.registry.host(), &proxy.url());
    let layer = net.world.image.manifests[0]
        .layers
        .iter()
        .max_by_key(|layer| layer.size)
        .expect("the image has layers")
        .clone();
    proxy.add_fault(&layer.digest, Fault::Throttle(CRAWL), 1);
    (net, proxy, layer)
}

/// Writes a web pod with a hostPort and kills the agent once its network
/// is complete and its image's `layer` is crawling in (no container can
/// run yet); returns the hostPort and the firewall rule count at the kill.
fn kill_mid_setup(net: &mut NetWorld, layer: &Blob) -> (u16, usize) {
    net.world.start_agent();
    let port = free_port();
    let mut containers = net.web_container("web", 80, "hello-after-crash");
    containers.push_str(&format!(
        "    ports:\n    - {{containerPort: 80, hostPort: {port}}}\n"
    ));
    net.world
        .write_manifest("web.yaml", &net.pod_yaml("web", "", &containers));
    // The firewall is the driver's last step, so a table means the whole
    // network is there; the content store's partial file shows the layer
    // arriving.
    let partial = net.root().join("content/ingest").join(format!(
        "{}.partial",
        layer.digest.trim_start_matches("sha256:")
    ));
    let rules = wait_until(
        berth_e2e::pods::POD_WAIT,
        "the pod's network (netns, veth, lease, firewall) and its layer crawling in",
        || {
            let pulling = std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0);
            let complete = pulling
                && net.netns_mounts().len() == 1
                && net.net.veths().len() == 1
                && net.net.leases(net.root()).len() == 1;
            complete.then(|| net.net.rules()).flatten()
        },
    );
    assert!(
        net.world.processes().is_empty(),
        "no container runs while the image still crawls in"
    );
    net.world.kill_agent();
    assert!(
        net.world.processes().is_empty(),
        "the kill came before any container started"
    );
    (port, rules)
}

#[test]
fn an_agent_killed_mid_pod_setup_converges_on_restart_without_leaks() {
    let (mut net, proxy, layer) = crawling_world();
    let (port, rules_at_kill) = kill_mid_setup(&mut net, &layer);
    let (_, leased) = net.net.leases(net.root())[0].clone();
    let veths = net.net.veths();

    net.world.start_agent();
    let (pod, ip) = net.wait_running_ip("web");
    assert_eq!(
        ip, leased,
        "the pod kept the address it had before the crash"
    );
    assert_eq!(
        curl(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).as_deref(),
        Ok("hello-after-crash\n"),
        "the hostPort works after the restart"
    );

    assert_eq!(net.net.veths(), veths, "the same single veth");
    assert_eq!(net.net.prefixed_links(), veths, "no second veth anywhere");
    assert_eq!(
        net.net.leases(net.root()),
        vec![(pod_uid(&pod), ip)],
        "one lease, the pod's"
    );
    assert_eq!(
        net.netns_mounts(),
        vec![net.netns_of(&pod).display().to_string()],
        "one netns, the pod's"
    );
    assert_eq!(net.net.rules(), Some(rules_at_kill), "no extra rule");
    assert_eq!(pod_ip(&pod), Some(leased));
    let pulls = proxy.requests_for(&layer.digest);
    assert!(
        pulls
            .iter()
            .any(|r| r.fault == Some(Fault::Throttle(CRAWL)) && r.body_bytes < layer.size),
        "the agent was killed while the layer crawled in: {pulls:#?}"
    );
}

#[test]
fn a_pod_removed_while_the_agent_was_down_mid_setup_leaves_nothing() {
    let (mut net, _proxy, layer) = crawling_world();
    kill_mid_setup(&mut net, &layer);
    net.world.remove_manifest("web.yaml");

    net.world.start_agent();
    net.wait_pod_record_gone("web");
    net.world.wait_pod_gone("web");
    assert_eq!(net.net.prefixed_links(), Vec::<String>::new(), "veths");
    assert_eq!(net.net.leases(net.root()), vec![], "leases");
    assert_eq!(net.netns_mounts(), Vec::<String>::new(), "netns mounts");
    assert_eq!(net.net.rules(), None, "firewall table");
}
