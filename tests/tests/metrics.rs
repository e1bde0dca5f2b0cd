//! Node observability through the real agent (runc, real cgroups, a real
//! bridge network): `/metrics` scraped while pods run, parsed by the
//! Prometheus project's own text parser (Debian's python3-prometheus-client)
//! and checked against what the kernel says (cgroup files, the pod's
//! `/proc/<pid>/net/dev`, `du` of the writable layer); `berth stats`
//! against a container that holds a known amount of memory; `berth info`
//! against uname, `runc --version` and statvfs.

mod cli_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_e2e::net::{NetWorld, free_port, http_get};
use berth_e2e::pods::{PodWorld, running_pid};
use berth_e2e::wait_until;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// One sample as the parser returns it.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// Parses exposition text with `prometheus_client.parser` (fails the test
/// on anything it rejects).
fn parse_prometheus(text: &str) -> Vec<Sample> {
    const SCRIPT: &str = "\
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({'name': s.name, 'labels': s.labels, 'value': s.value, 'type': family.type})
print(json.dumps(out))
";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3-prometheus-client)");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("writing to the parser");
    let out = child.wait_with_output().expect("the parser ends");
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    parsed
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().expect("name").to_owned(),
            labels: s["labels"].as_object().cloned().unwrap_or_default(),
            value: s["value"].as_f64().expect("value"),
        })
        .collect()
}

/// The value of the one sample `name` with (at least) `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k) == Some(&Value::from(*v)))
        })
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} is not one series: {found:?}"
    );
    found.first().map(|s| s.value)
}

fn must(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| {
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        panic!("no {name} {labels:?} in the scrape (has: {names:?})")
    })
}

/// `curl` of `url`, optionally through a unix socket: (status, content
/// type, body).
fn get(url: &str, unix_socket: Option<&Path>) -> (u16, String, String) {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{content_type}",
    ]);
    if let Some(socket) = unix_socket {
        command.arg("--unix-socket").arg(socket);
    }
    let out = command.arg(url).output().expect("running curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').expect("curl's trailer");
    let (code, content_type) = trailer.split_once(' ').expect("code and type");
    (
        code.parse().expect("a status code"),
        content_type.to_owned(),
        body.to_owned(),
    )
}

/// A cgroup file of `controller` among the container's cgroup dirs.
fn cgroup_file(dirs: &[PathBuf], controller: &str, file: &str) -> u64 {
    let dir = dirs
        .iter()
        .find(|d| {
            d.iter().any(|part| {
                part.to_str()
                    .is_some_and(|p| p.split(',').any(|c| c == controller))
            })
        })
        .unwrap_or_else(|| panic!("no {controller} hierarchy among {dirs:?}"));
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.join(file).display()));
    text.trim().parse().expect("a number")
}

fn memory_stat(dirs: &[PathBuf], key: &str) -> u64 {
    let dir = dirs
        .iter()
        .find(|d| d.join("memory.stat").is_file())
        .expect("a memory hierarchy");
    let text = std::fs::read_to_string(dir.join("memory.stat")).expect("memory.stat");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in memory.stat"))
}

/// The kernel's working set of a v1 memory cgroup, as cAdvisor counts it.
fn working_set(dirs: &[PathBuf]) -> u64 {
    cgroup_file(dirs, "memory", "memory.usage_in_bytes") - memory_stat(dirs, "total_inactive_file")
}

/// What `berth inspect` says about each container of `pod`.
fn inspect(dirs: &berth_e2e::TestDirs, pod: &str) -> Vec<Value> {
    let out = dirs.berth(&["inspect", pod]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    json["containers"].as_array().expect("containers").clone()
}

fn container_field<'a>(containers: &'a [Value], name: &str) -> &'a Value {
    containers
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn cgroup_dirs(container: &Value) -> Vec<PathBuf> {
    container["cgroupDirs"]
        .as_array()
        .expect("cgroup dirs")
        .iter()
        .map(|d| PathBuf::from(d.as_str().expect("a path")))
        .collect()
}

/// `eth0`'s receive and transmit bytes in the namespace of `pid`.
fn eth0(pid: i64) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).expect("net/dev");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("eth0:"))
        .expect("an eth0");
    let n: Vec<u64> = line
        .split_once(':')
        .expect("name:")
        .1
        .split_whitespace()
        .map(|v| v.parse().expect("a counter"))
        .collect();
    (n[0], n[8])
}

/// `du -s -B1 -x`: what the writable layer takes on disk.
fn du(dir: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1", "-x"])
        .arg(dir)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du's number")
}

fn content_bytes(root: &Path) -> u64 {
    std::fs::read_dir(root.join("content/sha256"))
        .expect("the content store")
        .flatten()
        .map(|e| e.metadata().expect("blob").len())
        .sum()
}

/// Waits until the container's writable layer has `file`.
fn wait_written(root: &Path, id: &str, file: &str) {
    let path = root.join("containers").join(id).join("upper").join(file);
    wait_until(
        Duration::from_secs(30),
        &format!("{}", path.display()),
        || path.exists().then_some(()),
    );
}

#[test]
fn metrics_agree_with_the_kernel_and_parse_as_prometheus_text() {
    let port = free_port();
    let mut net = NetWorld::bridge_with(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    net.world.start_agent();
    // hog: 40 MiB in the pod's /dev/shm (tmpfs pages are charged to it)
    // and 5 MB in its writable layer; web: an HTTP server for traffic.
    let mut containers = net.web_container("web", 80, "hello-metrics");
    containers.push_str(&net.world.shell_container(
        "hog",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null && \
         head -c 5000000 /dev/zero > /written && touch /ready && exec sleep 1000",
    ));
    containers.push_str("    resources:\n      limits:\n        memory: 256Mi\n");
    net.world
        .write_manifest("web.yaml", &net.pod_yaml("web", "", &containers));
    let (pod, ip) = net.wait_running_ip("web");
    let web_pid = running_pid(&pod, "web").expect("web runs");
    let found = inspect(&net.world.dirs, "web");
    let hog = container_field(&found, "hog");
    let hog_id = hog["containerId"].as_str().expect("an id").to_owned();
    let hog_cgroups = cgroup_dirs(hog);
    wait_written(&net.world.dirs.root, &hog_id, "ready");
    for _ in 0..3 {
        let body = http_get(std::net::SocketAddr::from((ip, 80))).expect("the web pod answers");
        assert_eq!(body, "hello-metrics\n");
    }

    let cpu_before = cgroup_file(&hog_cgroups, "cpuacct", "cpuacct.usage");
    let net_before = eth0(web_pid);
    let ws_before = working_set(&hog_cgroups);
    let (code, content_type, text) = get(&format!("http://127.0.0.1:{port}/metrics"), None);
    let cpu_after = cgroup_file(&hog_cgroups, "cpuacct", "cpuacct.usage");
    let net_after = eth0(web_pid);
    let ws_after = working_set(&hog_cgroups);
    assert_eq!(code, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse_prometheus(&text);
    let hog_labels = [
        ("namespace", "default"),
        ("pod", "web"),
        ("container", "hog"),
    ];
    let web_labels = [
        ("namespace", "default"),
        ("pod", "web"),
        ("container", "web"),
    ];

    // The agent's own figures.
    assert_eq!(must(&samples, "berth_build_info", &[]), 1.0);
    assert_eq!(must(&samples, "berth_pods", &[("phase", "Running")]), 1.0);
    assert_eq!(must(&samples, "berth_pods", &[("phase", "Failed")]), 0.0);
    assert_eq!(
        must(&samples, "berth_containers", &[("state", "running")]),
        2.0
    );
    assert_eq!(
        must(&samples, "berth_container_restarts_total", &hog_labels),
        0.0
    );
    assert!(
        must(
            &samples,
            "berth_reconciles_total",
            &[("kind", "Pod"), ("result", "success")]
        ) >= 1.0
    );
    assert!(
        must(
            &samples,
            "berth_reconcile_duration_seconds_count",
            &[("kind", "Pod")]
        ) >= 1.0
    );
    assert!(
        must(
            &samples,
            "berth_image_pulls_total",
            &[("result", "success")]
        ) >= 1.0
    );
    assert!(must(&samples, "berth_image_pull_bytes_total", &[]) > 0.0);
    assert!(must(&samples, "berth_image_pull_duration_seconds_count", &[]) >= 1.0);
    #[allow(clippy::cast_precision_loss)]
    let content = content_bytes(&net.world.dirs.root) as f64;
    assert_eq!(
        must(&samples, "berth_store_bytes", &[("kind", "content")]),
        content
    );
    assert!(must(&samples, "berth_store_bytes", &[("kind", "snapshots")]) > 0.0);

    // cAdvisor's figures, against the kernel's.
    #[allow(clippy::cast_precision_loss)]
    let (lo, hi) = (cpu_before as f64 / 1e9, cpu_after as f64 / 1e9);
    let cpu = must(&samples, "container_cpu_usage_seconds_total", &hog_labels);
    assert!(
        lo - 1e-9 <= cpu && cpu <= hi + 1e-9,
        "cpu {cpu} not in [{lo}, {hi}]"
    );
    assert!(must(&samples, "container_cpu_usage_seconds_total", &web_labels) > 0.0);
    let ws = must(&samples, "container_memory_working_set_bytes", &hog_labels);
    #[allow(clippy::cast_precision_loss)]
    let (ws_lo, ws_hi) = (
        ws_before.min(ws_after).saturating_sub(MIB) as f64,
        (ws_before.max(ws_after) + MIB) as f64,
    );
    assert!(
        ws_lo <= ws && ws <= ws_hi,
        "working set {ws} not in [{ws_lo}, {ws_hi}]"
    );
    #[allow(clippy::cast_precision_loss)]
    let at_least = (40 * MIB) as f64;
    assert!(ws >= at_least, "40 MiB held in /dev/shm: working set {ws}");
    let rss = must(&samples, "container_memory_rss", &hog_labels);
    #[allow(clippy::cast_precision_loss)]
    let kernel_rss = memory_stat(&hog_cgroups, "total_rss") as f64;
    assert!(
        (rss - kernel_rss).abs() <= 1.0 * MIB as f64,
        "rss {rss} vs {kernel_rss}"
    );
    #[allow(clippy::cast_precision_loss)]
    let limit = cgroup_file(&hog_cgroups, "memory", "memory.limit_in_bytes") as f64;
    assert_eq!(limit, 256.0 * MIB as f64);
    assert_eq!(
        must(&samples, "container_spec_memory_limit_bytes", &hog_labels),
        limit
    );
    assert_eq!(
        value(&samples, "container_spec_memory_limit_bytes", &web_labels),
        None,
        "no limit, no series"
    );
    #[allow(clippy::cast_precision_loss)]
    let pids = cgroup_file(&hog_cgroups, "pids", "pids.current") as f64;
    assert_eq!(must(&samples, "container_processes", &hog_labels), pids);
    let upper = net
        .world
        .dirs
        .root
        .join("containers")
        .join(&hog_id)
        .join("upper");
    #[allow(clippy::cast_precision_loss)]
    let layer = du(&upper) as f64;
    assert_eq!(
        must(&samples, "container_fs_usage_bytes", &hog_labels),
        layer
    );
    assert!(layer >= 5_000_000.0, "5 MB written: {layer}");

    let pod_labels = [
        ("namespace", "default"),
        ("pod", "web"),
        ("interface", "eth0"),
    ];
    let rx = must(
        &samples,
        "container_network_receive_bytes_total",
        &pod_labels,
    );
    let tx = must(
        &samples,
        "container_network_transmit_bytes_total",
        &pod_labels,
    );
    #[allow(clippy::cast_precision_loss)]
    {
        assert!(
            net_before.0 as f64 <= rx && rx <= net_after.0 as f64,
            "rx {rx} vs {net_before:?}..{net_after:?}"
        );
        assert!(
            net_before.1 as f64 <= tx && tx <= net_after.1 as f64,
            "tx {tx} vs {net_before:?}..{net_after:?}"
        );
    }
    assert!(
        rx > 0.0 && tx > 0.0,
        "three HTTP requests went through eth0"
    );
    assert_eq!(
        value(
            &samples,
            "container_network_receive_bytes_total",
            &[("interface", "lo")]
        ),
        None,
        "loopback is left out"
    );

    let (code, _, _) = get(&format!("http://127.0.0.1:{port}/nope"), None);
    assert_eq!(code, 404);
}

#[test]
fn stats_info_and_a_unix_socket_endpoint() {
    let socket_dir = tempfile::tempdir().expect("a socket dir");
    let socket = socket_dir.path().join("metrics.sock");
    let mut world = PodWorld::new("runc");
    let socket_arg = socket.to_str().expect("utf-8").to_owned();
    world.start_agent_with_args(&["--metrics-listen", &socket_arg]);
    // 48 MiB held in the pod's /dev/shm: the known amount stats must see.
    let hog = world.shell_container(
        "hog",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null && touch /ready && exec sleep 1000",
    );
    world.write_manifest("web.yaml", &world.pod_yaml("web", "", &hog));
    let pod = world.wait_pod("web", "hog running", |p| running_pid(p, "hog").is_some());
    let pid = running_pid(&pod, "hog").expect("hog runs");
    let found = inspect(&world.dirs, "web");
    let hog = container_field(&found, "hog");
    let id = hog["containerId"].as_str().expect("an id").to_owned();
    let cgroups = cgroup_dirs(hog);
    wait_written(&world.dirs.root, &id, "ready");

    // stats: the working set within 10% of the cgroup's, and the 48 MiB.
    let stats = world.dirs.berth_json(&["stats", "web", "--no-stream"]);
    let kernel = working_set(&cgroups);
    let rows = stats["containers"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{stats:#}");
    let row = &rows[0];
    assert_eq!(row["pod"], "web");
    assert_eq!(row["container"], "hog");
    assert_eq!(row["containerId"], id.as_str());
    let used = row["memoryWorkingSetBytes"].as_u64().expect("memory");
    let diff = used.abs_diff(kernel);
    assert!(
        diff * 10 <= kernel,
        "stats says {used}, the cgroup {kernel}"
    );
    assert!(used >= 48 * MIB, "48 MiB held: {used}");
    assert_eq!(row["memoryLimitBytes"], Value::Null, "no limit");
    assert_eq!(row["pids"], cgroup_file(&cgroups, "pids", "pids.current"));
    assert!(
        row["cpuPercent"].as_f64().is_some_and(|p| p >= 0.0),
        "{row}"
    );
    assert_eq!(
        row["netRxBytes"],
        Value::Null,
        "hostNetwork: no pod network"
    );
    assert!(row["diskBytes"].as_u64().is_some(), "{row}");
    assert_eq!(stats["agentRunning"], true);

    let out = world.dirs.berth(&["stats", "--no-stream"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    for column in [
        "POD",
        "CONTAINER",
        "CPU %",
        "MEM USAGE / LIMIT",
        "NET RX / TX",
        "DISK",
        "PIDS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        lines.any(|l| l.starts_with("web ") && l.contains("hog")),
        "{table}"
    );
    // Streaming: one JSON document per line and refresh.
    let follower = cli_common::Follower::start(&world.dirs, &["stats", "web/hog", "-o", "json"]);
    let readings: Vec<Value> = (0..2)
        .map(|_| serde_json::from_str(&follower.next_line("a stats line")).expect("a JSON line"))
        .collect();
    drop(follower);
    let cpu = |r: &Value| {
        r["containers"][0]["cpuUsageSeconds"]
            .as_f64()
            .expect("cpu seconds")
    };
    assert!(cpu(&readings[1]) >= cpu(&readings[0]), "{readings:?}");
    assert_eq!(readings[1]["containers"][0]["container"], "hog");

    let out = world.dirs.berth(&["stats", "web/nope", "--no-stream"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no container \"nope\""));

    // The endpoint on a unix socket, owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket)
        .expect("the socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, _, text) = get("http://localhost/metrics", Some(&socket));
    assert_eq!(code, 200);
    let samples = parse_prometheus(&text);
    let labels = [
        ("namespace", "default"),
        ("pod", "web"),
        ("container", "hog"),
    ];
    assert!(must(&samples, "container_memory_working_set_bytes", &labels) >= (48 * MIB) as f64);
    assert!(
        !samples
            .iter()
            .any(|s| s.name.starts_with("container_network_")),
        "a hostNetwork pod has no network series of its own"
    );

    // info, against the host.
    let config = world.config.to_str().expect("utf-8").to_owned();
    let info = world.dirs.berth_json(&["info", "--config", &config]);
    let uname = |flag: &str| {
        let out = Command::new("uname").arg(flag).output().expect("uname");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(info["kernel"]["release"], uname("-r"));
    assert_eq!(info["kernel"]["version"], uname("-v"));
    assert_eq!(info["kernel"]["machine"], uname("-m"));
    let runc_version = Command::new("runc")
        .arg("--version")
        .output()
        .expect("runc");
    let runc_first = String::from_utf8_lossy(&runc_version.stdout)
        .lines()
        .next()
        .expect("a version line")
        .to_owned();
    let handlers = info["runtimes"]["handlers"].as_array().expect("handlers");
    let runc = handlers
        .iter()
        .find(|h| h["name"] == "runc")
        .expect("runc listed");
    assert_eq!(runc["version"], runc_first.as_str());
    assert!(runc["problem"].is_null(), "{runc}");
    let which = Command::new("sh")
        .args(["-c", "command -v runc"])
        .output()
        .expect("sh");
    let runc_path =
        std::fs::canonicalize(String::from_utf8_lossy(&which.stdout).trim()).expect("runc path");
    let listed =
        std::fs::canonicalize(runc["binary"].as_str().expect("a path")).expect("listed path");
    assert_eq!(listed, runc_path);
    let default = &info["runtimes"]["default"];
    assert!(
        default["name"].is_string() && default["reason"].is_string(),
        "{default}"
    );
    let mode = info["cgroups"]["mode"].as_str().expect("a mode");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let expected_mode = if mounts
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "))
    {
        "v2"
    } else if mounts.lines().any(|l| l.contains(" - cgroup2 ")) {
        "hybrid"
    } else {
        "v1"
    };
    assert_eq!(mode, expected_mode);
    let parent = info["cgroups"]["parent"].as_str().expect("a parent");
    assert_eq!(parent, world.cgroup_parent);
    assert_eq!(info["network"]["driver"], "none", "the world's config");

    let root = &world.dirs.root;
    let statvfs = rustix::fs::statvfs(root).expect("statvfs");
    let fs = &info["store"]["filesystem"];
    assert_eq!(fs["sizeBytes"], statvfs.f_blocks * statvfs.f_frsize);
    let free = fs["availableBytes"].as_u64().expect("available");
    let now_free = statvfs.f_bavail * statvfs.f_frsize;
    assert!(
        free.abs_diff(now_free) <= now_free / 100 + 64 * MIB,
        "{free} vs {now_free}"
    );
    assert_eq!(info["store"]["root"], root.to_str().expect("utf-8"));
    assert_eq!(info["store"]["images"], 1);
    assert_eq!(info["store"]["contentBytes"], content_bytes(root));
    assert_eq!(info["workloads"]["pods"], 1);
    assert_eq!(info["workloads"]["runningContainers"], 1);
    assert_eq!(info["agent"]["running"], true);
    assert_eq!(info["agent"]["state"], "Ready");
    assert_eq!(info["agent"]["pid"], world.agent().pid());
    let text = world.dirs.berth(&["info", "--config", &config]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!("Kernel:           {}", uname("-r"))),
        "{text}"
    );
    assert!(text.contains(&runc_first), "{text}");
    let _ = pid;

    // A clean stop takes the socket file with it.
    let status = world.take_agent().stop();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "{} left behind", socket.display());
    // The world's cleanup needs an agent to delete the pods.
    world.start_agent();
}

#[test]
fn a_metrics_address_in_use_costs_the_metrics_not_the_agent() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let mut world = PodWorld::new("runc");
    world.start_agent_with_args(&["--metrics-listen", &addr]);
    let events = world.dirs.berth_json(&["events"]);
    let text = events.to_string();
    assert!(
        text.contains("MetricsUnavailable") && text.contains(&addr),
        "no MetricsUnavailable event naming {addr}: {events:#}"
    );
    // Pods still run.
    let app = world.shell_container("app", "exec sleep 1000");
    world.write_manifest("app.yaml", &world.pod_yaml("app", "", &app));
    world.wait_pod("app", "running", |p| running_pid(p, "app").is_some());
}
