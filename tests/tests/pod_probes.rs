//! Probes and lifecycle hooks through the real agent (`berth run`) with
//! real runc AND crun: liveness restarts, readiness without restarts,
//! startup gating, preStop before the stop signal, postStart. Every case
//! runs once per runtime (`runc::<case>`, `crun::<case>`). Pods use the
//! host's network, so probes reach them on 127.0.0.1 at a free port.
//! `grpc` probes (runc only) ask the test kit's health server
//! (`berth_e2e::grpc`) on 127.0.0.1.

use berth_e2e::for_each_runtime;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_e2e::grpc::{HealthServer, Status};
use berth_e2e::net::{DataDir, NetWorld, pod_ip};
use berth_e2e::pods::{PodWorld, container, restarts, running_pid};
use berth_e2e::registry::free_port;
use berth_e2e::wait_until;
use serde_json::Value;

for_each_runtime!(
    a_failing_liveness_exec_probe_restarts_only_its_container,
    readiness_follows_an_http_get_probe_without_restarts,
    a_healthy_tcp_socket_liveness_probe_never_restarts,
    liveness_waits_for_the_startup_probe,
    pre_stop_hook_runs_before_the_stop_signal,
    post_start_hook_runs_and_its_failure_restarts_the_container,
    probes_resume_when_a_restarted_agent_adopts_the_container,
);

/// The bridge kit runs runc only.
#[test]
fn bridge_pods_are_probed_at_their_pod_ip() {
    let net = NetWorld::bridge();
    bridge_pod_probes(net);
}

/// How long a probe outcome may take to show (periods are 1 s).
const PROBE_WAIT: Duration = Duration::from_secs(60);

/// A host directory mounted at /data in the pod, and the spec lines that
/// mount it (`volumes` under `spec:`, `volumeMounts` for one container).
fn data_dir(world: &PodWorld) -> (PathBuf, String, &'static str) {
    let data = world.data_dir("data");
    (data.path, data.volume, DataDir::MOUNT)
}

/// A pod `web` whose busybox httpd serves `data/index.html` on a free
/// port, with `probe` (given the port) added to its container; returns
/// once the probe says it is ready, with the data dir and its PID.
fn ready_web_pod(world: &PodWorld, probe: impl Fn(u16) -> String) -> (PathBuf, i64) {
    let (data, volumes, mount) = data_dir(world);
    std::fs::write(data.join("index.html"), "ok\n").expect("index.html");
    let port = free_port();
    let mut containers = world.shell_container("web", &format!("exec httpd -f -p {port} -h /data"));
    containers.push_str(mount);
    containers.push_str(&probe(port));
    world.write_manifest("web.yaml", &world.pod_yaml("web", &volumes, &containers));
    let pod = world.wait_pod("web", "web ready", |p| ready(p, "web") == Some(true));
    let pid = running_pid(&pod, "web").expect("pid");
    (data, pid)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn ready(pod: &Value, name: &str) -> Option<bool> {
    container(pod, name)?["ready"].as_bool()
}

fn events_with(world: &PodWorld, pod: &str, reason: &str) -> Vec<String> {
    world
        .events(pod)
        .iter()
        .filter(|e| e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

fn a_failing_liveness_exec_probe_restarts_only_its_container(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let mut containers = world.shell_container(
        "sick",
        "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 1000",
    );
    containers.push_str(
        "    livenessProbe:\n      exec:\n        command: [cat, /tmp/healthy]\n      periodSeconds: 1\n      failureThreshold: 2\n",
    );
    containers.push_str(&world.shell_container("sibling", "exec sleep 1000"));
    world.write_manifest("live.yaml", &world.pod_yaml("live", "", &containers));

    let first = world.wait_pod("live", "both running", |p| {
        running_pid(p, "sick").is_some() && running_pid(p, "sibling").is_some()
    });
    let sick_pid = running_pid(&first, "sick").expect("pid");
    let sibling_pid = running_pid(&first, "sibling").expect("pid");
    let pod = world.wait_pod("live", "sick restarted and running again", |p| {
        restarts(p, "sick").is_some_and(|r| r >= 1)
            && running_pid(p, "sick").is_some_and(|pid| pid != sick_pid)
    });
    assert_eq!(restarts(&pod, "sibling"), Some(0), "{pod:#}");
    assert_eq!(running_pid(&pod, "sibling"), Some(sibling_pid), "{pod:#}");
    let sick = container(&pod, "sick").expect("sick");
    assert!(
        sick["lastState"]["terminated"].is_object(),
        "the killed instance is the last state: {pod:#}"
    );
    let unhealthy = events_with(&world, "live", "Unhealthy");
    assert!(
        unhealthy.iter().any(|m| m.contains("sick")
            && m.contains("Liveness probe failed")
            && m.contains("/tmp/healthy")),
        "an Unhealthy event with the probe's output: {unhealthy:?}"
    );
    let killing = events_with(&world, "live", "Killing");
    assert!(
        killing
            .iter()
            .any(|m| m.contains("sick") && m.contains("liveness")),
        "{killing:?}"
    );
    assert!(
        !killing.iter().any(|m| m.contains("sibling")),
        "the sibling was not stopped: {killing:?}"
    );
}

fn readiness_follows_an_http_get_probe_without_restarts(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let (data, pid) = ready_web_pod(&world, |port| {
        format!(
            "    ports:\n    - name: http\n      containerPort: {port}\n    readinessProbe:\n      httpGet:\n        path: /index.html\n        port: http\n        httpHeaders:\n        - name: X-Probe\n          value: berth\n      periodSeconds: 1\n      failureThreshold: 1\n"
        )
    });

    std::fs::remove_file(data.join("index.html")).expect("removing index.html");
    let pod = world.wait_pod("web", "web not ready", |p| ready(p, "web") == Some(false));
    assert_eq!(
        running_pid(&pod, "web"),
        Some(pid),
        "not restarted: {pod:#}"
    );
    assert_eq!(restarts(&pod, "web"), Some(0), "{pod:#}");
    assert!(
        pod["message"]
            .as_str()
            .is_some_and(|m| m.contains("not ready: web")),
        "{pod:#}"
    );
    let unhealthy = events_with(&world, "web", "Unhealthy");
    assert!(
        unhealthy
            .iter()
            .any(|m| m.contains("Readiness probe failed") && m.contains("404")),
        "{unhealthy:?}"
    );

    std::fs::write(data.join("index.html"), "ok again\n").expect("index.html");
    let pod = world.wait_pod("web", "web ready again", |p| ready(p, "web") == Some(true));
    assert_eq!(running_pid(&pod, "web"), Some(pid), "{pod:#}");
    assert_eq!(restarts(&pod, "web"), Some(0), "{pod:#}");
    assert!(
        events_with(&world, "web", "Killing").is_empty(),
        "readiness never stops a container"
    );
}

fn a_healthy_tcp_socket_liveness_probe_never_restarts(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let (data, volumes, mount) = data_dir(&world);
    let port = free_port();
    // Each connection (each probe) appends a line to /data/conns.
    let script = format!(
        r"printf '#!/bin/sh\necho probed >> /data/conns\n' > /tmp/conn.sh; /bin/busybox chmod +x /tmp/conn.sh; exec nc -ll -p {port} -e /tmp/conn.sh"
    );
    let mut containers = world.shell_container("listener", &script);
    containers.push_str(mount);
    containers.push_str(&format!(
        "    livenessProbe:\n      tcpSocket:\n        port: {port}\n      periodSeconds: 1\n      failureThreshold: 1\n"
    ));
    // The same probe against a port nobody listens on does fail.
    let closed = free_port();
    containers.push_str(&world.shell_container("deaf", "exec sleep 1000"));
    containers.push_str(&format!(
        "    livenessProbe:\n      tcpSocket:\n        port: {closed}\n      initialDelaySeconds: 1\n      periodSeconds: 1\n      failureThreshold: 1\n"
    ));
    world.write_manifest("tcp.yaml", &world.pod_yaml("tcp", &volumes, &containers));

    let pod = world.wait_pod("tcp", "listener running", |p| {
        running_pid(p, "listener").is_some()
    });
    let pid = running_pid(&pod, "listener").expect("pid");
    let conns = data.join("conns");
    wait_until(PROBE_WAIT, "five successful tcp probes", || {
        (lines(&conns).len() >= 5).then_some(())
    });
    let pod = world.wait_pod("tcp", "deaf restarted", |p| {
        restarts(p, "deaf").is_some_and(|r| r >= 1)
    });
    assert_eq!(running_pid(&pod, "listener"), Some(pid), "{pod:#}");
    assert_eq!(restarts(&pod, "listener"), Some(0), "{pod:#}");
    let unhealthy = events_with(&world, "tcp", "Unhealthy");
    assert!(
        unhealthy.iter().all(|m| !m.contains("listener")),
        "{unhealthy:?}"
    );
    assert!(
        unhealthy
            .iter()
            .any(|m| m.contains("deaf") && m.contains(&format!(":{closed}"))),
        "{unhealthy:?}"
    );
}

fn liveness_waits_for_the_startup_probe(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let (data, volumes, mount) = data_dir(&world);
    // Started only once the startup probe has run three times.
    let mut containers = world.shell_container(
        "slow",
        r#"until [ "$(grep -c startup /data/order 2>/dev/null)" -ge 3 ] 2>/dev/null; do sleep 0.2; done; touch /tmp/started; exec sleep 1000"#,
    );
    containers.push_str(mount);
    containers.push_str(
        "    startupProbe:\n      exec:\n        command: [sh, -c, 'echo startup >> /data/order; test -f /tmp/started']\n      periodSeconds: 1\n      failureThreshold: 60\n\
         \x20   livenessProbe:\n      exec:\n        command: [sh, -c, 'echo liveness >> /data/order']\n      periodSeconds: 1\n",
    );
    // Never starts: killed when its startup probe runs out of tries.
    containers.push_str(&world.shell_container("stuck", "exec sleep 1000"));
    containers.push_str(
        "    startupProbe:\n      exec:\n        command: [test, -f, /tmp/never]\n      periodSeconds: 1\n      failureThreshold: 2\n",
    );
    world.write_manifest("slow.yaml", &world.pod_yaml("slow", &volumes, &containers));

    let order = data.join("order");
    // A status read while fewer than three startup probes ran predates
    // the startup probe's success: the container cannot be ready yet.
    let early = wait_until(PROBE_WAIT, "a status before startup succeeded", || {
        let pod = world.pod("slow")?;
        running_pid(&pod, "slow")?;
        let startups = lines(&order).iter().filter(|l| *l == "startup").count();
        (startups < 3).then_some(pod)
    });
    assert_eq!(ready(&early, "slow"), Some(false), "{early:#}");

    wait_until(PROBE_WAIT, "two liveness probes", || {
        (lines(&order).iter().filter(|l| *l == "liveness").count() >= 2).then_some(())
    });
    let seen = lines(&order);
    let first_liveness = seen.iter().position(|l| l == "liveness").expect("liveness");
    let last_startup = seen.iter().rposition(|l| l == "startup").expect("startup");
    assert!(
        last_startup < first_liveness,
        "every startup probe ran before the first liveness probe: {seen:?}"
    );
    assert!(
        seen.iter().filter(|l| *l == "startup").count() >= 3,
        "{seen:?}"
    );
    let pod = world.wait_pod("slow", "ready after startup", |p| {
        ready(p, "slow") == Some(true)
    });
    assert_eq!(restarts(&pod, "slow"), Some(0), "{pod:#}");

    let pod = world.wait_pod("slow", "stuck restarted", |p| {
        restarts(p, "stuck").is_some_and(|r| r >= 1)
    });
    assert_eq!(restarts(&pod, "slow"), Some(0), "{pod:#}");
    let unhealthy = events_with(&world, "slow", "Unhealthy");
    assert!(
        unhealthy
            .iter()
            .any(|m| m.contains("stuck") && m.contains("Startup probe failed")),
        "{unhealthy:?}"
    );
    assert!(
        unhealthy.iter().all(|m| !m.contains("container slow")),
        "{unhealthy:?}"
    );
}

fn pre_stop_hook_runs_before_the_stop_signal(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let (data, mut volumes, mount) = data_dir(&world);
    volumes.push_str("  terminationGracePeriodSeconds: 20\n");
    let mut containers = world.shell_container(
        "app",
        "trap 'echo TERM >> /data/order; exit 0' TERM; echo started >> /data/order; while true; do sleep 0.1; done",
    );
    containers.push_str(mount);
    containers.push_str(
        "    lifecycle:\n      preStop:\n        exec:\n          command: [sh, -c, 'echo preStop >> /data/order']\n",
    );
    world.write_manifest("stop.yaml", &world.pod_yaml("stop", &volumes, &containers));
    let order = data.join("order");
    let pod = world.wait_pod("stop", "app running", |p| running_pid(p, "app").is_some());
    let pid = running_pid(&pod, "app").expect("pid");
    wait_until(PROBE_WAIT, "the app to start", || {
        lines(&order).contains(&"started".to_owned()).then_some(())
    });

    // A container-level change replaces the container: hook, then signal.
    containers.push_str("    env:\n    - name: EDITED\n      value: \"yes\"\n");
    world.write_manifest("stop.yaml", &world.pod_yaml("stop", &volumes, &containers));
    world.wait_pod("stop", "app replaced", |p| {
        running_pid(p, "app").is_some_and(|p| p != pid)
    });
    wait_until(PROBE_WAIT, "the new instance to start", || {
        (lines(&order).len() >= 4).then_some(())
    });
    assert_eq!(lines(&order), ["started", "preStop", "TERM", "started"]);

    world.remove_manifest("stop.yaml");
    world.wait_pod_gone("stop");
    assert_eq!(
        lines(&order),
        ["started", "preStop", "TERM", "started", "preStop", "TERM"]
    );
    assert!(events_with(&world, "stop", "FailedPreStopHook").is_empty());
    assert!(
        events_with(&world, "stop", "Killed").is_empty(),
        "the container stopped on SIGTERM, within its grace period"
    );
}

fn post_start_hook_runs_and_its_failure_restarts_the_container(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let (data, volumes, mount) = data_dir(&world);
    let mut containers = world.shell_container("good", "exec sleep 1000");
    containers.push_str(mount);
    containers.push_str(
        "    lifecycle:\n      postStart:\n        exec:\n          command: [sh, -c, 'echo postStart >> /data/hooks']\n",
    );
    containers.push_str(&world.shell_container("bad", "exec sleep 1000"));
    containers.push_str(
        "    lifecycle:\n      postStart:\n        exec:\n          command: [sh, -c, 'echo no such thing; exit 7']\n",
    );
    world.write_manifest(
        "hooks.yaml",
        &world.pod_yaml("hooks", &volumes, &containers),
    );

    let pod = world.wait_pod("hooks", "bad restarted", |p| {
        restarts(p, "bad").is_some_and(|r| r >= 1)
    });
    assert_eq!(lines(&data.join("hooks")), ["postStart"]);
    assert_eq!(restarts(&pod, "good"), Some(0), "{pod:#}");
    let failed = events_with(&world, "hooks", "FailedPostStartHook");
    assert!(
        failed.iter().any(|m| m.contains("bad")
            && m.contains("exited with 7")
            && m.contains("no such thing")),
        "{failed:?}"
    );
}

fn probes_resume_when_a_restarted_agent_adopts_the_container(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let (data, pid) = ready_web_pod(&world, |port| {
        format!(
            "    readinessProbe:\n      httpGet:\n        path: /index.html\n        port: {port}\n      periodSeconds: 1\n      failureThreshold: 1\n"
        )
    });
    assert!(events_with(&world, "web", "Unhealthy").is_empty());

    // Broken while nobody probes: only the adopted container's new probe
    // can notice.
    world.kill_agent();
    std::fs::remove_file(data.join("index.html")).expect("removing index.html");
    world.start_agent();
    wait_until(PROBE_WAIT, "an Unhealthy event after the restart", || {
        events_with(&world, "web", "Unhealthy")
            .iter()
            .any(|m| m.contains("404"))
            .then_some(())
    });
    let pod = world.wait_pod("web", "web not ready", |p| ready(p, "web") == Some(false));
    assert_eq!(running_pid(&pod, "web"), Some(pid), "adopted: {pod:#}");

    std::fs::write(data.join("index.html"), "ok\n").expect("index.html");
    let pod = world.wait_pod("web", "web ready again", |p| ready(p, "web") == Some(true));
    assert_eq!(running_pid(&pod, "web"), Some(pid), "{pod:#}");
    assert_eq!(restarts(&pod, "web"), Some(0), "{pod:#}");
}

/// A bridge pod: httpGet and tcpSocket without a host reach the pod's IP
/// from the host, over the bridge.
fn bridge_pod_probes(net: NetWorld) {
    let mut net = net;
    net.world.start_agent();
    let data: DataDir = net.data_dir("www");
    std::fs::write(data.path.join("index.html"), "ok\n").expect("index.html");
    let mut containers = net
        .world
        .shell_container("web", "exec httpd -f -p 8080 -h /data");
    containers.push_str(DataDir::MOUNT);
    containers.push_str(
        "    readinessProbe:\n      httpGet:\n        path: /index.html\n        port: 8080\n      periodSeconds: 1\n      failureThreshold: 1\n\
         \x20   livenessProbe:\n      tcpSocket:\n        port: 8080\n      periodSeconds: 1\n      failureThreshold: 1\n",
    );
    net.world
        .write_manifest("web.yaml", &net.pod_yaml("web", &data.volume, &containers));
    let pod = net
        .world
        .wait_pod("web", "web ready", |p| ready(p, "web") == Some(true));
    let ip = pod_ip(&pod).expect("a pod IP");
    assert!(net.net.contains(ip), "{ip} is on the test's bridge");
    let pid = running_pid(&pod, "web").expect("pid");

    std::fs::remove_file(data.path.join("index.html")).expect("removing index.html");
    let pod = net
        .world
        .wait_pod("web", "web not ready", |p| ready(p, "web") == Some(false));
    assert_eq!(running_pid(&pod, "web"), Some(pid), "{pod:#}");
    let unhealthy = events_with(&net.world, "web", "Unhealthy");
    assert!(
        unhealthy
            .iter()
            .any(|m| m.contains("404") && m.contains(&ip.to_string())),
        "the probe went to the pod's IP: {unhealthy:?}"
    );
    assert_eq!(restarts(&pod, "web"), Some(0), "{pod:#}");
}

#[test]
fn readiness_follows_a_grpc_health_check_with_its_service() {
    let server = HealthServer::start();
    server.set("berth.test.Web", Status::NotServing);
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let mut containers = world.shell_container("web", "exec sleep 1000");
    containers.push_str(&format!(
        "    readinessProbe:\n      grpc:\n        port: {}\n        service: berth.test.Web\n      periodSeconds: 1\n      failureThreshold: 1\n",
        server.port()
    ));
    world.write_manifest("web.yaml", &world.pod_yaml("web", "", &containers));

    let pod = world.wait_pod("web", "running, not ready", |p| {
        running_pid(p, "web").is_some() && ready(p, "web") == Some(false)
    });
    let pid = running_pid(&pod, "web").expect("pid");
    wait_until(
        PROBE_WAIT,
        "a failed readiness event naming the status",
        || {
            events_with(&world, "web", "Unhealthy")
                .into_iter()
                .find(|m| m.contains("Readiness probe failed") && m.contains("NOT_SERVING"))
        },
    );
    assert!(
        server.asked().iter().all(|s| s == "berth.test.Web"),
        "the probe's service is sent: {:?}",
        server.asked()
    );

    server.set("berth.test.Web", Status::Serving);
    let pod = world.wait_pod("web", "ready", |p| ready(p, "web") == Some(true));
    assert_eq!(
        running_pid(&pod, "web"),
        Some(pid),
        "not restarted: {pod:#}"
    );

    server.set("berth.test.Web", Status::NotServing);
    let pod = world.wait_pod("web", "not ready again", |p| ready(p, "web") == Some(false));
    assert_eq!(running_pid(&pod, "web"), Some(pid), "{pod:#}");
    assert_eq!(restarts(&pod, "web"), Some(0), "{pod:#}");
}

#[test]
fn a_grpc_liveness_probe_for_an_unknown_service_restarts_the_container() {
    let server = HealthServer::start();
    // The server as a whole ("") is healthy; "nope" is unknown to it.
    server.set("", Status::Serving);
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let probe = |service: &str| {
        format!(
            "    livenessProbe:\n      grpc:\n        port: {}\n{service}      periodSeconds: 1\n      failureThreshold: 2\n",
            server.port()
        )
    };
    let mut containers = world.shell_container("healthy", "exec sleep 1000");
    containers.push_str(&probe(""));
    containers.push_str(&world.shell_container("unknown", "exec sleep 1000"));
    containers.push_str(&probe("        service: nope\n"));
    world.write_manifest("live.yaml", &world.pod_yaml("live", "", &containers));

    let first = world.wait_pod("live", "both running", |p| {
        running_pid(p, "healthy").is_some() && running_pid(p, "unknown").is_some()
    });
    let healthy_pid = running_pid(&first, "healthy").expect("pid");
    let pod = world.wait_pod("live", "unknown restarted", |p| {
        restarts(p, "unknown").is_some_and(|r| r >= 1)
    });
    let unhealthy = events_with(&world, "live", "Unhealthy");
    assert!(
        unhealthy.iter().any(|m| m.contains("container unknown")
            && m.contains("Liveness probe failed")
            && m.contains("NotFound")),
        "{unhealthy:?}"
    );
    assert!(
        !unhealthy.iter().any(|m| m.contains("container healthy")),
        "{unhealthy:?}"
    );
    assert_eq!(running_pid(&pod, "healthy"), Some(healthy_pid), "{pod:#}");
    assert_eq!(restarts(&pod, "healthy"), Some(0), "{pod:#}");
    assert!(server.calls() >= 4, "both probes ran: {}", server.calls());
}
