//! hostPorts of bridge pods through the real agent: TCP and UDP on
//! 127.0.0.1 and on the host's primary address, `hostIP` honoured, hairpin
//! from another pod, and a second pod asking for a held port reporting the
//! conflict while the first keeps serving.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use berth_e2e::net::{
    DataDir, NetWorld, curl, free_port, pod_uid, primary_address, udp_ask, udp_echo_in, wait_http,
};
use berth_e2e::pods::POD_WAIT;
use berth_e2e::wait_until;

fn ports_yaml(ports: &[&str]) -> String {
    let mut yaml = String::from("    ports:\n");
    for port in ports {
        yaml.push_str(&format!("    - {port}\n"));
    }
    yaml
}

#[test]
fn host_ports_answer_on_localhost_and_the_primary_address_and_honour_host_ip() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();
    let (tcp_port, udp_port, local_port) = (free_port(), free_port(), free_port());
    let mut containers = net.web_container("web", 80, "hello-web");
    containers.push_str(&ports_yaml(&[
        &format!("{{containerPort: 80, hostPort: {tcp_port}}}"),
        &format!("{{containerPort: 5353, hostPort: {udp_port}, protocol: UDP}}"),
    ]));
    containers.push_str(&net.web_container("local", 8080, "local-only"));
    containers.push_str(&ports_yaml(&[&format!(
        "{{containerPort: 8080, hostPort: {local_port}, hostIP: 127.0.0.1}}"
    )]));
    net.world
        .write_manifest("web.yaml", &net.pod_yaml("web", "", &containers));
    let (pod, pod_ip) = net.wait_running_ip("web");
    let mut ports: Vec<&str> = pod["details"]["pod"]["ports"]
        .as_array()
        .expect("ports in the pod's status")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    ports.sort();
    let mut expected = vec![
        format!("{tcp_port}->80/tcp"),
        format!("{udp_port}->5353/udp"),
        format!("127.0.0.1:{local_port}->8080/tcp"),
    ];
    expected.sort();
    assert_eq!(ports, expected, "{pod:#}");
    wait_http(SocketAddr::from((pod_ip, 8080)));

    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let primary = IpAddr::V4(primary_address());
    for host in [localhost, primary] {
        assert_eq!(
            curl(SocketAddr::new(host, tcp_port)).as_deref(),
            Ok("hello-web\n"),
            "curl {host}:{tcp_port}"
        );
    }
    assert_eq!(
        curl(SocketAddr::new(localhost, local_port)).as_deref(),
        Ok("local-only\n"),
        "hostIP 127.0.0.1 answers there"
    );
    let elsewhere = curl(SocketAddr::new(primary, local_port));
    assert!(
        elsewhere.is_err(),
        "hostIP 127.0.0.1 must not answer on {primary}: {elsewhere:?}"
    );

    // UDP: busybox has no UDP server, so the test answers from inside the
    // pod's own network namespace (the one the agent made).
    udp_echo_in(&net.netns_of(&pod), 5353, "udp");
    for host in [localhost, primary] {
        assert_eq!(
            udp_ask(SocketAddr::new(host, udp_port), "ping").expect("a UDP reply"),
            "udp:ping",
            "UDP {host}:{udp_port}"
        );
    }

    // Hairpin: another pod reaches the first through the host's address.
    let data = net.data_dir("hairpin");
    let mut client = net.world.shell_container(
        "app",
        &format!(
            "wget -q -O /data/page http://{primary}:{tcp_port}/; echo $? > /data/rc.tmp; \
             mv /data/rc.tmp /data/rc; exec sleep 3600"
        ),
    );
    client.push_str(DataDir::MOUNT);
    net.world.write_manifest(
        "client.yaml",
        &net.pod_yaml("client", &data.volume, &client),
    );
    assert_eq!(
        data.wait_file("rc").trim(),
        "0",
        "pod -> {primary}:{tcp_port} -> pod"
    );
    assert_eq!(data.read("page"), "hello-web\n");

    net.world.remove_manifest("web.yaml");
    net.world.wait_pod_gone("web");
    assert!(
        curl(SocketAddr::new(localhost, tcp_port)).is_err(),
        "the hostPort is gone with the pod"
    );
    let uid = pod_uid(&pod);
    assert!(
        net.net.leases(net.root()).iter().all(|(id, _)| *id != uid),
        "the pod's lease is released"
    );
}

#[test]
fn a_second_pod_asking_for_a_held_host_port_reports_the_conflict_and_the_first_keeps_serving() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();
    let port = free_port();
    let pod = |name: &str| {
        let mut containers = net.web_container("web", 80, &format!("hello-{name}"));
        containers.push_str(&ports_yaml(&[&format!(
            "{{containerPort: 80, hostPort: {port}}}"
        )]));
        net.pod_yaml(name, "", &containers)
    };
    let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    net.world.write_manifest("first.yaml", &pod("first"));
    let (first, _) = net.wait_running_ip("first");
    assert_eq!(curl(localhost).as_deref(), Ok("hello-first\n"));

    net.world.write_manifest("second.yaml", &pod("second"));
    // A failed reconcile shows in `lastError` (or the message).
    let problem = |p: &serde_json::Value| {
        [&p["lastError"], &p["message"]]
            .into_iter()
            .filter_map(|v| v.as_str())
            .find(|m| m.contains("already held"))
            .map(str::to_string)
    };
    let second = net
        .world
        .wait_pod("second", "the hostPort conflict", |p| problem(p).is_some());
    let message = problem(&second).expect("checked above");
    assert!(
        message.contains("default/first") && message.contains(&port.to_string()),
        "the conflict names the pod that holds the port and the port: {second:#}"
    );
    assert_ne!(second["phase"], "Running", "{second:#}");

    // The first pod keeps the port; the second made nothing that lingers.
    assert_eq!(curl(localhost).as_deref(), Ok("hello-first\n"));
    let leases = net.net.leases(net.root());
    assert_eq!(
        leases.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
        vec![pod_uid(&first)],
        "only the first pod holds a lease"
    );
    assert_eq!(net.net.veths().len(), 1, "only the first pod has a veth");
    assert_eq!(
        net.netns_mounts().len(),
        1,
        "only the first pod has a netns"
    );

    // Once the first pod is gone, the second gets the port.
    net.world.remove_manifest("first.yaml");
    net.world.wait_pod_gone("first");
    net.wait_running_ip("second");
    assert_eq!(
        wait_until(POD_WAIT, "the second pod on the port", || curl(localhost)
            .ok()),
        "hello-second\n"
    );
}
