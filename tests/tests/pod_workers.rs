//! One pod's slow work never holds another (each pod has its own worker):
//! pods in long grace periods delay neither a new pod nor a ConfigMap
//! change reaching another pod's volume, and a pod deleted during its own
//! image pull or its postStart hook goes at once (plus its grace period).
//! Real agent, real runc, a real registry behind a throttling proxy.

use std::time::{Duration, Instant};

use berth_e2e::images::{Entry, busybox_image_with};
use berth_e2e::pods::{DataDir, PodWorld, running_pid};
use berth_e2e::proxy::{Fault, Proxy};
use berth_e2e::{poll_until, pull};

/// What the issue promises: a new pod runs within 3 s while five others
/// sit in 30 s grace periods (before pod workers it took 29 s).
const NOT_HELD: Duration = Duration::from_secs(3);

fn config_map(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: \"{value}\"\n"
    )
}

/// `berth exec POD -- cat FILE`, if it works now.
fn read_in(world: &PodWorld, pod: &str, file: &str) -> Option<String> {
    let out = world.dirs.berth(&["exec", pod, "--", "cat", file]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn five_pods_in_their_grace_periods_hold_neither_a_new_pod_nor_a_config_map_change() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    // Five pods whose process ignores SIGTERM, with 30 s to stop.
    let stubborn = world.shell_container("app", "trap '' TERM; while true; do sleep 1; done");
    for i in 0..5 {
        world.write_manifest(
            &format!("slow{i}.yaml"),
            &world.pod_yaml(
                &format!("slow{i}"),
                "  terminationGracePeriodSeconds: 30\n",
                &stubborn,
            ),
        );
    }
    // A pod that reads a ConfigMap through a volume.
    world.write_manifest("settings.yaml", &config_map("one"));
    let reader = format!(
        "{}    volumeMounts:\n    - name: settings\n      mountPath: /settings\n",
        world.shell_container("reader", "exec sleep 1000")
    );
    world.write_manifest(
        "reader.yaml",
        &world.pod_yaml(
            "reader",
            "  volumes:\n  - name: settings\n    configMap:\n      name: settings\n",
            &reader,
        ),
    );
    for i in 0..5 {
        world.wait_pod(&format!("slow{i}"), "running", |p| {
            running_pid(p, "app").is_some()
        });
    }
    world.wait_pod("reader", "running", |p| running_pid(p, "reader").is_some());
    assert_eq!(
        read_in(&world, "reader", "/settings/value").as_deref(),
        Some("one")
    );

    for i in 0..5 {
        world.remove_manifest(&format!("slow{i}.yaml"));
    }
    for i in 0..5 {
        world.wait_pod(&format!("slow{i}"), "terminating", |p| {
            p["phase"] == "Terminating"
        });
    }
    let fresh = world.shell_container("app", "exec sleep 1000");
    let began = Instant::now();
    world.write_manifest("fresh.yaml", &world.pod_yaml("fresh", "", &fresh));
    world.write_manifest("settings.yaml", &config_map("two"));
    world.wait_pod("fresh", "running", |p| running_pid(p, "app").is_some());
    let fresh_after = began.elapsed();
    let seen = poll_until(Duration::from_secs(20), || {
        (read_in(&world, "reader", "/settings/value").as_deref() == Some("two")).then_some(())
    });
    let config_after = began.elapsed();
    assert!(
        seen.is_some(),
        "the ConfigMap change never reached the reader's volume"
    );
    for i in 0..5 {
        let pod = world.pod(&format!("slow{i}")).expect("still there");
        assert_eq!(
            pod["phase"], "Terminating",
            "still in its grace period: {pod:#}"
        );
    }
    assert!(
        fresh_after < NOT_HELD,
        "the new pod ran after {fresh_after:?}"
    );
    assert!(
        config_after < NOT_HELD,
        "the ConfigMap reached the volume after {config_after:?}"
    );
    for i in 0..5 {
        world.wait_pod_gone(&format!("slow{i}"));
    }
}

#[test]
fn a_pod_deleted_during_its_image_pull_goes_at_once() {
    let mut world = PodWorld::new("runc");
    // A 16 MiB layer trickling at 64 KiB/s: a pull of minutes.
    let big = busybox_image_with(
        &world.registry,
        "berth/big",
        vec![Entry::noise("big.bin", 16 << 20, 7)],
    );
    let proxy = Proxy::start(&world.registry.host());
    proxy.add_fault("/blobs/", Fault::Throttle(64 << 10), 100);
    pull::use_server(&world.dirs, &proxy.host(), &proxy.url());
    world.start_agent();
    let image = big.reference.replace(&world.registry.host(), &proxy.host());
    let container = format!(
        "  - name: app\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", \"exec sleep 1000\"]\n"
    );
    world.write_manifest("big.yaml", &world.pod_yaml("big", "", &container));
    world.wait_pod("big", "pulling", |p| {
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("pulling image"))
    });
    // The big layer is on its way: a partial download in the store.
    poll_until(Duration::from_secs(30), || {
        (!pull::partial_files(&world.dirs).is_empty()).then_some(())
    })
    .expect("the layer download started");
    let began = Instant::now();
    world.remove_manifest("big.yaml");
    world.wait_pod_gone("big");
    let gone_after = began.elapsed();
    assert!(
        gone_after < Duration::from_secs(2),
        "removed {gone_after:?} after its deletion, during its pull"
    );
    assert!(world.processes().is_empty(), "nothing of it runs");
}

#[test]
fn a_pod_deleted_during_its_post_start_hook_goes_within_its_grace_period() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let data = world.data_dir("data");
    let container = format!(
        "{}{}    lifecycle:\n      postStart:\n        exec:\n          command: [\"/bin/sh\", \"-c\", \"touch /data/hook; exec sleep 1000\"]\n",
        world.shell_container("app", "exec sleep 1000"),
        DataDir::MOUNT
    );
    // A shell as pid 1 ignores SIGTERM: the stop takes the whole 2 s.
    world.write_manifest(
        "hooked.yaml",
        &world.pod_yaml("hooked", &data.volume, &container),
    );
    poll_until(Duration::from_secs(30), || {
        data.path.join("hook").exists().then_some(())
    })
    .expect("the postStart hook runs");
    let began = Instant::now();
    world.remove_manifest("hooked.yaml");
    world.wait_pod_gone("hooked");
    let gone_after = began.elapsed();
    let grace = Duration::from_secs(2);
    eprintln!("TIMING {gone_after:?}\n{}", world.agent().log());
    assert!(
        gone_after < grace + Duration::from_secs(2),
        "removed {gone_after:?} after its deletion, during its postStart hook (grace {grace:?})\n{}",
        world.agent().log()
    );
    assert!(world.processes().is_empty(), "nothing of it runs");
}
