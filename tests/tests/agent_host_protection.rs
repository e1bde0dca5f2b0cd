//! What the agent protects on the host, through the real agent with real
//! runc: its state directories and databases are root-only however they
//! were left, and the kernel's OOM killer takes containers before the
//! agent (kubelet's scores: containers above the agent, BestEffort at
//! 1000, Burstable by memory; processes exec'd into a container too).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use berth_e2e::pods::{PodWorld, running_pid};
use berth_e2e::proc_kib_field;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn oom_score_adj(pid: i64) -> i32 {
    let path = format!("/proc/{pid}/oom_score_adj");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {path}: {err}"))
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn state_is_root_only_and_containers_are_oom_killed_before_the_agent() {
    let mut world = PodWorld::new("runc");
    // Left open by whoever made them: the agent closes them at start.
    for dir in [&world.dirs.root, &world.dirs.run_root] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let limit: u64 = 64 << 20; // 64Mi, as below
    let mut containers = world.shell_container("besteffort", "exec sleep 1000");
    containers.push_str(&world.shell_container("burstable", "exec sleep 1000"));
    containers.push_str("    resources:\n      limits:\n        memory: 64Mi\n");
    world.write_manifest("pod.yaml", &world.pod_yaml("app", "", &containers));
    world.start_agent();
    let pod = world.wait_pod("app", "both running", |p| {
        running_pid(p, "besteffort").is_some() && running_pid(p, "burstable").is_some()
    });

    let database = world.dirs.root.join("berth.db");
    let mut private = vec![
        world.dirs.root.clone(),
        world.dirs.run_root.clone(),
        database.clone(),
    ];
    // WAL mode: both exist while the agent has the database open.
    for suffix in ["-wal", "-shm"] {
        private.push(database.with_file_name(format!("berth.db{suffix}")));
    }
    for path in &private {
        assert_eq!(
            mode(path) & 0o077,
            0,
            "{} is mode {:04o}",
            path.display(),
            mode(path)
        );
    }

    let agent = oom_score_adj(i64::from(world.agent().pid()));
    let besteffort = oom_score_adj(running_pid(&pod, "besteffort").expect("pid"));
    let burstable = oom_score_adj(running_pid(&pod, "burstable").expect("pid"));
    // The pod is Burstable (one container has a limit): a container of it
    // without resources gets the kubelet's 999, one below BestEffort.
    assert_eq!(besteffort, 999, "no resources in a Burstable pod");
    let share = i32::try_from(
        u128::from(limit) * 1000 / u128::from(proc_kib_field("/proc/meminfo", "MemTotal")),
    )
    .expect("fits");
    let expected = (1000 - share).clamp(3, 999).max(agent + 1);
    assert_eq!(burstable, expected, "kubelet's Burstable formula");
    assert!(
        besteffort > agent && burstable > agent,
        "containers ({besteffort}, {burstable}) must come before the agent ({agent})"
    );
    // What runs inside through the runtime's exec (probes, `berth exec`)
    // gets the container's score too.
    let exec = world.dirs.berth(&[
        "exec",
        "app/besteffort",
        "--",
        "cat",
        "/proc/self/oom_score_adj",
    ]);
    assert!(exec.status.success(), "{exec:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "999\n");
}
