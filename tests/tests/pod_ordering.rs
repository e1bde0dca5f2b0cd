//! What one change of the manifest directory brings is in effect together,
//! and lost records never wedge the node. Real agent, real runc, real
//! registries.
//!
//! - A Pod and the `certs.d/<host>/hosts.toml` it needs, added in one
//!   change (one atomic rename, as a git checkout swap does), pull through
//!   the new configuration at once: the pod never reports a failed pull
//!   (it did for 10-25 s while it pulled through the old configuration).
//! - With the agent's pod records gone (a lost or corrupted state
//!   directory), a restarted agent stops the containers nobody knows and
//!   removes their cgroups, mounts and sandboxes, instead of failing at
//!   every start.

use std::time::Duration;

use berth_e2e::images::busybox_image;
use berth_e2e::pods::{PodWorld, running_pid};
use berth_e2e::registry::{Registry, RegistryOptions};
use berth_e2e::{poll_until, unique_name};

#[test]
fn a_pod_and_the_hosts_toml_it_needs_in_one_change_pull_through_the_new_configuration() {
    let mut world = PodWorld::new("runc");
    // A registry the agent's config knows nothing about: plain HTTP, which
    // only a hosts.toml can say.
    let other = Registry::start(RegistryOptions::default());
    let image = busybox_image(&other, "berth/elsewhere");
    world.start_agent();

    let stage = world.dirs.temp.path().join(unique_name("stage"));
    let app = stage.join("app");
    let host_dir = app.join("certs.d").join(other.host());
    std::fs::create_dir_all(&host_dir).expect("staging dir");
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!("server = \"{}\"\n", other.url()),
    )
    .expect("hosts.toml");
    let container = format!(
        "  - name: app\n    image: {}\n    command: [\"/bin/sh\", \"-c\", \"exec sleep 1000\"]\n",
        image.reference
    );
    std::fs::write(
        app.join("pod.yaml"),
        world.pod_yaml("elsewhere", "", &container),
    )
    .expect("pod.yaml");
    std::fs::rename(&app, world.dirs.manifests.join("app")).expect("one change");

    let mut seen = Vec::new();
    let running = poll_until(Duration::from_secs(30), || {
        let pod = world.pod("elsewhere")?;
        let message = pod["message"].as_str().unwrap_or_default().to_string();
        if seen.last() != Some(&message) {
            seen.push(message);
        }
        running_pid(&pod, "app").map(|_| pod)
    });
    assert!(running.is_some(), "never ran; its messages: {seen:#?}");
    assert!(
        seen.iter()
            .all(|m| !m.contains("BackOff") && !m.contains("failed")),
        "the pod reported a failed pull: {seen:#?}"
    );
    let failures: Vec<_> = world
        .events("elsewhere")
        .into_iter()
        .filter(|e| e["type"] == "Warning")
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    std::fs::remove_dir_all(world.dirs.manifests.join("app")).expect("removing the change");
    world.wait_pod_gone("elsewhere");
}

#[test]
fn lost_pod_records_make_the_restarted_agent_stop_and_remove_what_runs() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    for name in ["lost", "corrupt"] {
        world.write_manifest(
            &format!("{name}.yaml"),
            &world.pod_yaml(name, "", &world.shell_container("app", "exec sleep 1000")),
        );
    }
    let mut old_pids = Vec::new();
    for name in ["lost", "corrupt"] {
        let pod = world.wait_pod(name, "running", |p| running_pid(p, "app").is_some());
        old_pids.push(running_pid(&pod, "app").expect("pid"));
    }
    world.kill_agent();
    // One record gone, one that no longer parses; the manifests stay.
    let records = world.dirs.root.join("pod-state");
    std::fs::remove_file(records.join("default_lost.json")).expect("losing a record");
    std::fs::write(
        records.join("default_corrupt.json"),
        "{\"version\": 1, \"trunc",
    )
    .expect("corrupting a record");

    world.start_agent();
    for (name, old) in ["lost", "corrupt"].into_iter().zip(&old_pids) {
        let pod = world.wait_pod(name, "running again, as a new container", |p| {
            running_pid(p, "app").is_some_and(|pid| pid != *old)
        });
        assert_eq!(pod["phase"], "Running", "{pod:#}");
    }
    for old in &old_pids {
        let alive = std::path::Path::new(&format!("/proc/{old}")).exists();
        assert!(!alive, "the container nobody knew (pid {old}) was stopped");
    }
    // Exactly the two new containers run; nothing of the old ones is left.
    let pids = world.processes();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // The unreadable record is kept aside for a person to look at, and
    // said so; nothing else failed.
    assert!(records.join("default_corrupt.json.corrupt").exists());
    let problems: Vec<String> = std::fs::read_to_string(world.dirs.run_root.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"RecoveryFailed\""))
        .map(str::to_string)
        .collect();
    assert!(
        problems.len() == 1
            && problems[0].contains("default_corrupt.json")
            && problems[0].contains("moved aside"),
        "{problems:#?}"
    );
    let sandboxes = std::fs::read_dir(world.dirs.run_root.join("pods"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sandboxes, 2, "only the new pods' sandboxes are left");
}
