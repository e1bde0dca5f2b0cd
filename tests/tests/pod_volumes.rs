//! downwardAPI, projected and configMap volumes through the real agent
//! with real runc AND crun, read from inside the container: the files'
//! contents, the kubelet's `..data` layout, and updates a running
//! container sees without a restart — while an observer reading in a
//! loop never meets a missing or partial file.

use std::time::Duration;

use berth_e2e::for_each_runtime;
use berth_e2e::pods::{PodWorld, running_pid};
use berth_e2e::wait_until;

for_each_runtime!(downward_api_projected_and_config_map_files_update_in_place);

/// The pod with labels `tier: TIER`; the observer writes to /data.
fn pod(world: &PodWorld, data: &str, tier: &str) -> String {
    let spec = format!(
        "{data}\
         \x20 - name: info\n    downwardAPI:\n      items:\n\
         \x20     - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}\n\
         \x20     - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}\n\
         \x20     - {{path: ns, fieldRef: {{fieldPath: metadata.namespace}}}}\n\
         \x20     - {{path: uid, fieldRef: {{fieldPath: metadata.uid}}}}\n\
         \x20     - {{path: tier, fieldRef: {{fieldPath: \"metadata.labels['tier']\"}}, mode: 256}}\n\
         \x20     - {{path: mem, resourceFieldRef: {{containerName: app, resource: requests.memory, divisor: 1Mi}}}}\n\
         \x20     - {{path: cpus, resourceFieldRef: {{containerName: app, resource: limits.cpu}}}}\n\
         \x20 - name: all\n    projected:\n      defaultMode: 288\n      sources:\n\
         \x20     - configMap: {{name: cfg, items: [{{key: a, path: conf/a.conf}}]}}\n\
         \x20     - secret: {{name: tls}}\n\
         \x20     - downwardAPI: {{items: [{{path: pod-name, fieldRef: {{fieldPath: metadata.name}}}}]}}\n\
         \x20 - name: conf\n    configMap:\n      name: cfg\n"
    );
    let mut containers = world.shell_container("app", OBSERVER);
    containers.push_str(
        "    resources:\n      requests:\n        memory: 32Mi\n\
         \x20   volumeMounts:\n    - {name: data, mountPath: /data}\n\
         \x20   - {name: info, mountPath: /info}\n\
         \x20   - {name: all, mountPath: /all}\n\
         \x20   - {name: conf, mountPath: /conf}\n",
    );
    world.pod_yaml("web", &spec, &containers).replacen(
        "metadata:\n  name: web\n",
        &format!("metadata:\n  name: web\n  labels:\n    app: web\n    tier: {tier}\n"),
        1,
    )
}

/// Copies what it sees at start to /data/start/, then reads the labels
/// and the configMap file in a loop: a read that fails or finds neither a
/// whole old nor a whole new version is appended to /data/bad; the first
/// sight of a new version is recorded (written by a rename). Reads are
/// counted so the test knows the loop ran through the updates.
const OBSERVER: &str = r#"
mkdir -p /data/start
for f in labels name ns uid tier mem cpus; do cat /info/$f > /data/start/$f; done
busybox stat -L -c '%a' /info/tier > /data/start/tier-mode
readlink /info/..data > /data/start/info-data
readlink /info/labels > /data/start/labels-link
cat /all/conf/a.conf > /data/start/all-a; cat /all/tls.key > /data/start/all-tls; cat /all/pod-name > /data/start/all-name
busybox stat -L -c '%a' /all/tls.key > /data/start/all-mode
cat /conf/a > /data/start/conf-a
readlink /conf/..data > /data/start/conf-data
echo done > /data/start/done
n=0
while :; do
  n=$((n+1))
  if ! v=$(cat /info/labels); then echo "missing labels" >> /data/bad; continue; fi
  case "$v" in
    'app="web"
tier="v1"') ;;
    'app="web"
tier="v2"') [ -e /data/v2 ] || { echo $n > /data/.v2; mv /data/.v2 /data/v2; } ;;
    *) echo "partial labels: $v" >> /data/bad ;;
  esac
  if ! c=$(cat /conf/a); then echo "missing conf" >> /data/bad; continue; fi
  case "$c" in
    one) ;;
    two) [ -e /data/conf2 ] || { readlink /conf/..data > /data/.conf2; cat /all/conf/a.conf >> /data/.conf2; mv /data/.conf2 /data/conf2; } ;;
    *) echo "partial conf: $c" >> /data/bad ;;
  esac
  [ $((n % 50)) = 0 ] && { echo $n > /data/.reads; mv /data/.reads /data/reads; }
done
"#;

fn config_map(value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: {value}\n")
}

fn reads(data: &berth_e2e::pods::DataDir) -> u64 {
    std::fs::read_to_string(data.path.join("reads"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the observer has read `more` times past now.
fn wait_reads(data: &berth_e2e::pods::DataDir, more: u64) {
    let target = reads(data) + more;
    wait_until(
        Duration::from_secs(60),
        "the observer to keep reading",
        || (reads(data) >= target).then_some(()),
    );
}

fn downward_api_projected_and_config_map_files_update_in_place(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let data = world.data_dir("data");
    world.write_manifest("cfg.yaml", &config_map("one"));
    world.write_manifest(
        "tls.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: tls\nstringData:\n  tls.key: k3y\n",
    );
    world.write_manifest("web.yaml", &pod(&world, &data.volume, "v1"));
    let first = world.wait_pod("web", "app running", |p| running_pid(p, "app").is_some());
    data.wait_file("start/done");

    let start = |f: &str| data.read(&format!("start/{f}")).trim().to_string();
    assert_eq!(
        start("labels"),
        "app=\"web\"\ntier=\"v1\"",
        "kubelet's FormatMap"
    );
    assert_eq!(start("name"), "web");
    assert_eq!(start("ns"), "default");
    let uid = start("uid");
    assert!(
        !uid.is_empty() && uid.chars().all(|c| c.is_ascii_hexdigit()),
        "the pod's uid: {uid}"
    );
    assert_eq!(start("tier"), "v1");
    assert_eq!(start("tier-mode"), "400", "the item's mode");
    assert_eq!(start("mem"), "32", "requests.memory in Mi");
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    assert_eq!(
        start("cpus"),
        cpus.to_string(),
        "no CPU limit: the node's CPUs"
    );
    assert!(
        start("info-data").starts_with("..20"),
        "{}",
        start("info-data")
    );
    assert_eq!(start("labels-link"), "..data/labels");
    assert_eq!(start("all-a"), "one");
    assert_eq!(start("all-tls"), "k3y");
    assert_eq!(start("all-name"), "web");
    assert_eq!(
        start("all-mode"),
        "440",
        "the projected volume's defaultMode"
    );
    assert_eq!(start("conf-a"), "one");
    wait_reads(&data, 100);

    // A label edit: the container sees the new file, and is not restarted.
    world.write_manifest("web.yaml", &pod(&world, &data.volume, "v2"));
    data.wait_file("v2");
    // A ConfigMap edit: swapped in through ..data in both volumes.
    world.write_manifest("cfg.yaml", &config_map("two"));
    let conf2 = data.wait_file("conf2");
    wait_reads(&data, 100);
    let bad = std::fs::read_to_string(data.path.join("bad")).unwrap_or_default();
    assert!(bad.is_empty(), "the observer saw torn updates:\n{bad}");
    let (link, all_a) = conf2.split_once('\n').expect("two lines");
    assert!(
        link.starts_with("..20") && link != start("conf-data"),
        "{conf2}"
    );
    assert_eq!(
        all_a.trim(),
        "two",
        "the projected copy follows the ConfigMap"
    );
    wait_reads(&data, 100);

    let now = world.pod("web").expect("status");
    assert_eq!(
        running_pid(&now, "app"),
        running_pid(&first, "app"),
        "updates reach the running container"
    );
}
