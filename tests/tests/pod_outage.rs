//! Back after an outage. Twenty pods of one `:latest` image on the bridge
//! network; a power cut (agent, containers, run root, mounts, bridge and
//! nftables table gone) and a new agent: every pod runs again, with its
//! address, once with its registry answering and once with the registry out
//! of reach (the stored image is used, `PulledFromLocalStore`); when the
//! registry answers again, a tag that moved meanwhile replaces the
//! containers. And ten new pods of one image share one pull, none backing
//! off. Real agent, runc, bridge, a real registry behind a recording proxy.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use berth_e2e::images::{Entry, busybox_image_with};
use berth_e2e::net::{NetWorld, pod_ip, running_with_ip};
use berth_e2e::pods::{POD_WAIT, PodWorld, running_pid};
use berth_e2e::proxy::Proxy;
use berth_e2e::{poll_until, pull};

const PODS: usize = 20;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i:02}")).collect()
}

/// Points the manifest directory's config for the registry at `server`
/// (a Registry override wins over `[images] hosts-dir` at once), or
/// removes the override (`None`).
fn registry_override(world: &PodWorld, server: Option<&str>) {
    let dir = world
        .dirs
        .manifests
        .join("certs.d")
        .join(world.registry.host());
    match server {
        Some(server) => {
            std::fs::create_dir_all(&dir).expect("certs.d dir");
            berth_e2e::write_atomically(
                &dir.join("hosts.toml"),
                &format!("server = \"{server}\"\n"),
            );
        }
        None => std::fs::remove_dir_all(&dir).expect("removing the override"),
    }
}

/// Every pod's status messages, seen while waiting for all to run.
fn wait_all_running(net: &NetWorld, names: &[String]) -> (Duration, Vec<String>) {
    let began = Instant::now();
    let mut messages = Vec::new();
    let all = poll_until(POD_WAIT, || {
        let pods: Vec<_> = names.iter().filter_map(|n| net.world.pod(n)).collect();
        for pod in &pods {
            if let Some(m) = pod["message"].as_str()
                && !messages.iter().any(|seen: &String| seen == m)
            {
                messages.push(m.to_string());
            }
        }
        (pods.len() == names.len() && pods.iter().all(running_with_ip)).then_some(())
    });
    assert!(
        all.is_some(),
        "not every pod ran again; messages: {messages:#?}"
    );
    (began.elapsed(), messages)
}

fn addresses(net: &NetWorld, names: &[String]) -> BTreeMap<String, Ipv4Addr> {
    names
        .iter()
        .map(|n| {
            let pod = net.world.pod(n).expect("a status");
            (n.clone(), pod_ip(&pod).expect("an address"))
        })
        .collect()
}

fn events_named(net: &NetWorld, names: &[String], reason: &str) -> usize {
    names
        .iter()
        .map(|n| {
            net.world
                .events(n)
                .iter()
                .filter(|e| e["reason"] == reason)
                .count()
        })
        .sum()
}

#[test]
fn twenty_pods_come_back_after_a_power_cut_with_the_registry_up_and_then_down() {
    let mut net = NetWorld::bridge();
    let proxy = Proxy::start(&net.world.registry.host());
    pull::use_server(&net.world.dirs, &net.world.registry.host(), &proxy.url());
    net.world.start_agent();
    let names = names(PODS);
    for name in &names {
        let yaml = net.pod_yaml(
            name,
            "",
            &net.world.shell_container("app", "exec sleep 100000"),
        );
        net.world.write_manifest(&format!("{name}.yaml"), &yaml);
    }
    wait_all_running(&net, &names);
    let before = addresses(&net, &names);
    let digest = |net: &NetWorld, name: &str| {
        net.world.pod(name).expect("status")["details"]["pod"]["containers"][0]["imageDigest"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let first_digest = digest(&net, &names[0]);

    // 1. Power cut, registry up.
    net.power_cut();
    let manifests_before = proxy.requests_for("/manifests/").len();
    net.world.start_agent();
    let (took, messages) = wait_all_running(&net, &names);
    eprintln!("{PODS} pods running again {took:?} after the agent started (registry up)");
    assert_eq!(addresses(&net, &names), before, "the same addresses");
    assert!(
        messages.iter().all(|m| !m.contains("BackOff")),
        "no pod backed off: {messages:#?}"
    );
    let resolves = proxy.requests_for("/manifests/").len() - manifests_before;
    assert!(
        (1..=2).contains(&resolves),
        "the tag is resolved once for all {PODS} pods, not {resolves} times"
    );

    // 2. Power cut, registry out of reach (nothing listens where it was).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    registry_override(&net.world, Some(&dead));
    net.power_cut();
    net.world.start_agent();
    let (took, messages) = wait_all_running(&net, &names);
    eprintln!("{PODS} pods running again {took:?} after the agent started (registry down)");
    assert_eq!(addresses(&net, &names), before, "the same addresses");
    assert!(
        messages.iter().all(|m| !m.contains("BackOff")),
        "{messages:#?}"
    );
    let offline: Vec<_> = names
        .iter()
        .flat_map(|n| net.world.events(n))
        .filter(|e| e["reason"] == "PulledFromLocalStore")
        .collect();
    assert!(!offline.is_empty(), "the stored image is used, and said so");
    assert!(
        offline.iter().all(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&first_digest) && m.contains("no host"))),
        "each names the digest and why: {offline:#?}"
    );

    // 3. The registry answers again, and the tag moved meanwhile: the
    // re-check replaces the containers, as an edit would.
    let newer = busybox_image_with(
        &net.world.registry,
        "berth/busybox",
        vec![Entry::file("etc/newer", "yes\n")],
    );
    assert_ne!(newer.digest, first_digest);
    registry_override(&net.world, None);
    let replaced = poll_until(Duration::from_secs(90), || {
        names
            .iter()
            .all(|n| {
                digest(&net, n) == newer.digest
                    && net
                        .world
                        .pod(n)
                        .is_some_and(|p| running_pid(&p, "app").is_some())
            })
            .then_some(())
    });
    assert!(
        replaced.is_some(),
        "every pod runs the moved tag's image: {:#?}",
        names.iter().map(|n| digest(&net, n)).collect::<Vec<_>>()
    );
    assert!(events_named(&net, &names, "ImageChanged") >= PODS);
}

#[test]
fn ten_pods_of_one_image_being_pulled_share_one_pull_and_none_backs_off() {
    let mut world = PodWorld::new("runc");
    let proxy = Proxy::start(&world.registry.host());
    pull::use_server(&world.dirs, &world.registry.host(), &proxy.url());
    world.start_agent();
    let names = names(10);
    // All at once: one rename of a directory holding the ten files.
    let stage = world.dirs.temp.path().join("stage");
    std::fs::create_dir_all(stage.join("pods")).expect("stage");
    for name in &names {
        let yaml = world.pod_yaml(name, "", &world.shell_container("app", "exec sleep 100000"));
        std::fs::write(stage.join("pods").join(format!("{name}.yaml")), yaml).expect("write");
    }
    // The layers stay in flight until every pod waits for them: each pod
    // that needs the image while it is being pulled takes that pull's
    // outcome, however slowly the pods get there.
    proxy.hold("/blobs/");
    std::fs::rename(stage.join("pods"), world.dirs.manifests.join("pods")).expect("one change");
    let mut messages = Vec::new();
    let waiting = poll_until(POD_WAIT, || {
        let pods: Vec<_> = names.iter().filter_map(|n| world.pod(n)).collect();
        record_messages(&pods, &mut messages);
        (pods.len() == names.len()
            && pods.iter().all(|p| {
                p["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("pulling image"))
            }))
        .then_some(())
    });
    proxy.release();
    assert!(
        waiting.is_some(),
        "every pod waits for the pull: {messages:#?}"
    );
    let all = poll_until(POD_WAIT, || {
        let pods: Vec<_> = names.iter().filter_map(|n| world.pod(n)).collect();
        record_messages(&pods, &mut messages);
        (pods.len() == names.len() && pods.iter().all(|p| running_pid(p, "app").is_some()))
            .then_some(())
    });
    assert!(all.is_some(), "{messages:#?}");
    assert!(
        messages.iter().all(|m| !m.contains("BackOff")),
        "no pod backed off: {messages:#?}"
    );
    let manifests = proxy.requests_for("/manifests/").len();
    let events: Vec<_> = names.iter().flat_map(|n| world.events(n)).collect();
    assert_eq!(
        manifests,
        1,
        "one pull of the tag: {:#?}\nmessages: {messages:#?}\nevents: {events:#?}",
        proxy.requests()
    );
    for blob in world.image.manifests[0].layers.iter() {
        let fetched = proxy.requests_for(&blob.digest).len();
        assert_eq!(fetched, 1, "blob {} fetched {fetched} times", blob.digest);
    }
    std::fs::remove_dir_all(world.dirs.manifests.join("pods")).expect("removing the pods");
    for name in &names {
        world.wait_pod_gone(name);
    }
}

/// Keeps each distinct pod message seen, in order.
fn record_messages(pods: &[serde_json::Value], messages: &mut Vec<String>) {
    for pod in pods {
        if let Some(m) = pod["message"].as_str()
            && !messages.iter().any(|seen| seen == m)
        {
            messages.push(m.to_string());
        }
    }
}
