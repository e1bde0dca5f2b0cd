//! `[node]` name and labels through the real agent with real runc AND
//! crun: `nodeSelector`, required node affinity and `nodeName` decide
//! which pods run; a pod that does not match is not run and says why; an
//! edit of the labels file selects (and deselects) pods without an agent
//! restart.

use berth_e2e::for_each_runtime;
use berth_e2e::pods::{PodWorld, running_pid};
use berth_e2e::write_atomically;

for_each_runtime!(node_labels_select_the_pods_this_node_runs);

fn message(pod: &serde_json::Value) -> &str {
    pod["message"].as_str().unwrap_or_default()
}

fn node_labels_select_the_pods_this_node_runs(runtime: &str) {
    let labels_dir = tempfile::tempdir().expect("tempdir");
    let labels_file = labels_dir.path().join("labels");
    write_atomically(&labels_file, "# provisioning\nrole=edge\n");
    let mut world = PodWorld::with_config(
        runtime,
        &format!(
            "[node]\nname = \"edge-1\"\nlabels = {{ disk = \"ssd\" }}\n\
             labels-file = {labels_file:?}\nlabels-interval = \"200ms\"\n"
        ),
    );
    world.start_agent();
    let agent_pid = world.agent().pid();
    let sleeper = world.shell_container("app", "exec sleep 1000");
    let pod = |name: &str, spec: &str| {
        world.write_manifest(
            &format!("{name}.yaml"),
            &world.pod_yaml(name, spec, &sleeper),
        );
    };
    pod("ssd", "  nodeSelector:\n    disk: ssd\n    role: edge\n");
    pod("foo", "  nodeSelector:\n    foo: bar\n");
    pod("mine", "  nodeName: edge-1\n");
    pod("theirs", "  nodeName: edge-2\n");
    let zone = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n\
                \x20       nodeSelectorTerms:\n        - matchExpressions:\n\
                \x20         - {key: zone, operator: In, values: [eu-1]}\n\
                \x20         - {key: cores, operator: Gt, values: ['4']}\n";
    pod("zoned", zone);

    for name in ["ssd", "mine"] {
        world.wait_pod(name, "running", |p| running_pid(p, "app").is_some());
    }
    let unmatched = world.wait_pod("foo", "not selected", |p| {
        message(p).starts_with("NotSelected")
    });
    assert_eq!(
        message(&unmatched),
        "NotSelected: node labels do not match nodeSelector foo=bar"
    );
    assert_eq!(unmatched["phase"], "Pending");
    let theirs = world.wait_pod("theirs", "not selected", |p| {
        message(p).starts_with("NotSelected")
    });
    assert_eq!(
        message(&theirs),
        "NotSelected: spec.nodeName is edge-2, this node is edge-1"
    );
    let zoned = world.wait_pod("zoned", "not selected", |p| {
        message(p).starts_with("NotSelected")
    });
    assert!(
        message(&zoned).contains("zone In [eu-1]"),
        "{}",
        message(&zoned)
    );
    // Nothing of the pods this node does not run was made.
    for name in ["foo", "theirs", "zoned"] {
        let pod = world.pod(name).expect("status");
        assert!(running_pid(&pod, "app").is_none(), "{name}: {pod:#}");
    }

    // The provisioning tool adds labels: the zoned pod starts, no restart.
    write_atomically(&labels_file, "role=edge\nzone=eu-1\ncores=8\n");
    world.wait_pod("zoned", "running after the label edit", |p| {
        running_pid(p, "app").is_some()
    });
    // ...and takes `role` away: the ssd pod no longer matches and stops.
    write_atomically(&labels_file, "zone=eu-1\ncores=8\n");
    let ssd = world.wait_pod("ssd", "deselected", |p| {
        message(p).starts_with("NotSelected")
    });
    assert_eq!(
        message(&ssd),
        "NotSelected: node labels do not match nodeSelector role=edge"
    );
    assert!(running_pid(&ssd, "app").is_none(), "{ssd:#}");
    // A labels file that does not parse changes nothing.
    write_atomically(&labels_file, "zone=eu-1\nnot a label\n");
    let events = std::fs::read_to_string(world.dirs.run_root.join("events.jsonl")).expect("events");
    let invalid = berth_e2e::poll_until(berth_e2e::pods::POD_WAIT, || {
        std::fs::read_to_string(world.dirs.run_root.join("events.jsonl"))
            .ok()
            .filter(|t| t.contains("NodeLabelsInvalid"))
    })
    .unwrap_or_else(|| panic!("no NodeLabelsInvalid event:\n{events}"));
    assert!(invalid.contains(":2: expected key=value"), "{invalid}");
    let zoned = world.pod("zoned").expect("status");
    assert!(running_pid(&zoned, "app").is_some(), "{zoned:#}");
    assert_eq!(world.agent().pid(), agent_pid, "no agent restart");
}
