//! The pod fields that change what a container may do, through the real
//! agent with real runc AND crun, each read back from the kernel (the
//! container's `/proc/<pid>` on the host) or from inside the container:
//! seccomp modes, shared and host PID namespaces, the host IPC namespace,
//! sysctls (safe, allowlisted, refused) and OOM scores by QoS class.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::for_each_runtime;
use berth_e2e::pods::{PodWorld, running_pid};
use berth_e2e::wait_until;

for_each_runtime!(
    seccomp_modes_reach_the_kernel,
    process_namespaces_shared_with_the_pod_or_the_host,
    sysctls_are_set_allowlisted_or_refused,
    oom_scores_follow_the_qos_class_and_priority,
    host_users_false_runs_the_pod_in_its_own_user_namespace,
);

/// A pod with its own network namespace (the world's `none` driver):
/// `spec` lines under `spec:`, `containers` a YAML list.
fn pod_yaml(world: &PodWorld, name: &str, spec: &str, containers: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  runtimeClassName: {runtime}\n  terminationGracePeriodSeconds: 1\n{spec}  containers:\n{containers}",
        runtime = world.runtime
    )
}

/// A container running `script`, with `extra` YAML lines (indented 4).
fn container(world: &PodWorld, name: &str, script: &str, extra: &str) -> String {
    format!("{}{extra}", world.shell_container(name, script))
}

/// A world-writable directory mounted at /out.
fn out_dir(world: &PodWorld) -> (PathBuf, String) {
    let out = world.dirs.temp.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod out");
    let volume = format!(
        "  volumes:\n  - name: out\n    hostPath:\n      path: {out:?}\n      type: Directory\n"
    );
    (out, volume)
}

const MOUNT_OUT: &str = "    volumeMounts:\n    - name: out\n      mountPath: /out\n";

fn answer(out: &Path, name: &str) -> String {
    wait_until(Duration::from_secs(60), &format!("/out/{name}"), || {
        std::fs::read_to_string(out.join(name))
            .ok()
            .filter(|t| t.ends_with('\n'))
    })
    .trim()
    .to_string()
}

/// `Key:\tvalue` of `/proc/<pid>/status`.
fn status_field(pid: i64, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn running(world: &PodWorld, pod: &str, containers: &[&str]) -> Vec<i64> {
    let status = world.wait_pod(pod, "its containers running", |p| {
        containers.iter().all(|c| running_pid(p, c).is_some())
    });
    containers
        .iter()
        .map(|c| running_pid(&status, c).expect("running"))
        .collect()
}

fn seccomp_modes_reach_the_kernel(runtime: &str) {
    let profiles = tempfile::tempdir().expect("profile dir");
    std::fs::create_dir_all(profiles.path().join("profiles")).expect("mkdir");
    // Docker's format, as the kubelet's seccomp/ directory holds it.
    std::fs::write(
        profiles.path().join("profiles/no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .expect("writing the profile");
    let mut world = PodWorld::with_config(
        runtime,
        &format!("[runtime]\nseccomp-profile-root = {:?}\n", profiles.path()),
    );
    // The world's config already has a [runtime] table: merge by rewriting.
    merge_runtime_table(&world.config);
    world.start_agent();
    let (out, volume) = out_dir(&world);
    let localhost = "    securityContext:\n      seccompProfile:\n        type: Localhost\n        localhostProfile: profiles/no-mkdir.json\n";
    let containers = [
        container(&world, "default", "exec sleep 1000", ""),
        container(
            &world,
            "unconfined",
            "exec sleep 1000",
            "    securityContext:\n      seccompProfile:\n        type: Unconfined\n",
        ),
        container(
            &world,
            "local",
            "if mkdir /tmp/made 2>/out/mkdir.err; then echo made; else echo refused; fi >/out/mkdir; exec sleep 1000",
            &format!("{localhost}{MOUNT_OUT}"),
        ),
    ]
    .concat();
    world.write_manifest(
        "seccomp.yaml",
        &pod_yaml(
            &world,
            "seccomp",
            &format!(
                "  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n{volume}"
            ),
            &containers,
        ),
    );
    let pids = running(&world, "seccomp", &["default", "unconfined", "local"]);
    // Seccomp: 2 is filter mode, 0 none.
    assert_eq!(status_field(pids[0], "Seccomp"), "2", "RuntimeDefault");
    assert_eq!(status_field(pids[0], "NoNewPrivs"), "1");
    assert_eq!(status_field(pids[1], "Seccomp"), "0", "Unconfined");
    assert_eq!(status_field(pids[2], "Seccomp"), "2", "Localhost");
    assert_eq!(answer(&out, "mkdir"), "refused");
    let why = std::fs::read_to_string(out.join("mkdir.err")).expect("mkdir.err");
    assert!(why.contains("Operation not permitted"), "{why}");

    // An AppArmor profile where the kernel has no AppArmor: a clear
    // error, not a silently unconfined container.
    if !Path::new("/sys/module/apparmor").exists() {
        world.write_manifest(
            "apparmor.yaml",
            &pod_yaml(
                &world,
                "apparmor",
                "  securityContext:\n    appArmorProfile:\n      type: Localhost\n      localhostProfile: k8s-deny-write\n",
                &container(&world, "c", "exec sleep 1000", ""),
            ),
        );
        let refused = world.wait_pod("apparmor", "refused", |p| {
            p["message"]
                .as_str()
                .is_some_and(|m| m.contains("AppArmor is not enabled on this host"))
        });
        assert!(running_pid(&refused, "c").is_none());
    }
}

/// `PodWorld::with_config` appends its extra text after the `[pods]`
/// table; a second `[runtime]` table would be a TOML error, so the
/// extra `[runtime]` keys move into the first one.
fn merge_runtime_table(config: &Path) {
    let text = std::fs::read_to_string(config).expect("config");
    let (head, extra) = text
        .rsplit_once("[runtime]\n")
        .expect("the extra [runtime]");
    let extra_lines: String = extra
        .lines()
        .take_while(|l| !l.starts_with('['))
        .map(|l| format!("{l}\n"))
        .collect();
    let rest: String = extra
        .lines()
        .skip_while(|l| !l.starts_with('['))
        .map(|l| format!("{l}\n"))
        .collect();
    let merged = head.replacen("[runtime]\n", &format!("[runtime]\n{extra_lines}"), 1) + &rest;
    std::fs::write(config, merged).expect("writing the config");
}

/// What a container prints about its IPC and PID namespaces.
const NAMESPACES: &str = "{ readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; }";

/// This test process's namespace of `kind` (`ipc:[4026531839]`).
fn ns_inode(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .expect("ns link")
        .to_string_lossy()
        .into_owned()
}

fn process_namespaces_shared_with_the_pod_or_the_host(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let (out, volume) = out_dir(&world);
    // The sibling lists every command line it sees.
    let list = &format!(
        "{NAMESPACES} > /out/$N-ns.tmp; mv /out/$N-ns.tmp /out/$N-ns; sleep 1; for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done > /out/$N.tmp; mv /out/$N.tmp /out/$N; exec sleep 1000"
    );
    let pair = |n: &str| {
        [
            container(&world, "sleeper", "exec sleep 4242", ""),
            container(
                &world,
                "looker",
                list,
                &format!("    env:\n    - name: N\n      value: {n}\n{MOUNT_OUT}"),
            ),
        ]
        .concat()
    };
    world.write_manifest(
        "shared.yaml",
        &pod_yaml(
            &world,
            "shared",
            &format!("  shareProcessNamespace: true\n{volume}"),
            &pair("shared"),
        ),
    );
    world.write_manifest(
        "apart.yaml",
        &pod_yaml(&world, "apart", &volume, &pair("apart")),
    );
    // The test's own PID, as the host sees it.
    let me = std::process::id();
    world.write_manifest(
        "host.yaml",
        &pod_yaml(
            &world,
            "host",
            &format!("  hostPID: true\n  hostIPC: true\n{volume}"),
            &container(
                &world,
                "c",
                &format!(
                    "if [ -e /proc/{me}/cmdline ]; then echo seen; else echo unseen; fi > /out/host; \
                     {NAMESPACES} > /out/host-ns.tmp; mv /out/host-ns.tmp /out/host-ns; exec sleep 1000"
                ),
                MOUNT_OUT,
            ),
        ),
    );
    running(&world, "shared", &["sleeper", "looker"]);
    running(&world, "apart", &["sleeper", "looker"]);
    running(&world, "host", &["c"]);

    // Listed in PID order: /proc/1 first.
    let shared = answer(&out, "shared");
    assert!(
        shared.contains("sleep 4242"),
        "the sibling's process: {shared}"
    );
    assert!(
        shared.lines().any(|l| l.contains("berth-shim --pod-init")),
        "the pod's init holds the namespace: {shared}"
    );
    let apart = answer(&out, "apart");
    assert!(
        !apart.contains("sleep 4242"),
        "no sibling without sharing: {apart}"
    );

    // hostPID: the container sees this test's process; both its IPC and
    // PID namespaces are the host's (this test's), the other pod's not.
    assert_eq!(answer(&out, "host"), "seen", "hostPID");
    let ours = format!("{}\n{}", ns_inode("ipc"), ns_inode("pid"));
    assert_eq!(answer(&out, "host-ns"), ours, "hostIPC and hostPID");
    let apart = answer(&out, "apart-ns");
    let lines: Vec<&str> = apart.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("ipc:[") && lines[1].starts_with("pid:["),
        "{apart}"
    );
    for line in lines {
        assert!(!ours.contains(line), "own namespaces without them: {apart}");
    }
    // The shared pod's containers share one PID namespace, not the host's.
    assert_ne!(
        answer(&out, "shared-ns").lines().nth(1),
        Some(ns_inode("pid").as_str())
    );

    // Removing the pod kills its init with it.
    let init = std::fs::read_dir(world.dirs.run_root.join("pods"))
        .expect("pods dir")
        .flatten()
        .find_map(|e| std::fs::read_to_string(e.path().join("ns/pid.init")).ok())
        .expect("the shared pod's init");
    world.remove_manifest("shared.yaml");
    world.wait_pod_gone("shared");
    wait_until(Duration::from_secs(10), "the pod's init to end", || {
        let state = std::fs::read_to_string(format!("/proc/{}/stat", init.trim())).ok();
        // Gone, or a zombie waiting for whoever adopted it.
        state.is_none_or(|s| s.contains(") Z ")).then_some(())
    });
}

fn sysctls_are_set_allowlisted_or_refused(runtime: &str) {
    let mut world = PodWorld::with_config(
        runtime,
        "[runtime]\nallowed-unsafe-sysctls = [\"net.core.somaxconn\"]\n",
    );
    merge_runtime_table(&world.config);
    world.start_agent();
    let (out, volume) = out_dir(&world);
    let sysctls = |entries: &[(&str, &str)]| {
        let mut text = volume.clone();
        text.push_str("  securityContext:\n    sysctls:\n");
        for (name, value) in entries {
            text.push_str(&format!("    - name: {name}\n      value: \"{value}\"\n"));
        }
        text
    };
    world.write_manifest(
        "tuned.yaml",
        &pod_yaml(
            &world,
            "tuned",
            &sysctls(&[
                ("net.ipv4.ip_unprivileged_port_start", "0"),
                ("net/core/somaxconn", "1234"),
            ]),
            &container(
                &world,
                "c",
                "for s in net/ipv4/ip_unprivileged_port_start net/core/somaxconn; do \
                 cat /proc/sys/$s; done > /out/tmp; mv /out/tmp /out/values; exec sleep 1000",
                MOUNT_OUT,
            ),
        ),
    );
    world.write_manifest(
        "refused.yaml",
        &pod_yaml(
            &world,
            "refused",
            &sysctls(&[("net.ipv4.tcp_max_syn_backlog", "77")]),
            &container(&world, "c", "exec sleep 1000", ""),
        ),
    );
    running(&world, "tuned", &["c"]);
    // Read inside the pod's network namespace.
    assert_eq!(answer(&out, "values"), "0\n1234", "safe, then allowlisted");
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .expect("host value");
    assert_ne!(host.trim(), "0", "the host's own value is untouched");
    let refused = world.wait_pod("refused", "refused with the reason", |p| {
        p["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("net.ipv4.tcp_max_syn_backlog"))
    });
    let message = refused["lastError"].as_str().unwrap_or_default();
    assert!(message.contains("allowed-unsafe-sysctls"), "{message}");
    assert!(running_pid(&refused, "c").is_none());
}

fn oom_scores_follow_the_qos_class_and_priority(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let limits = "    resources:\n      limits:\n        cpu: 100m\n        memory: 64Mi\n";
    let request = "    resources:\n      requests:\n        memory: 2Gi\n";
    let pods = [
        ("besteffort", "", ""),
        ("guaranteed", "", limits),
        ("burstable", "", request),
        (
            "critical",
            "  priorityClassName: system-node-critical\n",
            "",
        ),
    ];
    for (name, spec, resources) in pods {
        world.write_manifest(
            &format!("{name}.yaml"),
            &pod_yaml(
                &world,
                name,
                spec,
                &container(&world, "c", "exec sleep 1000", resources),
            ),
        );
    }
    let agent_pid = world.agent().pid();
    let agent: i32 = std::fs::read_to_string(format!("/proc/{agent_pid}/oom_score_adj"))
        .expect("agent score")
        .trim()
        .parse()
        .expect("a number");
    let ram = berth_e2e::proc_kib_field("/proc/meminfo", "MemTotal");
    // The kubelet's values; never below the agent's (lowering needs
    // CAP_SYS_RESOURCE, which an agent that could not lower its own lacks).
    let above_agent = |score: i32| score.max(agent + 1).min(1000);
    let burstable = i32::try_from(1000 - (1000 * (2u64 << 30)) / ram)
        .expect("fits")
        .clamp(3, 999);
    for (name, want) in [
        ("besteffort", 1000),
        ("guaranteed", above_agent(-997)),
        ("burstable", above_agent(burstable)),
        ("critical", above_agent(-997)),
    ] {
        let pid = running(&world, name, &["c"])[0];
        let score: i32 = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .expect("oom_score_adj")
            .trim()
            .parse()
            .expect("a number");
        assert_eq!(score, want, "{name} (agent at {agent})");
    }
}

fn host_users_false_runs_the_pod_in_its_own_user_namespace(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let (out, volume) = out_dir(&world);
    let script = "{ cat /proc/self/uid_map; id -u; \
                  if touch /made-by-root; then echo wrote; else echo refused; fi; \
                  busybox stat -c '%u' /bin/busybox; } > /out/tmp 2>&1; mv /out/tmp /out/userns; \
                  exec sleep 1000";
    // procMount: Unmasked (allowed with hostUsers: false): no /proc path
    // is masked over.
    let masks = "grep -c ' /proc/keys ' /proc/self/mountinfo > /out/tmp-$N; mv /out/tmp-$N /out/masks-$N; exec sleep 1000";
    let masks_of = |n: &str, extra: &str| {
        container(
            &world,
            n,
            masks,
            &format!("    env:\n    - name: N\n      value: {n}\n{extra}{MOUNT_OUT}"),
        )
    };
    let containers = [
        container(&world, "a", script, MOUNT_OUT),
        masks_of("b", ""),
        masks_of("c", "    securityContext:\n      procMount: Unmasked\n"),
    ]
    .concat();
    world.write_manifest(
        "userns.yaml",
        &pod_yaml(
            &world,
            "userns",
            &format!("  hostUsers: false\n{volume}"),
            &containers,
        ),
    );
    let pids = running(&world, "userns", &["a", "b", "c"]);
    assert_eq!(answer(&out, "masks-b"), "1", "Default: /proc/keys masked");
    assert_eq!(answer(&out, "masks-c"), "0", "Unmasked");
    let seen = answer(&out, "userns");
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), 4, "{seen}");
    let map: Vec<u64> = lines[0]
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    // Inside: 0..65536 mapped to a block of host IDs above 65535.
    assert_eq!(map[0], 0, "{seen}");
    assert!(map[1] >= 65536 && map[1].is_multiple_of(65536), "{seen}");
    assert_eq!(map[2], 65536, "{seen}");
    assert_eq!(lines[1], "0", "root inside");
    assert_eq!(lines[2], "wrote", "root inside owns its root file system");
    assert_eq!(
        lines[3], "0",
        "image files owned by the pod's root (idmapped layers)"
    );
    // Outside: the process runs as the block's first ID, in a user
    // namespace both containers share.
    let uid = status_field(pids[0], "Uid");
    assert!(
        uid.starts_with(&format!("{}\t", map[1])),
        "host view: {uid}"
    );
    assert_eq!(status_field(pids[1], "Uid"), uid);
    // The image's layers on disk are untouched (still owned by 0).
    let layer_owned_by_root = std::fs::read_dir(world.dirs.root.join("snapshots"))
        .expect("snapshots")
        .flatten()
        .any(|e| std::os::unix::fs::MetadataExt::uid(&e.metadata().expect("meta")) == 0);
    assert!(layer_owned_by_root);
    // While it runs, its root may search the run root (and nobody else
    // more than before); once it is gone, not even that.
    let pod_root = u32::try_from(map[1]).expect("an ID");
    assert!(acl_users(&world.dirs.run_root).contains(&pod_root));
    world.remove_manifest("userns.yaml");
    world.wait_pod_gone("userns");
    assert!(
        !acl_users(&world.dirs.run_root).contains(&pod_root),
        "the search entry is removed with the pod"
    );
}

/// The IDs named in `dir`'s POSIX ACL (`user:<id>:…` entries).
fn acl_users(dir: &Path) -> Vec<u32> {
    let mut buf = vec![0u8; 4096];
    let Ok(len) = rustix::fs::getxattr(dir, "system.posix_acl_access", &mut buf) else {
        return Vec::new();
    };
    buf[4..len]
        .chunks_exact(8)
        .filter(|e| u16::from_le_bytes([e[0], e[1]]) == 0x02)
        .map(|e| u32::from_le_bytes([e[4], e[5], e[6], e[7]]))
        .collect()
}
