//! Updating safely, through the real agent, runc and a real registry:
//! update strategies (the order of pull, stop and image deletion, read
//! from the events), update locks (a container holding `flock` on
//! `/tmp/berth/updates.lock` defers an update; `berth update --force`
//! overrides it; a deletion never waits for it).

use berth_e2e::images::{Entry, busybox_image_with};
use berth_e2e::pods::{PodWorld, container, running_pid};
use berth_e2e::wait_until;
use serde_json::Value;
use std::time::Duration;

/// `pod_yaml` with annotations on the pod.
fn annotated(yaml: &str, annotations: &[(&str, &str)]) -> String {
    let mut lines = String::from("metadata:\n  annotations:\n");
    for (name, value) in annotations {
        lines.push_str(&format!("    {name}: {value:?}\n"));
    }
    yaml.replacen("metadata:\n", &lines, 1)
}

/// One container `app` running `script` from `image`.
fn app(image: &str, script: &str) -> String {
    format!("  - name: app\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n")
}

fn image_of(pod: &Value, name: &str) -> Option<String> {
    container(pod, name)?["image"].as_str().map(str::to_owned)
}

/// Index of the first event of `pod` with `reason` whose message has
/// `text`.
fn event_index(events: &[Value], reason: &str, text: &str) -> Option<usize> {
    events.iter().position(|e| {
        e["reason"] == reason && e["message"].as_str().is_some_and(|m| m.contains(text))
    })
}

fn strategy_case(strategy: &str) {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let v2 = busybox_image_with(
        &world.registry,
        &format!("berth/v2-{strategy}"),
        vec![Entry::file("etc/version", "2\n")],
    );
    let annotations = [("berth.dev/update-strategy", strategy)];
    let old_image = world.image.reference.clone();
    let write = |image: &str| {
        let containers = app(image, "exec sleep 1000");
        world.write_manifest(
            "web.yaml",
            &annotated(&world.pod_yaml("web", "", &containers), &annotations),
        );
    };
    write(&old_image);
    world.wait_pod("web", "v1 running", |p| running_pid(p, "app").is_some());
    write(&v2.reference);
    world.wait_pod("web", "v2 running", |p| {
        running_pid(p, "app").is_some() && image_of(p, "app").as_deref() == Some(&v2.reference)
    });
    let events = world.events("web");
    let pulled = event_index(&events, "Pulled", &v2.reference).expect("a Pulled event for v2");
    let killed = event_index(&events, "Killing", "container app").expect("a Killing event");
    let deleted = event_index(&events, "ImageDeleted", &old_image);
    match strategy {
        "download-then-kill" => {
            assert!(pulled < killed, "pull, then stop: {events:#?}");
            assert!(deleted.is_none(), "{events:#?}");
        }
        "kill-then-download" => {
            assert!(killed < pulled, "stop, then pull: {events:#?}");
            assert!(deleted.is_none(), "{events:#?}");
        }
        _ => {
            let deleted = deleted.expect("an ImageDeleted event for the old image");
            assert!(
                killed < deleted && deleted < pulled,
                "stop, delete, then pull: {events:#?}"
            );
            let images = world.dirs.berth(&["images", "-o", "json"]);
            let listed = String::from_utf8_lossy(&images.stdout);
            assert!(images.status.success(), "{listed}");
            assert!(
                !listed.contains(&old_image),
                "the old image is gone: {listed}"
            );
        }
    }
}

#[test]
fn download_then_kill_pulls_before_it_stops() {
    strategy_case("download-then-kill");
}

#[test]
fn kill_then_download_stops_before_it_pulls() {
    strategy_case("kill-then-download");
}

#[test]
fn delete_then_download_deletes_the_old_image_before_it_pulls() {
    strategy_case("delete-then-download");
}

/// The host's util-linux `flock` and the libraries it loads (Debian's
/// busybox has no flock applet), as image entries at the same paths.
fn host_flock() -> Vec<Entry> {
    let ldd = std::process::Command::new("ldd")
        .arg("/usr/bin/flock")
        .output()
        .expect("ldd /usr/bin/flock (util-linux)");
    let mut files = vec!["/usr/bin/flock".to_owned()];
    files.extend(
        String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_owned),
    );
    let mut dirs = std::collections::BTreeSet::new();
    for file in &files {
        let mut parent = std::path::Path::new(file.trim_start_matches('/')).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    let mut entries: Vec<Entry> = dirs.iter().map(|d| Entry::dir(d)).collect();
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_else(|err| panic!("reading {file}: {err}"));
        entries.push(Entry::executable(file.trim_start_matches('/'), bytes));
    }
    entries
}

#[test]
fn a_held_update_lock_defers_an_update_until_forced_and_never_a_deletion() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let image = busybox_image_with(&world.registry, "berth/flock", host_flock()).reference;
    // flock as pid 1 holds the lock for as long as the container runs.
    let write = |version: &str| {
        let containers = app(
            &image,
            &format!(
                "mkdir -p /tmp/berth; echo {version} > /tmp/version; exec /usr/bin/flock /tmp/berth/updates.lock sleep 1000"
            ),
        );
        world.write_manifest("web.yaml", &world.pod_yaml("web", "", &containers));
    };
    write("1");
    let pod = world.wait_pod("web", "v1 running", |p| running_pid(p, "app").is_some());
    let pid = running_pid(&pod, "app").expect("pid");
    // Give the container time to take its lock before the edit.
    wait_until(Duration::from_secs(30), "the lock file", || {
        std::path::Path::new(&format!("/proc/{pid}/root/tmp/berth/updates.lock"))
            .exists()
            .then_some(())
    });

    write("2");
    let held = world.wait_pod("web", "the update held by the lock", |p| {
        p["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("UpdateHeldByLock"))
    });
    assert_eq!(running_pid(&held, "app"), Some(pid), "{held:#}");
    assert!(
        event_index(
            &world.events("web"),
            "UpdateHeldByLock",
            "app holds /tmp/berth/updates.lock"
        )
        .is_some()
    );
    // The agent takes the override at its next try of the held update
    // (every 5 s): the command returns once it has.
    let forced = world.dirs.berth(&["update", "--force", "web"]);
    assert!(
        forced.status.success(),
        "berth update --force: {}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let pod = world.wait_pod("web", "v2 running", |p| {
        running_pid(p, "app").is_some_and(|new| new != pid)
    });
    assert!(
        event_index(&world.events("web"), "UpdateLockOverridden", "app").is_some(),
        "{pod:#}"
    );
    // Nothing is held any more: --force has nothing to force.
    let idle = world.dirs.berth(&["update", "--force", "web"]);
    assert!(!idle.status.success());
    assert!(
        String::from_utf8_lossy(&idle.stderr).contains("no update waiting"),
        "{}",
        String::from_utf8_lossy(&idle.stderr)
    );

    // v2 holds the lock too; a deletion does not wait for it.
    let new_pid = running_pid(&pod, "app").expect("pid");
    wait_until(Duration::from_secs(30), "v2's lock file", || {
        std::path::Path::new(&format!("/proc/{new_pid}/root/tmp/berth/updates.lock"))
            .exists()
            .then_some(())
    });
    world.remove_manifest("web.yaml");
    world.wait_pod_gone("web");
}
