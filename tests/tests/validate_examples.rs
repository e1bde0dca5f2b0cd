//! The examples users copy must be right: `berth validate` accepts all of
//! them together (no conflicts), every `v1` object also validates against the
//! upstream Kubernetes v1.31 schema (so `kubectl apply` takes the same file),
//! every object validates against berth's own published schema, and every
//! file's yaml-language-server modeline points at its kind's schema.
//!
//! The schema checks run Debian's python3-jsonschema and python3-yaml
//! (scripts/install-deps.sh): lighter than a Rust validator crate, and
//! PyYAML reads YAML 1.1 the way kubectl does, so "valid for Kubernetes"
//! means what kubectl would send.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_e2e::berth;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> PathBuf {
    repo().join("examples")
}

/// Every `*.yaml`, `*.yml`, `*.json` under `dir`.
fn manifest_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("reading examples")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            manifest_files(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
}

fn kubernetes_schemas() -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/k8s-schema");
    json!({
        "Pod": dir.join("pod-v1.json"),
        "ConfigMap": dir.join("configmap-v1.json"),
        "Secret": dir.join("secret-v1.json"),
    })
}

fn berth_schema(kind: &str) -> PathBuf {
    repo()
        .join("schemas")
        .join(format!("{}.json", kind.to_lowercase()))
}

/// Reads every file's YAML documents with PyYAML and checks each against
/// the schemas: v1 kinds against Kubernetes' (draft 4), every kind against
/// berth's (draft 7). `extra` holds inline `{name, kind, doc, valid}` cases.
/// Prints one JSON line per document (`{file, kind}`) and one per outcome
/// that differs from what was expected (`{fail, errors}`).
const CHECKER: &str = r#"
import json, sys
try:
    import jsonschema, yaml
except ImportError as e:
    sys.exit(f"{e}: run scripts/install-deps.sh (apt-get install python3-jsonschema python3-yaml)")
job = json.load(sys.stdin)
loaded = {}
def schema(path):
    if path not in loaded:
        with open(path) as f:
            loaded[path] = json.load(f)
    return loaded[path]
def check(name, doc, path, validator, valid):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema(path)).iter_errors(doc)]
    if bool(errors) == valid:
        print(json.dumps({"fail": name, "errors": errors[:5]}))
def check_all(name, doc, valid):
    kind = doc.get("kind")
    if doc.get("apiVersion") == "v1":
        check(f"{name} vs Kubernetes v1.31", doc, job["kubernetes"][kind], jsonschema.Draft4Validator, valid)
    check(f"{name} vs schemas/", doc, f"{job['berth']}/{kind.lower()}.json", jsonschema.Draft7Validator, valid)
for path in job["files"]:
    with open(path) as f:
        for index, doc in enumerate(d for d in yaml.safe_load_all(f) if d is not None):
            print(json.dumps({"file": path, "kind": doc.get("kind"), "apiVersion": doc.get("apiVersion")}))
            check_all(f"{path}#{index}", doc, True)
for case in job["extra"]:
    check_all(case["name"], case["doc"], case["valid"])
"#;

fn run_checker(files: &[PathBuf], extra: &[Value]) -> Vec<Value> {
    let job = json!({
        "files": files,
        "kubernetes": kubernetes_schemas(),
        "berth": repo().join("schemas"),
        "extra": extra,
    });
    let mut child = Command::new("python3")
        .args(["-c", CHECKER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (scripts/install-deps.sh)");
    let input = serde_json::to_vec(&job).expect("job as JSON");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &input)
        .expect("writing the job");
    let output = child.wait_with_output().expect("running python3");
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn berth_validate_accepts_every_example_together() {
    let dir = examples();
    let output = berth(&["validate", "-o", "json", dir.to_str().expect("utf-8 path")]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(
        output.status.code(),
        Some(0),
        "examples must validate: {:#}",
        report["diagnostics"]
    );
    for diagnostic in report["diagnostics"].as_array().expect("diagnostics") {
        let file = diagnostic["file"].as_str().expect("file");
        assert!(
            file.contains("/static-pods/"),
            "only the kubeadm-style static pod may warn (about the Kubernetes fields berth ignores): {diagnostic:#}"
        );
    }
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
    for expected in [
        "Pod/default/hello",
        "Pod/default/web",
        "ConfigMap/default/web-content",
        "Pod/default/config-demo",
        "Secret/default/app-secret",
        "Image/busybox",
        "Image/busybox-offline",
        "Registry/registry.local:5000",
        "Registry/docker.io",
        "Pod/kube-system/log-tailer",
    ] {
        assert!(
            objects.contains(&expected),
            "{expected} missing from {objects:?}"
        );
    }
}

#[test]
fn examples_validate_against_the_kubernetes_and_berth_schemas() {
    let mut files = Vec::new();
    manifest_files(&examples(), &mut files);

    // The schemas must also reject what berth rejects, or editors would not
    // flag it (a misspelt field, a wrong type), and accept the Kubernetes
    // fields berth only warns about.
    let pod = |container: Value, extra_spec: Value| {
        let mut doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
            "spec": {"containers": [container]}});
        if let (Some(spec), Some(extra)) = (doc["spec"].as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        doc
    };
    let extra = [
        json!({"name": "typo", "valid": false,
            "doc": pod(json!({"name": "x", "image": "busybox", "imagePulPolicy": "Always"}), json!({}))}),
        json!({"name": "wrong type", "valid": false,
            "doc": pod(json!({"name": "x", "image": "busybox", "ports": [{"containerPort": "http"}]}), json!({}))}),
        json!({"name": "ignored Kubernetes fields", "valid": true,
            "doc": pod(json!({"name": "x", "image": "busybox"}), json!({"priorityClassName": "system-node-critical"}))}),
    ];
    let lines = run_checker(&files, &extra);
    let failures: Vec<&Value> = lines.iter().filter(|l| l.get("fail").is_some()).collect();
    assert!(
        failures.is_empty(),
        "unexpected schema results: {failures:#?}"
    );
    let documents: Vec<&Value> = lines.iter().filter(|l| l.get("file").is_some()).collect();
    let v1 = documents.iter().filter(|d| d["apiVersion"] == "v1").count();
    assert!(v1 >= 7, "only {v1} v1 objects in examples/: {documents:#?}");
}

#[test]
fn every_example_names_its_kinds_schema_in_a_modeline() {
    let mut files = Vec::new();
    manifest_files(&examples(), &mut files);
    let lines = run_checker(&files, &[]);
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e != "json"))
    {
        let text = std::fs::read_to_string(file).expect("reading an example");
        let modeline = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| {
                panic!(
                    "{} does not start with a yaml-language-server modeline",
                    file.display()
                )
            });
        let kinds: Vec<&str> = lines
            .iter()
            .filter(|l| l["file"].as_str() == file.to_str())
            .filter_map(|l| l["kind"].as_str())
            .collect();
        assert!(
            !kinds.is_empty() && kinds.iter().all(|k| *k == kinds[0]),
            "{}: one kind per file, so one schema fits ({kinds:?})",
            file.display()
        );
        let target = file.parent().expect("parent").join(modeline);
        let target = target
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {} ({e})", file.display(), target.display()));
        let expected = berth_schema(kinds[0])
            .canonicalize()
            .expect("schema exists");
        assert_eq!(
            target,
            expected,
            "{}: modeline points at the wrong schema",
            file.display()
        );
    }
}
