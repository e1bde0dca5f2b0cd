//! Ephemeral storage limits through the real agent with real runc AND
//! crun: a container filling its disk emptyDir past `sizeLimit`, or its
//! writable layer past its `ephemeral-storage` limit, gets its pod evicted
//! (phase Failed, reason Evicted, the kubelet's message), its containers
//! stopped and its disk freed; a pod within its limits keeps running.
//! The store's file system here has no project quotas (the kernel is built
//! without CONFIG_QUOTA), so this is the measuring path.

use berth_e2e::for_each_runtime;
use berth_e2e::pods::{PodWorld, running_pid};

for_each_runtime!(pods_over_their_ephemeral_storage_limits_are_evicted);

fn message(pod: &serde_json::Value) -> String {
    pod["message"].as_str().unwrap_or_default().to_string()
}

fn pods_over_their_ephemeral_storage_limits_are_evicted(runtime: &str) {
    let mut world = PodWorld::with_config(runtime, "storage-check-interval = \"300ms\"\n");
    world.start_agent();
    // Writes 4 MiB once running, then waits.
    let fill = |path: &str| {
        format!(
            "sleep 1; dd if=/dev/zero of={path} bs=1024 count=4096 2>/dev/null; exec sleep 1000"
        )
    };
    let mut cache = world.shell_container("app", &fill("/cache/fill"));
    cache.push_str("    volumeMounts:\n    - {name: cache, mountPath: /cache}\n");
    world.write_manifest(
        "cache.yaml",
        &world.pod_yaml(
            "cache",
            "  volumes:\n  - name: cache\n    emptyDir:\n      sizeLimit: 1Mi\n",
            &cache,
        ),
    );
    let mut layer = world.shell_container("app", &fill("/tmp/fill"));
    layer.push_str("    resources:\n      limits:\n        ephemeral-storage: 2Mi\n");
    // A sidecar with room to spare: the pod as a whole (10 Mi) is within
    // its limit, the filling container is not.
    let mut side = world.shell_container("side", "exec sleep 1000");
    side.push_str("    resources:\n      limits:\n        ephemeral-storage: 8Mi\n");
    layer.push_str(&side);
    world.write_manifest("layer.yaml", &world.pod_yaml("layer", "", &layer));
    // One container: the pod's limit is its limit (checked first).
    let mut alone = world.shell_container("app", &fill("/tmp/fill"));
    alone.push_str("    resources:\n      limits:\n        ephemeral-storage: 2Mi\n");
    world.write_manifest("alone.yaml", &world.pod_yaml("alone", "", &alone));
    // Within its limits: 4 MiB of 8.
    let mut roomy = world.shell_container("app", &fill("/tmp/fill"));
    roomy.push_str("    resources:\n      limits:\n        ephemeral-storage: 8Mi\n");
    world.write_manifest("roomy.yaml", &world.pod_yaml("roomy", "", &roomy));

    let cache = world.wait_pod("cache", "evicted", |p| message(p).starts_with("Evicted"));
    assert_eq!(cache["phase"], "Failed");
    assert_eq!(
        message(&cache),
        "Evicted: Usage of EmptyDir volume \"cache\" exceeds the limit \"1Mi\"."
    );
    assert!(running_pid(&cache, "app").is_none(), "{cache:#}");
    let layer = world.wait_pod("layer", "evicted", |p| message(p).starts_with("Evicted"));
    assert_eq!(
        message(&layer),
        "Evicted: Container app exceeded its local ephemeral storage limit \"2Mi\"."
    );
    let alone = world.wait_pod("alone", "evicted", |p| message(p).starts_with("Evicted"));
    assert_eq!(
        message(&alone),
        "Evicted: Pod ephemeral local storage usage exceeds the total limit of containers 2Mi."
    );
    assert!(
        world
            .events("cache")
            .iter()
            .any(|e| e["reason"] == "Evicted"),
        "an Evicted event"
    );
    // The evicted pods' disk is freed: no emptyDir and no container layer
    // of theirs is left (only roomy's layer).
    let pods_dir = world.dirs.root.join("pods");
    let empty_dirs: Vec<_> = std::fs::read_dir(&pods_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("volumes/cache").exists())
        .collect();
    assert!(empty_dirs.is_empty(), "{empty_dirs:?}");

    let roomy = world.wait_pod("roomy", "running", |p| running_pid(p, "app").is_some());
    // Its 4 MiB are in its writable layer (the only layer left)...
    let containers = world.dirs.root.join("containers");
    berth_e2e::wait_until(berth_e2e::pods::POD_WAIT, "roomy's 4 MiB", || {
        std::fs::read_dir(&containers)
            .ok()?
            .flatten()
            .filter_map(|e| std::fs::metadata(e.path().join("upper/tmp/fill")).ok())
            .find(|m| m.len() == 4 << 20)
    });
    // ...and it is still running after several more checks (300 ms each).
    let evicted = berth_e2e::poll_until(std::time::Duration::from_secs(3), || {
        world.pod("roomy").filter(|p| {
            p["phase"] != "Running" || running_pid(p, "app") != running_pid(&roomy, "app")
        })
    });
    assert!(
        evicted.is_none(),
        "a pod within its limit was stopped: {evicted:#?}"
    );

    // A new version of an evicted pod runs again.
    let mut fixed = world.shell_container("app", "exec sleep 1000");
    fixed.push_str("    resources:\n      limits:\n        ephemeral-storage: 2Mi\n");
    world.write_manifest("layer.yaml", &world.pod_yaml("layer", "", &fixed));
    world.wait_pod("layer", "running again", |p| {
        running_pid(p, "app").is_some()
    });
}
