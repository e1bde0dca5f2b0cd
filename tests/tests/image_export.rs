//! `berth export` / `save`, `berth tag` and `berth images --check` with
//! the real neighbours: images pulled from a real registry on loopback,
//! archives read by skopeo, podman (its own storage in a temp dir) and
//! containerd (`ctr import` into a containerd of its own, in a temp dir)
//! and imported again by berth; content damaged in the store found by
//! `--check` and repaired by `berth pull`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use berth::image::service::ImageService;
use berth::paths::Paths;
use berth_e2e::images::{Entry, PushedImage, busybox_image, busybox_image_with, sha256};
use berth_e2e::pull::{pull_ok, use_server};
use berth_e2e::registry::{Registry, RegistryOptions};
use berth_e2e::{TestDirs, require_root, wait_until};
use serde_json::Value;

/// A registry with two distinct busybox images, both pulled into `dirs`.
struct Pulled {
    dirs: TestDirs,
    _registry: Registry,
    one: PushedImage,
    two: PushedImage,
}

fn pull_two() -> Pulled {
    require_root();
    let dirs = TestDirs::new();
    let registry = Registry::start(RegistryOptions::default());
    use_server(&dirs, &registry.host(), &registry.url());
    let one = busybox_image(&registry, "bt/one");
    let two = busybox_image_with(&registry, "bt/two", vec![Entry::file("etc/two", "2\n")]);
    for image in [&one, &two] {
        pull_ok(&dirs, &image.reference, &[]);
    }
    Pulled {
        dirs,
        _registry: registry,
        one,
        two,
    }
}

/// Gives image one the second name `registry.invalid/bt/alias:1`.
fn tag_alias(pulled: &Pulled) -> &'static str {
    let alias = "registry.invalid/bt/alias:1";
    ok(
        pulled.dirs.berth(&["tag", &pulled.one.reference, alias]),
        "berth tag",
    );
    alias
}

fn ok(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"));
    ok(output, &format!("{program} {}", args.join(" ")))
}

/// The string values of `keys` in `value`, in that order.
fn strings<const N: usize>(value: &Value, keys: [&str; N]) -> [String; N] {
    keys.map(|key| {
        value[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string {key:?} in {value}"))
            .to_owned()
    })
}

/// [name, manifestDigest, configDigest] of `berth images -o json`.
fn stored(dirs: &TestDirs) -> Vec<[String; 3]> {
    let images = dirs.berth_json(&["images"]);
    let mut rows: Vec<[String; 3]> = images
        .as_array()
        .expect("an array")
        .iter()
        .map(|image| strings(image, ["name", "manifestDigest", "configDigest"]))
        .collect();
    rows.sort();
    rows
}

fn export(dirs: &TestDirs, format: &str, names: &[&str], file: &Path) {
    let mut args = vec![
        "export",
        "--format",
        format,
        "-o",
        file.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(names);
    ok(dirs.berth(&args), "berth export");
    assert!(file.is_file(), "{} was not written", file.display());
}

fn reimported(archive: &Path) -> Vec<[String; 3]> {
    let fresh = TestDirs::new();
    ok(
        fresh.berth(&["import", archive.to_str().expect("utf-8")]),
        "berth import of the export",
    );
    stored(&fresh)
}

/// `skopeo inspect --raw TRANSPORT:ARCHIVE:NAME`: the manifest skopeo reads.
fn skopeo_raw(transport: &str, archive: &Path, name: &str) -> Output {
    let source = format!("{transport}:{}:{name}", archive.display());
    run("skopeo", &["inspect", "--raw", &source])
}

/// podman with all of its state in a temp dir, removed on drop.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("berth-podman-")
                .tempdir()
                .expect("podman temp dir"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("runroot");
        let mut all = vec![
            "--root",
            root.to_str().expect("utf-8"),
            "--runroot",
            runroot.to_str().expect("utf-8"),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
        ];
        all.extend_from_slice(args);
        run("podman", &all)
    }

    /// Names and ids (config digests) of the images podman stores.
    fn images(&self) -> Vec<(String, String)> {
        let output = self.run(&["images", "--format", "json"]);
        let images: Value = serde_json::from_slice(&output.stdout).expect("podman images JSON");
        let mut rows = Vec::new();
        for image in images.as_array().expect("an array") {
            for name in image["Names"].as_array().into_iter().flatten() {
                rows.push((
                    name.as_str().expect("name").to_owned(),
                    format!("sha256:{}", image["Id"].as_str().expect("id")),
                ));
            }
        }
        // podman 4 lists an image once per name it has.
        rows.sort();
        rows.dedup();
        rows
    }
}

/// A containerd of its own (root, state, socket in a temp dir; the CRI
/// plugin off), stopped by PID on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-containerd-")
            .tempdir()
            .expect("containerd temp dir");
        let at = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\naddress = {socket:?}\n[ttrpc]\naddress = {ttrpc:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\npath = {opt:?}\n",
            root = at("root"),
            state = at("state"),
            socket = at("c.sock"),
            ttrpc = at("c.sock.ttrpc"),
            opt = at("opt"),
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("containerd config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting containerd (apt-get install containerd)");
        let containerd = Self { child, dir };
        wait_until(
            std::time::Duration::from_secs(30),
            "containerd to serve",
            || containerd.ctr(&["version"]).status.success().then_some(()),
        );
        containerd
    }

    /// `ctr --address … -n berth-test ARGS`, whatever its exit.
    fn ctr(&self, args: &[&str]) -> Output {
        let socket = self.dir.path().join("c.sock");
        Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "berth-test"])
            .args(args)
            .output()
            .expect("running ctr")
    }

    /// Imports `archive` (unpacked with the native snapshotter: no mounts).
    fn import(&self, archive: &Path) {
        let archive = archive.to_str().expect("utf-8");
        ok(
            self.ctr(&["images", "import", "--snapshotter", "native", archive]),
            "ctr images import",
        );
    }

    /// name → manifest digest of every image.
    fn images(&self) -> Vec<(String, String)> {
        let output = ok(self.ctr(&["images", "ls"]), "ctr images ls");
        let mut rows: Vec<(String, String)> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut columns = line.split_whitespace();
                let name = columns.next()?.to_owned();
                let digest = columns.nth(1)?.to_owned();
                Some((name, digest))
            })
            .collect();
        rows.sort();
        rows
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid =
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits an i32"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn ctr_import_reads_both_formats_with_every_name_and_the_same_digests() {
    let pulled = pull_two();
    let dirs = &pulled.dirs;
    let alias = tag_alias(&pulled);
    let expected: Vec<(String, String)> = stored(dirs)
        .into_iter()
        .map(|[name, manifest, _]| (name, manifest))
        .collect();
    let names = [pulled.one.reference.as_str(), alias, &pulled.two.reference];
    for format in ["oci-archive", "docker-archive"] {
        let archive = dirs.temp.path().join(format!("{format}.tar"));
        export(dirs, format, &names, &archive);
        let containerd = Containerd::start();
        containerd.import(&archive);
        assert_eq!(containerd.images(), expected, "ctr import of a {format}");
    }
}

#[test]
fn an_oci_export_is_read_by_skopeo_and_podman_and_imports_with_the_same_digests() {
    let pulled = pull_two();
    let dirs = &pulled.dirs;
    let before = stored(dirs);
    let archive = dirs.temp.path().join("images.tar");
    export(
        dirs,
        "oci-archive",
        &[&pulled.one.reference, &pulled.two.reference],
        &archive,
    );

    // skopeo picks each image by its name and sees the stored manifest.
    for [name, manifest, config] in &before {
        let raw = skopeo_raw("oci-archive", &archive, name);
        assert_eq!(
            &sha256(&raw.stdout),
            manifest,
            "manifest of {name} in the archive"
        );
        let parsed: Value = serde_json::from_slice(&raw.stdout).expect("manifest JSON");
        assert_eq!(parsed["config"]["digest"], config.as_str());
    }

    assert_eq!(
        reimported(&archive),
        before,
        "names and digests after a round trip"
    );

    // podman 4 loads one image per OCI archive.
    let single = dirs.temp.path().join("one.tar");
    export(dirs, "oci-archive", &[&pulled.one.reference], &single);
    let podman = Podman::new();
    let loaded = podman.run(&["load", "-i", single.to_str().expect("utf-8")]);
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(said.contains(&pulled.one.reference), "podman load: {said}");
    let [_, _, one_config] = before
        .iter()
        .find(|[name, _, _]| *name == pulled.one.reference)
        .expect("image one");
    assert_eq!(
        podman.images(),
        [(pulled.one.reference.clone(), one_config.clone())]
    );
}

#[test]
fn a_docker_archive_of_several_images_keeps_every_name_for_podman_skopeo_and_berth() {
    let pulled = pull_two();
    let dirs = &pulled.dirs;
    // A second name for image one: both names travel.
    let alias = tag_alias(&pulled);
    let before = stored(dirs);
    assert_eq!(before.len(), 3, "{before:?}");
    let archive = dirs.temp.path().join("docker.tar");
    export(
        dirs,
        "docker-archive",
        &[&pulled.one.reference, alias, &pulled.two.reference],
        &archive,
    );

    // skopeo reads docker's manifest.json: same config, same layers.
    for [name, _, config] in &before {
        let raw = skopeo_raw("docker-archive", &archive, name);
        let parsed: Value = serde_json::from_slice(&raw.stdout).expect("manifest JSON");
        assert_eq!(parsed["config"]["digest"], config.as_str(), "{name}");
    }

    let podman = Podman::new();
    podman.run(&["load", "-i", archive.to_str().expect("utf-8")]);
    let expected: Vec<(String, String)> = before
        .iter()
        .map(|[name, _, config]| (name.clone(), config.clone()))
        .collect();
    assert_eq!(podman.images(), expected, "podman has every name");

    assert_eq!(
        reimported(&archive),
        before,
        "names and digests after a round trip"
    );
}

#[test]
fn export_of_an_image_that_is_not_stored_names_it_and_writes_nothing() {
    require_root();
    let dirs = TestDirs::new();
    let archive = dirs.temp.path().join("none.tar");
    let output = dirs.berth(&["save", "-o", archive.to_str().expect("utf-8"), "bt/none:1"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("docker.io/bt/none:1") && stderr.contains("not stored"),
        "{stderr}"
    );
    assert!(!archive.exists(), "a failed export leaves no file");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dirs.temp.path())
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The `problems` of `name` in `berth images --check -o json`.
fn problems(report: &Value, name: &str) -> Vec<Value> {
    report
        .as_array()
        .expect("an array")
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("{name} not checked: {report}"))["problems"]
        .as_array()
        .expect("problems")
        .clone()
}

#[test]
fn a_corrupt_blob_and_a_removed_snapshot_are_found_by_check_and_repaired_by_pull() {
    let pulled = pull_two();
    let dirs = &pulled.dirs;
    let check = dirs.berth(&["images", "--check"]);
    ok(check, "images --check of a healthy store");

    let service = ImageService::open(&Paths::new(&dirs.root, &dirs.run_root)).expect("store");
    let reference = pulled.one.reference.parse().expect("reference");
    let image = service
        .resolve(&reference)
        .expect("resolve")
        .expect("stored");
    let layers = service
        .meta()
        .layers(&image.manifest_digest)
        .expect("layers");
    let top = &layers[1];
    let blob = service.content().blob_path(&top.blob).expect("path");
    let original = std::fs::read(&blob).expect("blob");
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(&blob, &damaged).expect("flip a byte");
    let base_snapshot = service.snapshots().path(&layers[0].chain_id).expect("path");
    std::fs::remove_dir_all(&base_snapshot).expect("remove a snapshot");

    let output = dirs.berth(&["images", "--check", "-o", "json"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a damaged store fails the check"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let found = problems(&report, &pulled.one.reference);
    let summary: Vec<[String; 3]> = found
        .iter()
        .map(|p| strings(p, ["what", "digest", "fault"]))
        .collect();
    assert_eq!(
        summary,
        [
            [
                "layer 2".to_owned(),
                top.blob.to_string(),
                "corrupt".to_owned()
            ],
            [
                "snapshot of layer 1".to_owned(),
                layers[0].chain_id.to_string(),
                "missing".to_owned()
            ],
        ]
    );
    assert_eq!(found[0]["actualDigest"], sha256(&damaged).as_str());
    // Image two shares the busybox base layer, so its snapshot is gone too,
    // but its own top layer is intact.
    let two = problems(&report, &pulled.two.reference);
    assert!(
        two.iter().all(|p| p["what"] != "layer 2"),
        "image two's blobs are intact: {two:?}"
    );

    // The table names the image and the digest; one image can be checked.
    let output = dirs.berth(&["images", "--check", &pulled.one.reference]);
    assert_eq!(output.status.code(), Some(1));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains(&pulled.one.reference)
            && table.contains(&format!("layer 2 {} is corrupt", top.blob))
            && !table.contains(&pulled.two.reference),
        "{table}"
    );

    // An export refuses to ship the damage.
    let archive = dirs.temp.path().join("damaged.tar");
    let output = dirs.berth(&[
        "export",
        "-o",
        archive.to_str().expect("utf-8"),
        &pulled.one.reference,
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&top.blob.to_string()) && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert!(!archive.exists());

    let result = pull_ok(dirs, &pulled.one.reference, &[]);
    assert_eq!(
        result["blobsDownloaded"], 1,
        "only the corrupt layer is fetched: {result}"
    );
    assert_eq!(std::fs::read(&blob).expect("blob"), original);
    assert!(
        base_snapshot.is_dir(),
        "the missing snapshot is unpacked again"
    );
    ok(
        dirs.berth(&["images", "--check"]),
        "images --check after the repair",
    );
}
