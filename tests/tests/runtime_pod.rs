//! What containers of one pod share (IPC and UTS namespaces, the hostname,
//! /dev/shm) and what they do not get as asked (rlimits above the agent's
//! own hard limit are clamped and reported).

mod runtime_common;

use std::time::Duration;

use berth::runtime::config::RlimitConfig;
use berth_e2e::wait_until;
use runtime_common::{Harness, RUNTIMES, sh};

#[test]
fn containers_of_a_pod_share_ipc_uts_and_shm() {
    for runtime in RUNTIMES {
        let mut h = Harness::new(runtime);
        let pod = h.pod("shared");
        let (a, _) = h.run(&pod, &sh("a", "echo from-a > /dev/shm/note; sleep 1000"));
        let (b, _) = h.run(&pod, &sh("b", "sleep 1000"));
        let other_pod = h.pod("other");
        let (c, _) = h.run(&other_pod, &sh("c", "sleep 1000"));

        let ask = |id: &str, cmd: &str| {
            let (code, out, err) = h.exec(id, &["sh", "-c", cmd]);
            assert_eq!(code, 0, "{runtime}: {cmd}: {err}");
            out.trim().to_string()
        };
        let ipc = "readlink /proc/self/ns/ipc";
        let uts = "readlink /proc/self/ns/uts";
        assert_eq!(
            ask(&a, ipc),
            ask(&b, ipc),
            "{runtime}: one IPC namespace per pod"
        );
        assert_eq!(
            ask(&a, uts),
            ask(&b, uts),
            "{runtime}: one UTS namespace per pod"
        );
        assert_ne!(
            ask(&a, ipc),
            ask(&c, ipc),
            "{runtime}: pods do not share IPC"
        );
        assert_ne!(ask(&a, uts), ask(&c, uts));
        let host_ipc = std::fs::read_link("/proc/self/ns/ipc").expect("host ipc");
        assert_ne!(
            ask(&a, ipc),
            host_ipc.to_string_lossy(),
            "{runtime}: not the host's"
        );
        assert_eq!(ask(&a, "hostname"), "shared");
        assert_eq!(ask(&b, "hostname"), "shared");
        assert_eq!(ask(&c, "hostname"), "other");
        assert_eq!(ask(&b, "cat /etc/hostname"), "shared");
        wait_until(
            Duration::from_secs(20),
            "a's note in the shared /dev/shm",
            || (h.exec(&b, &["cat", "/dev/shm/note"]).1.trim() == "from-a").then_some(()),
        );
        assert_ne!(
            h.exec(&c, &["cat", "/dev/shm/note"]).0,
            0,
            "{runtime}: another pod has its own /dev/shm"
        );
    }
}

#[test]
fn rlimits_above_the_agents_hard_limit_are_clamped_and_reported() {
    let (_, agent_hard) = agent_nofile();
    for runtime in RUNTIMES {
        let mut h = Harness::with_config(runtime, |config| {
            config.rlimits.insert(
                "nofile".into(),
                RlimitConfig {
                    soft: 1024,
                    hard: agent_hard + 1_000_000,
                },
            );
        });
        let pod = h.pod("limits");
        let (id, created) = h.run(&pod, &sh("app", "sleep 1000"));
        assert_eq!(
            created.warnings.len(),
            1,
            "{runtime}: {:?}",
            created.warnings
        );
        assert!(
            created.warnings[0].contains(&format!("lowered to {agent_hard}")),
            "{runtime}: {:?}",
            created.warnings
        );
        // The container's own process, read from the host.
        let pid = h.running_pid(&id);
        let (soft, hard) = nofile(&format!("/proc/{pid}/limits"));
        assert_eq!((soft, hard), (1024, agent_hard), "{runtime}");
    }
}

fn agent_nofile() -> (u64, u64) {
    nofile("/proc/self/limits")
}

/// (soft, hard) RLIMIT_NOFILE from a `/proc/<pid>/limits` file.
fn nofile(path: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(path).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (
        fields[3].parse().expect("soft"),
        fields[4].parse().expect("hard"),
    )
}

#[test]
fn secret_and_memory_volumes_live_in_tmpfs_and_mount_read_only() {
    use berth::runtime::spec::{Volume, VolumeMount, VolumeSource};
    use berth::runtime::volumes::{self, FileOptions, VolumeFile};
    for runtime in RUNTIMES {
        let mut h = Harness::new(runtime);
        let pod = h.pod("vols");
        let secret_dir = h.paths.pod_run_dir(&pod.0.uid).join("volumes/token");
        volumes::write_files(
            "token",
            &secret_dir,
            &[VolumeFile {
                path: "token".into(),
                data: b"s3cret".to_vec(),
                mode: 0o440,
            }],
            FileOptions {
                tmpfs: true,
                gid: Some(2000),
            },
        )
        .expect("secret written");
        let fs_type = |dir: &std::path::Path| {
            berth::runtime::mountinfo::read()
                .expect("mountinfo")
                .into_iter()
                .find(|m| m.mount_point == dir)
                .map(|m| (m.fs_type, m.super_options))
        };
        assert_eq!(
            fs_type(&secret_dir).map(|t| t.0).as_deref(),
            Some("tmpfs"),
            "{runtime}"
        );
        let meta = std::fs::metadata(secret_dir.join("token")).expect("token");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o440, 2000));

        let vols = [
            Volume {
                name: "token".into(),
                source: VolumeSource::Directory {
                    path: secret_dir.clone(),
                },
            },
            Volume {
                name: "scratch".into(),
                source: VolumeSource::EmptyDir {
                    memory: true,
                    size_limit: Some(4 << 20),
                },
            },
        ];
        let mut spec = sh(
            "app",
            "cat /secret/token; echo; touch /secret/new 2>&1; df -k /scratch | tail -1; sleep 1000",
        );
        // Runs as uid 1000 in group 2000 ("extra"): 0440 is enough to read.
        spec.security_context.run_as_user = Some(1000);
        spec.volume_mounts = vec![
            VolumeMount {
                name: "token".into(),
                mount_path: "/secret".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "scratch".into(),
                mount_path: "/scratch".into(),
                ..Default::default()
            },
        ];
        let (_, _) = h.run_with_volumes(&pod, &spec, &vols).expect("started");
        let dir = h.paths.container_logs("default", "vols", "app");
        let lines = wait_until(Duration::from_secs(20), "the volume report", || {
            let lines = berth::runtime::logs::read_lines(&dir, 0, false).unwrap_or_default();
            (lines.len() >= 3).then_some(lines)
        });
        assert_eq!(lines[0], "s3cret", "{runtime}: {lines:?}");
        assert!(
            lines[1].contains("Read-only file system"),
            "{runtime}: {lines:?}"
        );
        let size_kb: u64 = lines[2]
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("df size");
        assert_eq!(size_kb, 4096, "{runtime}: sizeLimit of the memory emptyDir");
    }
}

#[test]
fn sub_path_cannot_escape_its_volume() {
    use berth::runtime::RuntimeError;
    use berth::runtime::spec::{HostPathType, Volume, VolumeMount, VolumeSource};
    for runtime in RUNTIMES {
        let mut h = Harness::new(runtime);
        let pod = h.pod("escape");
        let volume_dir = h.dirs.temp.path().join("vol");
        std::fs::create_dir_all(volume_dir.join("etc")).expect("volume");
        std::fs::write(volume_dir.join("etc/inside-the-volume"), "").expect("marker");
        // Symlinks planted in the volume, aimed at the host.
        std::os::unix::fs::symlink("/etc", volume_dir.join("evil")).expect("symlink");
        std::os::unix::fs::symlink("/var/lib", volume_dir.join("dangling")).expect("symlink");
        let vols = [Volume {
            name: "vol".into(),
            source: VolumeSource::HostPath {
                path: volume_dir.clone(),
                kind: HostPathType::Directory,
            },
        }];
        let with_sub_path = |name: &str, sub_path: &str| {
            let mut spec = sh(name, "ls /mnt; echo listed; sleep 1000");
            spec.volume_mounts = vec![VolumeMount {
                name: "vol".into(),
                mount_path: "/mnt".into(),
                sub_path: Some(sub_path.into()),
                ..Default::default()
            }];
            spec
        };
        // "/etc" resolves as if the volume were the root: the volume's etc.
        h.run_with_volumes(&pod, &with_sub_path("app", "evil"), &vols)
            .expect("started");
        let dir = h.paths.container_logs("default", "escape", "app");
        let lines = wait_until(Duration::from_secs(20), "the listing", || {
            let lines = berth::runtime::logs::read_lines(&dir, 0, false).unwrap_or_default();
            lines.contains(&"listed".to_string()).then_some(lines)
        });
        assert_eq!(
            lines,
            ["inside-the-volume", "listed"],
            "{runtime}: not the host's /etc"
        );
        // A link to something the volume lacks is refused, with the reason.
        let err = h
            .run_with_volumes(&pod, &with_sub_path("other", "dangling"), &vols)
            .map(|_| ())
            .expect_err("refused");
        assert!(matches!(err, RuntimeError::Volume(_)), "{runtime}: {err}");
        assert!(
            err.to_string()
                .contains("volume \"vol\": subPath \"dangling\""),
            "{runtime}: {err}"
        );
    }
}

#[test]
fn host_network_pods_share_the_hosts_network_and_hostname() {
    for runtime in RUNTIMES {
        let mut h = Harness::new(runtime);
        let pod = h.host_network_pod("hostnet");
        let (id, _) = h.run(&pod, &sh("app", "sleep 1000"));
        for ns in ["net", "uts"] {
            let (_, inside, _) = h.exec(&id, &["readlink", &format!("/proc/self/ns/{ns}")]);
            let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("host ns");
            assert_eq!(inside.trim(), host.to_string_lossy(), "{runtime}: {ns}");
        }
        let (_, inside, _) = h.exec(&id, &["hostname"]);
        let host = nix::unistd::gethostname().expect("hostname");
        assert_eq!(inside.trim(), host.to_string_lossy(), "{runtime}");
        let (_, ipc, _) = h.exec(&id, &["readlink", "/proc/self/ns/ipc"]);
        let host_ipc = std::fs::read_link("/proc/self/ns/ipc").expect("host ipc");
        assert_ne!(
            ipc.trim(),
            host_ipc.to_string_lossy(),
            "{runtime}: IPC stays the pod's"
        );
    }
}
