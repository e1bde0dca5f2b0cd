//! The pod side of networking through the real agent: host ports are
//! claimed per pod and a conflict is reported in the second pod's status,
//! never silently overwritten; the pod's /etc files come from the driver.
//! (Bridge networking end to end is in the net-e2e tests.)

use berth_e2e::pods::{DataDir, PodWorld, container, running_pid};
use berth_e2e::registry::free_port;

#[test]
fn a_second_pod_asking_for_a_held_host_port_reports_the_conflict() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let port = free_port();
    let with_port = |name: &str| {
        let mut containers = world.shell_container("app", "exec sleep 1000");
        containers.push_str(&format!("    ports:\n    - containerPort: {port}\n"));
        world.pod_yaml(name, "", &containers)
    };
    world.write_manifest("first.yaml", &with_port("first"));
    let first = world.wait_pod("first", "running", |p| running_pid(p, "app").is_some());
    let ports = &first["details"]["pod"]["ports"];
    assert_eq!(ports[0], format!("{port}->{port}/tcp"), "{first:#}");
    assert_eq!(first["details"]["pod"]["network"], "host");

    world.write_manifest("second.yaml", &with_port("second"));
    let second = world.wait_pod("second", "the conflict reported", |p| {
        p["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("already held by pod"))
    });
    let error = second["lastError"].as_str().expect("error");
    assert!(error.contains(&port.to_string()), "{error}");
    let app = container(&second, "app");
    assert!(
        app.is_none_or(|c| c["containerId"].is_null()),
        "the second pod did not start: {second:#}"
    );
    let first_again = world.pod("first").expect("first");
    assert_eq!(running_pid(&first_again, "app"), running_pid(&first, "app"));

    // Once the first pod is gone, the second one gets the port.
    world.remove_manifest("first.yaml");
    world.wait_pod_gone("first");
    world.wait_pod("second", "running with the port", |p| {
        running_pid(p, "app").is_some()
    });
}

#[test]
fn the_pods_etc_files_come_from_its_network() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let data = world.data_dir("data");
    let extra = format!(
        "  hostAliases:\n  - ip: 10.9.8.7\n    hostnames: [db.internal]\n{}",
        data.volume
    );
    let mut containers =
        world.shell_container("app", "cat /etc/hosts > /data/hosts; exec sleep 1000");
    containers.push_str(DataDir::MOUNT);
    world.write_manifest("names.yaml", &world.pod_yaml("names", &extra, &containers));
    world.wait_pod("names", "running", |p| running_pid(p, "app").is_some());
    let hosts = berth_e2e::wait_until(
        std::time::Duration::from_secs(20),
        "the pod's /etc/hosts copy",
        || {
            std::fs::read_to_string(data.path.join("hosts"))
                .ok()
                .filter(|t| !t.is_empty())
        },
    );
    assert!(hosts.contains("10.9.8.7\tdb.internal"), "{hosts}");
}
