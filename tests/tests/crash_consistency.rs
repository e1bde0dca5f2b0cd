//! Crash consistency: berth is killed at each point where it makes state
//! durable or publishes it (`BERTH_TEST_CRASH_AT=N`, see
//! `berth::fsutil::crash`), and the state the crash left, and then the
//! state the next agent start recovers to, must keep every invariant of
//! `berth_e2e::crash`: no blob that does not match its digest, no record
//! pointing at a missing blob or snapshot, no pod record that does not
//! parse, no IP lease lost or leaked, no leftovers once recovery and GC ran,
//! every desired pod running again, and a pull of the image working.
//!
//! Two scenarios, each first run with `BERTH_TEST_CRASH_POINTS=1` to learn
//! how many points it passes (K), then once per point tried:
//! - the agent on a bridge network: pulls of multi-layer images, pods
//!   created, edited (container-level: a new image; pod-level: a new
//!   volume) and deleted, then a clean stop; recovered by a restart
//!   (containers kept running, as after kill -9) or, on every other
//!   point, by an emulated power cut (containers, run root, mounts,
//!   bridge and firewall table gone);
//! - the CLI on the store: `berth pull`, `berth import`, a second pull,
//!   `berth rmi`, `berth prune`; recovered by the next agent start.
//!
//! `BERTH_CHAOS=full` (`make chaos`) tries every point; otherwise a few
//! spread over the scenario (a normal test of the suite). What this proves
//! and what it does not (unsynced data a real power cut loses is not
//! dropped here): README, "Crash consistency".

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_e2e::crash::{
    CRASH_AT_ENV, CRASH_MATCH_ENV, CRASH_POINTS_ENV, CrashPoint, Findings, RunResult, Table,
    crash_points, durable_invariants, points_to_try, recovered_invariants,
};
use berth_e2e::images::{
    Entry, ImageSpec, OciLayout, PushFormat, PushedImage, busybox_entries, push_image,
};
use berth_e2e::net::{NetWorld, free_port, pod_uid, running_with_ip};
use berth_e2e::pods::{POD_WAIT, PodWorld, running_pid};
use berth_e2e::registry::{Registry, RegistryOptions};
use berth_e2e::{
    TestDirs, agent::AgentProcess, poll_until, pull, require_root, shim_bin, wait_until,
};

/// Points tried per scenario in the short version.
const SHORT_POINTS: u64 = 6;
/// How long recovery and a garbage collection may take to clear leftovers.
const RECOVERY: Duration = Duration::from_secs(30);
/// The crash runs collect no garbage (its timing would move the points);
/// the recovering agent collects every second and keeps nothing stale.
const NO_GC: &str = "[store]\ngc-interval = \"0s\"\n";
const QUICK_GC: &str = "[store]\ngc-interval = \"1s\"\nleftover-age = \"1s\"\n";

fn full_sweep() -> bool {
    std::env::var("BERTH_CHAOS").is_ok_and(|value| value == "full")
}

/// The points to try of `total`: `BERTH_CHAOS_POINTS=3,17` (to run a
/// failed point again), every one in a full sweep, else a spread few.
fn sweep(total: u64) -> Vec<u64> {
    match std::env::var("BERTH_CHAOS_POINTS") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("BERTH_CHAOS_POINTS: numbers"))
            .collect(),
        Err(_) => points_to_try(total, full_sweep(), SHORT_POINTS),
    }
}

/// The images of both scenarios, in one registry shared by every run.
struct Images {
    registry: Registry,
    /// Three layers: busybox, a data layer, a config layer.
    first: PushedImage,
    /// Shares the first two layers, has its own top layer.
    second: PushedImage,
    /// An OCI archive of a third image, for `berth import`.
    archive: PathBuf,
    _archive_dir: tempfile::TempDir,
}

impl Images {
    fn new() -> Self {
        let registry = Registry::start(RegistryOptions::default());
        let data = vec![
            Entry::dir("data"),
            Entry::noise("data/blob-a", 192 << 10, 1),
            Entry::noise("data/blob-b", 64 << 10, 2),
        ];
        let top = |tag: &str| {
            vec![
                Entry::dir("etc"),
                Entry::file("etc/berth-crash-image", format!("{tag}\n")),
            ]
        };
        let spec = |tag: &str| ImageSpec::new(vec![busybox_entries(), data.clone(), top(tag)]);
        let first = push_image(&registry, "crash/first", &[spec("first")], PushFormat::Oci);
        let second = push_image(
            &registry,
            "crash/second",
            &[spec("second")],
            PushFormat::Oci,
        );
        let archive_dir = tempfile::Builder::new()
            .prefix("berth-crash-archive-")
            .tempdir()
            .expect("temp dir");
        let mut layout = OciLayout::create(&archive_dir.path().join("layout"));
        let built = layout.add_image(&spec("imported"));
        layout.tag("latest", &built.manifest);
        let archive = archive_dir.path().join("imported.tar");
        layout.write_archive(&archive);
        Self {
            registry,
            first,
            second,
            archive,
            _archive_dir: archive_dir,
        }
    }

    /// Lets `dirs`'s pulls (CLI `--hosts-dir` and the agent's hosts-dir)
    /// reach the shared registry.
    fn configure(&self, dirs: &TestDirs) {
        pull::use_server(dirs, &self.registry.host(), &self.registry.url());
    }

    fn imported_name(&self) -> String {
        format!("{}/crash/imported:1", self.registry.host())
    }
}

/// How the scenario of one run ended.
enum Ended {
    /// The process killed itself at this point.
    Crashed(CrashPoint),
    /// It went through the whole scenario.
    Completed,
}

/// Where a process's log says it crashed: the last crash point line,
/// when the process died of SIGKILL.
fn crash_site(status: std::process::ExitStatus, log: &str) -> Option<CrashPoint> {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the process ended other than at a crash point ({status}); log:\n{}",
        tail(log)
    );
    crash_points(log).pop()
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

// ---------------------------------------------------------------------------
// The agent scenario.

/// The pods of the agent scenario, as their manifests say now.
struct Pods {
    /// Pod name → image reference, for every manifest present.
    desired: Vec<(String, String)>,
}

impl Pods {
    fn set(&mut self, name: &str, image: &str) {
        self.desired.retain(|(n, _)| n != name);
        self.desired.push((name.to_string(), image.to_string()));
    }

    fn remove(&mut self, name: &str) {
        self.desired.retain(|(n, _)| n != name);
    }
}

/// Waits until `probe` holds; `false` when the agent died first.
fn until(net: &mut NetWorld, what: &str, mut probe: impl FnMut(&NetWorld) -> bool) -> bool {
    let outcome = poll_until(POD_WAIT, || {
        if net.world.agent_mut().try_exit().is_some() {
            return Some(false);
        }
        probe(net).then_some(true)
    });
    outcome.unwrap_or_else(|| {
        panic!(
            "timed out waiting for {what}; agent log:\n{}",
            tail(&net.world.agent().log())
        )
    })
}

fn pod_yaml(net: &NetWorld, name: &str, image: &str, extra_spec: &str, mounts: &str) -> String {
    let container = format!(
        "  - name: app\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", \"exec sleep 100000\"]\n{mounts}"
    );
    net.pod_yaml(name, extra_spec, &container)
}

fn running_image(net: &NetWorld, name: &str, digest: &str) -> bool {
    net.world.pod(name).is_some_and(|pod| {
        running_with_ip(&pod)
            && pod["details"]["pod"]["containers"][0]["imageDigest"].as_str() == Some(digest)
    })
}

/// Pulls, pod churn and a clean stop. Returns how the agent ended and
/// the pods its manifests want at that moment.
fn agent_scenario(net: &mut NetWorld, images: &Images, env: &[(&str, &str)]) -> (Ended, Pods) {
    let mut pods = Pods {
        desired: Vec::new(),
    };
    let (first, second) = (&images.first, &images.second);
    net.world.spawn_agent_with_env(env);
    let ended = 'scenario: {
        let pid = net.world.agent().pid();
        let ready = until(net, "the agent to be ready", |net| {
            berth_e2e::agent::status_json(&net.world.dirs)
                .is_some_and(|s| s["agent"]["state"] == "Ready" && s["agent"]["pid"] == pid)
        });
        if !ready {
            break 'scenario false;
        }
        for name in ["a", "b"] {
            let yaml = pod_yaml(net, name, &first.reference, "", "");
            net.world.write_manifest(&format!("{name}.yaml"), &yaml);
            pods.set(name, &first.reference);
        }
        if !until(net, "pods a and b to run", |net| {
            running_image(net, "a", &first.digest) && running_image(net, "b", &first.digest)
        }) {
            break 'scenario false;
        }
        // Container-level edit: a new image (two layers shared).
        let yaml = pod_yaml(net, "a", &second.reference, "", "");
        net.world.write_manifest("a.yaml", &yaml);
        pods.set("a", &second.reference);
        if !until(net, "pod a to run the second image", |net| {
            running_image(net, "a", &second.digest)
        }) {
            break 'scenario false;
        }
        // Pod-level edit: a new volume makes a new incarnation.
        let uid = net.world.pod("b").map(|pod| pod_uid(&pod));
        let yaml = pod_yaml(
            net,
            "b",
            &first.reference,
            "  volumes:\n  - name: scratch\n    emptyDir: {}\n",
            "    volumeMounts:\n    - name: scratch\n      mountPath: /scratch\n",
        );
        net.world.write_manifest("b.yaml", &yaml);
        if !until(net, "pod b to run again as a new pod", |net| {
            net.world.pod("b").is_some_and(|pod| {
                running_image(net, "b", &first.digest) && Some(pod_uid(&pod)) != uid
            })
        }) {
            break 'scenario false;
        }
        // A pod with a host port (claimed with its lease).
        let port = free_port();
        let yaml = pod_yaml(net, "c", &first.reference, "", "").replace(
            "    command:",
            &format!("    ports:\n    - {{containerPort: 80, hostPort: {port}}}\n    command:"),
        );
        net.world.write_manifest("c.yaml", &yaml);
        pods.set("c", &first.reference);
        if !until(net, "pod c to run", |net| {
            running_image(net, "c", &first.digest)
        }) {
            break 'scenario false;
        }
        net.world.remove_manifest("a.yaml");
        pods.remove("a");
        let record = net.root().join("pod-state/default_a.json");
        if !until(net, "pod a to be removed", |_| !record.exists()) {
            break 'scenario false;
        }
        net.world.agent().signal(nix::sys::signal::Signal::SIGTERM);
        let stopped = poll_until(POD_WAIT, || net.world.agent_mut().try_exit());
        stopped.expect("the agent stops on SIGTERM").success()
    };
    let ended = if ended {
        Ended::Completed
    } else {
        let agent = net.world.agent_mut();
        let status = agent.try_exit().expect("the agent has exited");
        match crash_site(status, &agent.log()) {
            Some(point) => Ended::Crashed(point),
            None => panic!("the agent died without a crash point"),
        }
    };
    (ended, pods)
}

/// The agent's config for the crash run, and for the recovery.
fn set_gc(net: &NetWorld, from: &str, to: &str) {
    let config = std::fs::read_to_string(&net.world.config).expect("reading the config");
    assert!(config.contains(from), "the config has {from:?}");
    std::fs::write(&net.world.config, config.replace(from, to)).expect("writing the config");
}

/// Starts the next agent after the crash and checks everything.
fn recover_agent(net: &mut NetWorld, images: &Images, pods: &Pods, power_cut: bool) -> Findings {
    let mut findings = Findings::default();
    findings.verdicts("after the crash", durable_invariants(net.root()));
    if power_cut {
        net.power_cut();
    } else {
        drop(net.world.take_agent());
    }
    set_gc(net, NO_GC, QUICK_GC);
    net.world.start_agent();
    let digest_of = |image: &str| {
        if image == images.second.reference {
            images.second.digest.clone()
        } else {
            images.first.digest.clone()
        }
    };
    let all_run = poll_until(POD_WAIT, || {
        pods.desired
            .iter()
            .all(|(name, image)| running_image(net, name, &digest_of(image)))
            .then_some(())
    });
    findings.check("after the restart", all_run.is_some(), || {
        format!(
            "not every desired pod runs ({:?}); agent log:\n{}",
            pods.desired,
            tail(&net.world.agent().log())
        )
    });
    let network = net.net.network.clone();
    // Recovery ran; GC runs every second: wait for it to clear leftovers.
    let _ = poll_until(RECOVERY, || {
        recovered_invariants(net.root(), Some(&network))
            .iter()
            .all(|v| v.holds())
            .then_some(())
    });
    findings.verdicts(
        "after the restart",
        recovered_invariants(net.root(), Some(&network)),
    );
    findings.verdicts("after the restart", durable_invariants(net.root()));
    let output = pull::pull(&net.world.dirs, &images.first.reference, &[]);
    findings.check("after the restart", output.status.success(), || {
        format!(
            "berth pull failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    findings.verdicts("after the pull", durable_invariants(net.root()));
    if !findings.failures.is_empty() {
        println!(
            "--- pod records:\n{}\n--- the recovering agent's log:\n{}",
            records_text(net.root()),
            tail(&net.world.agent().log())
        );
    }
    findings
}

fn records_text(root: &std::path::Path) -> String {
    std::fs::read_dir(root.join("pod-state"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            format!("{}:\n{text}", entry.path().display())
        })
        .collect()
}

/// One run of the agent scenario crashing at point `n`.
fn agent_run(images: &Images, n: u64) -> RunResult {
    let began = Instant::now();
    let mut net = NetWorld::bridge_with(NO_GC);
    images.configure(&net.world.dirs);
    let crash_at = n.to_string();
    let (ended, pods) = agent_scenario(&mut net, images, &[(CRASH_AT_ENV, &crash_at)]);
    let crashed_at = match ended {
        Ended::Crashed(point) => {
            assert_eq!(point.n, n, "the agent crashed at the point asked for");
            Some(point)
        }
        Ended::Completed => None,
    };
    // Every other point: a power cut instead of a plain kill.
    let power_cut = n.is_multiple_of(2);
    let findings = recover_agent(&mut net, images, &pods, power_cut);
    drop(net);
    RunResult {
        asked: n,
        crashed_at,
        recovery: if power_cut { "power cut" } else { "restart" },
        findings,
        seconds: began.elapsed().as_secs_f64(),
    }
}

#[test]
fn the_agent_recovers_a_consistent_state_from_a_crash_at_any_durability_point() {
    require_root();
    let images = Images::new();
    // A run without a crash: how many points the scenario passes, and
    // proof that the invariants hold when nothing went wrong.
    let mut net = NetWorld::bridge_with(NO_GC);
    images.configure(&net.world.dirs);
    let (ended, pods) = agent_scenario(&mut net, &images, &[(CRASH_POINTS_ENV, "1")]);
    assert!(matches!(ended, Ended::Completed));
    let points = crash_points(&net.world.agent().log());
    let clean = recover_agent(&mut net, &images, &pods, false);
    assert!(clean.failures.is_empty(), "without a crash: {clean:#?}");
    let checked = clean.checked;
    drop(net);
    let total = points.len() as u64;
    if full_sweep() {
        for point in &points {
            println!("  {point}");
        }
    }
    println!(
        "agent scenario: {total} crash points, {checked} checks without a crash; kinds: {:?}",
        kinds(&points)
    );
    assert!(
        total > 20,
        "the scenario passes the store's and the pods' points"
    );
    let mut table = Table::new("agent: pulls and pod churn");
    for n in sweep(total) {
        table.row(agent_run(&images, n));
    }
    let failed = table.finish();
    assert_eq!(failed, 0, "runs broke an invariant (table above)");
}

fn kinds(points: &[CrashPoint]) -> Vec<(String, usize)> {
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for point in points {
        *kinds.entry(point.name.clone()).or_default() += 1;
    }
    kinds.into_iter().collect()
}

// ---------------------------------------------------------------------------
// The CLI scenario.

/// The store commands of the CLI scenario, in order.
fn cli_commands(images: &Images) -> Vec<Vec<String>> {
    let pull = |image: &str| vec!["pull".to_string(), image.to_string()];
    vec![
        pull(&images.first.reference),
        vec![
            "import".to_string(),
            images.archive.display().to_string(),
            "--name".to_string(),
            images.imported_name(),
        ],
        pull(&images.second.reference),
        vec!["rmi".to_string(), images.first.reference.clone()],
        vec!["prune".to_string()],
    ]
}

/// Runs `berth <command>` on `dirs` (pulls through the shared registry)
/// with `env`; returns its exit status and stderr.
fn run_cli(
    dirs: &TestDirs,
    command: &[String],
    env: &[(&str, &str)],
) -> (std::process::ExitStatus, String) {
    let mut args: Vec<String> = command.to_vec();
    if args[0] == "pull" {
        let certs_d = pull::certs_d(dirs).display().to_string();
        args.splice(1..1, ["--hosts-dir".to_string(), certs_d]);
    }
    let mut cmd = dirs.berth_command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let output = cmd.output().expect("running berth");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the CLI scenario, crashing command `crash.0` at its point
/// `crash.1`; returns how it ended. Every other command must succeed.
fn cli_scenario(dirs: &TestDirs, images: &Images, crash: Option<(usize, u64)>) -> Ended {
    for (i, command) in cli_commands(images).iter().enumerate() {
        let n = crash.filter(|(at, _)| *at == i).map(|(_, n)| n.to_string());
        let env: Vec<(&str, &str)> = n.iter().map(|n| (CRASH_AT_ENV, n.as_str())).collect();
        let (status, stderr) = run_cli(dirs, command, &env);
        if n.is_some() && !status.success() {
            let point = crash_site(status, &stderr).expect("a crash point line");
            return Ended::Crashed(point);
        }
        assert!(status.success(), "berth {command:?}: {stderr}");
    }
    Ended::Completed
}

/// An agent with no pods on `dirs`, collecting garbage every second.
fn recovering_agent(dirs: &TestDirs) -> AgentProcess {
    let config = dirs.temp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[images]\nhosts-dir = {:?}\n[runtime]\nshim = {:?}\ncgroup-parent = {:?}\n[network]\ndriver = \"none\"\n{QUICK_GC}",
            pull::certs_d(dirs),
            shim_bin(),
            berth_e2e::unique_name("cg"),
        ),
    )
    .expect("writing the agent config");
    AgentProcess::start_ready(dirs, &["--config", config.to_str().expect("utf-8 path")])
}

fn cli_recover(dirs: &TestDirs, images: &Images) -> Findings {
    let mut findings = Findings::default();
    findings.verdicts("after the crash", durable_invariants(&dirs.root));
    let agent = recovering_agent(dirs);
    let _ = poll_until(RECOVERY, || {
        recovered_invariants(&dirs.root, None)
            .iter()
            .all(|v| v.holds())
            .then_some(())
    });
    findings.verdicts("after the restart", recovered_invariants(&dirs.root, None));
    for command in &cli_commands(images)[..2] {
        let (status, stderr) = run_cli(dirs, command, &[]);
        findings.check("after the restart", status.success(), || {
            format!("berth {command:?}: {stderr}")
        });
    }
    findings.verdicts("after pull and import", durable_invariants(&dirs.root));
    agent.stop();
    findings
}

fn cli_run(images: &Images, command: usize, n: u64, asked: u64) -> RunResult {
    let began = Instant::now();
    let dirs = TestDirs::new();
    images.configure(&dirs);
    let crashed_at = match cli_scenario(&dirs, images, Some((command, n))) {
        Ended::Crashed(point) => {
            assert_eq!(point.n, n, "berth crashed at the point asked for");
            Some(point)
        }
        Ended::Completed => None,
    };
    let findings = cli_recover(&dirs, images);
    RunResult {
        asked,
        crashed_at,
        recovery: "restart",
        findings,
        seconds: began.elapsed().as_secs_f64(),
    }
}

/// How many crash points each command of the CLI scenario passes.
fn cli_points(images: &Images) -> Vec<u64> {
    let dirs = TestDirs::new();
    images.configure(&dirs);
    let counts = cli_commands(images)
        .iter()
        .map(|command| {
            let (status, stderr) = run_cli(&dirs, command, &[(CRASH_POINTS_ENV, "1")]);
            assert!(status.success(), "berth {command:?}: {stderr}");
            crash_points(&stderr).len() as u64
        })
        .collect();
    let clean = cli_recover(&dirs, images);
    assert!(clean.failures.is_empty(), "without a crash: {clean:#?}");
    counts
}

#[test]
fn pull_import_rmi_and_prune_leave_a_consistent_store_when_they_crash_at_any_point() {
    require_root();
    let images = Images::new();
    let counts = cli_points(&images);
    let total: u64 = counts.iter().sum();
    println!("CLI scenario: {total} crash points ({counts:?} per command)");
    assert!(counts.iter().all(|&k| k > 0), "every command has points");
    let mut table = Table::new("CLI: pull, import, rmi, prune");
    for global in sweep(total) {
        // The command and its own point number.
        let (mut command, mut n) = (0, global);
        while n > counts[command] {
            n -= counts[command];
            command += 1;
        }
        table.row(cli_run(&images, command, n, global));
    }
    let failed = table.finish();
    assert_eq!(failed, 0, "runs broke an invariant (table above)");
}

// ---------------------------------------------------------------------------
// Regressions: each bug the sweep found, at its exact point.

/// The agent was killed after the runtime had mounted a container's
/// rootfs and written its bundle, before the shim ran it. The restarted
/// agent saw the half-made container as lost and made a new instance, but
/// never removed the old one: its overlay mount, bundle, shim state and
/// writable layer stayed until the next agent start.
#[test]
fn a_container_whose_create_a_crash_cut_short_is_removed_when_it_is_made_again() {
    let mut world = PodWorld::new("runc");
    world.spawn_agent_with_env(&[(CRASH_MATCH_ENV, "config.json"), (CRASH_AT_ENV, "1")]);
    let containers = world.shell_container("app", "exec sleep 100000");
    world.write_manifest("web.yaml", &world.pod_yaml("web", "", &containers));
    let status = wait_until(POD_WAIT, "the agent to crash", || {
        world.agent_mut().try_exit()
    });
    let point = crash_site(status, &world.agent().log()).expect("a crash point");
    // `…/bundles/<id>/.config.json.tmp.<pid>`
    let cut_short = PathBuf::from(&point.subject)
        .parent()
        .and_then(|bundle| bundle.file_name())
        .map(|id| id.to_string_lossy().into_owned())
        .expect("the bundle directory names the container");
    assert!(
        world.dirs.root.join("containers").join(&cut_short).is_dir(),
        "the crash came after the rootfs was made"
    );

    world.start_agent();
    world.wait_pod("web", "running again", |pod| {
        running_pid(pod, "app").is_some()
    });
    for left in [
        world.dirs.root.join("containers").join(&cut_short),
        world.dirs.run_root.join("bundles").join(&cut_short),
        world.dirs.run_root.join("shims").join(&cut_short),
    ] {
        assert!(!left.exists(), "{} is left", left.display());
    }
    let mounts: Vec<PathBuf> = world
        .mounts()
        .into_iter()
        .filter(|mount| mount.to_string_lossy().contains(&cut_short))
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}
