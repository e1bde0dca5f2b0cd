//! Crash safety (root): a process doing a pod's setup is killed with
//! SIGKILL at each stage (`berth-netctl` with `BERTH_NETCTL_PAUSE_AT`), and
//! then either the agent's start-up cleanup (pod no longer wanted) or a
//! re-run of setup (pod still wanted) must converge with nothing leaked.

mod support;

use std::collections::HashSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use berth_e2e::require_root;
use netplugins::driver::NetworkDriver;
use support::{TIMEOUT, TestNet, pod, tcp_ask, tcp_echo};

const STAGES: [&str; 5] = ["namespace", "lease", "veth", "pod-interface", "firewall"];

/// Runs `berth-netctl setup POD_ID` paused at `stage`, then SIGKILLs it.
fn crash_setup_at(net: &TestNet, pod_id: &str, stage: &str) {
    let config = net.dir.path().join("netctl.json");
    let body = serde_json::json!({
        "network": {"driver": "bridge", "bridge": net.config},
        "database": net.env.database,
        "netns-dir": net.env.netns_dir,
        "cni-cache-dir": net.env.cni_cache_dir,
    });
    std::fs::write(&config, serde_json::to_vec(&body).expect("json")).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-netctl"))
        .arg(&config)
        .args(["setup", pod_id])
        .env("BERTH_NETCTL_PAUSE_AT", stage)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn berth-netctl");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("berth-netctl did not reach stage {stage}")
    });
    assert_eq!(line, format!("paused at {stage}"));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

fn assert_nothing_left(net: &TestNet) {
    assert!(
        net.our_links().is_empty(),
        "veths left: {:?}",
        net.our_links()
    );
    assert_eq!(net.lease_count(), 0, "leases left");
    assert!(
        support::mounts_under(&net.env.netns_dir).is_empty(),
        "netns mounts left"
    );
    assert_eq!(net.rule_count(), 0, "firewall rules left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_killed_at_any_stage_is_cleaned_up_at_start() {
    require_root();
    let net = TestNet::new();
    for stage in STAGES {
        let pod_id = format!("crash-{stage}");
        crash_setup_at(&net, &pod_id, stage);
        // The crash really left half-made state behind.
        assert!(net.netns(&pod_id).exists(), "{stage}: netns file");
        if stage != "namespace" {
            assert_eq!(net.lease_count(), 1, "{stage}: lease committed before use");
        }
        if !matches!(stage, "namespace" | "lease") {
            assert_eq!(net.our_links().len(), 1, "{stage}: veth");
        }

        // The agent restarts without that pod: everything goes.
        let driver = net.driver().await;
        let report = driver
            .cleanup_orphans(&HashSet::new())
            .await
            .expect("cleanup");
        assert!(
            report.netns.contains(&net.netns(&pod_id)),
            "{stage}: {report:?}"
        );
        assert_nothing_left(&net);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_killed_midway_converges_when_run_again() {
    require_root();
    let net = TestNet::new();
    for stage in ["lease", "veth", "pod-interface"] {
        let pod_id = format!("again-{stage}");
        crash_setup_at(&net, &pod_id, stage);
        // The agent restarts and still wants the pod: cleanup keeps it,
        // setup finishes the job.
        let driver = net.driver().await;
        let alive: HashSet<String> = [pod_id.clone()].into();
        driver.cleanup_orphans(&alive).await.expect("cleanup");
        let status = driver.setup(&pod(&pod_id)).await.expect("setup again");
        driver.check(&pod(&pod_id)).await.expect("healthy");
        assert_eq!(net.our_links().len(), 1, "{stage}: one veth, not two");
        assert_eq!(net.lease_count(), 1, "{stage}: one lease");
        let ip = status.pod_ips()[0];
        tcp_echo(status.netns.as_deref(), SocketAddr::new(ip, 80), "ok");
        assert_eq!(
            tcp_ask(None, SocketAddr::new(ip, 80), stage).expect("reach"),
            format!("ok:{stage}")
        );
        driver.teardown(&pod(&pod_id)).await.expect("teardown");
        assert_nothing_left(&net);
    }
}
