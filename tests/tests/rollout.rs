//! Health-gated rollout and auto-update through the real agent, a real
//! registry and runc (`pod::rollout`): an update on probation (a few
//! seconds here) passes, or — crash-looping, never ready, failing its
//! startup probe, or crashing while the agent is killed -9 — is rolled
//! back; the old version is seen serving again from inside (each version
//! writes its name into a host directory when it starts). An auto-update
//! finds a new digest pushed under the same tag, rolls forward, and rolls
//! back from a bad one.

use berth_e2e::images::{Entry, PushedImage, busybox_image_with};
use berth_e2e::pods::{DataDir, POD_WAIT, PodWorld, container};
use berth_e2e::{poll_until, wait_until};
use serde_json::Value;

/// Each version writes its name to /data/served when it starts.
const SERVED: &str = "served";

/// A pod `web` on probation for `probation`, whose container writes
/// `version` to /data/served and then runs `then` (a shell snippet), with
/// `extra` YAML lines for the container (probes) and `extra_spec` for the
/// pod.
fn web(world: &PodWorld, data: &DataDir, probation: &str, version: &str, then: &str) -> String {
    web_with(world, data, probation, version, then, "", "")
}

fn web_with(
    world: &PodWorld,
    data: &DataDir,
    probation: &str,
    version: &str,
    then: &str,
    extra: &str,
    extra_spec: &str,
) -> String {
    let script = format!(
        "echo {version} > /data/{SERVED}.tmp && mv /data/{SERVED}.tmp /data/{SERVED}; {then}"
    );
    let mut containers = world.shell_container("web", &script);
    containers.push_str(DataDir::MOUNT);
    containers.push_str(extra);
    let yaml = world.pod_yaml("web", &format!("{extra_spec}{}", data.volume), &containers);
    yaml.replacen(
        "metadata:\n  name: web\n",
        &format!(
            "metadata:\n  name: web\n  annotations:\n    berth.dev/probation: {probation:?}\n"
        ),
        1,
    )
}

/// Edits pod `web` to `version` (see [`web`]).
fn edit(world: &PodWorld, data: &DataDir, probation: &str, version: &str, then: &str) {
    world.write_manifest("web.yaml", &web(world, data, probation, version, then));
}

/// Waits until generation 2's probation clock started.
fn wait_probation_of_2(world: &PodWorld) {
    let started = wait_event(world, "Probation");
    assert!(started.contains("generation 2"), "{started}");
}

fn served(data: &DataDir) -> String {
    std::fs::read_to_string(data.path.join(SERVED))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Waits until the pod serves `version` from inside.
fn wait_served(world: &PodWorld, data: &DataDir, version: &str) {
    let seen = poll_until(POD_WAIT, || (served(data) == version).then_some(()));
    assert!(
        seen.is_some(),
        "the pod never served {version} (it serves {:?}); status: {:#}",
        served(data),
        world.pod("web").unwrap_or_default()
    );
}

fn events_with(world: &PodWorld, reason: &str) -> Vec<String> {
    world
        .events("web")
        .iter()
        .filter(|e| e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

fn wait_event(world: &PodWorld, reason: &str) -> String {
    wait_until(POD_WAIT, &format!("event {reason}"), || {
        events_with(world, reason).pop()
    })
}

fn running(pod: &Value) -> bool {
    container(pod, "web").is_some_and(|c| !c["state"]["running"].is_null())
}

fn message(pod: &Value) -> &str {
    pod["message"].as_str().unwrap_or_default()
}

/// A pod running v1 with a probation of `probation`; returns its data dir.
fn running_v1(world: &mut PodWorld, probation: &str) -> DataDir {
    world.start_agent();
    let data = world.data_dir("data");
    world.write_manifest(
        "web.yaml",
        &web(world, &data, probation, "v1", "exec sleep 1000"),
    );
    world.wait_pod("web", "v1 running", running);
    wait_served(world, &data, "v1");
    data
}

/// After a rollback from generation 2: v1 serves again, the pod says so,
/// and its details name both generations.
fn assert_rolled_back(world: &PodWorld, data: &DataDir, why: &str) {
    let event = wait_event(world, "RolledBack");
    assert!(
        event.contains("generation 2") && event.contains(why),
        "{event}"
    );
    wait_served(world, data, "v1");
    let pod = world.wait_pod("web", "rolled back and running", |p| {
        running(p)
            && message(p).starts_with("rolled back from generation 2")
            && p["details"]["pod"]["rollout"]["runningGeneration"] == 1
    });
    assert!(message(&pod).contains(why), "{}", message(&pod));
    let rollout = &pod["details"]["pod"]["rollout"];
    assert_eq!(rollout["runningGeneration"], 1, "{pod:#}");
    assert_eq!(rollout["refusedGeneration"], 2, "{pod:#}");
    let inspected = world.dirs.berth_json(&["inspect", "web"]);
    let rollout = &inspected["status"]["details"]["pod"]["rollout"];
    assert_eq!(rollout["refusedGeneration"], 2, "{inspected:#}");
    assert!(
        rollout["refusedReason"]
            .as_str()
            .is_some_and(|r| r.contains(why)),
        "{inspected:#}"
    );
}

/// The refused generation is not tried again; a new edit is, and passes.
fn assert_next_edit_rolls_on(world: &PodWorld, data: &DataDir, probation: &str) {
    edit(world, data, probation, "v3", "exec sleep 1000");
    let passed = wait_until(POD_WAIT, "generation 3 passed", || {
        events_with(world, "ProbationPassed")
            .into_iter()
            .find(|m| m.contains("generation 3"))
    });
    assert!(passed.contains("generation 3"));
    wait_served(world, data, "v3");
    let tries_of_2 = events_with(world, "Probation")
        .iter()
        .filter(|m| m.contains("generation 2"))
        .count();
    assert!(
        tries_of_2 <= 1,
        "the refused generation 2 was tried {tries_of_2} times"
    );
    let pod = world.wait_pod("web", "v3 running, nothing on probation or refused", |p| {
        running(p) && p["details"]["pod"]["rollout"].is_null()
    });
    assert!(!message(&pod).contains("rolled back"), "{}", message(&pod));
}

#[test]
fn a_good_update_passes_its_probation() {
    let mut world = PodWorld::new("runc");
    let data = running_v1(&mut world, "3s");
    edit(&world, &data, "3s", "v2", "exec sleep 1000");
    wait_probation_of_2(&world);
    wait_served(&world, &data, "v2");
    let passed = wait_event(&world, "ProbationPassed");
    assert!(passed.contains("generation 2"), "{passed}");
    let pod = world.wait_pod("web", "v2 running", running);
    assert!(!message(&pod).contains("rolled back"), "{}", message(&pod));
    assert!(events_with(&world, "RolledBack").is_empty());
    assert_eq!(served(&data), "v2");
}

#[test]
fn a_crash_looping_update_is_rolled_back() {
    let mut world = PodWorld::new("runc");
    let data = running_v1(&mut world, "3s");
    edit(&world, &data, "3s", "v2", "exit 3");
    wait_served(&world, &data, "v2");
    assert_rolled_back(&world, &data, "exited with code 3");
    assert_next_edit_rolls_on(&world, &data, "3s");
}

/// An update to v2 whose container has `probe` (one that never passes)
/// is rolled back for `why`.
fn an_update_whose_probe_fails_is_rolled_back(probation: &str, probe: &str, why: &str) {
    let mut world = PodWorld::new("runc");
    let data = running_v1(&mut world, probation);
    let v2 = web_with(&world, &data, probation, "v2", "exec sleep 1000", probe, "");
    world.write_manifest("web.yaml", &v2);
    wait_served(&world, &data, "v2");
    assert_rolled_back(&world, &data, why);
}

#[test]
fn an_update_that_never_becomes_ready_is_rolled_back() {
    an_update_whose_probe_fails_is_rolled_back(
        "3s",
        "    readinessProbe:\n      exec:\n        command: [\"false\"]\n      periodSeconds: 1\n",
        "not ready after 3s",
    );
}

#[test]
fn an_update_that_fails_its_startup_probe_is_rolled_back() {
    an_update_whose_probe_fails_is_rolled_back(
        "30s",
        "    startupProbe:\n      exec:\n        command: [\"false\"]\n      periodSeconds: 1\n      failureThreshold: 2\n",
        "startup probe",
    );
}

/// A pod-level edit (here hostAliases) makes a new pod; its rollback makes
/// the previous pod spec again.
#[test]
fn a_pod_level_update_is_rolled_back_to_the_previous_pod() {
    let mut world = PodWorld::new("runc");
    let data = running_v1(&mut world, "3s");
    let first_uid = world.pod("web").expect("status")["details"]["pod"]["uid"].clone();
    let aliases = "  hostAliases:\n  - ip: 10.9.9.9\n    hostnames: [berth-rollout-test]\n";
    world.write_manifest(
        "web.yaml",
        &web_with(&world, &data, "3s", "v2", "exit 4", "", aliases),
    );
    assert_rolled_back(&world, &data, "exited with code 4");
    let pod = world.pod("web").expect("status");
    assert_ne!(
        pod["details"]["pod"]["uid"], first_uid,
        "the pod was made anew"
    );
    assert!(!events_with(&world, "Recreating").is_empty());
}

/// The agent is killed -9 while generation 2 is on probation; the version
/// crashes while no agent runs; the restarted agent rolls it back.
#[test]
fn a_rollback_survives_an_agent_kill_during_probation() {
    let mut world = PodWorld::new("runc");
    let data = running_v1(&mut world, "20s");
    edit(&world, &data, "20s", "v2", "sleep 3; exit 5");
    wait_probation_of_2(&world);
    world.kill_agent();
    assert_eq!(served(&data), "v2");
    world.start_agent();
    assert_rolled_back(&world, &data, "exited with code 5");
}

// ---- auto-update ----

/// `berth/app:latest` whose /etc/version says `version`; `bad` images also
/// carry /etc/bad, which makes the pod's container exit.
fn push_app(world: &PodWorld, version: &str, bad: bool) -> PushedImage {
    let mut extra = vec![Entry::file("etc/version", format!("{version}\n"))];
    if bad {
        extra.push(Entry::file("etc/bad", "1\n"));
    }
    busybox_image_with(&world.registry, "berth/app", extra)
}

fn auto_update_world() -> PodWorld {
    let world = PodWorld::new("runc");
    let config = std::fs::read_to_string(&world.config).expect("agent config");
    std::fs::write(
        &world.config,
        config.replacen("[images]\n", "[images]\nauto-update-interval = \"2s\"\n", 1),
    )
    .expect("agent config");
    world
}

fn app_pod(world: &PodWorld, data: &DataDir, image: &str) -> String {
    let script = format!(
        "cp /etc/version /data/{SERVED}.tmp && mv /data/{SERVED}.tmp /data/{SERVED}; \
         if [ -e /etc/bad ]; then exit 6; fi; exec sleep 1000"
    );
    let containers = format!(
        "  - name: web\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n{}",
        DataDir::MOUNT
    );
    world
        .pod_yaml("web", &data.volume, &containers)
        .replacen(
            "metadata:\n  name: web\n",
            "metadata:\n  name: web\n  annotations:\n    berth.dev/probation: 3s\n    berth.dev/auto-update: registry\n",
            1,
        )
}

fn image_digest(world: &PodWorld) -> String {
    let pod = world.pod("web").unwrap_or_default();
    container(&pod, "web")
        .and_then(|c| c["imageDigest"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn auto_update_rolls_forward_to_a_new_digest_and_back_from_a_bad_one() {
    let mut world = auto_update_world();
    let v1 = push_app(&world, "v1", false);
    world.start_agent();
    let data = world.data_dir("data");
    world.write_manifest("web.yaml", &app_pod(&world, &data, &v1.reference));
    world.wait_pod("web", "v1 running", running);
    wait_served(&world, &data, "v1");
    assert_eq!(image_digest(&world), v1.digest);

    let v2 = push_app(&world, "v2", false);
    assert_ne!(v2.digest, v1.digest);
    let updated = wait_event(&world, "AutoUpdated");
    assert!(updated.contains(&v2.digest), "{updated}");
    wait_served(&world, &data, "v2");
    wait_until(POD_WAIT, "the auto-update passed", || {
        events_with(&world, "ProbationPassed").pop()
    });
    assert_eq!(image_digest(&world), v2.digest);

    let v3 = push_app(&world, "v3", true);
    let rolled_back = wait_event(&world, "AutoUpdateRolledBack");
    assert!(rolled_back.contains("exited with code 6"), "{rolled_back}");
    wait_served(&world, &data, "v2");
    let pod = world.wait_pod("web", "back on v2", |p| {
        running(p) && image_digest(&world) == v2.digest
    });
    assert!(message(&pod).contains(&v3.digest), "{}", message(&pod));
    assert_eq!(
        pod["details"]["pod"]["rollout"]["refusedDigests"]["web"],
        v3.digest.as_str()
    );
    // The rollback target was kept by its digest while v3 was on
    // probation: rolling back needed no pull. It stays while v3 is
    // refused, even after a prune.
    let pulled_v2_again = events_with(&world, "Pulled")
        .into_iter()
        .find(|m| m.contains(&format!("@{}", v2.digest)));
    assert_eq!(pulled_v2_again, None);
    let pruned = world.dirs.berth(&["prune"]);
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    let images = world.dirs.berth_json(&["images"]);
    let kept = format!("{}@{}", v1.reference, v2.digest);
    assert!(
        images
            .as_array()
            .expect("images")
            .iter()
            .any(|i| i["name"] == kept.as_str()),
        "{kept} is not kept: {images:#}"
    );
    // The refused digest is not tried again while the tag stays on it:
    // later checks find it and leave v2 running.
    let checks = events_with(&world, "AutoUpdated").len();
    let v4 = push_app(&world, "v4", false);
    wait_until(POD_WAIT, "the next auto-update", || {
        (events_with(&world, "AutoUpdated").len() > checks).then_some(())
    });
    wait_served(&world, &data, "v4");
    let tries_of_v3 = events_with(&world, "AutoUpdated")
        .iter()
        .filter(|m| m.contains(&v3.digest))
        .count();
    assert_eq!(tries_of_v3, 1);
    world.wait_pod("web", "running v4", |p| {
        running(p) && container(p, "web").is_some_and(|c| c["imageDigest"] == v4.digest.as_str())
    });
}

/// `berth auto-update --dry-run` lists a new digest without acting; `berth
/// auto-update` makes the agent check now (the interval is an hour).
#[test]
fn berth_auto_update_lists_then_rolls_forward_now() {
    let mut world = PodWorld::new("runc");
    let v1 = push_app(&world, "v1", false);
    world.start_agent();
    let data = world.data_dir("data");
    world.write_manifest("web.yaml", &app_pod(&world, &data, &v1.reference));
    world.wait_pod("web", "v1 running", running);
    wait_served(&world, &data, "v1");
    let config = world.config.to_str().expect("utf-8").to_owned();

    let current = world
        .dirs
        .berth_json(&["auto-update", "--dry-run", "--config", &config]);
    assert_eq!(
        current["containers"][0]["action"], "up-to-date",
        "{current:#}"
    );

    let v2 = push_app(&world, "v2", false);
    let listed = world
        .dirs
        .berth_json(&["auto-update", "--dry-run", "--config", &config]);
    let row = &listed["containers"][0];
    assert_eq!(row["pod"], "default/web", "{listed:#}");
    assert_eq!(row["action"], "update", "{listed:#}");
    assert_eq!(row["running"], v1.digest.as_str());
    assert_eq!(row["latest"], v2.digest.as_str());
    assert_eq!(listed["requested"], false);
    assert!(
        events_with(&world, "AutoUpdated").is_empty(),
        "a dry run acts"
    );
    assert_eq!(image_digest(&world), v1.digest);

    let now = world.dirs.berth_json(&["auto-update", "--config", &config]);
    assert_eq!(now["requested"], true, "{now:#}");
    let updated = wait_event(&world, "AutoUpdated");
    assert!(updated.contains(&v2.digest), "{updated}");
    wait_served(&world, &data, "v2");
    world.wait_pod("web", "running v2", |p| {
        running(p) && container(p, "web").is_some_and(|c| c["imageDigest"] == v2.digest.as_str())
    });
    let after = world
        .dirs
        .berth_json(&["auto-update", "--dry-run", "--config", &config]);
    assert_eq!(after["containers"][0]["action"], "up-to-date", "{after:#}");
}

/// `berth validate` knows berth's annotations: a typo gets a suggestion, a
/// bad duration an error naming file, line and field.
#[test]
fn validate_knows_the_update_annotations() {
    let dirs = berth_e2e::TestDirs::new();
    dirs.write_manifest(
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    \
         berth.dev/probation: 5 minutes\n    berth.dev/auto-updte: registry\n    \
         berth.dev/update-strategy: kill-then-download\nspec:\n  containers:\n  \
         - name: web\n    image: localhost/berth/busybox:1\n",
    );
    let output = dirs.berth(&["validate"]);
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let file = dirs.manifests.join("web.yaml");
    assert!(
        text.contains(&format!("{}:6:", file.display()))
            && text.contains("berth.dev/probation")
            && text.contains("\"5 minutes\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}:7:", file.display()))
            && text.contains("did you mean `berth.dev/auto-update`"),
        "{text}"
    );
    assert!(!text.contains("update-strategy"), "a known value: {text}");
    let output = dirs.berth(&["validate", "-o", "json"]);
    let json: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let fields: Vec<&str> = json["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert!(
        fields.contains(&"metadata.annotations[\"berth.dev/probation\"]"),
        "{json:#}"
    );
}
