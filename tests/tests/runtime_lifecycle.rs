//! Container lifecycle through berth's runtime library, the real berth-shim
//! and real runc AND crun: every case runs once per runtime
//! (`runc::<case>`, `crun::<case>`).

mod runtime_common;

use berth_e2e::for_each_runtime;
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth::runtime::logs;
use berth::runtime::spec::{Resources, Volume, VolumeMount, VolumeSource};
use berth::runtime::{ContainerState, RuntimeError};
use berth_e2e::wait_until;
use runtime_common::{Harness, read, sh};

for_each_runtime!(
    writes_to_a_host_path,
    logs_stdout_and_stderr_in_cri_format,
    reports_exit_codes_and_signal_deaths,
    stop_honours_sigterm,
    stop_kills_after_the_grace_period,
    exec_runs_inside_the_container_namespaces,
    removal_leaves_nothing_behind,
    applies_memory_cpu_and_pids_limits,
    reports_oom_kills,
    tty_output_reaches_the_log,
);

fn log_lines(h: &Harness, pod: &berth::runtime::PodInfo, container: &str) -> Vec<String> {
    let dir = h.paths.container_logs(&pod.namespace, &pod.name, container);
    logs::read_lines(&dir, 0, false).unwrap_or_default()
}

fn wait_for_log_line(h: &Harness, pod: &berth::runtime::PodInfo, container: &str, line: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("{line:?} in the log"),
        || {
            log_lines(h, pod, container)
                .iter()
                .any(|l| l == line)
                .then_some(())
        },
    );
}

fn writes_to_a_host_path(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("web");
    let (dir, volume, mount) = h.data_volume();
    let mut spec = sh("app", "echo written-by-$(hostname) > /data/out");
    spec.volume_mounts = vec![mount];
    let (id, created) = h.run_with_volumes(&pod, &spec, &[volume]).expect("started");
    assert_eq!(created.handler, runtime);
    let exit = h.wait_exit(&id);
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    assert_eq!(read(&dir.join("out")), "written-by-web\n");
}

fn logs_stdout_and_stderr_in_cri_format(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("web");
    // A 20000-byte line is longer than the 16 KiB record limit: P + F.
    let spec = sh(
        "app",
        "echo out-line; echo err-line >&2; head -c 20000 /dev/zero | tr '\\0' a; echo; printf no-newline",
    );
    let (id, _) = h.run(&pod, &spec);
    assert_eq!(h.wait_exit(&id).exit_code, 0);

    let raw = read(&h.log_path(&pod.0, "app"));
    let records: Vec<(String, String, String, String)> = raw
        .lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let mut next = || f.next().unwrap_or_default().to_string();
            (next(), next(), next(), next())
        })
        .collect();
    for (time, stream, tag, _) in &records {
        assert!(
            time.len() == 30 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "RFC 3339 nano timestamp: {time}"
        );
        assert!(stream == "stdout" || stream == "stderr", "{stream}");
        assert!(tag == "F" || tag == "P", "{tag}");
    }
    let of = |stream: &str| -> Vec<(String, usize, String)> {
        records
            .iter()
            .filter(|r| r.1 == stream)
            .map(|r| (r.2.clone(), r.3.len(), r.3.chars().take(10).collect()))
            .collect()
    };
    assert_eq!(of("stderr"), [("F".into(), 8, "err-line".into())]);
    assert_eq!(
        of("stdout"),
        [
            ("F".into(), 8, "out-line".into()),
            ("P".into(), 16384, "aaaaaaaaaa".into()),
            ("F".into(), 20000 - 16384, "aaaaaaaaaa".into()),
            ("F".into(), 10, "no-newline".into()),
        ]
    );
    // The reader joins the partial record back into one line.
    let lines = log_lines(&h, &pod.0, "app");
    assert!(
        lines
            .iter()
            .any(|l| l.len() == 20000 && l.bytes().all(|b| b == b'a'))
    );
    assert!(lines.contains(&"no-newline".to_string()));
}

fn reports_exit_codes_and_signal_deaths(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("web");
    let (ok, _) = h.run(&pod, &sh("ok", "exit 0"));
    let (three, _) = h.run(&pod, &sh("three", "exit 3"));
    let (killed, _) = h.run(&pod, &sh("killed", "sleep 1000"));
    let exit = h.wait_exit(&ok);
    assert_eq!(
        (exit.exit_code, exit.signal, exit.reason()),
        (0, None, "Completed")
    );
    let exit = h.wait_exit(&three);
    assert_eq!(
        (exit.exit_code, exit.signal, exit.reason()),
        (3, None, "Error")
    );
    h.block_on(h.runtime.kill(&killed, "SIGKILL"))
        .expect("kill");
    let exit = h.wait_exit(&killed);
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)), "{exit:?}");
    assert!(exit.started_at_ns.is_some_and(|s| s <= exit.finished_at_ns));
    assert!(!exit.oom_killed);
}

fn stop_honours_sigterm(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("web");
    let spec = sh(
        "app",
        "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    );
    let (id, _) = h.run(&pod, &spec);
    wait_for_log_line(&h, &pod.0, "app", "ready");
    let outcome = h
        .block_on(h.runtime.stop(&id, Duration::from_secs(30)))
        .expect("stop");
    assert!(!outcome.killed, "SIGTERM was enough: {outcome:?}");
    assert_eq!((outcome.exit.exit_code, outcome.exit.signal), (0, None));
    assert!(log_lines(&h, &pod.0, "app").contains(&"got-term".to_string()));
}

fn stop_kills_after_the_grace_period(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("web");
    let spec = sh(
        "app",
        "trap '' TERM; echo ready; while true; do sleep 0.1; done",
    );
    let (id, _) = h.run(&pod, &spec);
    wait_for_log_line(&h, &pod.0, "app", "ready");
    let grace = Duration::from_secs(2);
    let outcome = h.block_on(h.runtime.stop(&id, grace)).expect("stop");
    assert!(outcome.killed, "{outcome:?}");
    assert_eq!(
        (outcome.exit.exit_code, outcome.exit.signal),
        (137, Some(9))
    );
    // Measured from the shim's exit record: SIGTERM at `sent`, death by
    // SIGKILL no earlier than the grace period later.
    let sent = outcome.signal_sent_at.expect("a signal was sent");
    let sent_ns = sent
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos();
    let waited = Duration::from_nanos(
        u64::try_from(u128::from(outcome.exit.finished_at_ns) - sent_ns).expect("fits"),
    );
    assert!(
        waited >= grace && waited < grace + Duration::from_secs(5),
        "SIGKILL came {waited:?} after SIGTERM, grace {grace:?}"
    );
}

fn exec_runs_inside_the_container_namespaces(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("web");
    let (id, _) = h.run(&pod, &sh("app", "sleep 1000"));
    let pid = h.running_pid(&id);
    for ns in ["pid", "mnt", "net", "ipc", "uts"] {
        let (code, inside, err) = h.exec(&id, &["readlink", &format!("/proc/self/ns/{ns}")]);
        assert_eq!(code, 0, "exec readlink: {err}");
        let container = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("container ns");
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("host ns");
        assert_eq!(Path::new(inside.trim()), container, "{ns} namespace");
        assert_ne!(
            container, host,
            "{ns} is the container's own, not the host's"
        );
    }
    let (code, _, _) = h.exec(&id, &["sh", "-c", "exit 7"]);
    assert_eq!(code, 7, "the exec's exit code is propagated");

    // -t: a real terminal inside. The runtime needs the caller's own
    // terminal, as `berth exec -it` has; `script` provides one here.
    let exec = h
        .runtime
        .exec_command(
            &id,
            &berth::runtime::ExecRequest {
                argv: vec!["tty".into()],
                tty: true,
                ..Default::default()
            },
        )
        .expect("exec command");
    let command_line: Vec<String> = std::iter::once(exec.command.get_program())
        .chain(exec.command.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    let out = std::process::Command::new("script")
        .args(["-qec", &command_line.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running exec -t under script");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && tty.contains("/dev/pts/"),
        "tty said {tty:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn removal_leaves_nothing_behind(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("web");
    let (data, volume, mut mount) = h.data_volume();
    mount.sub_path = Some("sub/dir".into());
    let memory = Volume {
        name: "scratch".into(),
        source: VolumeSource::EmptyDir {
            memory: true,
            size_limit: Some(8 << 20),
        },
    };
    let mut spec = sh("app", "echo hi > /data/hello; sleep 1000");
    spec.volume_mounts = vec![
        mount,
        VolumeMount {
            name: "scratch".into(),
            mount_path: "/scratch".into(),
            ..Default::default()
        },
    ];
    let (id, _) = h
        .run_with_volumes(&pod, &spec, &[volume, memory])
        .expect("started");
    wait_until(Duration::from_secs(20), "the subPath file", || {
        data.join("sub/dir/hello").exists().then_some(())
    });
    let info = h.runtime.container(&id).expect("container");
    let record = info.record.expect("record");
    let ContainerState::Running {
        pid,
        shim_pid: Some(shim_pid),
        ..
    } = info.state
    else {
        panic!("not running: {:?}", info.state);
    };
    let cgroup_dirs = h.runtime.layout().hierarchy_dirs(&record.cgroups_path);
    assert!(
        cgroup_dirs.iter().any(|d| d.is_dir()),
        "the container has cgroups"
    );
    let bundle = record.bundle.clone();
    let mounts_under = |dir: &Path| -> Vec<String> {
        read(Path::new("/proc/self/mountinfo"))
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|mp| Path::new(mp).starts_with(dir))
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(mounts_under(&bundle).len(), 2, "rootfs and the subPath");

    h.remove(&id);
    assert_eq!(mounts_under(&bundle), Vec::<String>::new());
    for dir in &cgroup_dirs {
        assert!(!dir.exists(), "cgroup {} is left", dir.display());
    }
    for dir in [bundle, h.paths.shim_dir(&id), h.paths.container_layer(&id)] {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    for p in [pid, shim_pid] {
        assert!(!is_running(p), "process {p} is left");
    }
    assert!(data.join("sub/dir/hello").exists(), "hostPath data stays");

    let pod_dir = h.paths.pod_run_dir(&pod.0.uid);
    assert_eq!(
        mounts_under(&pod_dir).len(),
        4,
        "ipc, uts, shm, the memory emptyDir"
    );
    assert!(h.runtime.pods_on_host().contains(&pod.0.uid));
    h.runtime.remove_pod(&pod.0.uid).expect("remove pod");
    assert!(!h.runtime.pods_on_host().contains(&pod.0.uid));
    assert_eq!(mounts_under(&pod_dir), Vec::<String>::new());
    assert!(!pod_dir.exists());
    let pod_cgroup = format!("/{}/pod-{}", h.cgroup_parent, pod.0.uid);
    for dir in h.runtime.layout().hierarchy_dirs(&pod_cgroup) {
        assert!(!dir.exists(), "pod cgroup {} is left", dir.display());
    }
}

/// Whether `pid` is a live process (a zombie waiting for the host's init to
/// reap it is not).
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

fn applies_memory_cpu_and_pids_limits(runtime: &str) {
    let mut h = Harness::new(runtime);
    if let Err(err) = h.runtime.handler_for(Some(runtime)) {
        // Only crun on a hybrid host without the v1 hugetlb hierarchy.
        assert!(matches!(err, RuntimeError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("hugetlb"), "{err}");
        return;
    }
    let pod = h.pod("web");
    let mut spec = sh("app", "sleep 1000");
    spec.resources = Resources {
        cpu_limit_millis: Some(500),
        cpu_request_millis: Some(250),
        memory_limit_bytes: Some(64 << 20),
        memory_request_bytes: Some(64 << 20),
        pids_limit: Some(50),
    };
    let (id, _) = h.run(&pod, &spec);
    let record = h
        .runtime
        .container(&id)
        .expect("container")
        .record
        .expect("record");
    let layout = h.runtime.layout();
    let file = |controller: &str, v1: &str, v2: &str| {
        let dir = layout
            .controller_dir(controller, &record.cgroups_path)
            .unwrap_or_else(|| panic!("no {controller} controller"));
        let name = if layout.is_v2(controller) { v2 } else { v1 };
        read(&dir.join(name)).trim().to_string()
    };
    assert_eq!(
        file("memory", "memory.limit_in_bytes", "memory.max"),
        "67108864"
    );
    assert_eq!(file("pids", "pids.max", "pids.max"), "50");
    if layout.is_v2("cpu") {
        assert_eq!(file("cpu", "", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(file("cpu", "cpu.cfs_quota_us", ""), "50000");
        assert_eq!(file("cpu", "cpu.cfs_period_us", ""), "100000");
        assert_eq!(file("cpu", "cpu.shares", ""), "256");
    }
}

fn reports_oom_kills(runtime: &str) {
    let mut h = Harness::new(runtime);
    if h.runtime.handler_for(Some(runtime)).is_err() {
        return; // covered by applies_memory_cpu_and_pids_limits
    }
    let pod = h.pod("web");
    // dd's 64 MiB buffer does not fit in 16 MiB.
    let mut spec = sh("app", "exec dd if=/dev/zero of=/dev/null bs=64M count=1");
    spec.resources.memory_limit_bytes = Some(16 << 20);
    let (id, _) = h.run(&pod, &spec);
    let exit = h.wait_exit(&id);
    assert_eq!(
        (exit.signal, exit.oom_killed, exit.reason()),
        (Some(9), true, "OOMKilled"),
        "{exit:?}"
    );
}

fn tty_output_reaches_the_log(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("web");
    let mut spec = sh("app", "tty; echo on-a-tty");
    spec.tty = true;
    let (id, _) = h.run(&pod, &spec);
    assert_eq!(h.wait_exit(&id).exit_code, 0);
    // A pty turns "\n" into "\r\n"; the log keeps what the terminal said.
    let lines: Vec<String> = log_lines(&h, &pod.0, "app")
        .iter()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("/dev/")),
        "{lines:?}"
    );
    assert!(lines.contains(&"on-a-tty".to_string()), "{lines:?}");
}

#[test]
fn logs_rotate_by_size_and_follow_keeps_up() {
    let mut h = Harness::with_config("runc", |config| {
        config.log_max_size = 4096;
        config.log_max_files = 3;
    });
    let pod = h.pod("chatty");
    // ~50 bytes per record, 400 records: rotates every ~80 lines, and three
    // files of 4 KiB cannot hold them all.
    let spec = sh(
        "app",
        "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); sleep 0.005; done",
    );
    let (id, _) = h.run(&pod, &spec);
    let dir = h.paths.container_logs("default", "chatty", "app");
    let exit_file = h.paths.shim_dir(&id).join("exit.json");
    wait_until(Duration::from_secs(20), "the log file", || {
        logs::instance_log(&dir, 0).exists().then_some(())
    });
    let mut out = Vec::new();
    let options = logs::LogOptions {
        follow: true,
        ..Default::default()
    };
    logs::write_logs(&dir, 0, options, &mut out, &|| exit_file.exists()).expect("follow");
    let followed: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..400).map(|i| format!("line-{i}")).collect();
    assert_eq!(
        followed, want,
        "follow saw every line once, in order, across rotations"
    );
    let files = logs::instance_files(&dir, 0);
    assert_eq!(files.len(), 3, "{files:?}");
    for file in &files {
        let size = std::fs::metadata(file).expect("a log file").len();
        assert!(size <= 4096, "{} is {size} bytes", file.display());
    }
    // Only the newest lines are kept on disk.
    let kept = logs::read_lines(&dir, 0, false).expect("read");
    assert!(
        kept.len() < 400 && kept.last().is_some_and(|l| l == "line-399"),
        "{}",
        kept.len()
    );
}
