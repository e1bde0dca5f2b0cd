//! `grpc` probes through the real agent and runc: the standard
//! `grpc.health.v1.Health/Check` against the test kit's health server
//! (`berth_e2e::grpc`), which the host-network pod reaches on 127.0.0.1.
//! Readiness follows the served status without restarts; a liveness probe
//! for a service the server does not know fails and restarts the
//! container.

use std::time::Duration;

use berth_e2e::grpc::{HealthServer, Status};
use berth_e2e::pods::{PodWorld, container, restarts, running_pid};
use berth_e2e::wait_until;
use serde_json::Value;

const PROBE_WAIT: Duration = Duration::from_secs(60);

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
