//! Probes that try to hurt the agent, through the real agent with real
//! runc: an exec probe printing 100 MB (the agent keeps 10 KiB of it, so
//! its memory stays bounded, and the verdict is still the exit code), and
//! an httpGet probe redirected to another host (not followed: a success,
//! as kubelet has it, and nothing is sent to the other host).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use berth_e2e::pods::{DataDir, PodWorld, container, running_pid};
use berth_e2e::proc_kib_field;
use serde_json::Value;

fn ready(pod: &Value, name: &str) -> Option<bool> {
    container(pod, name)?["ready"].as_bool()
}

/// How many times an exec probe ran (each run appends a line).
fn runs(data: &DataDir) -> usize {
    std::fs::read_to_string(data.path.join("runs"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// The probe's output, 100 MB, is 10× this: kept whole it would show.
const RSS_BOUND: u64 = 80 << 20;

#[test]
fn an_exec_probe_printing_100_mb_keeps_the_agent_small_and_its_verdict() {
    let mut world = PodWorld::new("runc");
    let data = world.data_dir("data");
    std::fs::write(data.path.join("code"), "0\n").expect("code");
    let probe = "echo run >> /data/runs; head -c 104857600 /dev/zero; exit $(cat /data/code)";
    let mut containers = world.shell_container("app", "exec sleep 1000");
    containers.push_str(DataDir::MOUNT);
    containers.push_str(&format!(
        "    readinessProbe:\n      exec:\n        command: [/bin/sh, -c, {probe:?}]\n      periodSeconds: 1\n      timeoutSeconds: 30\n      failureThreshold: 1\n"
    ));
    world.write_manifest(
        "chatty.yaml",
        &world.pod_yaml("chatty", &data.volume, &containers),
    );
    world.start_agent();

    let pod = world.wait_pod("chatty", "ready", |p| ready(p, "app") == Some(true));
    assert!(running_pid(&pod, "app").is_some());
    let seen = runs(&data);
    berth_e2e::wait_until(Duration::from_secs(60), "three more probe runs", || {
        (runs(&data) >= seen + 3).then_some(())
    });
    std::fs::write(data.path.join("code"), "1\n").expect("code");
    world.wait_pod("chatty", "not ready", |p| ready(p, "app") == Some(false));

    // The agent's peak resident set.
    let peak = proc_kib_field(&format!("/proc/{}/status", world.agent().pid()), "VmHWM");
    assert!(
        peak < RSS_BOUND,
        "the agent peaked at {} MiB after probes printed 100 MB each",
        peak >> 20
    );
}

/// Answers every request with a redirect to `location`.
fn redirect_server(location: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    port
}

#[test]
fn an_http_get_probe_redirected_to_another_host_succeeds_without_following() {
    let mut world = PodWorld::new("runc");
    // "localhost" is another host name than the probe's 127.0.0.1.
    let elsewhere = TcpListener::bind("127.0.0.1:0").expect("bind");
    elsewhere.set_nonblocking(true).expect("nonblocking");
    let target = format!(
        "http://localhost:{}/elsewhere",
        elsewhere.local_addr().expect("addr").port()
    );
    let port = redirect_server(target);
    let mut containers = world.shell_container("app", "exec sleep 1000");
    containers.push_str(&format!(
        "    readinessProbe:\n      httpGet:\n        path: /healthz\n        port: {port}\n      periodSeconds: 1\n      failureThreshold: 1\n"
    ));
    world.write_manifest("moved.yaml", &world.pod_yaml("moved", "", &containers));
    world.start_agent();

    world.wait_pod("moved", "ready", |p| ready(p, "app") == Some(true));
    assert!(
        elsewhere.accept().is_err(),
        "the probe followed the redirect to another host"
    );
}
