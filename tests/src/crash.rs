//! The crash-consistency kit: where a berth process stopped at one of its
//! crash points (`BERTH_TEST_CRASH_AT=N` kills it at the N-th,
//! `BERTH_TEST_CRASH_POINTS=1` prints every one; see
//! `berth::fsutil::crash`), and the invariants a crash at any of them must
//! leave intact in a `--root`:
//!
//! - [`durable_invariants`] hold at every instant, right after the crash:
//!   every blob hashes to its name, every image record has its blobs (and
//!   its snapshots, once recorded as unpacked), every pod record parses;
//! - [`recovered_invariants`] hold once the next agent ran its recovery
//!   and a garbage collection: no staging or temp leftovers, no snapshot
//!   record without its directory, no lease of a dead process, no IP
//!   lease without a pod record, no
//!   pod record whose address is not leased, no container layer without a
//!   record.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub use berth::fsutil::crash::{CRASH_AT_ENV, CRASH_MATCH_ENV, CRASH_POINTS_ENV};

/// One `berth: crash point N (name: subject)` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashPoint {
    pub n: u64,
    pub name: String,
    pub subject: String,
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} ({})", self.n, self.name, self.subject)
    }
}

/// Every crash point line in a process's stderr, in order.
pub fn crash_points(log: &str) -> Vec<CrashPoint> {
    log.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("berth: crash point ")?;
            let (n, rest) = rest.split_once(" (")?;
            let (name, subject) = rest.strip_suffix(')')?.split_once(": ")?;
            Some(CrashPoint {
                n: n.parse().ok()?,
                name: name.to_string(),
                subject: subject.to_string(),
            })
        })
        .collect()
}

/// One invariant checked over a state: what was found wrong (nothing, if
/// it holds).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub invariant: &'static str,
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn holds(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the checks of one run found: how many ran, and each failure
/// with the phase it was found in.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub checked: usize,
    pub failures: Vec<String>,
}

impl Findings {
    /// Records invariant verdicts found in `phase` ("after the crash", …).
    pub fn verdicts(&mut self, phase: &str, verdicts: Vec<Verdict>) {
        self.checked += verdicts.len();
        for verdict in verdicts {
            for problem in verdict.problems {
                self.failures
                    .push(format!("{phase}: {}: {problem}", verdict.invariant));
            }
        }
    }

    /// Records one more check; `problem` describes it when it failed.
    pub fn check(&mut self, phase: &str, holds: bool, problem: impl FnOnce() -> String) {
        self.checked += 1;
        if !holds {
            self.failures.push(format!("{phase}: {}", problem()));
        }
    }
}

fn verdict(invariant: &'static str, problems: Vec<String>) -> Verdict {
    Verdict {
        invariant,
        problems,
    }
}

fn paths(root: &Path) -> berth::paths::Paths {
    // Only --root matters here; the run root is the agent's business.
    berth::paths::Paths::new(root, root)
}

/// Invariants that hold at every instant, also right after a crash.
pub fn durable_invariants(root: &Path) -> Vec<Verdict> {
    vec![
        verdict("blobs match their digests", blob_problems(root)),
        verdict("image records are complete", image_problems(root)),
        verdict("pod records parse", pod_record_problems(root)),
    ]
}

/// Invariants that hold once an agent recovered from the crash and
/// collected garbage. `network`: the bridge network's IPAM name, if pods
/// run on one.
pub fn recovered_invariants(root: &Path, network: Option<&str>) -> Vec<Verdict> {
    let mut verdicts = vec![
        verdict("no staging or temp leftovers", leftover_problems(root)),
        verdict(
            "every snapshot record has its directory",
            snapshot_record_problems(root),
        ),
        verdict(
            "every container layer belongs to a pod record",
            container_dir_problems(root),
        ),
        verdict(
            "no lease of a process that is gone",
            dead_lease_problems(root),
        ),
    ];
    if let Some(network) = network {
        verdicts.push(verdict(
            "every IP lease belongs to a pod record",
            orphan_lease_problems(root, network),
        ));
        verdicts.push(verdict(
            "every pod record's address is leased",
            lost_lease_problems(root, network),
        ));
    }
    verdicts
}

fn entries(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().collect())
        .unwrap_or_default()
}

fn is_sha256_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn blob_problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for entry in entries(&root.join("content/sha256")) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !is_sha256_hex(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            problems.push(format!("{} is not a blob", path.display()));
            continue;
        }
        match sha256_file(&path) {
            Ok(actual) if actual == name => {}
            Ok(actual) => problems.push(format!("blob {name} hashes to {actual}")),
            Err(err) => problems.push(format!("reading blob {name}: {err}")),
        }
    }
    problems
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

/// The image service on `root`, unless no database exists yet (opening
/// one would create it).
fn image_service(root: &Path) -> Result<Option<berth::image::service::ImageService>, String> {
    if !root.join("berth.db").exists() {
        return Ok(None);
    }
    berth::image::service::ImageService::open(&paths(root))
        .map(Some)
        .map_err(|err| format!("opening the image store: {}", berth::status::chain(&err)))
}

fn image_problems(root: &Path) -> Vec<String> {
    let service = match image_service(root) {
        Ok(Some(service)) => service,
        Ok(None) => return Vec::new(),
        Err(problem) => return vec![problem],
    };
    let images = match service.list() {
        Ok(images) => images,
        Err(err) => return vec![format!("listing images: {err}")],
    };
    let mut problems = Vec::new();
    for image in &images {
        let layers = match service.meta().layers(&image.manifest_digest) {
            Ok(layers) => layers,
            Err(err) => {
                problems.push(format!("image {}: reading its layers: {err}", image.name));
                continue;
            }
        };
        let mut blobs = vec![
            ("manifest", image.manifest_digest.clone()),
            ("config", image.config_digest.clone()),
        ];
        blobs.extend(image.index_digest.clone().map(|index| ("index", index)));
        blobs.extend(layers.iter().map(|layer| ("layer", layer.blob.clone())));
        for (what, digest) in blobs {
            if !service.content().contains(&digest).unwrap_or(false) {
                problems.push(format!(
                    "image {}: its {what} {digest} is not stored",
                    image.name
                ));
            }
        }
        // Recorded as unpacked (every layer's size recorded): every
        // snapshot must be there.
        if image.unpacked_size.is_some() {
            for layer in &layers {
                if !service.snapshots().exists(&layer.chain_id).unwrap_or(false) {
                    problems.push(format!(
                        "image {} is recorded as unpacked but snapshot {} is missing",
                        image.name, layer.chain_id
                    ));
                }
            }
        }
    }
    problems
}

fn pod_record_problems(root: &Path) -> Vec<String> {
    let (_, errors) = berth::pod::state::PodState::list(&paths(root));
    let mut problems: Vec<String> = errors.iter().map(|err| berth::status::chain(err)).collect();
    for entry in entries(&root.join("pod-state")) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".corrupt") {
            problems.push(format!("pod record {name} was set aside as corrupt"));
        }
    }
    problems
}

fn leftover_problems(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    // Work in progress is no leftover: a staging directory whose owner
    // runs (the agent's own collection moves snapshots aside there), a
    // download whose writer holds its lock. GC leaves those alone too.
    for entry in entries(&root.join("snapshots/.staging")) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = berth::image::snapshot::staging_owner(&name);
        if !owner.is_some_and(berth::fsutil::process_alive) {
            problems.push(format!("{} is left", entry.path().display()));
        }
    }
    for entry in entries(&root.join("content/ingest")) {
        if !is_locked(&entry.path()) {
            problems.push(format!("{} is left", entry.path().display()));
        }
    }
    for entry in entries(&root.join("snapshots")) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != ".staging" && !is_sha256_hex(&name) {
            problems.push(format!("{} is not a snapshot", entry.path().display()));
        }
    }
    // Files berth replaces atomically live here: the temp file of a
    // writer that is gone is a leftover (a live one's is a write going on).
    for dir in [root.to_path_buf(), root.join("pod-state")] {
        for entry in entries(&dir) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let writer = berth::fsutil::atomic::temp_writer(&name);
            if writer.is_some_and(|pid| !berth::fsutil::process_alive(pid)) {
                problems.push(format!("{} is left", entry.path().display()));
            }
        }
    }
    problems
}

/// Whether a writer holds the flock a download in progress holds on its
/// partial file.
fn is_locked(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
}

fn snapshot_record_problems(root: &Path) -> Vec<String> {
    let service = match image_service(root) {
        Ok(Some(service)) => service,
        Ok(None) => return Vec::new(),
        Err(problem) => return vec![problem],
    };
    match service.meta().recorded_snapshots() {
        Ok(chain_ids) => chain_ids
            .into_iter()
            .filter(|chain_id| !service.snapshots().exists(chain_id).unwrap_or(false))
            .map(|chain_id| format!("snapshot {chain_id} is recorded but its directory is gone"))
            .collect(),
        Err(err) => vec![format!("listing snapshot records: {err}")],
    }
}

fn dead_lease_problems(root: &Path) -> Vec<String> {
    let service = match image_service(root) {
        Ok(Some(service)) => service,
        Ok(None) => return Vec::new(),
        Err(problem) => return vec![problem],
    };
    match service.meta().lease_holders() {
        Ok(holders) => holders
            .into_iter()
            .filter(|(_, pid)| !berth::fsutil::process_alive(*pid))
            .map(|(id, pid)| format!("lease {id} of process {pid}, which is gone, is kept"))
            .collect(),
        Err(err) => vec![format!("listing leases: {err}")],
    }
}

/// Every pod record, or the problem reading them.
fn records(root: &Path) -> Vec<berth::pod::state::PodState> {
    berth::pod::state::PodState::list(&paths(root)).0
}

fn container_dir_problems(root: &Path) -> Vec<String> {
    let known: BTreeSet<String> = records(root)
        .iter()
        .flat_map(|record| record.incarnations().flat_map(|i| i.container_ids()))
        .collect();
    entries(&root.join("containers"))
        .into_iter()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|id| !known.contains(id))
        .map(|id| format!("container layer {id} belongs to no pod record"))
        .collect()
}

fn leases(root: &Path, network: &str) -> Result<Vec<netplugins::ipam::Lease>, String> {
    netplugins::ipam::IpamStore::open(&root.join("berth.db"))
        .and_then(|store| store.leases(network))
        .map_err(|err| format!("reading IP leases: {err}"))
}

fn orphan_lease_problems(root: &Path, network: &str) -> Vec<String> {
    let uids: BTreeSet<String> = records(root)
        .iter()
        .flat_map(|record| record.incarnations().map(|i| i.uid.clone()))
        .collect();
    match leases(root, network) {
        Ok(leases) => leases
            .into_iter()
            .filter(|lease| !uids.contains(&lease.pod_id))
            .map(|lease| {
                format!(
                    "{} is leased to pod {}, which has no record",
                    lease.address, lease.pod_id
                )
            })
            .collect(),
        Err(problem) => vec![problem],
    }
}

fn lost_lease_problems(root: &Path, network: &str) -> Vec<String> {
    let leases = match leases(root, network) {
        Ok(leases) => leases,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    for record in records(root) {
        let incarnation = &record.incarnation;
        let Some(status) = &incarnation.network else {
            continue;
        };
        for ip in status.pod_ips() {
            let leased = leases
                .iter()
                .any(|l| l.pod_id == incarnation.uid && std::net::IpAddr::V4(l.address) == ip);
            if !leased {
                problems.push(format!(
                    "pod {}/{} (uid {}) has address {ip}, which is not leased to it",
                    record.namespace, record.name, incarnation.uid
                ));
            }
        }
    }
    problems
}

/// What one run of a scenario with a crash found.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The point asked for.
    pub asked: u64,
    /// Where the process died (`None`: the scenario ended before point
    /// `asked`, this time).
    pub crashed_at: Option<CrashPoint>,
    /// How the state was brought back: `restart` or `power cut`.
    pub recovery: &'static str,
    /// Invariants checked (after the crash and after the recovery), and
    /// what they found.
    pub findings: Findings,
    pub seconds: f64,
}

/// The table of a sweep, printed as it goes: a row per run as the run
/// ends (a full sweep takes many minutes), then the totals.
pub struct Table {
    title: String,
    runs: Vec<RunResult>,
}

impl Table {
    pub fn new(title: &str) -> Self {
        Self::with_columns(title, ["point", "recovery", "crashed at"])
    }

    /// A table whose first three columns have other names: a chaos
    /// scenario's round, what it did and how (see `crate::chaos`).
    pub fn with_columns(title: &str, [n, how, what]: [&str; 3]) -> Self {
        println!("\n{title}");
        println!(
            "{n:>5}  {how:<10}  {what:<30}  {:>7}  {:>8}  {:>6}",
            "checked", "failures", "secs"
        );
        Self {
            title: title.to_string(),
            runs: Vec::new(),
        }
    }

    pub fn row(&mut self, run: RunResult) {
        let at = run
            .crashed_at
            .as_ref()
            .map_or_else(|| "(not reached)".to_string(), |point| point.name.clone());
        println!(
            "{:>5}  {:<10}  {:<30}  {:>7}  {:>8}  {:>6.1}",
            run.asked,
            run.recovery,
            at,
            run.findings.checked,
            run.findings.failures.len(),
            run.seconds
        );
        for failure in &run.findings.failures {
            println!("       ! {failure}");
        }
        self.runs.push(run);
    }

    /// The rows so far, for totals of another kind than [`Self::finish`]'s.
    pub fn runs(&self) -> &[RunResult] {
        &self.runs
    }

    /// Prints the totals; returns the number of runs with failures.
    pub fn finish(self) -> usize {
        let runs = &self.runs;
        let failed = runs
            .iter()
            .filter(|run| !run.findings.failures.is_empty())
            .count();
        let crashed = runs.iter().filter(|run| run.crashed_at.is_some()).count();
        let kinds: BTreeSet<&str> = runs
            .iter()
            .filter_map(|run| run.crashed_at.as_ref().map(|p| p.name.as_str()))
            .collect();
        println!(
            "{}: {} runs, {crashed} crashed at their point ({} kinds of point), {} invariant checks, {failed} failed runs, {:.0} s",
            self.title,
            runs.len(),
            kinds.len(),
            runs.iter().map(|run| run.findings.checked).sum::<usize>(),
            runs.iter().map(|run| run.seconds).sum::<f64>()
        );
        failed
    }
}

/// Which points of `1..=total` a sweep tries: every one (`full`), else
/// `short` of them spread evenly, always including the first and last.
pub fn points_to_try(total: u64, full: bool, short: u64) -> Vec<u64> {
    if full || total <= short {
        return (1..=total).collect();
    }
    let mut points: Vec<u64> = (0..short)
        .map(|i| 1 + i * (total - 1) / (short - 1).max(1))
        .collect();
    points.dedup();
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_point_lines_are_parsed_and_other_lines_skipped() {
        let log = "2026 INFO something\nberth: crash point 3 (blob renamed into place: /r/content/sha256/ab)\nberth: crash point x (bad: y)\n";
        assert_eq!(
            crash_points(log),
            [CrashPoint {
                n: 3,
                name: "blob renamed into place".into(),
                subject: "/r/content/sha256/ab".into()
            }]
        );
    }

    #[test]
    fn a_short_sweep_spreads_its_points_and_keeps_both_ends() {
        assert_eq!(points_to_try(5, false, 8), [1, 2, 3, 4, 5]);
        assert_eq!(points_to_try(100, true, 8).len(), 100);
        let short = points_to_try(100, false, 8);
        assert_eq!(short.len(), 8);
        assert_eq!((short[0], short[7]), (1, 100));
    }
}
