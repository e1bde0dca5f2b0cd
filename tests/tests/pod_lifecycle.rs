//! The pod lifecycle through the real agent (`berth run`) with real
//! runc AND crun (`runtimeClassName`), images from a local registry:
//! every case runs once per runtime (`runc::<case>`, `crun::<case>`), and
//! those gVisor changes also under runsc (`gvisor::<case>`).

use berth_e2e::{for_each_runtime, under_gvisor};
use std::time::Duration;

use berth_e2e::images::busybox_image;
use berth_e2e::pods::{DataDir, PodWorld, container, restarts, running_pid};
use berth_e2e::wait_until;

for_each_runtime!(
    a_pod_runs_and_writes_to_a_host_path,
    exit_codes_and_restart_counts_follow_the_restart_policy,
    crash_loop_back_off_delays_grow_and_cap,
    init_containers_gate_app_containers,
    sigterm_then_sigkill_after_the_grace_period,
    editing_one_container_replaces_only_that_container,
    a_fix_is_not_held_by_the_back_off_of_the_broken_version,
    deleting_a_pod_leaves_nothing_behind,
    resource_limits_are_applied_or_refused_clearly,
    reconciling_an_unchanged_pod_touches_nothing,
);

under_gvisor!(
    a_pod_runs_and_writes_to_a_host_path,
    exit_codes_and_restart_counts_follow_the_restart_policy,
    sigterm_then_sigkill_after_the_grace_period,
    deleting_a_pod_leaves_nothing_behind,
    resource_limits_are_applied_or_refused_clearly,
);

fn a_pod_runs_and_writes_to_a_host_path(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let data = world.data_dir("data");
    let mut containers = world.shell_container(
        "app",
        "cat /proc/version > /data/version; echo hello from $(hostname) > /data/out.txt; exec sleep 1000",
    );
    containers.push_str(DataDir::MOUNT);
    world.write_manifest(
        "web.yaml",
        &world.pod_yaml("web", &data.volume, &containers),
    );

    let pod = world.wait_pod("web", "app running", |p| {
        p["phase"] == "Running" && running_pid(p, "app").is_some()
    });
    let out = wait_until(
        Duration::from_secs(20),
        "the pod to write /data/out.txt",
        || {
            std::fs::read_to_string(data.path.join("out.txt"))
                .ok()
                .filter(|t| t.ends_with('\n'))
        },
    );
    assert!(out.starts_with("hello from "), "{out}");
    // Read from inside: under gVisor the kernel is gVisor's, not the host's.
    let inside = std::fs::read_to_string(data.path.join("version")).expect("/proc/version");
    let host = std::fs::read_to_string("/proc/version").expect("the host's /proc/version");
    assert_eq!(inside != host, runtime == "gvisor", "{runtime}: {inside}");
    assert_eq!(pod["message"], "1/1 running", "{pod:#}");
    let app = container(&pod, "app").expect("app status");
    assert_eq!(app["runtime"], runtime, "{pod:#}");
    assert_eq!(app["restartCount"], 0);
    assert_eq!(app["imageDigest"], world.image.digest.as_str(), "{pod:#}");
    assert_eq!(restarts(&pod, "app"), Some(0));
    let pid = running_pid(&pod, "app").expect("pid");
    assert!(
        world.processes().iter().any(|p| i64::from(*p) == pid),
        "the container's process {pid} is in the world's cgroup parent"
    );
}

/// Terminated state fields of a container: (exitCode, reason).
fn terminated(pod: &serde_json::Value, name: &str) -> Option<(i64, String)> {
    let state = &container(pod, name)?["state"]["terminated"];
    Some((
        state["exitCode"].as_i64()?,
        state["reason"].as_str()?.to_owned(),
    ))
}

fn exit_codes_and_restart_counts_follow_the_restart_policy(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let cases = [
        ("always-fails", "Always", "exit 3"),
        ("onfailure-fails", "OnFailure", "exit 3"),
        ("onfailure-ok", "OnFailure", "exit 0"),
        ("never-fails", "Never", "exit 3"),
    ];
    for (name, policy, script) in cases {
        let spec = format!("  restartPolicy: {policy}\n");
        let yaml = world.pod_yaml(name, &spec, &world.shell_container("app", script));
        world.write_manifest(&format!("{name}.yaml"), &yaml);
    }
    for name in ["always-fails", "onfailure-fails"] {
        let pod = world.wait_pod(name, "two restarts", |p| {
            restarts(p, "app").is_some_and(|r| r >= 2)
        });
        let last = &container(&pod, "app").expect("app")["lastState"]["terminated"];
        assert_eq!(last["exitCode"], 3, "{pod:#}");
        assert_eq!(last["reason"], "Error", "{pod:#}");
        assert_eq!(
            pod["phase"], "Running",
            "a crash-looping pod is Running: {pod:#}"
        );
    }
    let ok = world.wait_pod("onfailure-ok", "Succeeded", |p| p["phase"] == "Succeeded");
    assert_eq!(
        terminated(&ok, "app"),
        Some((0, "Completed".into())),
        "{ok:#}"
    );
    assert_eq!(restarts(&ok, "app"), Some(0));
    let never = world.wait_pod("never-fails", "Failed", |p| p["phase"] == "Failed");
    assert_eq!(
        terminated(&never, "app"),
        Some((3, "Error".into())),
        "{never:#}"
    );
    assert_eq!(restarts(&never, "app"), Some(0));
    assert!(
        never["message"]
            .as_str()
            .is_some_and(|m| m.contains("exit code 3")),
        "{never:#}"
    );
}

/// Restart delays come from the agent's Exited events ("back-off 200ms");
/// the gaps between starts, measured with the host's uptime written by
/// each instance, are at least those delays.
fn crash_loop_back_off_delays_grow_and_cap(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let data = world.data_dir("data");
    let mut containers =
        world.shell_container("app", "cut -d' ' -f1 /proc/uptime >> /data/starts; exit 1");
    containers.push_str(DataDir::MOUNT);
    world.write_manifest(
        "crash.yaml",
        &world.pod_yaml("crash", &data.volume, &containers),
    );
    let pod = world.wait_pod("crash", "six restarts", |p| {
        restarts(p, "app").is_some_and(|r| r >= 6)
    });
    let app = container(&pod, "app").expect("app");
    let waiting = &app["state"]["waiting"];
    if !waiting.is_null() {
        assert_eq!(waiting["reason"], "CrashLoopBackOff", "{pod:#}");
    }
    let delays: Vec<String> = world
        .events("crash")
        .iter()
        .filter(|e| e["reason"] == "Exited")
        .filter_map(|e| {
            let message = e["message"].as_str()?;
            Some(message.split("back-off ").nth(1)?.to_owned())
        })
        .collect();
    assert!(delays.len() >= 6, "{delays:?}");
    assert_eq!(
        delays[..6],
        ["200ms", "400ms", "800ms", "1600ms", "1600ms", "1600ms"],
        "delays double from backoff-initial and cap at backoff-max"
    );
    let starts: Vec<f64> = std::fs::read_to_string(data.path.join("starts"))
        .expect("starts")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let expected = [0.2, 0.4, 0.8, 1.6, 1.6, 1.6];
    for (i, delay) in expected.iter().enumerate() {
        let gap = starts[i + 1] - starts[i];
        // /proc/uptime has 10 ms resolution.
        assert!(
            gap >= delay - 0.02,
            "restart {} came after {gap}s, before its back-off {delay}s: {starts:?}",
            i + 1
        );
    }
}

fn init_containers_gate_app_containers(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let extra = format!(
        "  volumes:\n  - name: work\n    emptyDir: {{}}\n  initContainers:\n{}    volumeMounts:\n    - name: work\n      mountPath: /work\n{}    volumeMounts:\n    - name: work\n      mountPath: /work\n",
        world.shell_container("first", "echo one > /work/first"),
        world.shell_container(
            "second",
            "test -f /work/first && sleep 1 && echo two > /work/second"
        ),
    );
    let mut containers = world.shell_container(
        "app",
        "cat /work/first /work/second > /work/seen; exec sleep 1000",
    );
    containers.push_str("    volumeMounts:\n    - name: work\n      mountPath: /work\n");
    world.write_manifest("init.yaml", &world.pod_yaml("init", &extra, &containers));
    let pod = world.wait_pod("init", "app running", |p| running_pid(p, "app").is_some());
    for init in ["first", "second"] {
        assert_eq!(
            terminated(&pod, init),
            Some((0, "Completed".into())),
            "{pod:#}"
        );
    }
    let second_finished =
        container(&pod, "second").expect("second")["state"]["terminated"]["finishedAt"]
            .as_str()
            .expect("finishedAt")
            .to_owned();
    let app_started = container(&pod, "app").expect("app")["state"]["running"]["startedAt"]
        .as_str()
        .expect("startedAt")
        .to_owned();
    // RFC 3339 UTC timestamps order as strings.
    assert!(
        app_started >= second_finished,
        "app started {app_started} before the last init container finished {second_finished}"
    );

    // A failing init container under restartPolicy Never fails the pod and
    // its app container never starts.
    let extra = format!(
        "  restartPolicy: Never\n  initContainers:\n{}",
        world.shell_container("setup", "exit 4")
    );
    let yaml = world.pod_yaml(
        "badinit",
        &extra,
        &world.shell_container("app", "exec sleep 1000"),
    );
    world.write_manifest("badinit.yaml", &yaml);
    let pod = world.wait_pod("badinit", "Failed", |p| p["phase"] == "Failed");
    assert_eq!(
        terminated(&pod, "setup"),
        Some((4, "Error".into())),
        "{pod:#}"
    );
    let app = container(&pod, "app").expect("app");
    assert!(app["containerId"].is_null(), "app never started: {pod:#}");
    assert_eq!(
        app["state"]["waiting"]["reason"], "PodInitializing",
        "{pod:#}"
    );
}

/// A container that ignores SIGTERM is killed once the grace period is
/// over; one that handles it stops right away. Measured from the agent's
/// events and the containers' own records, not slept.
fn sigterm_then_sigkill_after_the_grace_period(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let data = world.data_dir("data");
    let volume = &data.volume;
    // SIGTERM ignored (an ignored signal stays ignored across exec). A
    // bare pid 1 without a handler would do under runc (the kernel drops
    // it), but gVisor delivers it.
    let stubborn = world.pod_yaml(
        "stubborn",
        &format!("  terminationGracePeriodSeconds: 3\n{volume}"),
        &world.shell_container("app", "trap '' TERM; exec sleep 1000"),
    );
    let mut polite_container = world.shell_container(
        "app",
        "trap 'echo TERM > /data/polite; exit 0' TERM; while true; do sleep 0.1; done",
    );
    polite_container.push_str(DataDir::MOUNT);
    let polite = world.pod_yaml(
        "polite",
        &format!("  terminationGracePeriodSeconds: 30\n{volume}"),
        &polite_container,
    );
    world.write_manifest("stubborn.yaml", &stubborn);
    world.write_manifest("polite.yaml", &polite);
    for name in ["stubborn", "polite"] {
        world.wait_pod(name, "running", |p| running_pid(p, "app").is_some());
    }
    world.remove_manifest("stubborn.yaml");
    world.remove_manifest("polite.yaml");
    world.wait_pod_gone("stubborn");
    world.wait_pod_gone("polite");

    let time_of = |name: &str, reason: &str| {
        world
            .events(name)
            .iter()
            .find(|e| e["reason"] == reason)
            .and_then(|e| e["time"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no {reason} event for {name}: {:#?}", world.events(name)))
    };
    let killing = parse_time(&time_of("stubborn", "Killing"));
    let killed = parse_time(&time_of("stubborn", "Killed"));
    let waited = killed - killing;
    assert!(
        waited >= 3.0,
        "SIGKILL came {waited}s after the stop signal, before the 3s grace period"
    );
    assert!(
        std::fs::read_to_string(data.path.join("polite")).is_ok_and(|t| t == "TERM\n"),
        "the polite container saw SIGTERM"
    );
    assert!(
        world
            .events("polite")
            .iter()
            .all(|e| e["reason"] != "Killed"),
        "the polite container was not SIGKILLed: {:#?}",
        world.events("polite")
    );
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp with fractions.
fn parse_time(text: &str) -> f64 {
    let (date, time) = text
        .trim_end_matches('Z')
        .split_once('T')
        .expect("RFC 3339");
    let mut d = date.split('-').map(|p| p.parse::<i64>().expect("date"));
    let (y, m, day) = (
        d.next().expect("y"),
        d.next().expect("m"),
        d.next().expect("d"),
    );
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut t = time.split(':');
    let h: f64 = t.next().expect("h").parse().expect("h");
    let min: f64 = t.next().expect("m").parse().expect("m");
    let s: f64 = t.next().expect("s").parse().expect("s");
    #[allow(clippy::cast_precision_loss)]
    let days = days as f64;
    days * 86400.0 + h * 3600.0 + min * 60.0 + s
}

/// kubelet recreates the whole pod on any edit of a static pod
/// (kubernetes#52939); berth replaces only the container that changed, and
/// pulls its new image before stopping the old one.
fn editing_one_container_replaces_only_that_container(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let v2 = busybox_image(&world.registry, "berth/busybox2");
    let both = |app_image: &str| {
        let app = world
            .shell_container("app", "exec sleep 1000")
            .replace(&world.image.reference, app_image);
        format!("{app}{}", world.shell_container("side", "exec sleep 1000"))
    };
    world.write_manifest(
        "two.yaml",
        &world.pod_yaml("two", "", &both(&world.image.reference)),
    );
    let before = world.wait_pod("two", "both running", |p| {
        running_pid(p, "app").is_some() && running_pid(p, "side").is_some()
    });
    world.write_manifest("two.yaml", &world.pod_yaml("two", "", &both(&v2.reference)));
    let after = world.wait_pod("two", "app running the new image", |p| {
        running_pid(p, "app").is_some()
            && container(p, "app").is_some_and(|c| c["imageDigest"] == v2.digest.as_str())
    });
    assert_eq!(
        running_pid(&after, "side"),
        running_pid(&before, "side"),
        "the sibling keeps its process"
    );
    assert_ne!(running_pid(&after, "app"), running_pid(&before, "app"));
    assert_eq!(
        after["details"]["pod"]["uid"], before["details"]["pod"]["uid"],
        "the same pod, not a new one"
    );
    assert_eq!(restarts(&after, "side"), Some(0));
    let events = world.events("two");
    let position = |reason: &str, needle: &str| {
        events
            .iter()
            .position(|e| {
                e["reason"] == reason && e["message"].as_str().is_some_and(|m| m.contains(needle))
            })
            .unwrap_or_else(|| panic!("no {reason} event with {needle:?}: {events:#?}"))
    };
    let pulled = position("Pulled", &v2.reference);
    let killing = position("Killing", "container app");
    assert!(
        pulled < killing,
        "the new image was pulled before the old container was stopped: {events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["reason"] == "Killing"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("container side"))),
        "the sibling was never stopped: {events:#?}"
    );
}

/// An edit to an image that cannot be pulled keeps the old container
/// running and backs off; the edit that fixes it is started at once, not
/// after the broken version's back-off (the kubelet keys back-off by the
/// container's spec hash). The back-off here is 10 minutes, so waiting it
/// out would fail the test.
fn a_fix_is_not_held_by_the_back_off_of_the_broken_version(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    let config = std::fs::read_to_string(&world.config).expect("reading the agent config");
    let long_backoff = config.replace(
        "backoff-initial = \"200ms\"\nbackoff-max = \"1600ms\"",
        "backoff-initial = \"10m\"\nbackoff-max = \"10m\"",
    );
    assert_ne!(config, long_backoff, "the pod back-off is in the config");
    std::fs::write(&world.config, long_backoff).expect("writing the agent config");
    world.start_agent();
    let missing = format!("{}/berth/missing:1", world.registry.host());
    let app = |image: &str, script: &str| {
        world
            .shell_container("app", script)
            .replace(&world.image.reference, image)
    };
    let good = &world.image.reference;
    world.write_manifest(
        "fix.yaml",
        &world.pod_yaml("fix", "", &app(good, "exec sleep 1000")),
    );
    let first = world.wait_pod("fix", "app running", |p| running_pid(p, "app").is_some());
    world.write_manifest(
        "fix.yaml",
        &world.pod_yaml("fix", "", &app(&missing, "exec sleep 1000")),
    );
    wait_until(
        Duration::from_secs(30),
        "the pull of the broken edit to fail",
        || {
            world
                .events("fix")
                .iter()
                .any(|e| {
                    e["type"] == "Warning"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("berth/missing"))
                })
                .then_some(())
        },
    );
    let held = world.pod("fix").expect("the pod's status");
    assert_eq!(
        running_pid(&held, "app"),
        running_pid(&first, "app"),
        "the old container runs on while the broken edit backs off: {held:#}"
    );
    world.write_manifest(
        "fix.yaml",
        &world.pod_yaml("fix", "", &app(good, "exec sleep 1001")),
    );
    let fixed = world.wait_pod("fix", "the fixed version running", |p| {
        running_pid(p, "app").is_some_and(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == b"1001"))
        })
    });
    assert_ne!(running_pid(&fixed, "app"), running_pid(&first, "app"));
}

/// Deleting the manifest stops the containers and removes every mount,
/// cgroup, bundle, shim state, sandbox and process the pod had — checked.
fn deleting_a_pod_leaves_nothing_behind(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let extra = "  volumes:\n  - name: scratch\n    emptyDir:\n      medium: Memory\n  - name: disk\n    emptyDir: {}\n";
    let mut containers = world.shell_container("app", "exec sleep 1000");
    containers.push_str("    volumeMounts:\n    - name: scratch\n      mountPath: /scratch\n    - name: disk\n      mountPath: /disk\n");
    containers.push_str(&world.shell_container("side", "exec sleep 1000"));
    world.write_manifest("gone.yaml", &world.pod_yaml("gone", extra, &containers));
    let pod = world.wait_pod("gone", "both running", |p| {
        running_pid(p, "app").is_some() && running_pid(p, "side").is_some()
    });
    assert!(
        !world.mounts().is_empty(),
        "the pod has mounts while it runs"
    );
    assert!(!world.cgroups().is_empty(), "and cgroups");
    let pids: Vec<i64> = ["app", "side"]
        .iter()
        .filter_map(|c| running_pid(&pod, c))
        .collect();
    world.remove_manifest("gone.yaml");
    world.wait_pod_gone("gone");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone"
        );
    }
    assert_eq!(
        world.processes(),
        Vec::<i32>::new(),
        "no process in the pod cgroups"
    );
    assert_eq!(
        world.cgroups(),
        Vec::<std::path::PathBuf>::new(),
        "no cgroup left"
    );
    assert_eq!(
        world.mounts(),
        Vec::<std::path::PathBuf>::new(),
        "no mount left"
    );
    for dir in ["bundles", "shims", "pods", "netns"] {
        let path = world.dirs.run_root.join(dir);
        let left: Vec<_> = std::fs::read_dir(&path)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} still holds {left:?}", path.display());
    }
    for dir in ["containers", "pods", "pod-state"] {
        let path = world.dirs.root.join(dir);
        let left: Vec<_> = std::fs::read_dir(&path)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} still holds {left:?}", path.display());
    }
}

/// Resource limits with each runtime: applied, or — where crun cannot
/// apply them on this hybrid-cgroup host — the pod reports the clear error.
fn resource_limits_are_applied_or_refused_clearly(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let mut containers = world.shell_container("app", "exec sleep 1000");
    containers.push_str("    resources:\n      limits:\n        memory: 64Mi\n        cpu: 500m\n");
    world.write_manifest("limits.yaml", &world.pod_yaml("limits", "", &containers));
    let layout = berth::runtime::CgroupLayout::detect().expect("cgroup layout");
    if runtime == "crun"
        && let Some(blocker) = layout.crun_blocker()
    {
        let pod = world.wait_pod("limits", "the crun error", |p| {
            container(p, "app")
                .is_some_and(|c| c["state"]["waiting"]["reason"] == "CreateContainerError")
        });
        let message = container(&pod, "app").expect("app")["state"]["waiting"]["message"]
            .as_str()
            .expect("message")
            .to_owned();
        assert!(
            message.contains("hugetlb") && message.contains("runc"),
            "{message} ({blocker})"
        );
        return;
    }
    let pod = world.wait_pod("limits", "app running", |p| running_pid(p, "app").is_some());
    let id = container(&pod, "app").expect("app")["containerId"]
        .as_str()
        .expect("id")
        .to_owned();
    let memory = world
        .cgroups()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory") && d.ends_with(&id))
        .unwrap_or_else(|| panic!("no memory cgroup for {id}: {:?}", world.cgroups()));
    let limit = std::fs::read_to_string(memory.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(memory.join("memory.max")))
        .expect("memory limit");
    assert_eq!(limit.trim(), "67108864");
}

/// Reconciling again with nothing changed touches nothing: the agent
/// relists every 300 ms here, and after several relists the container is
/// the same process, started once, its `:latest` image pulled once.
fn reconciling_an_unchanged_pod_touches_nothing(runtime: &str) {
    let mut world = PodWorld::with_config(runtime, "[controller]\nrelist-interval = \"300ms\"\n");
    world.start_agent();
    let yaml = world.pod_yaml(
        "steady",
        "",
        &world.shell_container("app", "exec sleep 1000"),
    );
    world.write_manifest("steady.yaml", &yaml);
    let pod = world.wait_pod("steady", "running", |p| running_pid(p, "app").is_some());
    let relists = |log: &str| log.matches("periodic relist").count();
    let seen = relists(&world.agent().log());
    wait_until(Duration::from_secs(20), "four more relists", || {
        (relists(&world.agent().log()) >= seen + 4).then_some(())
    });
    let again = world.pod("steady").expect("status");
    assert_eq!(running_pid(&again, "app"), running_pid(&pod, "app"));
    assert_eq!(restarts(&again, "app"), Some(0));
    let count = |reason: &str| {
        world
            .events("steady")
            .iter()
            .filter(|e| e["reason"] == reason)
            .count()
    };
    assert_eq!(count("Started"), 1, "{:#?}", world.events("steady"));
    assert_eq!(count("Pulled"), 1, "{:#?}", world.events("steady"));
    assert_eq!(count("Killing"), 0);
    assert_eq!(count("Recreating"), 0);
}
