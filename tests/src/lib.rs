//! Shared test kit for berth's end-to-end tests: locate the built binaries,
//! name kernel objects uniquely, wait for conditions with deadlines, and
//! refuse to run privileged tests as non-root (loudly, never a silent pass).
//!
//! The binaries are built once per test run (`make test` runs
//! `cargo build --workspace --bins` before `cargo nextest run`).

pub mod chaos;
pub mod crash;
pub mod crun;
pub mod grpc;
pub mod images;
pub mod net;
pub mod pods;
pub mod proxy;
pub mod pull;
pub mod registry;
pub mod rootfs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails the test with a clear message unless it runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (namespaces, mounts, an OCI runtime); run it as root, e.g. `sudo make test`"
    );
}

/// The workspace's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

fn built_binary(name: &str, env_override: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_override) {
        return PathBuf::from(path);
    }
    let path = target_dir().join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (make test does this)",
        path.display()
    );
    path
}

/// The `berth` binary under test (`BERTH_BIN` overrides).
pub fn berth_bin() -> PathBuf {
    built_binary("berth", "BERTH_BIN")
}

/// The `berth-shim` binary under test (`BERTH_SHIM_BIN` overrides).
pub fn shim_bin() -> PathBuf {
    built_binary("berth-shim", "BERTH_SHIM_BIN")
}

/// A name unique to this test process, short enough for an interface name
/// (IFNAMSIZ is 16 including the NUL): `<prefix><pid hex><counter hex>`.
/// Every kernel object a test creates starts with `bt`, so a leak is easy to
/// find and never collides with a real host object.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("bt{prefix}{:x}{n:x}", std::process::id());
    assert!(
        name.len() <= 15,
        "name {name} is too long for a kernel object"
    );
    name
}

/// Polls `probe` until it returns `Some`, or returns `None` once `timeout`
/// has passed (so the caller can fail with what it saw last). The pause
/// between tries grows from 5 ms to 100 ms. This is the only way tests
/// wait: every other wait in the kit is built on it.
pub fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Polls `probe` until it returns `Some`, or fails the test after `timeout`
/// naming what was awaited.
pub fn wait_until<T>(timeout: Duration, what: &str, probe: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, probe)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// A `Key:   N kB` line of a /proc file (`/proc/meminfo`,
/// `/proc/<pid>/status`), in bytes.
pub fn proc_kib_field(file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|err| panic!("reading {file}: {err}"));
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {file}"));
    kib * 1024
}

/// Runs `berth` with `args` and returns its output (any exit code).
pub fn berth(args: &[&str]) -> Output {
    Command::new(berth_bin())
        .args(args)
        .output()
        .expect("spawning berth")
}

/// The three directories an agent under test uses, in one temp dir.
pub struct TestDirs {
    pub temp: tempfile::TempDir,
    pub root: PathBuf,
    pub run_root: PathBuf,
    pub manifests: PathBuf,
}

impl TestDirs {
    pub fn new() -> Self {
        let temp = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("creating a temp dir");
        let root = temp.path().join("root");
        let run_root = temp.path().join("run");
        let manifests = temp.path().join("manifests");
        for dir in [&root, &run_root, &manifests] {
            std::fs::create_dir_all(dir).expect("creating test dirs");
        }
        Self {
            temp,
            root,
            run_root,
            manifests,
        }
    }

    /// `berth --root .. --run-root .. --manifests .. <args>` as a Command.
    pub fn berth_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(berth_bin());
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run_root)
            .arg("--manifests")
            .arg(&self.manifests)
            .args(args);
        cmd
    }

    /// Writes manifest `relative` (subdirectories allowed) atomically.
    pub fn write_manifest(&self, relative: &str, text: &str) {
        write_atomically(&self.manifests.join(relative), text);
    }

    /// Runs a berth CLI command against these directories.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_command(args).output().expect("spawning berth")
    }

    /// Runs a berth command that prints JSON (`-o json` is added), fails
    /// the test with berth's stderr if it fails, and parses its output.
    pub fn berth_json(&self, args: &[&str]) -> serde_json::Value {
        let args: Vec<&str> = args.iter().copied().chain(["-o", "json"]).collect();
        let output = self.berth(&args);
        assert!(
            output.status.success(),
            "berth {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("berth {}: not JSON: {err}", args.join(" ")))
    }
}

impl Default for TestDirs {
    fn default() -> Self {
        Self::new()
    }
}
pub mod agent;
pub mod layers;

/// Runs each case once per OCI runtime, as `runc::<case>` and
/// `crun::<case>`; a case is a `fn(runtime: &str)` in the calling file.
#[macro_export]
macro_rules! for_each_runtime {
    ($($case:ident),* $(,)?) => {
        mod runc {
            $( #[test] fn $case() { super::$case("runc") } )*
        }
        mod crun {
            $( #[test] fn $case() { super::$case("crun") } )*
        }
    };
}

/// The cases of a runtime matrix that also run under gVisor (`gvisor`:
/// runsc as a handler). runsc takes about half a second to start a
/// container, so a file lists only the cases gVisor changes.
#[macro_export]
macro_rules! under_gvisor {
    ($($case:ident),* $(,)?) => {
        mod gvisor {
            $( #[test] fn $case() { super::$case("gvisor") } )*
        }
    };
}

/// Writes a file the way careful tools do: a hidden temp file next to it,
/// renamed over it (parent directories are created).
pub fn write_atomically(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("parent directories");
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 file name");
    let temp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temp, text).expect("writing the temp file");
    std::fs::rename(&temp, path).expect("renaming it into place");
}
