//! The executor, teardown, recovery and the pod workers against the fake
//! host ([`super::fake`]): every path of a pod's life, in the order the
//! host sees it, without root. Time is tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use manifests::{Kind, ObjectKey};

use super::config::PodsConfig;
use super::executor::Executor;
use super::fake::FakeHost;
use super::host::Host;
use super::host::KillRequest;
use super::limits::{Limits, StopTracker};
use super::report::PodReport;
use super::sync;
use super::workers::{PodUpdate, PodWorkers};
use crate::desired::{DesiredObject, DesiredState, testing};
use crate::status::Phase;

const IMAGE: &str = "registry.test/app:1";

fn config() -> PodsConfig {
    PodsConfig {
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        ..PodsConfig::default()
    }
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Pod, "default", name)
}

/// A pod manifest: `containers` are (name, image) pairs, `extra` is more
/// of its spec (indented by two spaces).
fn pod_yaml(name: &str, containers: &[(&str, &str)], extra: &str) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 30\n{extra}  containers:\n"
    );
    for (container, image) in containers {
        yaml.push_str(&format!("  - name: {container}\n    image: {image}\n"));
    }
    yaml
}

fn desired(files: &[(&str, &str)]) -> Arc<DesiredState> {
    let mut store = testing::store();
    let scanned = files
        .iter()
        .map(|(path, text)| testing::file(path, text))
        .collect();
    // Nothing new (no files) publishes nothing: the empty state.
    store.update(scanned).unwrap_or_else(|| store.current())
}

fn object(state: &DesiredState, name: &str) -> DesiredObject {
    state.get(&key(name)).cloned().expect("the pod is desired")
}

/// One pod's executor over the fake host.
struct Pod {
    fake: FakeHost,
    host: Host,
    limits: Limits,
    stops: StopTracker,
    key: ObjectKey,
}

impl Pod {
    fn new(fake: &FakeHost, name: &str) -> Self {
        let host = fake.host(config());
        Self {
            fake: fake.clone(),
            limits: Limits::new(&host.config),
            host,
            stops: StopTracker::default(),
            key: key(name),
        }
    }

    fn ex(&self) -> Executor<'_> {
        Executor {
            host: &self.host,
            limits: &self.limits,
            stops: &self.stops,
            key: &self.key,
        }
    }

    async fn sync(&self, state: &DesiredState) -> PodReport {
        sync::sync(&self.ex(), &object(state, &self.key.name), state)
            .await
            .expect("the sync succeeds")
    }

    async fn terminate(&self) {
        sync::terminate(&self.ex()).await.expect("removed");
    }

    fn record(&self) -> super::state::PodState {
        self.fake
            .world()
            .records
            .get(&("default".to_string(), self.key.name.clone()))
            .cloned()
            .expect("a record")
    }

    /// The PID of container `name`'s current instance.
    fn pid(&self, name: &str) -> i32 {
        self.record().incarnation.containers[name]
            .current
            .as_ref()
            .and_then(|i| i.pid)
            .expect("a pid")
    }

    /// The id of container `name`'s current instance.
    fn id(&self, name: &str) -> String {
        self.record().incarnation.containers[name]
            .current
            .as_ref()
            .expect("an instance")
            .id
            .clone()
    }
}

fn fake_with_image() -> FakeHost {
    let fake = FakeHost::default();
    fake.world().images.insert(IMAGE.into());
    fake
}

#[tokio::test(start_paused = true)]
async fn a_new_pod_pulls_then_makes_its_network_and_sandbox_then_starts_its_containers() {
    let fake = FakeHost::default();
    let pod = Pod::new(&fake, "web");
    let state = desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", IMAGE), ("side", IMAGE)], ""),
    )]);
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    assert_eq!(report.message, "2/2 running");
    {
        let world = fake.world();
        let order = [
            world.first("pull ").expect("pulled"),
            world.first("network setup").expect("network"),
            world.first("sandbox create").expect("sandbox"),
            world.first("create ").expect("created"),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{:#?}", world.log);
        assert_eq!(world.done("pull ").len(), 1, "one pull for both containers");
        assert_eq!(world.running().len(), 2);
        assert_eq!(world.watched_exits.len(), 2);
        assert_eq!(world.probed.len(), 2);
        assert_eq!(world.held.len(), 2, "each container holds its image");
        assert!(world.reasons().contains(&"Pulled".to_string()));
    }
    let record = pod.record();
    assert!(record.incarnation.sandbox_ready && record.incarnation.network.is_some());

    // Unchanged: a second sync touches nothing.
    let before = fake.world().log.len();
    let again = pod.sync(&state).await;
    assert_eq!(again.phase, Phase::Running);
    assert_eq!(fake.world().log.len(), before, "{:#?}", fake.world().log);
}

#[tokio::test(start_paused = true)]
async fn a_pod_whose_image_cannot_be_pulled_gets_no_network_and_retries_later() {
    let fake = FakeHost::default();
    fake.world().pull_failures.insert(
        IMAGE.into(),
        "host a: connection refused; host b: 404".into(),
    );
    let pod = Pod::new(&fake, "web");
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Pending);
    assert!(
        report.message.contains("app: ImagePullBackOff")
            && report
                .message
                .contains("host a: connection refused; host b: 404"),
        "{}",
        report.message
    );
    assert!(
        report.pull_failed.as_deref() == Some(IMAGE),
        "retried after the worker's back-off: {report:?}"
    );
    let world = fake.world();
    assert!(
        world.first("network").is_none() && world.first("sandbox").is_none(),
        "{:#?}",
        world.log
    );
    assert!(
        world.status[&key("web")].message.contains("pulling image"),
        "the status said a pull ran"
    );
}

#[tokio::test(start_paused = true)]
async fn editing_one_container_pulls_first_then_replaces_only_it() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let first = desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", IMAGE), ("side", IMAGE)], ""),
    )]);
    pod.sync(&first).await;
    let (app, side) = (pod.id("app"), pod.id("side"));
    let edited = desired(&[(
        "web.yaml",
        &pod_yaml(
            "web",
            &[("app", "registry.test/app:2"), ("side", IMAGE)],
            "",
        ),
    )]);
    let report = pod.sync(&edited).await;
    assert_eq!(report.phase, Phase::Running);
    {
        let world = fake.world();
        let pulled = world.first("pulled registry.test/app:2").expect("pulled");
        let stopped = world
            .first(&format!("stop {app}"))
            .expect("old app stopped");
        assert!(pulled < stopped, "download, then kill: {:#?}", world.log);
        assert!(
            world.first(&format!("stop {side}")).is_none(),
            "the sibling runs on"
        );
        assert!(world.containers.contains_key(&side));
        assert!(!world.containers.contains_key(&app));
    }
    assert_ne!(pod.id("app"), app);
    assert_eq!(pod.record().incarnation.containers["app"].restart_count, 1);
}

#[tokio::test(start_paused = true)]
async fn a_pod_level_edit_recreates_the_pod_after_pulling() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    pod.sync(&desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", IMAGE)], ""),
    )]))
    .await;
    let old_uid = pod.record().incarnation.uid;
    let old_id = pod.id("app");
    let edited = desired(&[(
        "web.yaml",
        &pod_yaml(
            "web",
            &[("app", IMAGE)],
            "  hostAliases:\n  - ip: 10.0.0.1\n    hostnames: [db]\n",
        ),
    )]);
    let report = pod.sync(&edited).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    let record = pod.record();
    assert_ne!(record.incarnation.uid, old_uid);
    assert!(record.retired.is_empty());
    let world = fake.world();
    for done in [
        format!("stop {old_id}"),
        format!("remove {old_id}"),
        format!("network teardown {old_uid}"),
        format!("sandbox remove {old_uid}"),
    ] {
        assert!(world.first(&done).is_some(), "{done}: {:#?}", world.log);
    }
    let old_gone = world
        .first(&format!("sandbox remove {old_uid}"))
        .expect("removed");
    let new_network = world
        .first(&format!("network setup {}", record.incarnation.uid))
        .expect("new network");
    assert!(
        old_gone < new_network,
        "the old pod goes first (host ports)"
    );
    assert!(world.reasons().contains(&"Recreating".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_lost_sandbox_is_made_again_under_the_same_uid_without_a_back_off() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    pod.sync(&state).await;
    let uid = pod.record().incarnation.uid;
    let before = pod.id("app");
    {
        // A reboot: the namespaces, the containers and their runtime state
        // are gone.
        let mut world = fake.world();
        world.dead_sandboxes.insert(uid.clone());
        world.containers.clear();
    }
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    let record = pod.record();
    assert_eq!(
        record.incarnation.uid, uid,
        "the same pod, so the same lease"
    );
    assert_eq!(record.incarnation.containers["app"].restart_count, 1);
    assert_ne!(pod.id("app"), before);
    let world = fake.world();
    assert_eq!(
        world.done(&format!("network setup {uid}")).len(),
        2,
        "its network set up again: {:#?}",
        world.log
    );
    assert!(
        world.first(&format!("network teardown {uid}")).is_none(),
        "the lease is kept"
    );
    assert!(world.reasons().contains(&"SandboxChanged".to_string()));
    assert_eq!(world.running().len(), 1, "started at once, no back-off");
}

#[tokio::test(start_paused = true)]
async fn a_crash_restarts_after_its_back_off_and_counts() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    pod.sync(&state).await;
    let first = pod.id("app");
    let now = fake.now_ms();
    fake.world().exit(&first, 2, now);
    let report = pod.sync(&state).await;
    assert_eq!(report.wake_at_ms, Some(now + 1_000), "{report:?}");
    assert!(
        report.message.contains("CrashLoopBackOff"),
        "{}",
        report.message
    );
    assert_eq!(pod.id("app"), first, "not restarted during the back-off");
    tokio::time::advance(Duration::from_secs(1)).await;
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Running);
    assert_ne!(pod.id("app"), first);
    assert_eq!(pod.record().incarnation.containers["app"].restart_count, 1);
    let exited = fake
        .world()
        .events
        .iter()
        .find(|e| e.reason == "Exited")
        .map(|e| e.message.clone())
        .expect("an Exited event");
    assert!(
        exited.contains("exited with 2") && exited.contains("back-off 1s"),
        "{exited}"
    );
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_one_at_a_time_before_the_app_containers() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let inits = format!(
        "  initContainers:\n  - name: a\n    image: {IMAGE}\n  - name: b\n    image: {IMAGE}\n"
    );
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], &inits))]);
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Pending);
    assert_eq!(
        fake.world().running().len(),
        1,
        "only the first init container"
    );
    let a = pod.id("a");
    fake.world().exit(&a, 0, fake.now_ms());
    pod.sync(&state).await;
    let b = pod.id("b");
    assert_eq!(fake.world().running(), std::slice::from_ref(&b));
    fake.world().exit(&b, 0, fake.now_ms());
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    assert!(pod.record().incarnation.init_done);
    let app = pod.id("app");
    assert_eq!(fake.world().running(), [app]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_liveness_probe_stops_the_container_and_it_restarts() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let state = desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", IMAGE)], "  restartPolicy: Always\n"),
    )]);
    pod.sync(&state).await;
    let first = pod.id("app");
    fake.world().kill_requests.insert(
        first.clone(),
        KillRequest {
            why: "it failed its liveness probe".into(),
            grace: Some(Duration::from_secs(3)),
        },
    );
    pod.sync(&state).await;
    {
        let world = fake.world();
        assert!(
            world.first(&format!("stop {first} 3s")).is_some(),
            "{:#?}",
            world.log
        );
        assert!(world.reasons().contains(&"Killing".to_string()));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    pod.sync(&state).await;
    assert_ne!(pod.id("app"), first, "restarted by the restart policy");
}

#[tokio::test(start_paused = true)]
async fn a_failed_post_start_hook_stops_the_container() {
    let fake = fake_with_image();
    fake.world().hook_failures.insert("app".into());
    let pod = Pod::new(&fake, "web");
    let hook = "    lifecycle:\n      postStart:\n        exec:\n          command: [\"false\"]\n";
    let yaml = pod_yaml("web", &[("app", IMAGE)], "") + hook;
    let state = desired(&[("web.yaml", &yaml)]);
    let report = pod.sync(&state).await;
    let first = pod.id("app");
    {
        let world = fake.world();
        assert!(world.first(&format!("hook {first}")).is_some());
        assert!(
            world.first(&format!("stop {first}")).is_some(),
            "{:#?}",
            world.log
        );
        assert!(world.reasons().contains(&"FailedPostStartHook".to_string()));
    }
    assert!(report.message.contains("CrashLoopBackOff"), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_create_backs_off_and_keeps_no_image_hold() {
    let fake = fake_with_image();
    fake.world()
        .create_failures
        .insert("app".into(), "runc: exec format error".into());
    let pod = Pod::new(&fake, "web");
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    let report = pod.sync(&state).await;
    assert!(
        report.message.contains("app: CreateContainerError")
            && report.message.contains("exec format error"),
        "{}",
        report.message
    );
    assert_eq!(report.wake_at_ms, Some(fake.now_ms() + 1_000));
    assert!(fake.world().held.is_empty());
    let slot = &pod.record().incarnation.containers["app"];
    assert!(slot.current.is_none());
    assert_eq!(slot.failures, 1);
}

#[tokio::test(start_paused = true)]
async fn removing_a_pod_stops_every_container_then_removes_network_sandbox_logs_and_record() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    pod.sync(&desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", IMAGE), ("side", IMAGE)], ""),
    )]))
    .await;
    let uid = pod.record().incarnation.uid;
    pod.terminate().await;
    {
        let world = fake.world();
        assert!(
            world.containers.is_empty() && world.sandboxes.is_empty() && world.networks.is_empty()
        );
        assert!(world.held.is_empty());
        assert!(world.records.is_empty());
        let removed_sandbox = world
            .first(&format!("sandbox remove {uid}"))
            .expect("sandbox");
        let last_stop = world
            .log
            .iter()
            .rposition(|l| l.starts_with("stopped "))
            .expect("stopped");
        assert!(last_stop < removed_sandbox, "{:#?}", world.log);
        assert!(world.first("remove logs default/web").is_some());
    }
    // Idempotent.
    pod.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn a_removal_after_a_cancelled_stop_keeps_the_remaining_grace() {
    let fake = fake_with_image();
    fake.world().stubborn.insert("app".into());
    let pod = Pod::new(&fake, "web");
    pod.sync(&desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", IMAGE)], ""),
    )]))
    .await;
    let id = pod.id("app");
    // A replacement began to stop it 10 s ago with the pod's 30 s.
    pod.stops.begin(&id, fake.now_ms(), Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(10)).await;
    let started = tokio::time::Instant::now();
    pod.terminate().await;
    assert_eq!(started.elapsed(), Duration::from_secs(20));
    assert!(fake.world().first(&format!("stop {id} 20s")).is_some());
}

#[tokio::test(start_paused = true)]
async fn recovery_stops_and_removes_what_no_record_knows_and_keeps_the_rest() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    pod.sync(&desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", IMAGE)], ""),
    )]))
    .await;
    let known = pod.id("app");
    let known_uid = pod.record().incarnation.uid;
    {
        // What a lost state directory leaves: a running container, its
        // sandbox, network and image hold, with no record.
        let mut world = fake.world();
        let orphan = world.containers[&known].clone();
        world.containers.insert("lost-app-0".into(), orphan);
        world.sandboxes.insert("lost".into());
        world.networks.insert("lost".into());
        world.held.insert("gone-app-0".into());
    }
    let recovered = super::recover::run(&pod.host).await;
    assert_eq!(recovered.pods, [key("web")]);
    assert_eq!(recovered.adopted, 1);
    assert_eq!(recovered.removed_containers, ["lost-app-0"]);
    assert_eq!(recovered.removed_pods, ["lost"]);
    assert!(recovered.problems.is_empty(), "{:?}", recovered.problems);
    let world = fake.world();
    let stopped = world.first("stop lost-app-0").expect("stopped first");
    let removed = world.first("remove lost-app-0").expect("then removed");
    assert!(stopped < removed);
    assert!(
        world.containers.contains_key(&known),
        "a known container is adopted untouched"
    );
    assert!(world.first(&format!("stop {known}")).is_none());
    assert!(world.sandboxes.contains(&known_uid) && !world.sandboxes.contains("lost"));
    assert_eq!(world.networks.iter().collect::<Vec<_>>(), [&known_uid]);
    assert!(!world.held.contains("gone-app-0") && world.held.contains(&known));
}

// The pod workers.

fn update(state: &Arc<DesiredState>, name: &str) -> PodUpdate {
    PodUpdate {
        object: state.get(&key(name)).cloned(),
        desired: Arc::clone(state),
        reason: "test".into(),
    }
}

/// Waits (virtual time) until `done` holds.
async fn until(fake: &FakeHost, what: &str, done: impl Fn(&super::fake::World) -> bool) {
    for _ in 0..10_000 {
        if done(&fake.world()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never happened: {:#?}", fake.world().log);
}

#[tokio::test(start_paused = true)]
async fn five_pods_in_their_grace_periods_do_not_hold_a_new_pod() {
    let fake = fake_with_image();
    fake.world().stubborn.insert("app".into());
    let workers = PodWorkers::new(fake.host(config()), Default::default());
    let mut files: Vec<(String, String)> = (0..5)
        .map(|i| {
            (
                format!("p{i}.yaml"),
                pod_yaml(&format!("p{i}"), &[("app", IMAGE)], ""),
            )
        })
        .collect();
    let view = |files: &[(String, String)]| {
        desired(
            &files
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let state = view(&files);
    for i in 0..5 {
        workers.update(&key(&format!("p{i}")), update(&state, &format!("p{i}")));
    }
    until(&fake, "five pods running", |w| w.running().len() == 5).await;
    // Delete all five (their process ignores SIGTERM: 30 s each), then add
    // a sixth a second later.
    let empty = view(&[]);
    for i in 0..5 {
        workers.update(&key(&format!("p{i}")), update(&empty, &format!("p{i}")));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    files = vec![("new.yaml".into(), pod_yaml("new", &[("other", IMAGE)], ""))];
    let state = view(&files);
    let began = tokio::time::Instant::now();
    workers.update(&key("new"), update(&state, "new"));
    until(&fake, "the new pod running", |w| {
        w.running().iter().any(|id| id.contains("-other-"))
    })
    .await;
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        fake.world().running().len(),
        6,
        "the five are still in their grace periods"
    );
    until(&fake, "the five removed", |w| w.records.len() == 1).await;
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn deleting_a_pod_during_its_pull_cancels_the_pull_and_removes_it() {
    let fake = FakeHost::default();
    fake.world().slow_pulls.insert(IMAGE.into());
    let workers = PodWorkers::new(fake.host(config()), Default::default());
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    workers.update(&key("web"), update(&state, "web"));
    until(&fake, "the pull started", |w| w.first("pull ").is_some()).await;
    workers.update(&key("web"), update(&desired(&[]), "web"));
    until(&fake, "the worker gone", |_| workers.is_empty()).await;
    let world = fake.world();
    assert!(world.first("pulled").is_none(), "the pull was cancelled");
    assert!(world.first("create").is_none() && world.records.is_empty());
    assert!(!world.status.contains_key(&key("web")));
}

#[tokio::test(start_paused = true)]
async fn a_newer_version_cancels_a_pull_for_the_old_one() {
    let fake = FakeHost::default();
    fake.world().slow_pulls.insert(IMAGE.into());
    fake.world().images.insert("registry.test/app:2".into());
    let workers = PodWorkers::new(fake.host(config()), Default::default());
    let v1 = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    workers.update(&key("web"), update(&v1, "web"));
    until(&fake, "the pull started", |w| w.first("pull ").is_some()).await;
    let v2 = desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", "registry.test/app:2")], ""),
    )]);
    workers.update(&key("web"), update(&v2, "web"));
    until(&fake, "v2 running", |w| w.running().len() == 1).await;
    {
        let world = fake.world();
        assert!(world.first(&format!("pulled {IMAGE}")).is_none());
        let record = &world.records[&("default".to_string(), "web".to_string())];
        assert_eq!(
            record.incarnation.containers["app"]
                .current
                .as_ref()
                .map(|i| i.image.as_str()),
            Some("registry.test/app:2")
        );
    }
    workers.shutdown(Duration::from_secs(1)).await;
}

/// As the kubelet's ImagePullBackOff: a new pod whose image cannot be
/// pulled is retried after 1, 2, 4, 8, 8 s (this config), not every
/// second, and runs once the image can be had.
#[tokio::test(start_paused = true)]
async fn a_pod_whose_image_cannot_be_pulled_retries_after_a_growing_back_off() {
    let fake = FakeHost::default();
    fake.world()
        .pull_failures
        .insert(IMAGE.into(), "manifest unknown".into());
    let workers = PodWorkers::new(fake.host(config()), Default::default());
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    workers.update(&key("web"), update(&state, "web"));
    let pull = format!("pull {IMAGE}");
    let attempts = |w: &super::fake::World| w.log.iter().filter(|l| **l == pull).count();
    let mut at = Vec::new();
    for n in 1..=6 {
        until(&fake, "another pull", |w| attempts(w) == n).await;
        at.push(fake.now_ms());
    }
    let gaps: Vec<u64> = at.windows(2).map(|w| (w[1] - w[0] + 50) / 1_000).collect();
    assert_eq!(gaps, [1, 2, 4, 8, 8], "seconds between pulls: {at:?}");
    // An edit to another image that fails too starts its own back-off.
    let other = "registry.test/other:1";
    fake.world()
        .pull_failures
        .insert(other.into(), "manifest unknown".into());
    let edited = desired(&[("web.yaml", &pod_yaml("web", &[("app", other)], ""))]);
    workers.update(&key("web"), update(&edited, "web"));
    let pull_other = format!("pull {other}");
    let other_attempts =
        |w: &super::fake::World| w.log.iter().filter(|l| **l == pull_other).count();
    until(&fake, "the edit's pull", |w| other_attempts(w) == 1).await;
    let first = fake.now_ms();
    until(&fake, "the edit's retry", |w| other_attempts(w) == 2).await;
    assert_eq!(
        (fake.now_ms() - first + 50) / 1_000,
        1,
        "the other image's first back-off"
    );
    workers.update(&key("web"), update(&state, "web"));
    fake.world().pull_failures.clear();
    until(&fake, "running once the pull works", |w| {
        w.running().len() == 1
    })
    .await;
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_sleeps_until_a_back_off_ends_then_restarts_the_container() {
    let fake = fake_with_image();
    let workers = PodWorkers::new(fake.host(config()), Default::default());
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    workers.update(&key("web"), update(&state, "web"));
    until(&fake, "running", |w| w.running().len() == 1).await;
    let first = fake.world().running()[0].clone();
    fake.world().exit(&first, 1, fake.now_ms());
    // The exit watcher's event.
    workers.update(&key("web"), update(&state, "web"));
    until(&fake, "restarted without another trigger", |w| {
        w.running().len() == 1 && w.running()[0] != first
    })
    .await;
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_container_started_offline_is_replaced_once_its_tag_moved() {
    let fake = fake_with_image();
    fake.world().offline.insert(IMAGE.into());
    let pod = Pod::new(&fake, "web");
    let yaml = pod_yaml("web", &[("app", IMAGE)], "").replace(
        &format!("image: {IMAGE}\n"),
        &format!("image: {IMAGE}\n    imagePullPolicy: Always\n"),
    );
    let state = desired(&[("web.yaml", &yaml)]);
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    let first = pod.id("app");
    assert!(
        fake.world()
            .reasons()
            .contains(&"PulledFromLocalStore".to_string())
    );
    let recheck = report.wake_at_ms.expect("a re-check is due");
    assert_eq!(recheck, fake.now_ms() + 30_000);
    // Still offline at the re-check: it runs on.
    tokio::time::advance(Duration::from_secs(30)).await;
    pod.sync(&state).await;
    assert_eq!(pod.id("app"), first);
    // The registry is back and the tag moved: replaced, like an edit.
    {
        let mut world = fake.world();
        world.offline.clear();
        world.moved.insert(IMAGE.into());
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    pod.sync(&state).await;
    assert_ne!(pod.id("app"), first, "{:#?}", fake.world().log);
    assert!(fake.world().reasons().contains(&"ImageChanged".to_string()));
    let instance = pod.record().incarnation.containers["app"]
        .current
        .clone()
        .expect("instance");
    assert!(instance.recheck_at_ms.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_pod_over_its_ephemeral_storage_limit_is_evicted_until_its_manifest_changes() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let state = desired(&[(
        "web.yaml",
        &pod_yaml(
            "web",
            &[("app", IMAGE)],
            "  volumes:\n  - name: cache\n    emptyDir:\n      sizeLimit: 1Ki\n",
        ),
    )]);
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    assert!(report.wake_at_ms.is_some(), "measured again later");
    let id = pod.id("app");

    fake.world().storage.empty_dirs.insert("cache".into(), 4096);
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Failed);
    assert_eq!(
        report.message,
        "Evicted: Usage of EmptyDir volume \"cache\" exceeds the limit \"1Ki\"."
    );
    assert!(
        !fake.world().containers.contains_key(&id),
        "the container is removed"
    );
    assert!(fake.world().events.iter().any(|e| e.reason == "Evicted"));

    // Synced again (an observed event, a relist): it stays down.
    fake.world().storage = Default::default();
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Failed, "{report:?}");
    assert!(pod.record().incarnation.containers["app"].current.is_none());

    // A new version of the manifest runs again.
    let mut edited = object(&state, "web");
    edited.generation += 1;
    let report = sync::sync(&pod.ex(), &edited, &state)
        .await
        .expect("synced");
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    assert!(pod.record().evicted.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_running_pod_the_node_no_longer_selects_is_removed() {
    let fake = fake_with_image();
    let mut pod = Pod::new(&fake, "web");
    let state = desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", IMAGE)], "  nodeSelector:\n    disk: ssd\n"),
    )]);
    let ssd = std::collections::BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
    pod.host.node = Arc::new(crate::node::Node::fixed("node1", ssd));
    assert_eq!(pod.sync(&state).await.phase, Phase::Running);
    let id = pod.id("app");

    pod.host.node = Arc::new(crate::node::Node::fixed("node1", Default::default()));
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Pending);
    assert_eq!(
        report.message,
        "NotSelected: node labels do not match nodeSelector disk=ssd"
    );
    assert!(!fake.world().containers.contains_key(&id));
    assert!(fake.world().records.is_empty(), "no record is left");
}

#[tokio::test(start_paused = true)]
async fn a_new_pod_requesting_more_ephemeral_storage_than_is_free_waits() {
    let fake = fake_with_image();
    fake.world().free_space = Some(1 << 20);
    let pod = Pod::new(&fake, "web");
    let state = desired(&[(
        "web.yaml",
        &format!(
            "{}    resources:\n      requests:\n        ephemeral-storage: 2Mi\n",
            pod_yaml("web", &[("app", IMAGE)], "")
        ),
    )]);
    let report = pod.sync(&state).await;
    assert_eq!(report.phase, Phase::Pending);
    assert_eq!(
        report.message,
        "OutOfephemeral-storage: the pod requests 2097152 bytes of ephemeral storage, 1048576 are free"
    );
    assert!(report.wake_at_ms.is_some(), "checked again later");
    assert!(fake.world().containers.is_empty());

    fake.world().free_space = Some(4 << 20);
    assert_eq!(pod.sync(&state).await.phase, Phase::Running);
}

/// `pod_yaml` with `berth.dev/` annotations.
fn annotated(yaml: &str, annotations: &[(&str, &str)]) -> String {
    let mut lines = String::from("metadata:\n  annotations:\n");
    for (name, value) in annotations {
        lines.push_str(&format!("    {name}: {value:?}\n"));
    }
    yaml.replacen("metadata:\n", &lines, 1)
}

/// The first version of pod `web` (app on IMAGE), then an edit to
/// `app:2` under `strategy`; returns the old app's id.
async fn update_with_strategy(fake: &FakeHost, pod: &Pod, strategy: &str) -> String {
    let annotations = [("berth.dev/update-strategy", strategy)];
    let first = desired(&[(
        "web.yaml",
        &annotated(&pod_yaml("web", &[("app", IMAGE)], ""), &annotations),
    )]);
    pod.sync(&first).await;
    let app = pod.id("app");
    fake.world().log.clear();
    let edited = desired(&[(
        "web.yaml",
        &annotated(
            &pod_yaml("web", &[("app", "registry.test/app:2")], ""),
            &annotations,
        ),
    )]);
    let report = pod.sync(&edited).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    app
}

#[tokio::test(start_paused = true)]
async fn update_strategies_order_the_pull_against_the_stop() {
    for (strategy, deleted) in [
        ("kill-then-download", false),
        ("delete-then-download", true),
    ] {
        let fake = fake_with_image();
        let pod = Pod::new(&fake, "web");
        let app = update_with_strategy(&fake, &pod, strategy).await;
        let world = fake.world();
        let stopped = world.first(&format!("stop {app}")).expect("stopped");
        let removed = world.first(&format!("remove {app}")).expect("removed");
        let pulled = world.first("pulled registry.test/app:2").expect("pulled");
        assert!(
            stopped < removed && removed < pulled,
            "{strategy}: {:#?}",
            world.log
        );
        let delete = world.first(&format!("delete image {IMAGE}"));
        assert_eq!(delete.is_some(), deleted, "{strategy}: {:#?}", world.log);
        if let Some(delete) = delete {
            assert!(removed < delete && delete < pulled, "{:#?}", world.log);
            assert!(world.reasons().contains(&"ImageDeleted".to_string()));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_update_lock_defers_the_update_until_forced() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let first = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    pod.sync(&first).await;
    let app = pod.id("app");
    let pid = pod.pid("app");
    fake.world().update_locks.insert(pid);
    let edited = desired(&[(
        "web.yaml",
        &pod_yaml("web", &[("app", "registry.test/app:2")], ""),
    )]);
    let report = pod.sync(&edited).await;
    assert!(
        report.message.starts_with("UpdateHeldByLock: app holds"),
        "{report:?}"
    );
    assert!(report.wake_at_ms.is_some(), "tried again later");
    assert_eq!(pod.id("app"), app, "the old container runs on");
    {
        let world = fake.world();
        assert!(
            world.first(&format!("stop {app}")).is_none(),
            "{:#?}",
            world.log
        );
        assert!(
            world.first("pulled registry.test/app:2").is_some(),
            "download-then-kill pulls while it waits"
        );
        assert!(world.reasons().contains(&"UpdateHeldByLock".to_string()));
    }
    // Still held: still waiting, and the event is not repeated.
    pod.sync(&edited).await;
    assert_eq!(pod.id("app"), app);
    let held_events = fake
        .world()
        .reasons()
        .iter()
        .filter(|r| *r == "UpdateHeldByLock")
        .count();
    assert_eq!(held_events, 1);
    fake.world().forced = true;
    pod.sync(&edited).await;
    assert_ne!(pod.id("app"), app, "--force overrides the lock");
    assert!(
        fake.world()
            .reasons()
            .contains(&"UpdateLockOverridden".to_string())
    );
    assert_eq!(pod.record().update_held_since_ms, None);
}

#[tokio::test(start_paused = true)]
async fn an_update_lock_is_waited_for_at_most_its_timeout() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let annotations = [("berth.dev/update-lock-timeout", "20s")];
    let yaml = |image| annotated(&pod_yaml("web", &[("app", image)], ""), &annotations);
    pod.sync(&desired(&[("web.yaml", &yaml(IMAGE))])).await;
    let app = pod.id("app");
    let pid = pod.pid("app");
    fake.world().update_locks.insert(pid);
    let edited = desired(&[("web.yaml", &yaml("registry.test/app:2"))]);
    pod.sync(&edited).await;
    assert_eq!(pod.id("app"), app);
    tokio::time::advance(Duration::from_secs(21)).await;
    pod.sync(&edited).await;
    assert_ne!(pod.id("app"), app, "the timeout ended the wait");
    assert!(
        fake.world()
            .reasons()
            .contains(&"UpdateLockTimeout".to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn a_recreated_pod_follows_its_strategy_and_its_update_locks() {
    let fake = fake_with_image();
    let pod = Pod::new(&fake, "web");
    let annotations = [("berth.dev/update-strategy", "delete-then-download")];
    let yaml = |image: &str, extra: &str| {
        annotated(&pod_yaml("web", &[("app", image)], extra), &annotations)
    };
    pod.sync(&desired(&[("web.yaml", &yaml(IMAGE, ""))])).await;
    let old_id = pod.id("app");
    let pid = pod.pid("app");
    fake.world().update_locks.insert(pid);
    // A pod-level change with a new image.
    let edited = desired(&[(
        "web.yaml",
        &yaml("registry.test/app:2", "  hostNetwork: true\n"),
    )]);
    let report = pod.sync(&edited).await;
    assert!(report.message.starts_with("UpdateHeldByLock"), "{report:?}");
    assert_eq!(pod.id("app"), old_id, "held: the old pod runs on");
    fake.world().update_locks.clear();
    fake.world().log.clear();
    let report = pod.sync(&edited).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    let world = fake.world();
    let stopped = world.first(&format!("stop {old_id}")).expect("stopped");
    let deleted = world
        .first(&format!("delete image {IMAGE}"))
        .expect("the old image deleted");
    let pulled = world.first("pulled registry.test/app:2").expect("pulled");
    assert!(stopped < deleted && deleted < pulled, "{:#?}", world.log);
}

/// `pod::rollout` through the sync: an update on probation whose container
/// exits is refused, the stable version runs again pinned to its digest,
/// and the refused generation is not tried again while it stays desired.
#[tokio::test(start_paused = true)]
async fn a_crash_during_probation_rolls_back_to_the_pinned_stable_version() {
    const V2: &str = "registry.test/app:2";
    let fake = fake_with_image();
    fake.world().images.insert(V2.into());
    let pod = Pod::new(&fake, "web");
    let on_probation = |image: &str| {
        pod_yaml("web", &[("app", image)], "").replacen(
            "  name: web\n",
            "  name: web\n  annotations:\n    berth.dev/probation: 10s\n",
            1,
        )
    };
    let v1 = on_probation(IMAGE);
    let v2 = on_probation(V2);
    let first = desired(&[("web.yaml", &v1)]);
    pod.sync(&first).await;
    let v1_digest = pod.record().incarnation.containers["app"]
        .current
        .as_ref()
        .and_then(|i| i.image_digest.clone())
        .expect("a digest");

    let mut store = testing::store();
    store.update(vec![testing::file("web.yaml", &v1)]);
    let edited = store
        .update(vec![testing::file("web.yaml", &v2)])
        .expect("an edit");
    let report = pod.sync(&edited).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    let probation = pod.record().rollout.probation.expect("on probation");
    assert_eq!(
        probation.containers.as_deref(),
        Some(&["app".to_string()][..])
    );
    assert!(probation.until_ms.is_some(), "the clock started");
    assert!(
        pod.record()
            .rollout
            .stable
            .is_some_and(|s| s.digests["app"] == v1_digest),
        "the stable version's digest is pinned"
    );

    let crashed = pod.id("app");
    let now = fake.now_ms();
    fake.world().exit(&crashed, 1, now);
    let report = pod.sync(&edited).await;
    assert!(
        report.message.starts_with("rolled back from generation"),
        "{}",
        report.message
    );
    assert_eq!(report.wake_at_ms, Some(fake.now_ms()), "rolls back at once");
    assert!(fake.world().reasons().contains(&"RolledBack".to_string()));

    let report = pod.sync(&edited).await;
    assert_eq!(report.phase, Phase::Running, "{report:?}");
    assert!(
        report.message.contains("exited with code 1"),
        "{}",
        report.message
    );
    let record = pod.record();
    let instance = record.incarnation.containers["app"]
        .current
        .clone()
        .expect("an instance");
    assert!(
        instance.image.ends_with(&format!("app:1@{v1_digest}")),
        "{}",
        instance.image
    );
    assert!(record.rollout.probation.is_none() && record.rollout.refused.is_some());
    // Synced again with generation 2 still desired: nothing is tried.
    let before = fake.world().log.len();
    pod.sync(&edited).await;
    assert_eq!(fake.world().log.len(), before, "{:#?}", fake.world().log);
}

/// A newer version of a pod (here its deletion) cancels the sync in
/// flight by dropping it: one dropped after the pod's network was set up,
/// before anything was recorded, left the network (netns, veth, lease) and
/// the sandbox behind when the pod was then removed.
#[tokio::test(start_paused = true)]
async fn a_sync_cancelled_while_its_sandbox_is_made_leaves_nothing_once_the_pod_goes() {
    let fake = fake_with_image();
    fake.world().sandbox_create_stalls = true;
    let pod = Pod::new(&fake, "web");
    let state = desired(&[("web.yaml", &pod_yaml("web", &[("app", IMAGE)], ""))]);
    let cancelled = tokio::time::timeout(Duration::from_secs(5), pod.sync(&state)).await;
    assert!(
        cancelled.is_err(),
        "the sync stalls in the sandbox's creation"
    );
    assert_eq!(fake.world().networks.len(), 1, "the network was set up");
    fake.world().sandbox_create_stalls = false;
    pod.terminate().await;
    let world = fake.world();
    assert!(world.networks.is_empty(), "network left: {:#?}", world.log);
    assert!(world.sandboxes.is_empty(), "sandbox left: {:#?}", world.log);
    assert!(world.records.is_empty());
}
