//! The rollout decisions as tables, in the planner's style: each row a pod
//! as recorded and observed, and what must be decided.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::pod::host::KillRequest;
use crate::pod::state::{ContainerSlot, Instance};
use crate::runtime::ExitStatus;

const NOW: u64 = 1_000_000;

fn pod(image: &str) -> api::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": image}]}
    }))
    .expect("a pod")
}

fn instance(hash: &str, digest: &str) -> Instance {
    serde_json::from_value(serde_json::json!({
        "id": format!("u1-web-{hash}"),
        "instance": 0,
        "specHash": hash,
        "image": "r/web:1",
        "imageDigest": digest,
        "created": true,
    }))
    .expect("an instance")
}

/// An incarnation whose container `web` runs `hash` from `digest` (or has
/// no instance when `hash` is empty).
fn incarnation(hash: &str, digest: &str) -> Incarnation {
    let mut incarnation = Incarnation::new(&api::PodSpec::default(), "pod1", "t".into());
    incarnation.containers.insert(
        "web".into(),
        ContainerSlot {
            current: (!hash.is_empty()).then(|| instance(hash, digest)),
            ..Default::default()
        },
    );
    incarnation
}

fn wanted(hash: &str) -> Vec<Wanted> {
    vec![Wanted {
        name: "web".into(),
        init: false,
        hash: hash.into(),
    }]
}

fn view(observed: Observed, ready: bool) -> BTreeMap<String, ContainerView> {
    BTreeMap::from([(
        "web".to_string(),
        ContainerView {
            observed,
            ready,
            kill: None,
            superseded: false,
        },
    )])
}

fn exit(code: i32) -> ExitStatus {
    serde_json::from_value(serde_json::json!({
        "exit_code": code,
        "oom_killed": false,
        "finished_at": "f",
        "finished_at_ns": NOW * 1_000_000,
    }))
    .expect("an exit")
}

fn candidate(until_ms: Option<u64>) -> Probation {
    Probation {
        generation: 2,
        content: "c2".into(),
        duration_ms: 10_000,
        containers: Some(vec!["web".into()]),
        digests: BTreeMap::new(),
        until_ms,
        auto_update: false,
    }
}

fn stable(content: &str) -> Version {
    Version {
        generation: 1,
        content: content.into(),
        pod: serde_json::to_value(pod("r/web:1")).expect("json"),
        digests: BTreeMap::new(),
    }
}

type Case = (&'static str, Box<dyn Fn()>);

/// Judges `probation` of a pod that wants `web` at spec `h2`, at [`NOW`].
fn verdict(
    probation: &Probation,
    incarnation: &Incarnation,
    views: &BTreeMap<String, ContainerView>,
) -> Verdict {
    judge(probation, incarnation, views, &wanted("h2"), NOW)
}

fn judge_cases() -> Vec<Case> {
    let secs = |s: u64| s * 1_000;
    vec![
        (
            "the old instance still runs: switching",
            Box::new(|| {
                let v = verdict(
                    &candidate(None),
                    &incarnation("h1", "d1"),
                    &view(Observed::Running, true),
                );
                assert_eq!(v, Verdict::Switching);
            }),
        ),
        (
            "the new instance runs: the clock starts",
            Box::new(move || {
                let v = verdict(
                    &candidate(None),
                    &incarnation("h2", "d2"),
                    &view(Observed::Running, false),
                );
                assert_eq!(
                    v,
                    Verdict::Start {
                        until_ms: NOW + secs(10)
                    }
                );
            }),
        ),
        (
            "inside the probation: watching",
            Box::new(move || {
                let v = verdict(
                    &candidate(Some(NOW + 1)),
                    &incarnation("h2", "d2"),
                    &view(Observed::Running, false),
                );
                assert_eq!(v, Verdict::Watching { until_ms: NOW + 1 });
            }),
        ),
        (
            "running and ready at the end: passed",
            Box::new(|| {
                let v = verdict(
                    &candidate(Some(NOW)),
                    &incarnation("h2", "d2"),
                    &view(Observed::Running, true),
                );
                assert_eq!(v, Verdict::Passed);
            }),
        ),
        (
            "not ready at the end: failed, naming the container and the time",
            Box::new(|| {
                let v = verdict(
                    &candidate(Some(NOW)),
                    &incarnation("h2", "d2"),
                    &view(Observed::Running, false),
                );
                assert_eq!(
                    v,
                    Verdict::Failed("container web was not ready after 10s".into())
                );
            }),
        ),
        (
            "an exit during probation fails it at once",
            Box::new(|| {
                let v = verdict(
                    &candidate(Some(NOW + 5)),
                    &incarnation("h2", "d2"),
                    &view(Observed::Exited(exit(3)), false),
                );
                let Verdict::Failed(why) = v else {
                    panic!("{v:?}")
                };
                assert!(why.contains("exited with code 3"), "{why}");
            }),
        ),
        (
            "an exit before the clock started fails it too",
            Box::new(|| {
                let mut inc = incarnation("h2", "d2");
                inc.containers
                    .get_mut("web")
                    .and_then(|s| s.current.as_mut())
                    .expect("instance")
                    .exit = Some(exit(1));
                let v = verdict(
                    &candidate(None),
                    &inc,
                    &view(Observed::Exited(exit(1)), false),
                );
                assert!(matches!(v, Verdict::Failed(_)), "{v:?}");
            }),
        ),
        (
            "a failed startup probe fails it",
            Box::new(|| {
                let mut views = view(Observed::Running, false);
                views.get_mut("web").expect("view").kill = Some(KillRequest {
                    why: "it failed its startup probe".into(),
                    grace: None,
                });
                let v = verdict(&candidate(Some(NOW + 5)), &incarnation("h2", "d2"), &views);
                assert_eq!(
                    v,
                    Verdict::Failed("container web: it failed its startup probe".into())
                );
            }),
        ),
        (
            "a new instance that could not be made fails it",
            Box::new(|| {
                let mut inc = incarnation("", "");
                let slot = inc.containers.get_mut("web").expect("slot");
                slot.failures = 1;
                slot.waiting = Some(("CreateContainerError".into(), "no such file".into()));
                let v = verdict(&candidate(None), &inc, &BTreeMap::new());
                let Verdict::Failed(why) = v else {
                    panic!("{v:?}")
                };
                assert!(
                    why.contains("could not start: CreateContainerError"),
                    "{why}"
                );
            }),
        ),
        (
            "no instance and no failure yet: still switching",
            Box::new(|| {
                let v = verdict(&candidate(None), &incarnation("", ""), &BTreeMap::new());
                assert_eq!(v, Verdict::Switching);
            }),
        ),
        (
            "an auto-update switches only on the new digest",
            Box::new(move || {
                let mut p = candidate(None);
                p.digests.insert("web".into(), "d9".into());
                let old = verdict(&p, &incarnation("h2", "d2"), &view(Observed::Running, true));
                assert_eq!(old, Verdict::Switching);
                let new = verdict(&p, &incarnation("h2", "d9"), &view(Observed::Running, true));
                assert_eq!(
                    new,
                    Verdict::Start {
                        until_ms: NOW + secs(10)
                    }
                );
            }),
        ),
        (
            "nothing replaced: passed at once",
            Box::new(|| {
                let mut p = candidate(None);
                p.containers = Some(vec![]);
                let v = judge(
                    &p,
                    &incarnation("h1", "d1"),
                    &BTreeMap::new(),
                    &wanted("h1"),
                    NOW,
                );
                assert_eq!(v, Verdict::Passed);
            }),
        ),
        (
            "containers not worked out yet: switching",
            Box::new(|| {
                let mut p = candidate(None);
                p.containers = None;
                let v = verdict(&p, &incarnation("h2", "d2"), &view(Observed::Running, true));
                assert_eq!(v, Verdict::Switching);
            }),
        ),
    ]
}

fn desired<'a>(generation: u64, content: &'a str, pod: &'a api::Pod) -> Desired<'a> {
    Desired {
        generation,
        content,
        pod,
    }
}

/// A pod whose stable version is generation 1 (`c1`), nothing else.
fn on_stable() -> Rollout {
    Rollout {
        stable: Some(stable("c1")),
        ..Default::default()
    }
}

fn prepare_cases() -> Vec<Case> {
    let ten = Duration::from_secs(10);
    vec![
        (
            "a new pod becomes the stable version, nothing on probation",
            Box::new(move || {
                let p = pod("r/web:1");
                let mut r = Rollout::default();
                let d = desired(1, "c1", &p);
                assert_eq!(prepare(&mut r, &d, ten, None), (Choice::Desired, true));
                assert_eq!(r.stable.as_ref().map(|s| s.generation), Some(1));
                assert!(r.probation.is_none());
            }),
        ),
        (
            "an edit with a probation begins one, pinning what runs",
            Box::new(move || {
                let p = pod("r/web:2");
                let mut r = on_stable();
                let d = desired(2, "c2", &p);
                let inc = incarnation("h1", "d1");
                assert_eq!(
                    prepare(&mut r, &d, ten, Some(&inc)),
                    (Choice::Desired, true)
                );
                let probation = r.probation.as_ref().expect("on probation");
                assert_eq!((probation.generation, probation.duration_ms), (2, 10_000));
                let stable = r.stable.as_ref().expect("stable");
                assert_eq!(stable.generation, 1);
                assert_eq!(stable.digests.get("web").map(String::as_str), Some("d1"));
                assert_eq!(
                    prepare(&mut r, &d, ten, Some(&inc)),
                    (Choice::Desired, false),
                    "idempotent"
                );
            }),
        ),
        (
            "an edit without a probation becomes stable at once",
            Box::new(|| {
                let p = pod("r/web:2");
                let mut r = on_stable();
                let d = desired(2, "c2", &p);
                prepare(&mut r, &d, Duration::ZERO, None);
                assert_eq!(r.stable.as_ref().map(|s| s.generation), Some(2));
                assert!(r.probation.is_none());
            }),
        ),
        (
            "a refused version runs the stable one until the manifest changes",
            Box::new(move || {
                let p = pod("r/web:2");
                let mut r = Rollout {
                    stable: Some(stable("c1")),
                    refused: Some(refuse(&candidate(None), "crashed".into(), "t".into())),
                    ..Default::default()
                };
                let d = desired(2, "c2", &p);
                assert_eq!(prepare(&mut r, &d, ten, None).0, Choice::Stable);
                let p3 = pod("r/web:3");
                let d3 = desired(3, "c3", &p3);
                assert_eq!(prepare(&mut r, &d3, ten, None).0, Choice::Desired);
                assert!(r.refused.is_none());
                assert_eq!(r.probation.as_ref().map(|p| p.generation), Some(3));
                assert_eq!(
                    r.stable.as_ref().map(|s| s.generation),
                    Some(1),
                    "still the target"
                );
            }),
        ),
        (
            "an edit back to the stable version ends the probation",
            Box::new(move || {
                let p = pod("r/web:1");
                let mut r = Rollout {
                    stable: Some(stable("c1")),
                    probation: Some(candidate(Some(NOW))),
                    ..Default::default()
                };
                let d = desired(3, "c1", &p);
                assert_eq!(prepare(&mut r, &d, ten, None).0, Choice::Desired);
                assert!(r.probation.is_none());
            }),
        ),
        (
            "an edit during a probation keeps the old rollback target",
            Box::new(move || {
                let p = pod("r/web:3");
                let mut s = stable("c1");
                s.digests.insert("web".into(), "d1".into());
                let mut r = Rollout {
                    stable: Some(s),
                    probation: Some(candidate(Some(NOW))),
                    ..Default::default()
                };
                let d = desired(3, "c3", &p);
                let candidate_runs = incarnation("h2", "d2");
                prepare(&mut r, &d, ten, Some(&candidate_runs));
                assert_eq!(r.probation.as_ref().map(|p| p.generation), Some(3));
                let digests = &r.stable.as_ref().expect("stable").digests;
                assert_eq!(digests.get("web").map(String::as_str), Some("d1"));
            }),
        ),
        (
            "an auto-update of the stable version stays on probation",
            Box::new(move || {
                let p = pod("r/web:1");
                let mut r = on_stable();
                let inc = incarnation("h1", "d1");
                assert!(begin_auto_update(&mut r, &inc, "web", "d9", ten));
                let d = desired(1, "c1", &p);
                assert_eq!(prepare(&mut r, &d, ten, Some(&inc)).0, Choice::Desired);
                let probation = r.probation.as_ref().expect("kept");
                assert!(probation.auto_update);
                assert_eq!(probation.digests.get("web").map(String::as_str), Some("d9"));
                assert_eq!(
                    r.stable
                        .as_ref()
                        .and_then(|s| s.digests.get("web"))
                        .map(String::as_str),
                    Some("d1")
                );
            }),
        ),
    ]
}

fn run(cases: Vec<Case>) {
    let mut failed = Vec::new();
    for (name, case) in cases {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)).is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
}

#[test]
fn the_probation_table() {
    run(judge_cases());
}

#[test]
fn the_versions_table() {
    run(prepare_cases());
}

#[test]
fn the_stable_version_runs_pinned_to_its_digests() {
    let mut s = stable("c1");
    let digest = format!("sha256:{}", "a".repeat(64));
    s.digests.insert("web".into(), digest.clone());
    let pod = pinned(&s).expect("reads back");
    let container = &pod.spec.containers[0];
    assert!(
        container.image.ends_with(&format!("r/web:1@{digest}")),
        "{}",
        container.image
    );
    assert_eq!(
        container.image_pull_policy,
        Some(ImagePullPolicy::IfNotPresent)
    );
}

#[test]
fn a_pod_level_change_replaces_every_app_container() {
    let inc = incarnation("h1", "d1");
    assert_eq!(
        replaced(&inc, "pod1", &wanted("h1"), &BTreeMap::new()),
        Vec::<String>::new()
    );
    assert_eq!(
        replaced(&inc, "pod1", &wanted("h2"), &BTreeMap::new()),
        ["web"]
    );
    assert_eq!(
        replaced(&inc, "pod2", &wanted("h1"), &BTreeMap::new()),
        ["web"]
    );
}

#[test]
fn the_rolled_back_message_names_both_generations() {
    let r = Rollout {
        stable: Some(stable("c1")),
        refused: Some(refuse(
            &candidate(None),
            "container web exited with code 1".into(),
            "t".into(),
        )),
        ..Default::default()
    };
    assert_eq!(
        rolled_back_message(&r).as_deref(),
        Some("rolled back from generation 2: container web exited with code 1; runs generation 1")
    );
    let d = details(&r).expect("details");
    assert_eq!((d.running_generation, d.refused_generation), (1, Some(2)));
}

#[test]
fn auto_update_checks_spread_around_the_interval() {
    let hour = Duration::from_secs(3600);
    for _ in 0..100 {
        let at = next_check_ms(0, hour);
        assert!((2_880_000..=4_320_000).contains(&at), "{at}");
    }
}
