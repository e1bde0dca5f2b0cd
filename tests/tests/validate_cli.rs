//! `berth validate` reads a directory the way the agent does (which files
//! count, symlinked `..data` trees, certs.d), and `berth schema --out` writes
//! exactly the checked-in `schemas/`.

use std::os::unix::fs::symlink;
use std::path::Path;

use berth_e2e::{TestDirs, berth};
use serde_json::Value;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n    - name: app\n      image: localhost/berth/busybox:1.35\n";

fn pod(name: &str) -> String {
    POD.replace("NAME", name)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn objects(report: &Value) -> Vec<String> {
    let mut objects: Vec<String> = report["files"]
        .as_array()
        .expect("files")
        .iter()
        .flat_map(|f| f["objects"].as_array().expect("objects").clone())
        .map(|o| o.as_str().expect("key").to_owned())
        .collect();
    objects.sort();
    objects
}

#[test]
fn a_directory_is_read_with_the_agents_rules() {
    let dirs = TestDirs::new();
    let m = &dirs.manifests;
    write(&m.join("a.yaml"), &pod("a"));
    write(&m.join("nested/deeper/b.yml"), &pod("b"));
    write(
        &m.join("c.json"),
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}"#,
    );
    // Editor leftovers, backups, hidden files and other extensions: ignored,
    // even though they are broken.
    for ignored in [
        "a.yaml.bak",
        "a.yaml~",
        ".a.yaml.swp",
        ".#a.yaml",
        "4913",
        ".hidden.yaml",
        ".git/x.yaml",
        "notes.txt",
    ] {
        write(&m.join(ignored), "this: [is not valid");
    }
    // The Kubernetes ConfigMap-volume layout: files are symlinks through
    // `..data` into a timestamped directory, which is only read through them.
    write(&m.join("cm/..2026_01_01_00_00_00.000/d.yaml"), &pod("d"));
    symlink("..2026_01_01_00_00_00.000", m.join("cm/..data")).expect("symlink ..data");
    symlink("..data/d.yaml", m.join("cm/d.yaml")).expect("symlink d.yaml");
    write(
        &m.join("certs.d/registry.local:5000/hosts.toml"),
        "server = \"https://registry.local:5000\"\n[host.\"https://mirror.local\"]\n  capabilities = [\"pull\"]\n",
    );

    // With no PATH, validate reads --manifests.
    let output = dirs.berth(&["validate", "-o", "json"]);
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_eq!(
        objects(&report),
        [
            "ConfigMap/default/c",
            "Pod/default/a",
            "Pod/default/b",
            "Pod/default/d",
            "Registry/registry.local:5000"
        ]
    );
    assert_eq!(
        report["files"].as_array().map(Vec::len),
        Some(5),
        "{report:#}"
    );
}

#[test]
fn warnings_alone_exit_zero_and_errors_exit_one() {
    let dirs = TestDirs::new();
    let file = dirs.manifests.join("pod.yaml");
    write(&file, &format!("{}  schedulerName: custom\n", pod("w")));
    let output = berth(&["validate", file.to_str().expect("utf-8")]);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "pod.yaml:9:3: warning: `spec.schedulerName` is a Kubernetes field that berth ignores"
        ),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("1 file, 1 valid object: 0 errors, 1 warning\n"),
        "{stdout}"
    );

    write(&file, &format!("{}  nodeNme: node-1\n", pod("w")));
    let output = berth(&["validate", file.to_str().expect("utf-8")]);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "pod.yaml:9:3: error: unknown field `nodeNme` in `spec`; did you mean `nodeName`?"
        ),
        "{stdout}"
    );

    let output = berth(&["validate", "/nonexistent/berth-manifests"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert!(
        stderr.contains("cannot read /nonexistent/berth-manifests"),
        "{stderr}"
    );
}

#[test]
fn berth_schema_writes_the_checked_in_schemas() {
    let dirs = TestDirs::new();
    let out = dirs.temp.path().join("schemas");
    let output = berth(&["schema", "--out", out.to_str().expect("utf-8")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("listing output")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "configmap.json",
            "image.json",
            "pod.json",
            "registry.json",
            "secret.json"
        ]
    );
    for name in names {
        let written = std::fs::read(out.join(&name)).expect("written schema");
        let committed = std::fs::read(checked_in.join(&name)).expect("checked-in schema");
        assert!(
            written == committed,
            "schemas/{name} differs from `berth schema` output: run `make schemas`"
        );
    }
}
