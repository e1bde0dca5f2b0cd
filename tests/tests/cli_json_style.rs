//! The CLI as scripts see it: every `-o json` output uses camelCase keys
//! (as Kubernetes and `berth status` do; a stable format), `berth tag`
//! gives an image a name a pod then runs by, and `berth events -f` prints
//! events written after it started, as JSON lines.

mod cli_common;

use berth_e2e::agent::{AgentProcess, REACT};
use berth_e2e::pods::PodWorld;
use berth_e2e::pull::pull_ok;
use berth_e2e::{TestDirs, require_root};
use cli_common::Follower;
use serde_json::Value;

/// Maps whose keys are the user's data, not berth's field names.
const USER_KEYED: [&str; 5] = [
    "labels",
    "annotations",
    "data",
    "stringData",
    "nodeSelector",
];

/// Every key of `value` (at `path`) that is not camelCase.
fn non_camel_keys(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let camel = key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && key.chars().all(|c| c.is_ascii_alphanumeric());
                if !camel {
                    found.push(format!("{path}.{key}"));
                }
                if !USER_KEYED.contains(&key.as_str()) {
                    non_camel_keys(child, &format!("{path}.{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                non_camel_keys(item, &format!("{path}[{n}]"), found);
            }
        }
        _ => {}
    }
}

fn berth_json_any_exit(dirs: &TestDirs, args: &[&str]) -> Value {
    let output = dirs.berth(args);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "berth {}: not JSON ({err}): {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn run_tagged_pod(world: &mut PodWorld, tagged: &str) {
    pull_ok(&world.dirs, &world.image.reference, &[]);
    let output = world.dirs.berth(&["tag", &world.image.reference, tagged]);
    assert!(
        output.status.success(),
        "berth tag: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    world.start_agent();
    let container = format!(
        "  - name: main\n    image: {tagged}\n    imagePullPolicy: Never\n    command: [\"/bin/sh\", \"-c\", \"cat /etc/berth-test-image; exec sleep 600\"]\n"
    );
    world.write_manifest("tagged.yaml", &world.pod_yaml("tagged", "", &container));
    world.wait_pod("tagged", "running from the tagged name", |pod| {
        pod["phase"] == "Running"
    });
}

#[test]
fn a_pod_runs_by_the_name_berth_tag_gave_its_image() {
    let mut world = PodWorld::new("runc");
    let tagged = "registry.invalid/bt/tagged:1";
    run_tagged_pod(&mut world, tagged);
    let images = world.dirs.berth_json(&["images"]);
    let by_name = |name: &str| {
        images
            .as_array()
            .expect("array")
            .iter()
            .find(|image| image["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {images}"))
            .clone()
    };
    let original = by_name(&world.image.reference);
    let tag = by_name(tagged);
    assert_eq!(tag["manifestDigest"], original["manifestDigest"]);
    assert_eq!(tag["usedBy"].as_array().map(Vec::len), Some(1), "{tag}");
    let logs = world.dirs.berth(&["logs", "tagged"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("berth/busybox"),
        "the pod runs the tagged image: {}",
        String::from_utf8_lossy(&logs.stdout)
    );
}

#[test]
fn every_json_output_uses_camel_case_keys() {
    let mut world = PodWorld::new("runc");
    run_tagged_pod(&mut world, "registry.invalid/bt/json:1");
    let dirs = &world.dirs;
    let manifests = dirs.manifests.to_str().expect("utf-8").to_owned();
    let certs_d = dirs.temp.path().join("certs.d");
    let certs_d = certs_d.to_str().expect("utf-8").to_owned();
    let commands: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["events"],
        vec!["ps", "-a"],
        vec!["inspect", "tagged"],
        vec!["images"],
        vec!["images", "--check"],
        vec!["validate", &manifests],
        vec!["pull", "--hosts-dir", &certs_d, &world.image.reference],
        vec!["prune"],
    ];
    let mut offenders = Vec::new();
    for command in &commands {
        let mut args = command.clone();
        args.extend(["-o", "json"]);
        let json = berth_json_any_exit(dirs, &args);
        assert!(
            json.is_object() || json.as_array().is_some_and(|a| !a.is_empty()),
            "berth {}: nothing to check in {json}",
            command.join(" ")
        );
        let mut found = Vec::new();
        non_camel_keys(&json, command[0], &mut found);
        offenders.extend(found);
    }
    assert!(
        offenders.is_empty(),
        "keys that are not camelCase: {offenders:#?}"
    );
}

#[test]
fn the_walker_rejects_snake_case_keys() {
    let mut found = Vec::new();
    non_camel_keys(
        &serde_json::json!([{"manifestDigest": "x", "used_by": [], "labels": {"my_label": "ok"}}]),
        "images",
        &mut found,
    );
    assert_eq!(found, ["images[0].used_by"]);
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: b\n")
}

/// The next event about `subject` the follower prints (other events are
/// passed over); fails the test when none comes within its deadline.
fn next_event_about(follower: &Follower, subject: &str) -> Value {
    loop {
        let line = follower.next_line(&format!("an event about {subject}"));
        let event: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line}"));
        if event["subject"] == subject {
            return event;
        }
    }
}

#[test]
fn events_follow_prints_an_event_written_after_it_started() {
    require_root();
    let dirs = TestDirs::new();
    let _agent = AgentProcess::start_ready(&dirs, &[]);
    dirs.write_manifest("early.yaml", &config_map("early"));
    berth_e2e::wait_until(REACT, "the event about ConfigMap/default/early", || {
        let events = dirs.berth_json(&["events", "--for", "ConfigMap/default/early"]);
        events
            .as_array()
            .is_some_and(|e| !e.is_empty())
            .then_some(())
    });
    // Killed by PID when dropped.
    let follower = Follower::start(
        &dirs,
        &["events", "-f", "-o", "json", "--for", "ConfigMap/default/"],
    );
    // The backlog: once it is printed, the follower is running.
    next_event_about(&follower, "ConfigMap/default/early");
    dirs.write_manifest("late.yaml", &config_map("late"));
    let late = next_event_about(&follower, "ConfigMap/default/late");
    assert_eq!(late["reason"], "Applied", "{late}");
}
