//! The examples users copy must be right: `berth validate` accepts all of
//! them together (no conflicts), every `v1` object also validates against the
//! upstream Kubernetes v1.31 schema (so `kubectl apply` takes the same file),
//! every object validates against berth's own published schema, and every
//! file's yaml-language-server modeline points at its kind's schema.
//!
//! JSON Schema validation runs Debian's python3-jsonschema (installed by
//! scripts/install-deps.sh): lighter than a Rust validator crate, and the
//! same library many editors' tooling uses.

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

/// The documents of a manifest file as JSON values, read with the same
/// YAML rules berth uses (YAML 1.2 booleans, octal modes like Kubernetes).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("reading an example");
    let mut options = serde_saphyr::options! { strict_booleans: true };
    options.legacy_octal_numbers = true;
    serde_saphyr::from_multiple_with_options::<Value>(&text, options)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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

/// Checks documents against schemas with python3-jsonschema. Each case is
/// `{name, schema (path), draft (4 or 7), doc, valid (expected)}`; returns
/// the cases whose outcome differs, with the validator's reasons.
fn check_with_python(cases: &[Value]) -> Vec<String> {
    const SCRIPT: &str = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit("python3-jsonschema is missing: run scripts/install-deps.sh (apt-get install python3-jsonschema)")
validators = {4: jsonschema.Draft4Validator, 7: jsonschema.Draft7Validator}
schemas = {}
for case in json.load(sys.stdin):
    path = case["schema"]
    if path not in schemas:
        with open(path) as f:
            schemas[path] = json.load(f)
    validator = validators[case["draft"]](schemas[path])
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(case["doc"])]
    if bool(errors) == case["valid"]:
        print(json.dumps({"name": case["name"], "errors": errors[:5]}))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (scripts/install-deps.sh)");
    let input = serde_json::to_vec(cases).expect("cases as JSON");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &input)
        .expect("writing cases");
    let output = child.wait_with_output().expect("running python3");
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn kubernetes_schema(kind: &str) -> Option<PathBuf> {
    let file = match kind {
        "Pod" => "pod-v1.json",
        "ConfigMap" => "configmap-v1.json",
        "Secret" => "secret-v1.json",
        _ => return None,
    };
    Some(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/k8s-schema")
            .join(file),
    )
}

fn berth_schema(kind: &str) -> PathBuf {
    repo()
        .join("schemas")
        .join(format!("{}.json", kind.to_lowercase()))
}

#[test]
fn examples_validate_against_the_kubernetes_and_berth_schemas() {
    let mut files = Vec::new();
    manifest_files(&examples(), &mut files);
    let mut cases = Vec::new();
    let mut v1_objects = 0;
    for file in &files {
        for (index, doc) in documents(file).into_iter().enumerate() {
            let kind = doc["kind"]
                .as_str()
                .expect("every example has a kind")
                .to_owned();
            let name = format!("{}#{index} ({kind})", file.display());
            if doc["apiVersion"] == "v1" {
                let schema = kubernetes_schema(&kind).expect("v1 kinds are Pod, ConfigMap, Secret");
                v1_objects += 1;
                cases.push(json!({"name": format!("{name} vs Kubernetes v1.31"), "schema": schema, "draft": 4, "doc": doc.clone(), "valid": true}));
            }
            cases.push(json!({"name": format!("{name} vs schemas/"), "schema": berth_schema(&kind), "draft": 7, "doc": doc, "valid": true}));
        }
    }
    assert!(v1_objects >= 7, "only {v1_objects} v1 objects in examples/");

    // The schemas must also reject what berth rejects, or editors would not
    // flag it: a misspelt field, a wrong type.
    let typo = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "x", "image": "busybox", "imagePulPolicy": "Always"}]}});
    let wrong_type = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "x", "image": "busybox", "ports": [{"containerPort": "http"}]}]}});
    let ignored_field = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "creationTimestamp": null},
        "spec": {"priorityClassName": "system-node-critical", "containers": [{"name": "x", "image": "busybox"}]}, "status": {}});
    cases.push(json!({"name": "typo", "schema": berth_schema("Pod"), "draft": 7, "doc": typo, "valid": false}));
    cases.push(json!({"name": "wrong type", "schema": berth_schema("Pod"), "draft": 7, "doc": wrong_type, "valid": false}));
    cases.push(json!({"name": "ignored Kubernetes fields", "schema": berth_schema("Pod"), "draft": 7, "doc": ignored_field, "valid": true}));

    let failures = check_with_python(&cases);
    assert!(
        failures.is_empty(),
        "unexpected schema results:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_example_names_its_kinds_schema_in_a_modeline() {
    let mut files = Vec::new();
    manifest_files(&examples(), &mut files);
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
        let docs = documents(file);
        let kind = docs[0]["kind"].as_str().expect("kind");
        assert!(
            docs.iter().all(|d| d["kind"] == kind),
            "{}: one kind per file, so one schema fits",
            file.display()
        );
        let target = file.parent().expect("parent").join(modeline);
        let target = target
            .canonicalize()
            .unwrap_or_else(|e| panic!("{}: {} ({e})", file.display(), target.display()));
        let expected = berth_schema(kind).canonicalize().expect("schema exists");
        assert_eq!(
            target,
            expected,
            "{}: modeline points at the wrong schema",
            file.display()
        );
    }
}
