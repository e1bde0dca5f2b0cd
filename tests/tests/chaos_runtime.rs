//! Chaos: the OCI runtime fails. Pods run with runtime handler `flaky`, a
//! shell script around runc that fails `run`, `create`, `start` and
//! `delete` at random — with the probability and seed in a control file
//! the test writes — and otherwise execs runc. While it fails, pods are
//! created, edited and deleted; then it works again, and every desired pod
//! must converge with exactly one container instance, the pod never
//! touched keeps its PID, and once every manifest is removed nothing is
//! left (the same checks as `chaos_kill`).
//!
//! Short version: 3 rounds; `BERTH_CHAOS=full` (`make chaos`): 25.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_e2e::chaos::{self, Churn, Rng};
use berth_e2e::crash::Findings;
use berth_e2e::net::NetWorld;
use berth_e2e::pods::POD_WAIT;
use berth_e2e::require_root;

/// Failed reconciles are retried quickly (the default backoff grows to
/// minutes).
const FAST_RETRIES: &str = "[controller.backoff]\ninitial = \"200ms\"\nmax = \"2s\"\n";
/// How long the pods may take to converge once the runtime works.
const CONVERGE: Duration = Duration::from_secs(120);
/// The failure probability while the runtime is flaky, in percent.
const FAIL_PERCENT: u64 = 40;

/// The wrapper: `CONTROL` holds `PERCENT SEED [SUBCOMMANDS]`; each call of
/// a failing subcommand (`run`, `create`, `start`, `delete`, or those of
/// the comma-separated list) takes the next number of `COUNT` (under
/// flock) and fails when a hash of seed and number falls below PERCENT,
/// writing the subcommand to `INJECTED`.
const WRAPPER: &str = r#"#!/bin/sh
sub=
skip=
for a in "$@"; do
  if [ -n "$skip" ]; then skip=; continue; fi
  case "$a" in
    --root|--log|--log-format) skip=1 ;;
    -*) ;;
    *) sub=$a; break ;;
  esac
done
case "$sub" in
  run|create|start|delete)
    read percent seed only < "CONTROL" || percent=0
    case ",${only:-$sub}," in *",$sub,"*) ;; *) percent=0 ;; esac
    if [ "${percent:-0}" -gt 0 ]; then
      n=$(flock "COUNT" sh -c 'n=$(cat "$1" 2>/dev/null); n=${n:-0}; echo $((n + 1)) > "$1"; echo "$n"' - "COUNT")
      r=$(( ((seed + n) * 1103515245 + 12345) % 2147483648 / 65536 % 100 ))
      if [ "$r" -lt "$percent" ]; then
        echo "$sub" >> "INJECTED"
        echo "chaos: runc $sub fails (injected, call $n)" >&2
        exit 1
      fi
    fi
    ;;
esac
exec runc "$@"
"#;

/// The wrapper's files in the test's temp dir.
struct Flaky {
    control: PathBuf,
    injected: PathBuf,
}

impl Flaky {
    fn install(dir: &Path) -> (Self, PathBuf) {
        let control = dir.join("flaky-control");
        let injected = dir.join("flaky-injected");
        let script = WRAPPER
            .replace("CONTROL", &control.display().to_string())
            .replace("COUNT", &dir.join("flaky-count").display().to_string())
            .replace("INJECTED", &injected.display().to_string());
        let path = dir.join("flaky-runc");
        std::fs::write(&path, script).expect("writing the wrapper");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making the wrapper executable");
        let flaky = Self { control, injected };
        flaky.set(0, 0);
        (flaky, path)
    }

    /// Fails `percent` of the calls from now on (`0`: none).
    fn set(&self, percent: u64, seed: u64) {
        berth_e2e::write_atomically(&self.control, &format!("{percent} {seed}\n"));
    }

    /// Fails every call of `subcommand`, and only those.
    fn fail_always(&self, subcommand: &str) {
        berth_e2e::write_atomically(&self.control, &format!("100 0 {subcommand}\n"));
    }

    /// The failures injected so far, by subcommand.
    fn injected(&self) -> Vec<String> {
        std::fs::read_to_string(&self.injected)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn count(failures: &[String]) -> String {
    ["run", "create", "start", "delete"]
        .iter()
        .filter_map(|sub| {
            let n = failures.iter().filter(|f| f == sub).count();
            (n > 0).then(|| format!("{n} {sub}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A world whose pods run with the `flaky` handler.
fn flaky_world() -> (NetWorld, Flaky) {
    let mut net = NetWorld::bridge_with(FAST_RETRIES);
    let (flaky, wrapper) = Flaky::install(net.world.dirs.temp.path());
    let mut config = std::fs::read_to_string(&net.world.config).expect("reading the config");
    config.push_str(&format!("[runtime.handlers.flaky]\npath = {wrapper:?}\n"));
    std::fs::write(&net.world.config, config).expect("writing the config");
    net.world.runtime = "flaky".to_string();
    (net, flaky)
}

#[test]
fn pods_converge_and_nothing_leaks_when_the_runtime_fails_at_random() {
    require_root();
    let mut rng = Rng::seeded("chaos runtime");
    let rounds = chaos::rounds(3, 25);
    let (mut net, flaky) = flaky_world();
    let mut churn = Churn::new(4, 1);
    net.world.start_agent();
    churn.start_steady(&net);

    let mut table = chaos::table("chaos: the runtime fails at random");
    for round in 1..=rounds as u64 {
        let began = Instant::now();
        let before = flaky.injected().len();
        flaky.set(FAIL_PERCENT, rng.below(1_000_000));
        let steps = 2 + rng.below(4);
        let mut ops = Vec::new();
        for _ in 0..steps {
            ops.push(churn.step(&net, &mut rng));
            // The random spacing of the changes (what is tested), not a
            // wait for anything.
            std::thread::sleep(Duration::from_millis(rng.below(1500)));
        }
        flaky.set(0, 0);
        let injected = flaky.injected()[before..].to_vec();
        let mut findings = Findings::default();
        churn.check_converged(&mut findings, &net, CONVERGE);
        chaos::check_durable(&mut findings, net.root());
        if !findings.failures.is_empty() {
            println!("--- agent log:\n{}", net.world.agent().log());
        }
        table.row(chaos::row(
            round,
            "fail runc",
            format!("{} failed; {}", count(&injected), ops.join(", ")),
            findings,
            began,
        ));
    }
    let began = Instant::now();
    let mut findings = Findings::default();
    churn.remove_all(&mut findings, &net, &[]);
    table.row(chaos::row(
        rounds as u64 + 1,
        "remove",
        "remove every manifest".to_string(),
        findings,
        began,
    ));
    let all = flaky.injected();
    let failed = chaos::finish(
        table,
        &format!(
            "{} runtime failures ({}) during {}",
            all.len(),
            count(&all),
            churn.ops_text()
        ),
    );
    assert_eq!(failed, 0, "rounds left something (table above)");
}

/// Found by this scenario: when the runtime's `delete` failed, the removal
/// went on and removed the container's record with its other files; the
/// retry then no longer knew which runtime held the container, called
/// none, and reported the container removed — its runtime state stayed
/// for good.
#[test]
fn a_container_whose_runtime_delete_failed_is_deleted_from_the_runtime_on_retry() {
    require_root();
    let (mut net, flaky) = flaky_world();
    net.world.start_agent();
    let container = net.world.shell_container("app", "exec sleep 100000");
    net.world
        .write_manifest("web.yaml", &net.pod_yaml("web", "", &container));
    net.wait_running_ip("web");
    assert_eq!(chaos::runtime_instances(&net.world.dirs.run_root).len(), 1);

    flaky.fail_always("delete");
    net.world.remove_manifest("web.yaml");
    berth_e2e::wait_until(POD_WAIT, "a delete to fail", || {
        (!flaky.injected().is_empty()).then_some(())
    });
    flaky.set(0, 0);
    net.wait_pod_record_gone("web");
    let left = berth_e2e::poll_until(POD_WAIT, || {
        chaos::runtime_instances(&net.world.dirs.run_root)
            .is_empty()
            .then_some(())
    });
    assert!(
        left.is_some(),
        "runtime state left: {:?}\nagent log:\n{}",
        chaos::runtime_instances(&net.world.dirs.run_root),
        net.world.agent().log()
    );
}

/// The scenario once left two runtime instances for one pod after a
/// failed `delete` of a replaced container: the removal now keeps the
/// container's state directory (the record naming its runtime) until the
/// runtime forgot it, so the old instance stays known and its delete is
/// tried again. This pins the end state: one instance, the new one.
#[test]
fn a_replaced_container_whose_runtime_delete_failed_ends_as_one_instance() {
    require_root();
    let (mut net, flaky) = flaky_world();
    net.world.start_agent();
    let yaml = |sleep: u32| {
        let container = net
            .world
            .shell_container("app", &format!("exec sleep {sleep}"));
        net.pod_yaml("web", "", &container)
    };
    net.world.write_manifest("web.yaml", &yaml(100_001));
    net.wait_running_ip("web");
    flaky.fail_always("delete");
    net.world.write_manifest("web.yaml", &yaml(100_002));
    berth_e2e::wait_until(POD_WAIT, "a delete to fail", || {
        (!flaky.injected().is_empty()).then_some(())
    });
    flaky.set(0, 0);
    let one = berth_e2e::poll_until(POD_WAIT, || {
        let pod = net.world.pod("web")?;
        let pid = berth_e2e::pods::running_pid(&pod, "app")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let new = String::from_utf8_lossy(&cmdline).contains("100002");
        let instances = chaos::runtime_instances(&net.world.dirs.run_root);
        (new && instances.len() == 1).then_some(())
    });
    assert!(
        one.is_some(),
        "runtime instances: {:?}\nagent log:\n{}",
        chaos::runtime_instances(&net.world.dirs.run_root),
        net.world.agent().log()
    );
}
