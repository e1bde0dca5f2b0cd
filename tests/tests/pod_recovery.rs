//! Crash safety of the pod reconciler through the real agent: kill -9 the
//! agent while pods run, change things while it is down, start it again.

use berth_e2e::for_each_runtime;
use std::path::Path;
use std::time::Duration;

use berth_e2e::pods::{DataDir, PodWorld, container, restarts, running_pid};
use berth_e2e::wait_until;

for_each_runtime!(a_restarted_agent_adopts_running_containers_and_learns_real_exits);

fn started_events(world: &PodWorld, name: &str) -> usize {
    world
        .events(name)
        .iter()
        .filter(|e| e["reason"] == "Started")
        .count()
}

/// Five pods run; the agent is killed with SIGKILL. While it is down one
/// container exits with 7 and one pod's manifest is removed. The restarted
/// agent restarts nothing (same PIDs), reports the real exit code, and
/// removes the deleted pod.
fn a_restarted_agent_adopts_running_containers_and_learns_real_exits(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let data = world.data_dir("data");
    for i in 0..3 {
        let yaml = world.pod_yaml(
            &format!("keep{i}"),
            "",
            &world.shell_container("app", "exec sleep 1000"),
        );
        world.write_manifest(&format!("keep{i}.yaml"), &yaml);
    }
    let extra = format!("  restartPolicy: Never\n{}", data.volume);
    let mut quits = world.shell_container(
        "app",
        "while [ ! -f /data/go ]; do sleep 0.05; done; exit 7",
    );
    quits.push_str(DataDir::MOUNT);
    world.write_manifest("quits.yaml", &world.pod_yaml("quits", &extra, &quits));
    let doomed = world.pod_yaml(
        "doomed",
        "",
        &world.shell_container("app", "exec sleep 1000"),
    );
    world.write_manifest("doomed.yaml", &doomed);

    let names = ["keep0", "keep1", "keep2", "quits", "doomed"];
    let mut pids = Vec::new();
    for name in names {
        let pod = world.wait_pod(name, "running", |p| running_pid(p, "app").is_some());
        pids.push(running_pid(&pod, "app").expect("pid"));
    }

    world.kill_agent();
    std::fs::write(data.path.join("go"), "").expect("go");
    let quits_pid = pids[3];
    wait_until(
        Duration::from_secs(20),
        "the quitting container to exit",
        || (!Path::new(&format!("/proc/{quits_pid}")).exists()).then_some(()),
    );
    world.remove_manifest("doomed.yaml");
    world.start_agent();

    let quit = world.wait_pod("quits", "its exit learned", |p| {
        container(p, "app").is_some_and(|c| !c["state"]["terminated"].is_null())
    });
    let terminated = &container(&quit, "app").expect("app")["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 7, "the real exit code: {quit:#}");
    assert_eq!(terminated["reason"], "Error");
    assert_eq!(quit["phase"], "Failed");
    world.wait_pod_gone("doomed");
    assert!(
        !Path::new(&format!("/proc/{}", pids[4])).exists(),
        "the deleted pod's container was stopped"
    );
    for (i, name) in names.iter().take(3).enumerate() {
        let pod = world.wait_pod(name, "reported by the new agent", |p| {
            running_pid(p, "app").is_some()
        });
        assert_eq!(
            running_pid(&pod, "app"),
            Some(pids[i]),
            "{name} kept its process"
        );
        assert_eq!(restarts(&pod, "app"), Some(0));
        assert_eq!(started_events(&world, name), 1, "{name} was started once");
    }

    // The adopted containers are watched again: an exit now is noticed
    // and restarted (restartPolicy Always).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pids[0]).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing an adopted container");
    let pod = world.wait_pod("keep0", "restarted after its exit", |p| {
        restarts(p, "app") == Some(1) && running_pid(p, "app").is_some()
    });
    assert_ne!(running_pid(&pod, "app"), Some(pids[0]));
}
