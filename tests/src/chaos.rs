//! The chaos kit: what the `chaos_*` scenarios share. A seeded random
//! source (the seed is printed, `BERTH_CHAOS_SEED=N` replays a run), pod
//! churn on a [`NetWorld`] (pods created, edited and deleted at random),
//! the checks every scenario ends with — each desired pod converged with
//! exactly one container instance, nothing of a removed pod left in the
//! kernel or on disk — and the scenario's table (the crash kit's
//! [`Table`]) with its totals: what was tried, what was left.
//!
//! `BERTH_CHAOS=full` (`make chaos`) runs each scenario's full number of
//! rounds; otherwise a few (a normal test of the suite).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::crash::{CrashPoint, Findings, RunResult, Table, durable_invariants};
use crate::net::{NetWorld, running_with_ip};
use crate::pods::{POD_WAIT, running_pid};
use crate::{TestDirs, poll_until};

/// Whether this is `make chaos` (`BERTH_CHAOS=full`).
pub fn full() -> bool {
    std::env::var("BERTH_CHAOS").is_ok_and(|value| value == "full")
}

/// How many rounds a scenario runs: `full` under `make chaos`, else `short`.
pub fn rounds(short: usize, full_rounds: usize) -> usize {
    if full() { full_rounds } else { short }
}

/// A small seeded generator (splitmix64): the same seed makes the same
/// choices, so a failed run can be replayed.
pub struct Rng {
    state: u64,
}

impl Rng {
    /// `BERTH_CHAOS_SEED`, else a seed from the clock; printed with how
    /// to replay it.
    pub fn seeded(scenario: &str) -> Self {
        let seed = std::env::var("BERTH_CHAOS_SEED")
            .ok()
            .map(|s| s.trim().parse().expect("BERTH_CHAOS_SEED: a number"))
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("the clock is after 1970");
                now.as_secs() ^ u64::from(now.subsec_nanos()) ^ u64::from(std::process::id())
            });
        println!("{scenario}: seed {seed} (replay with BERTH_CHAOS_SEED={seed})");
        Self::new(seed)
    }

    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.below(items.len() as u64)).expect("a small index")]
    }
}

/// The kinds of thing a scenario can leave behind, in the order the
/// totals list them. A failure recorded under one of these names (see
/// [`left`]) counts as one object of that kind left.
pub const LEFT_KINDS: [&str; 13] = [
    "mount",
    "veth",
    "netns",
    "IP lease",
    "shim process",
    "container process",
    "cgroup",
    "runtime state",
    "bundle or shim dir",
    "container layer",
    "pod dir",
    "wrong instance count",
    "invariant",
];

/// Records `objects` as left behind, one failure each (a check that holds
/// when there are none).
pub fn left(findings: &mut Findings, kind: &'static str, objects: Vec<String>) {
    assert!(LEFT_KINDS.contains(&kind), "{kind} is one of LEFT_KINDS");
    findings.check(kind, objects.is_empty(), || objects.join(", "));
    if let Some((_, rest)) = objects.split_first() {
        for object in rest {
            findings.check(kind, false, || object.clone());
        }
    }
}

/// Records invariant verdicts as `invariant` failures.
pub fn invariants(findings: &mut Findings, verdicts: Vec<crate::crash::Verdict>) {
    for verdict in verdicts {
        let problems = verdict
            .problems
            .iter()
            .map(|p| format!("{}: {p}", verdict.invariant))
            .collect();
        left(findings, "invariant", problems);
    }
}

/// The scenario's table: round, what was done, how.
pub fn table(title: &str) -> Table {
    Table::with_columns(title, ["round", "action", "what was tried"])
}

/// One row: round `n` did `action` (`detail`: how), checked `findings`.
pub fn row(
    n: u64,
    action: &'static str,
    detail: String,
    findings: Findings,
    began: Instant,
) -> RunResult {
    RunResult {
        asked: n,
        crashed_at: Some(CrashPoint {
            n,
            name: detail,
            subject: String::new(),
        }),
        recovery: action,
        findings,
        seconds: began.elapsed().as_secs_f64(),
    }
}

/// Prints the totals: `tried` (e.g. "104 kills"), then every kind of
/// [`LEFT_KINDS`] with how many were left. Returns the rounds with
/// failures (0 on success).
pub fn finish(table: Table, tried: &str) -> usize {
    let runs = table.runs();
    let failures: Vec<&String> = runs.iter().flat_map(|r| &r.findings.failures).collect();
    let counts: Vec<String> = LEFT_KINDS
        .iter()
        .map(|kind| {
            let prefix = format!("{kind}: ");
            let n = failures.iter().filter(|f| f.starts_with(&prefix)).count();
            format!("{kind} {n}")
        })
        .collect();
    let failed = runs
        .iter()
        .filter(|r| !r.findings.failures.is_empty())
        .count();
    println!(
        "tried: {tried} in {} rounds, {} checks, {:.0} s\nleft: {}; failed rounds {failed}",
        runs.len(),
        runs.iter().map(|r| r.findings.checked).sum::<usize>(),
        runs.iter().map(|r| r.seconds).sum::<f64>(),
        counts.join(", ")
    );
    failed
}

// ---------------------------------------------------------------------------
// Probes.

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Container instances the OCI runtime knows (a state directory per
/// container under each handler's `--root`), as `handler/id`.
pub fn runtime_instances(run_root: &Path) -> Vec<String> {
    let root = run_root.join("runtime");
    dir_names(&root)
        .into_iter()
        .flat_map(|handler| {
            dir_names(&root.join(&handler))
                .into_iter()
                .map(move |id| format!("{handler}/{id}"))
        })
        .collect()
}

/// berth-shim processes of this run: their `--state-dir` is under
/// `run_root` (a temp dir no other run shares). `(pid, container id)`.
pub fn shims(run_root: &Path) -> Vec<(i32, String)> {
    let shims_dir = run_root.join("shims");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.ends_with("berth-shim")) {
            continue;
        }
        let state_dir = args
            .iter()
            .position(|a| a == "--state-dir")
            .and_then(|i| args.get(i + 1));
        if let Some(dir) = state_dir.map(PathBuf::from)
            && dir.starts_with(&shims_dir)
        {
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push((pid, id));
        }
    }
    found
}

/// Everything of pods left in the kernel and on disk, by kind: for a run
/// whose manifests were all removed and whose pods are gone, all empty.
/// `net`: the world's bridge network, when it has one. Mounts the test
/// made itself (`own_mounts`, e.g. a loop-mounted `--root`) do not count.
pub fn leftovers(world: &NetWorld, own_mounts: &[PathBuf]) -> Vec<(&'static str, Vec<String>)> {
    let dirs: &TestDirs = &world.world.dirs;
    let show = |paths: Vec<PathBuf>| -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    };
    let mounts: Vec<PathBuf> = world
        .world
        .mounts()
        .into_iter()
        .filter(|m| !own_mounts.contains(m))
        .collect();
    let leases = world
        .net
        .leases(world.root())
        .into_iter()
        .map(|(pod, ip)| format!("{ip} of {pod}"))
        .collect();
    let bundles = ["bundles", "shims"]
        .iter()
        .flat_map(|d| {
            dir_names(&dirs.run_root.join(d))
                .into_iter()
                .map(move |id| format!("{d}/{id}"))
        })
        .collect();
    // Volatile sandbox state, and disk-backed emptyDirs.
    let pod_dirs = [&dirs.run_root, &dirs.root]
        .iter()
        .flat_map(|root| {
            show(
                dir_names(&root.join("pods"))
                    .iter()
                    .map(|d| root.join("pods").join(d))
                    .collect(),
            )
        })
        .collect();
    vec![
        ("mount", show(mounts)),
        ("veth", world.net.prefixed_links()),
        ("netns", dir_names(&world.netns_dir())),
        ("IP lease", leases),
        (
            "shim process",
            shims(&dirs.run_root)
                .into_iter()
                .map(|(pid, id)| format!("{pid} ({id})"))
                .collect(),
        ),
        (
            "container process",
            world.world.processes().iter().map(i32::to_string).collect(),
        ),
        ("cgroup", show(world.world.cgroups())),
        ("runtime state", runtime_instances(&dirs.run_root)),
        ("bundle or shim dir", bundles),
        ("container layer", dir_names(&dirs.root.join("containers"))),
        ("pod dir", pod_dirs),
    ]
}

/// Waits (up to [`POD_WAIT`]) until nothing is left, then records what
/// is left.
pub fn check_nothing_left(findings: &mut Findings, world: &NetWorld, own_mounts: &[PathBuf]) {
    let _ = poll_until(POD_WAIT, || {
        leftovers(world, own_mounts)
            .iter()
            .all(|(_, objects)| objects.is_empty())
            .then_some(())
    });
    for (kind, objects) in leftovers(world, own_mounts) {
        left(findings, kind, objects);
    }
}

// ---------------------------------------------------------------------------
// Pod churn.

/// Pods whose manifests a scenario creates, edits and deletes at random
/// (`churn-N`), beside pods it never touches (`steady-N`, whose containers
/// must keep their PIDs through everything). A pod's generation is in
/// its command (`sleep 10000G`), so the running process shows which
/// version of the manifest it runs.
pub struct Churn {
    /// Churned pod name → generation of its manifest; absent: deleted.
    pub desired: BTreeMap<String, u32>,
    pub churn: Vec<String>,
    pub steady: Vec<String>,
    /// The PIDs of the steady pods' containers once they first ran.
    pub steady_pids: BTreeMap<String, i64>,
    /// Operations done: creates, edits, deletes.
    pub ops: [u64; 3],
}

/// The base of the `sleep` argument (the generation is added).
const SLEEP_BASE: u32 = 1_000_000;

impl Churn {
    pub fn new(churn: usize, steady: usize) -> Self {
        Self {
            desired: BTreeMap::new(),
            churn: (0..churn).map(|i| format!("churn-{i}")).collect(),
            steady: (0..steady).map(|i| format!("steady-{i}")).collect(),
            steady_pids: BTreeMap::new(),
            ops: [0; 3],
        }
    }

    fn yaml(world: &NetWorld, name: &str, generation: u32) -> String {
        let container = world
            .world
            .shell_container("app", &format!("exec sleep {}", SLEEP_BASE + generation));
        world.pod_yaml(name, "", &container)
    }

    /// Writes the steady pods' manifests and waits until they run; keeps
    /// their PIDs.
    pub fn start_steady(&mut self, world: &NetWorld) {
        for name in &self.steady {
            world
                .world
                .write_manifest(&format!("{name}.yaml"), &Self::yaml(world, name, 0));
        }
        let pods = world.wait_pods(
            &self.steady,
            "steady pods running",
            POD_WAIT,
            running_with_ip,
        );
        for (name, pod) in self.steady.iter().zip(pods) {
            let pid = running_pid(&pod, "app").expect("running");
            self.steady_pids.insert(name.clone(), pid);
        }
    }

    /// One random operation on a churned pod: create it (if absent), else
    /// edit it (a new command: the container is replaced) or delete it.
    /// Returns what it did.
    pub fn step(&mut self, world: &NetWorld, rng: &mut Rng) -> String {
        let name = rng.pick(&self.churn).clone();
        let file = format!("{name}.yaml");
        match self.desired.get(&name).copied() {
            None => {
                world
                    .world
                    .write_manifest(&file, &Self::yaml(world, &name, 0));
                self.desired.insert(name.clone(), 0);
                self.ops[0] += 1;
                format!("create {name}")
            }
            Some(generation) if rng.below(3) > 0 => {
                let generation = generation + 1;
                world
                    .world
                    .write_manifest(&file, &Self::yaml(world, &name, generation));
                self.desired.insert(name.clone(), generation);
                self.ops[1] += 1;
                format!("edit {name}")
            }
            Some(_) => {
                world.world.remove_manifest(&file);
                self.desired.remove(&name);
                self.ops[2] += 1;
                format!("delete {name}")
            }
        }
    }

    /// Every pod the manifests want, with the generation it must run.
    fn wanted(&self) -> Vec<(String, u32)> {
        self.steady
            .iter()
            .map(|name| (name.clone(), 0))
            .chain(self.desired.iter().map(|(n, g)| (n.clone(), *g)))
            .collect()
    }

    /// Whether `pod` runs generation `generation` with an address.
    fn runs(pod: &serde_json::Value, generation: u32) -> bool {
        let Some(pid) = running_pid(pod, "app") else {
            return false;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        running_with_ip(pod)
            && cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == (SLEEP_BASE + generation).to_string().as_bytes())
    }

    /// Waits until every wanted pod runs its generation and no other pod
    /// has a status; then checks each has exactly one container instance
    /// (runtime state, shim), that nothing else has one, and that the
    /// steady pods kept their PIDs.
    pub fn check_converged(&self, findings: &mut Findings, world: &NetWorld, timeout: Duration) {
        let wanted = self.wanted();
        let converged = poll_until(timeout, || {
            let status = crate::agent::status_json(&world.world.dirs)?;
            let all_run = wanted.iter().all(|(name, generation)| {
                crate::agent::object(&status, "Pod", "default", name)
                    .is_some_and(|pod| Self::runs(pod, *generation))
            });
            let pods = crate::agent::names_of(&status, "Pod");
            (all_run && pods.len() == wanted.len()).then_some(status)
        });
        let Some(status) = converged else {
            let status = crate::agent::status_json(&world.world.dirs).unwrap_or_default();
            left(
                findings,
                "wrong instance count",
                vec![format!(
                    "not converged within {timeout:?}: want {wanted:?}; pods: {}",
                    pod_summary(&status)
                )],
            );
            return;
        };
        let dirs = &world.world.dirs;
        // Give a replaced container's removal time to finish.
        let uids: BTreeMap<String, String> = wanted
            .iter()
            .filter_map(|(name, _)| {
                let pod = crate::agent::object(&status, "Pod", "default", name)?;
                Some((crate::net::pod_uid(pod), name.clone()))
            })
            .collect();
        let wrong = || instance_problems(&uids, &dirs.run_root);
        let _ = poll_until(POD_WAIT, || wrong().is_empty().then_some(()));
        left(findings, "wrong instance count", wrong());
        // A removed or replaced pod's sandbox goes with it.
        let stray = || -> Vec<String> {
            dir_names(&world.netns_dir())
                .into_iter()
                .filter(|uid| !uids.contains_key(uid))
                .collect()
        };
        let _ = poll_until(POD_WAIT, || stray().is_empty().then_some(()));
        let stray = stray();
        if !stray.is_empty() {
            let log = world.world.agent().log();
            for uid in &stray {
                println!("--- agent log about the sandbox {uid}:");
                for line in log.lines().filter(|l| l.contains(uid.as_str())).take(80) {
                    println!("{line}");
                }
            }
        }
        left(findings, "netns", stray);
        let moved: Vec<String> = self
            .steady_pids
            .iter()
            .filter_map(|(name, pid)| {
                let pod = crate::agent::object(&status, "Pod", "default", name)?;
                let now = running_pid(pod, "app");
                (now != Some(*pid)).then(|| format!("steady pod {name}: pid {pid} became {now:?}"))
            })
            .collect();
        left(findings, "wrong instance count", moved);
    }

    /// Removes every manifest and waits for the pods to go; records what
    /// is left.
    pub fn remove_all(
        &mut self,
        findings: &mut Findings,
        world: &NetWorld,
        own_mounts: &[PathBuf],
    ) {
        for name in self.steady.iter().chain(&self.churn) {
            let _ = std::fs::remove_file(world.world.dirs.manifests.join(format!("{name}.yaml")));
        }
        self.desired.clear();
        let gone = poll_until(POD_WAIT, || {
            let status = crate::agent::status_json(&world.world.dirs)?;
            crate::agent::names_of(&status, "Pod")
                .is_empty()
                .then_some(())
        });
        findings.check("removal", gone.is_some(), || {
            "the pods were not removed within a minute".to_string()
        });
        check_nothing_left(findings, world, own_mounts);
    }

    /// "N creates, N edits, N deletes"
    pub fn ops_text(&self) -> String {
        format!(
            "{} creates, {} edits, {} deletes",
            self.ops[0], self.ops[1], self.ops[2]
        )
    }
}

/// Instances per pod (runtime state directories and shims, by the pod
/// uid their container ids start with) other than exactly one.
fn instance_problems(uids: &BTreeMap<String, String>, run_root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let runtime: Vec<String> = runtime_instances(run_root)
        .into_iter()
        .filter_map(|entry| entry.split_once('/').map(|(_, id)| id.to_string()))
        .collect();
    let shims: Vec<String> = shims(run_root).into_iter().map(|(_, id)| id).collect();
    for (what, ids) in [("runtime state", &runtime), ("shim", &shims)] {
        for (uid, name) in uids {
            let n = ids
                .iter()
                .filter(|id| id.starts_with(&format!("{uid}-")))
                .count();
            if n != 1 {
                problems.push(format!("pod {name} has {n} {what} instances"));
            }
        }
        for id in ids.iter() {
            if !uids.keys().any(|uid| id.starts_with(&format!("{uid}-"))) {
                problems.push(format!("{what} {id} belongs to no desired pod"));
            }
        }
    }
    problems
}

fn pod_summary(status: &serde_json::Value) -> String {
    status["objects"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .filter(|o| o["kind"] == "Pod")
                .map(|o| format!("{}={} ({})", o["name"], o["phase"], o["message"]))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The durable invariants of `root`, as `invariant` failures.
pub fn check_durable(findings: &mut Findings, root: &Path) {
    invariants(findings, durable_invariants(root));
}
