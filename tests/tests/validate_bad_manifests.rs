//! `berth validate` on a directory of broken manifests: every problem is
//! reported at its line and column, nothing panics, hostile input (alias
//! bombs, deep nesting, a 50 MB file) is refused with a clear error, and
//! the process stays small.
//!
//! The fixtures live in `tests/fixtures/manifests/bad/`, with the expected
//! diagnostics in `expected.txt` (`file:line:col: severity: fragment`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_e2e::{berth_bin, wait_until};
use serde_json::Value;

/// Peak memory a `berth validate` run may use. A debug build validating
/// the whole fixture directory peaks near 17 MiB; without the size cap and
/// the parser budgets, the 50 MB file or the billion-laughs document would
/// need hundreds of MiB.
const MAX_RSS_KIB: i64 = 64 * 1024;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/manifests")
}

/// Runs `berth validate ARGS` with a deadline (a hang is a failure, not a
/// wait), returning its output.
fn validate(args: &[&str]) -> Output {
    let mut child = Command::new(berth_bin())
        .arg("validate")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning berth validate");
    // Drain stdout on a thread so a large report cannot block the child.
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buffer).expect("reading stdout");
        buffer
    });
    let status = wait_until(Duration::from_secs(120), "berth validate to finish", || {
        child.try_wait().expect("waiting for berth validate")
    });
    let stdout = reader.join().expect("stdout reader");
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_end(&mut pipe, &mut stderr).expect("reading stderr");
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Peak resident set of the largest child this test process has waited for.
#[allow(unsafe_code)]
fn children_peak_rss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory sized for a `rusage`, which
    // getrusage fills in; RUSAGE_CHILDREN is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(
        rc,
        0,
        "getrusage failed: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: getrusage succeeded, so the struct is initialised (and an
    // all-zero rusage is valid anyway).
    unsafe { usage.assume_init() }.ru_maxrss
}

/// One expected diagnostic.
#[derive(Debug)]
struct Expected {
    file: String,
    line: u64,
    column: u64,
    severity: String,
    fragment: String,
}

fn expected_diagnostics(dir: &Path) -> Vec<Expected> {
    let text = std::fs::read_to_string(dir.join("expected.txt")).expect("reading expected.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut parts = line.splitn(5, ':');
            let mut next = || {
                parts
                    .next()
                    .expect("file:line:col: severity: fragment")
                    .trim()
                    .to_owned()
            };
            let (file, line_no, column, severity, fragment) =
                (next(), next(), next(), next(), next());
            Expected {
                file,
                line: line_no.parse().expect("line number"),
                column: column.parse().expect("column number"),
                severity,
                fragment,
            }
        })
        .collect()
}

/// The JSON report's diagnostics as (relative file, line, column, severity, message).
fn reported(report: &Value, dir: &Path) -> Vec<(String, u64, u64, String, String)> {
    report["diagnostics"]
        .as_array()
        .expect("diagnostics array")
        .iter()
        .map(|d| {
            let file = Path::new(d["file"].as_str().expect("file"));
            let relative = file
                .strip_prefix(dir)
                .unwrap_or(file)
                .to_string_lossy()
                .into_owned();
            (
                relative,
                d["line"].as_u64().expect("line"),
                d["column"].as_u64().expect("column"),
                d["severity"].as_str().expect("severity").to_owned(),
                d["message"].as_str().expect("message").to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_bad_manifest_is_reported_at_its_line_and_column() {
    let dir = fixtures().join("bad");
    let expected = expected_diagnostics(&dir);

    let output = validate(&["-o", "json", dir.to_str().expect("utf-8 path")]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "errors exit 1; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("-o json prints JSON");
    let mut unmatched = reported(&report, &dir);

    let mut missing = Vec::new();
    for e in &expected {
        let found = unmatched
            .iter()
            .position(|(file, line, column, severity, message)| {
                *file == e.file
                    && *line == e.line
                    && *column == e.column
                    && *severity == e.severity
                    && message.contains(&e.fragment)
            });
        match found {
            Some(i) => {
                unmatched.remove(i);
            }
            None => missing.push(e),
        }
    }
    assert!(
        missing.is_empty() && unmatched.is_empty(),
        "expected but not reported: {missing:#?}\nreported but not expected: {unmatched:#?}"
    );

    // Every fixture is covered by at least one expected diagnostic, and there
    // are enough of them to mean something.
    let mut fixture_files = Vec::new();
    collect_files(&dir, &dir, &mut fixture_files);
    fixture_files.retain(|f| f != "expected.txt");
    let uncovered: Vec<&String> = fixture_files
        .iter()
        .filter(|f| !expected.iter().any(|e| &e.file == *f))
        .collect();
    assert!(
        uncovered.is_empty(),
        "fixtures without an expected diagnostic: {uncovered:?}"
    );
    assert!(
        fixture_files.len() >= 30,
        "only {} bad fixtures",
        fixture_files.len()
    );

    // The report counts what it lists.
    let errors = expected.iter().filter(|e| e.severity == "error").count();
    assert_eq!(report["errors"].as_u64(), Some(errors as u64));

    let peak = children_peak_rss_kib();
    assert!(peak < MAX_RSS_KIB, "berth validate peaked at {peak} KiB");
}

#[test]
fn the_text_report_prints_path_line_column_lines_and_a_summary() {
    let dir = fixtures().join("bad");
    let dir_arg = dir.to_str().expect("utf-8 path");
    let output = validate(&[dir_arg]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    for e in expected_diagnostics(&dir) {
        let prefix = format!(
            "{}/{}:{}:{}: {}: ",
            dir.display(),
            e.file,
            e.line,
            e.column,
            e.severity
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(&e.fragment)),
            "no line `{prefix}…{}` in:\n{stdout}",
            e.fragment
        );
    }
    let summary = stdout.lines().last().expect("a summary line");
    assert!(
        summary.contains(" errors, ") && summary.contains("files"),
        "summary: {summary}"
    );
}

#[test]
fn a_50_mb_file_is_refused_without_being_read() {
    let temp = tempfile::tempdir().expect("temp dir");
    let big = temp.path().join("big.yaml");
    // Generated here, never committed: a plausible ConfigMap padded to 50 MB.
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n");
    let line = format!("  k{{}}: \"{}\"\n", "x".repeat(100));
    let mut i = 0;
    while text.len() < 50 * 1024 * 1024 {
        text.push_str(&line.replace("{}", &i.to_string()));
        i += 1;
    }
    std::fs::write(&big, &text).expect("writing big.yaml");
    drop(text);
    let small = temp.path().join("small.yaml");
    std::fs::write(
        &small,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: small\n",
    )
    .expect("writing small.yaml");

    let output = validate(&["-o", "json", temp.path().to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let diagnostics = reported(&report, temp.path());
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let (file, line, column, severity, message) = &diagnostics[0];
    assert_eq!(
        (file.as_str(), *line, *column, severity.as_str()),
        ("big.yaml", 1, 1, "error")
    );
    assert!(message.contains("over the 4 MiB limit"), "{message}");
    let objects: Vec<&str> = report["files"]
        .as_array()
        .expect("files")
        .iter()
        .flat_map(|f| {
            f["objects"]
                .as_array()
                .expect("objects")
                .iter()
                .filter_map(Value::as_str)
        })
        .collect();
    assert_eq!(
        objects,
        ["ConfigMap/default/small"],
        "the other file is still validated"
    );

    let peak = children_peak_rss_kib();
    assert!(peak < MAX_RSS_KIB, "berth validate peaked at {peak} KiB");
}

/// Real manifests as kubeadm and `kubectl run --dry-run=client -o yaml`
/// write them (`priorityClassName: system-node-critical`, `hostNetwork`,
/// `seccompProfile: RuntimeDefault`, `status: {}`, `creationTimestamp:
/// null`): nothing in them is beyond one node, so nothing is said.
#[test]
fn kubeadm_and_kubectl_manifests_validate_without_a_word() {
    for sub in ["good/static-pods", "good/kubectl"] {
        let dir = fixtures().join(sub);
        let output = validate(&["-o", "json", dir.to_str().expect("utf-8 path")]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
        let diagnostics = reported(&report, &dir);
        assert!(diagnostics.is_empty(), "{sub}: {diagnostics:#?}");
        assert!(
            report["files"].as_array().is_some_and(|f| !f.is_empty()),
            "{report:#}"
        );
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("reading fixtures") {
        let path = entry.expect("fixture entry").path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else {
            out.push(
                path.strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}
