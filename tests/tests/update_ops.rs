//! Updating safely, through the real agent, runc and a real registry:
//! update strategies (the order of pull, stop and image deletion, read
//! from the events), update locks (a container holding `flock` on
//! `/tmp/berth/updates.lock` defers an update; `berth update --force`
//! overrides it; a deletion never waits for it).

use berth_e2e::images::{Entry, busybox_image_with};
use berth_e2e::pods::{PodWorld, container, running_pid};
use berth_e2e::wait_until;
use serde_json::Value;
use std::time::Duration;

/// `pod_yaml` with annotations on the pod.
fn annotated(yaml: &str, annotations: &[(&str, &str)]) -> String {
    let mut lines = String::from("metadata:\n  annotations:\n");
    for (name, value) in annotations {
        lines.push_str(&format!("    {name}: {value:?}\n"));
    }
    yaml.replacen("metadata:\n", &lines, 1)
}

/// One container `app` running `script` from `image`.
fn app(image: &str, script: &str) -> String {
    format!("  - name: app\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n")
}

fn image_of(pod: &Value, name: &str) -> Option<String> {
    container(pod, name)?["image"].as_str().map(str::to_owned)
}

/// Index of the first event of `pod` with `reason` whose message has
/// `text`.
fn event_index(events: &[Value], reason: &str, text: &str) -> Option<usize> {
    events.iter().position(|e| {
        e["reason"] == reason && e["message"].as_str().is_some_and(|m| m.contains(text))
    })
}

fn strategy_case(strategy: &str) {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let v2 = busybox_image_with(
        &world.registry,
        &format!("berth/v2-{strategy}"),
        vec![Entry::file("etc/version", "2\n")],
    );
    let annotations = [("berth.dev/update-strategy", strategy)];
    let old_image = world.image.reference.clone();
    let write = |image: &str| {
        let containers = app(image, "exec sleep 1000");
        world.write_manifest(
            "web.yaml",
            &annotated(&world.pod_yaml("web", "", &containers), &annotations),
        );
    };
    write(&old_image);
    world.wait_pod("web", "v1 running", |p| running_pid(p, "app").is_some());
    write(&v2.reference);
    world.wait_pod("web", "v2 running", |p| {
        running_pid(p, "app").is_some() && image_of(p, "app").as_deref() == Some(&v2.reference)
    });
    let events = world.events("web");
    let pulled = event_index(&events, "Pulled", &v2.reference).expect("a Pulled event for v2");
    let killed = event_index(&events, "Killing", "container app").expect("a Killing event");
    let deleted = event_index(&events, "ImageDeleted", &old_image);
    match strategy {
        "download-then-kill" => {
            assert!(pulled < killed, "pull, then stop: {events:#?}");
            assert!(deleted.is_none(), "{events:#?}");
        }
        "kill-then-download" => {
            assert!(killed < pulled, "stop, then pull: {events:#?}");
            assert!(deleted.is_none(), "{events:#?}");
        }
        _ => {
            let deleted = deleted.expect("an ImageDeleted event for the old image");
            assert!(
                killed < deleted && deleted < pulled,
                "stop, delete, then pull: {events:#?}"
            );
            let images = world.dirs.berth(&["images", "-o", "json"]);
            let listed = String::from_utf8_lossy(&images.stdout);
            assert!(images.status.success(), "{listed}");
            assert!(
                !listed.contains(&old_image),
                "the old image is gone: {listed}"
            );
        }
    }
}

#[test]
fn download_then_kill_pulls_before_it_stops() {
    strategy_case("download-then-kill");
}

#[test]
fn kill_then_download_stops_before_it_pulls() {
    strategy_case("kill-then-download");
}

#[test]
fn delete_then_download_deletes_the_old_image_before_it_pulls() {
    strategy_case("delete-then-download");
}

/// The host's util-linux `flock` and the libraries it loads (Debian's
/// busybox has no flock applet), as image entries at the same paths.
fn host_flock() -> Vec<Entry> {
    let ldd = std::process::Command::new("ldd")
        .arg("/usr/bin/flock")
        .output()
        .expect("ldd /usr/bin/flock (util-linux)");
    let mut files = vec!["/usr/bin/flock".to_owned()];
    files.extend(
        String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_owned),
    );
    let mut dirs = std::collections::BTreeSet::new();
    for file in &files {
        let mut parent = std::path::Path::new(file.trim_start_matches('/')).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    let mut entries: Vec<Entry> = dirs.iter().map(|d| Entry::dir(d)).collect();
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_else(|err| panic!("reading {file}: {err}"));
        entries.push(Entry::executable(file.trim_start_matches('/'), bytes));
    }
    entries
}

#[test]
fn a_held_update_lock_defers_an_update_until_forced_and_never_a_deletion() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let image = busybox_image_with(&world.registry, "berth/flock", host_flock()).reference;
    // flock as pid 1 holds the lock for as long as the container runs.
    let write = |version: &str| {
        let containers = app(
            &image,
            &format!(
                "mkdir -p /tmp/berth; echo {version} > /tmp/version; exec /usr/bin/flock /tmp/berth/updates.lock sleep 1000"
            ),
        );
        world.write_manifest("web.yaml", &world.pod_yaml("web", "", &containers));
    };
    write("1");
    let pod = world.wait_pod("web", "v1 running", |p| running_pid(p, "app").is_some());
    let pid = running_pid(&pod, "app").expect("pid");
    // Give the container time to take its lock before the edit.
    wait_until(Duration::from_secs(30), "the lock file", || {
        std::path::Path::new(&format!("/proc/{pid}/root/tmp/berth/updates.lock"))
            .exists()
            .then_some(())
    });

    write("2");
    let held = world.wait_pod("web", "the update held by the lock", |p| {
        p["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("UpdateHeldByLock"))
    });
    assert_eq!(running_pid(&held, "app"), Some(pid), "{held:#}");
    assert!(
        event_index(
            &world.events("web"),
            "UpdateHeldByLock",
            "app holds /tmp/berth/updates.lock"
        )
        .is_some()
    );
    // The agent takes the override at its next try of the held update
    // (every 5 s): the command returns once it has.
    let forced = world.dirs.berth(&["update", "--force", "web"]);
    assert!(
        forced.status.success(),
        "berth update --force: {}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let pod = world.wait_pod("web", "v2 running", |p| {
        running_pid(p, "app").is_some_and(|new| new != pid)
    });
    assert!(
        event_index(&world.events("web"), "UpdateLockOverridden", "app").is_some(),
        "{pod:#}"
    );
    // Nothing is held any more: --force has nothing to force.
    let idle = world.dirs.berth(&["update", "--force", "web"]);
    assert!(!idle.status.success());
    assert!(
        String::from_utf8_lossy(&idle.stderr).contains("no update waiting"),
        "{}",
        String::from_utf8_lossy(&idle.stderr)
    );

    // v2 holds the lock too; a deletion does not wait for it.
    let new_pid = running_pid(&pod, "app").expect("pid");
    wait_until(Duration::from_secs(30), "v2's lock file", || {
        std::path::Path::new(&format!("/proc/{new_pid}/root/tmp/berth/updates.lock"))
            .exists()
            .then_some(())
    });
    world.remove_manifest("web.yaml");
    world.wait_pod_gone("web");
}

/// `berth diff NEW` against the manifest directory CURRENT: (exit code,
/// stdout, stderr).
fn diff(current: &std::path::Path, new: &std::path::Path) -> (i32, String, String) {
    let out = std::process::Command::new(berth_e2e::berth_bin())
        .arg("--manifests")
        .arg(current)
        .arg("diff")
        .arg(new)
        .output()
        .expect("running berth diff");
    (
        out.status.code().expect("an exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn diff_pod(name: &str, spec: &str, containers: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}  containers:\n"
    );
    for (container, image) in containers {
        yaml.push_str(&format!(
            "  - name: {container}\n    image: {image}\n    env:\n    - name: MODE\n      valueFrom:\n        configMapKeyRef:\n          name: cfg\n          key: mode\n"
        ));
    }
    yaml
}

fn config_map(mode: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  mode: {mode:?}\n")
}

/// Two manifest directories: the current one with pods `web` (app and
/// side) and `old`, and a copy to edit.
fn diff_dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let temp = tempfile::tempdir().expect("temp dir");
    let current = temp.path().join("current");
    let new = temp.path().join("new");
    for dir in [&current, &new] {
        berth_e2e::write_atomically(
            &dir.join("web.yaml"),
            &diff_pod(
                "web",
                "",
                &[("app", "r.test/app:1"), ("side", "r.test/side:1")],
            ),
        );
        berth_e2e::write_atomically(&dir.join("cfg.yaml"), &config_map("a"));
    }
    berth_e2e::write_atomically(
        &current.join("old.yaml"),
        &diff_pod("old", "", &[("x", "r.test/x:1")]),
    );
    berth_e2e::write_atomically(
        &new.join("old.yaml"),
        &diff_pod("old", "", &[("x", "r.test/x:1")]),
    );
    (temp, current, new)
}

#[test]
fn berth_diff_of_the_same_directory_changes_nothing() {
    let (_temp, current, new) = diff_dirs();
    let (code, out, err) = diff(&current, &new);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().all(|l| l.starts_with("unchanged")), "{out}");
    assert!(out.contains("Pod/default/web"), "{out}");
}

#[test]
fn berth_diff_names_replaced_containers_recreated_created_and_deleted_pods() {
    let (_temp, current, new) = diff_dirs();
    // One container's image: only it is replaced.
    berth_e2e::write_atomically(
        &new.join("web.yaml"),
        &diff_pod(
            "web",
            "",
            &[("app", "r.test/app:2"), ("side", "r.test/side:1")],
        ),
    );
    // A pod-level field: recreated.
    berth_e2e::write_atomically(
        &new.join("old.yaml"),
        &diff_pod("old", "  hostNetwork: true\n", &[("x", "r.test/x:1")]),
    );
    berth_e2e::write_atomically(
        &new.join("fresh.yaml"),
        &diff_pod("fresh", "", &[("y", "r.test/y:1")]),
    );
    let (code, out, err) = diff(&current, &new);
    assert_eq!(code, 1, "{out}{err}");
    let line = |object: &str| {
        out.lines()
            .find(|l| l.contains(object))
            .unwrap_or_else(|| panic!("no line for {object}: {out}"))
            .to_owned()
    };
    let web = line("Pod/default/web");
    assert!(
        web.starts_with("replace") && web.contains("replace app"),
        "{web}"
    );
    assert!(!web.contains("side"), "the sibling runs on: {web}");
    assert!(line("Pod/default/old").starts_with("recreate"), "{out}");
    assert!(line("Pod/default/fresh").starts_with("create"), "{out}");
    assert!(
        line("ConfigMap/default/cfg").starts_with("unchanged"),
        "{out}"
    );

    std::fs::remove_file(new.join("fresh.yaml")).expect("rm");
    std::fs::remove_file(new.join("old.yaml")).expect("rm");
    let (code, out, _) = diff(&current, &new);
    assert_eq!(code, 1);
    assert!(line_starts(&out, "Pod/default/old", "delete"), "{out}");
}

fn line_starts(out: &str, object: &str, verb: &str) -> bool {
    out.lines()
        .any(|l| l.contains(object) && l.starts_with(verb))
}

#[test]
fn berth_diff_follows_config_map_values_into_the_containers_that_read_them() {
    let (_temp, current, new) = diff_dirs();
    berth_e2e::write_atomically(&new.join("cfg.yaml"), &config_map("b"));
    let (code, out, err) = diff(&current, &new);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        line_starts(&out, "ConfigMap/default/cfg", "update"),
        "{out}"
    );
    let web = out
        .lines()
        .find(|l| l.contains("Pod/default/web"))
        .expect("web");
    assert!(web.contains("replace app, side"), "both read cfg: {web}");
    // JSON names the same.
    let json = std::process::Command::new(berth_e2e::berth_bin())
        .arg("--manifests")
        .arg(&current)
        .args(["diff", "-o", "json"])
        .arg(&new)
        .output()
        .expect("berth diff -o json");
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let web = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["object"] == "Pod/default/web"))
        .expect("a web row");
    assert_eq!(
        web["replace"]["replaced"],
        serde_json::json!(["app", "side"]),
        "{rows:#}"
    );
}

#[test]
fn berth_diff_exits_2_on_validation_errors_and_on_pods_that_cannot_start() {
    let (_temp, current, new) = diff_dirs();
    berth_e2e::write_atomically(
        &new.join("web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: r.test/app:1\n    imagePullPolcy: Always\n",
    );
    let (code, out, err) = diff(&current, &new);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("web.yaml:9:5") && err.contains("imagePullPolicy"),
        "{err}"
    );

    let (_temp, current, new) = diff_dirs();
    // A key the ConfigMap does not have: the pod could not start.
    berth_e2e::write_atomically(
        &new.join("cfg.yaml"),
        &config_map("a").replace("mode:", "other:"),
    );
    let (code, out, err) = diff(&current, &new);
    assert_eq!(code, 2, "{out}{err}");
    assert!(line_starts(&out, "Pod/default/web", "error"), "{out}");
}

/// A small ext4 file system on a loop device of its own, mounted at a
/// directory; unmounted and detached when dropped (also after a failure).
struct LoopFs {
    device: String,
    mountpoint: std::path::PathBuf,
    _image: tempfile::NamedTempFile,
}

impl LoopFs {
    fn mount(size_mib: u64, mountpoint: &std::path::Path) -> Self {
        let image = tempfile::Builder::new()
            .prefix("berth-test-loopfs-")
            .tempfile()
            .expect("an image file");
        image
            .as_file()
            .set_len(size_mib << 20)
            .expect("sizing the image");
        run("mkfs.ext4", &["-q", "-F", &image.path().to_string_lossy()]);
        let attached = std::process::Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image.path())
            .output()
            .expect("losetup");
        assert!(attached.status.success(), "losetup: {attached:?}");
        let device = String::from_utf8_lossy(&attached.stdout).trim().to_owned();
        let fs = Self {
            device,
            mountpoint: mountpoint.to_owned(),
            _image: image,
        };
        std::fs::create_dir_all(mountpoint).expect("the mountpoint");
        run("mount", &[&fs.device, &mountpoint.to_string_lossy()]);
        fs
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // The world may have unmounted it already.
        let _ = std::process::Command::new("umount")
            .arg(&self.mountpoint)
            .status();
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.device])
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod world whose --root is a small loop-mounted ext4; the world goes
/// first when dropped (agent, pods), then the file system.
struct SmallDisk {
    world: PodWorld,
    _fs: LoopFs,
}

/// Bytes a pull may use on `root`: free space less the default reserve
/// (5%, at most 1 GiB).
fn usable(root: &std::path::Path) -> u64 {
    let fs = nix::sys::statvfs::statvfs(root).expect("statvfs");
    let free = fs.blocks_available() * fs.fragment_size();
    let total = fs.blocks() * fs.fragment_size();
    free - (total / 100 * 5).min(1 << 30)
}

/// A busybox image with `mib` MiB of incompressible data on top.
fn image_of_size(world: &PodWorld, name: &str, bytes: u64) -> String {
    let size = usize::try_from(bytes).expect("a size");
    busybox_image_with(
        &world.registry,
        name,
        vec![Entry::noise("data", size, bytes)],
    )
    .reference
}

#[test]
fn a_pull_that_does_not_fit_the_disk_is_refused_and_the_old_version_runs_on() {
    let world = PodWorld::new("runc");
    let fs = LoopFs::mount(64, &world.dirs.root);
    let mut disk = SmallDisk { world, _fs: fs };
    let world = &mut disk.world;
    world.start_agent();
    let write = |image: &str| {
        let containers = app(image, "exec sleep 1000");
        world.write_manifest("web.yaml", &world.pod_yaml("web", "", &containers));
    };
    write(&world.image.reference.clone());
    world.wait_pod("web", "v1 running", |p| running_pid(p, "app").is_some());
    let u0 = usable(&world.dirs.root);

    // An image nobody uses takes half of what is usable...
    let junk = image_of_size(world, "berth/junk", u0 / 4);
    let certs = world.dirs.temp.path().join("certs.d");
    let pulled = world
        .dirs
        .berth(&["pull", "--hosts-dir", &certs.to_string_lossy(), &junk]);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    // ...so v2 (estimated at 3.5 × its compressed size) fits only once
    // it is collected.
    let v2 = image_of_size(world, "berth/v2", u0 * 8 / 35);
    write(&v2);
    let pod = world.wait_pod("web", "v2 running", |p| {
        running_pid(p, "app").is_some() && image_of(p, "app").as_deref() == Some(&v2)
    });
    let images = world.dirs.berth(&["images", "-o", "json"]);
    assert!(
        !String::from_utf8_lossy(&images.stdout).contains("berth/junk"),
        "the unreferenced image was collected first: {}",
        String::from_utf8_lossy(&images.stdout)
    );

    // v3 does not fit even then: refused before anything is downloaded.
    let pid = running_pid(&pod, "app").expect("pid");
    let digest = |p: &Value| container(p, "app").map(|c| c["imageDigest"].clone());
    let v2_digest = digest(&pod);
    let v3 = image_of_size(world, "berth/v3", u0 / 2);
    write(&v3);
    let refused = world.wait_pod("web", "the pull refused", |p| {
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("InsufficientDisk: need"))
    });
    let message = refused["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("free"), "{message}");
    assert_eq!(
        running_pid(&refused, "app"),
        Some(pid),
        "v2 runs on: {refused:#}"
    );
    assert_eq!(
        digest(&refused),
        v2_digest,
        "v2's image runs on: {refused:#}"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "its process is alive"
    );
}

/// Bytes and seconds of the agent's log line for the pull of `image`.
fn pull_stats(log: &str, image: &str) -> Option<(f64, f64)> {
    let line = log
        .lines()
        .find(|l| l.contains("pulled") && l.contains(image) && l.contains("stats="))?;
    let stats = line.split("stats=").nth(1)?;
    let mut words = stats.split_whitespace();
    let megabytes: f64 = words.next()?.parse().ok()?;
    words.next(); // MB
    words.next(); // in
    let seconds: f64 = words.next()?.trim_end_matches('s').parse().ok()?;
    Some((megabytes * 1e6, seconds))
}

#[test]
fn max_download_rate_holds_a_pull_to_the_configured_rate() {
    const RATE: f64 = 2.0 * 1024.0 * 1024.0;
    let mut world = PodWorld::with_config("runc", "");
    // PodWorld's config has an [images] table already: add to it.
    let config = std::fs::read_to_string(&world.config).expect("config");
    std::fs::write(
        &world.config,
        config.replacen("[images]\n", "[images]\nmax-download-rate = \"2MiB\"\n", 1),
    )
    .expect("config");
    world.start_agent();
    let image = image_of_size(&world, "berth/six", 6 << 20);
    let containers = app(&image, "exec sleep 1000");
    world.write_manifest("web.yaml", &world.pod_yaml("web", "", &containers));
    world.wait_pod("web", "running", |p| running_pid(p, "app").is_some());
    let (bytes, seconds) = wait_until(Duration::from_secs(10), "the pull's stats", || {
        pull_stats(&world.agent().log(), &image)
    });
    assert!(bytes > 6e6, "the image's bytes were downloaded: {bytes}");
    let measured = bytes / seconds;
    eprintln!("pulled {bytes} bytes in {seconds}s: {measured:.0} B/s (limit {RATE} B/s)");
    assert!(
        (measured - RATE).abs() <= RATE * 0.2,
        "{bytes} bytes in {seconds}s = {measured:.0} B/s, limit {RATE} B/s"
    );
}
