//! What containers of one pod share (IPC and UTS namespaces, the hostname,
//! /dev/shm) and what they do not get as asked (rlimits above the agent's
//! own hard limit are clamped and reported).

mod runtime_common;

use std::time::Duration;

use berth::config::RlimitConfig;
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
        let (_, hard, _) = h.exec(&id, &["sh", "-c", "ulimit -Hn"]);
        let (_, soft, _) = h.exec(&id, &["sh", "-c", "ulimit -Sn"]);
        assert_eq!(hard.trim(), agent_hard.to_string(), "{runtime}");
        assert_eq!(soft.trim(), "1024", "{runtime}");
    }
}

fn agent_nofile() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
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
