//! kill -9 of the agent in the middle of a pod's network setup, at every
//! stage of the bridge driver. The agent runs with the test-only
//! `BERTH_TEST_PAUSE_NETWORK_AT=<stage>`, which stops the setup there for
//! good; the test sees the half-made state from outside (netns file,
//! lease, veth, firewall table, no container), kills the agent, and starts
//! it again without the pause. The pod then converges with one of
//! everything (or, if its manifest went away meanwhile, is removed) and
//! nothing of its network is left twice or left over.

use std::net::{Ipv4Addr, SocketAddr};

use berth::services::networks::PAUSE_ENV;
use berth_e2e::net::{NetWorld, curl, free_port, pod_uid};
use berth_e2e::pods::POD_WAIT;
use berth_e2e::wait_until;

const STAGES: [&str; 5] = ["namespace", "lease", "veth", "pod-interface", "firewall"];

/// Starts the agent paused at `stage`, writes pod `name` (a web server
/// with a hostPort), waits until the setup stops there and kills the
/// agent. Returns the hostPort and the leases at the kill.
fn kill_at(net: &mut NetWorld, stage: &str, name: &str) -> u16 {
    net.world.start_agent_with_env(&[(PAUSE_ENV, stage)]);
    let port = free_port();
    let mut containers = net.web_container("web", 80, &format!("hello-{name}"));
    containers.push_str(&format!(
        "    ports:\n    - {{containerPort: 80, hostPort: {port}}}\n"
    ));
    net.world.write_manifest(
        &format!("{name}.yaml"),
        &net.pod_yaml(name, "", &containers),
    );
    let paused = format!("berth: paused at network stage {stage}");
    wait_until(POD_WAIT, &paused, || {
        net.world.agent().log().contains(&paused).then_some(())
    });

    // The half-made state, as the stage promises.
    let at_least = |later_than: &str| {
        STAGES.iter().position(|s| *s == stage) >= STAGES.iter().position(|s| *s == later_than)
    };
    assert_eq!(net.netns_mounts().len(), 1, "{stage}: the netns file");
    assert_eq!(
        net.net.leases(net.root()).len(),
        usize::from(at_least("lease")),
        "{stage}: leases"
    );
    assert_eq!(
        net.net.veths().len(),
        usize::from(at_least("veth")),
        "{stage}: veths"
    );
    assert_eq!(
        net.net.rules().is_some(),
        at_least("firewall"),
        "{stage}: firewall table"
    );
    assert!(
        net.world.processes().is_empty(),
        "{stage}: no container runs"
    );
    net.world.kill_agent();
    port
}

#[test]
fn an_agent_killed_at_each_network_setup_stage_converges_on_restart_without_leaks() {
    let mut net = NetWorld::bridge();
    let mut converged_rules = None;
    for stage in STAGES {
        let name = format!("web-{stage}");
        let port = kill_at(&mut net, stage, &name);

        net.world.start_agent();
        let (pod, ip) = net.wait_running_ip(&name);
        assert_eq!(
            curl(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).as_deref(),
            Ok(format!("hello-{name}\n").as_str()),
            "{stage}: the hostPort works after the restart"
        );
        let leases = net.net.leases(net.root());
        assert_eq!(
            leases,
            vec![(pod_uid(&pod), ip)],
            "{stage}: one lease, the pod's"
        );
        // An address leased before the crash but not yet in the pod's
        // record (it takes the network with the first container's intent,
        // in one write) was never handed to anyone: recovery reclaims it,
        // which the single lease above proves, and the pod may get another.
        let veths = net.net.veths();
        assert_eq!(veths.len(), 1, "{stage}: one veth");
        assert_eq!(
            net.net.prefixed_links(),
            veths,
            "{stage}: no veth elsewhere"
        );
        assert_eq!(
            net.netns_mounts(),
            vec![net.netns_of(&pod).display().to_string()],
            "{stage}: one netns, the pod's"
        );
        let rules = net.net.rules().expect("the pod's firewall table");
        assert_eq!(
            *converged_rules.get_or_insert(rules),
            rules,
            "{stage}: the same rules as a pod set up after a crash at another stage"
        );

        net.world.remove_manifest(&format!("{name}.yaml"));
        net.world.wait_pod_gone(&name);
        net.assert_nothing_left(stage);
        net.world.kill_agent();
    }
}

#[test]
fn a_pod_removed_while_the_agent_was_down_mid_network_setup_leaves_nothing() {
    let mut net = NetWorld::bridge();
    for stage in STAGES {
        let name = format!("gone-{stage}");
        kill_at(&mut net, stage, &name);
        net.world.remove_manifest(&format!("{name}.yaml"));
        net.world.start_agent();
        net.wait_pod_record_gone(&name);
        net.assert_nothing_left(stage);
        net.world.kill_agent();
    }
}
