//! `securityContext.fsGroup` and configMap/secret `items[].mode` through
//! the real agent with real runc AND crun: what a non-root container user
//! sees of its groups, its secret, configMap and emptyDir volumes, read
//! from inside the container with `stat` and written to a hostPath.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use berth_e2e::for_each_runtime;
use berth_e2e::pods::{PodWorld, running_pid};
use berth_e2e::wait_until;

for_each_runtime!(fs_group_and_item_modes_reach_the_container);

/// Decimal in the manifests: 0440, 0400 and 0700.
const MODE_0440: u32 = 288;
const MODE_0400: u32 = 256;
const MODE_0700: u32 = 448;

fn secret_volume(token_mode: u32) -> String {
    format!(
        "  - name: creds\n    secret:\n      secretName: db\n      defaultMode: {MODE_0440}\n      items:\n\
         \x20     - key: password\n        path: password\n\
         \x20     - key: token\n        path: token\n        mode: {token_mode}\n"
    )
}

fn pod_spec(out: &Path, token_mode: u32) -> String {
    format!(
        "  securityContext:\n    runAsUser: 1000\n    fsGroup: 2000\n  volumes:\n{secret}\
         \x20 - name: conf\n    configMap:\n      name: cfg\n\
         \x20 - name: scratch\n    emptyDir: {{}}\n\
         \x20 - name: mem\n    emptyDir:\n      medium: Memory\n\
         \x20 - name: out\n    hostPath:\n      path: {out:?}\n      type: Directory\n",
        secret = secret_volume(token_mode),
    )
}

/// Runs as uid 1000; every answer goes to /out/<name>, `done` last.
/// configMap and secret files are symlinks through `..data`, as on a
/// cluster: `stat -L` reads the file.
const SCRIPT: &str = "\
id -G > /out/groups; \
busybox stat -L -c '%g %a' /creds/password > /out/password; \
cat /creds/password > /out/password-read; \
busybox stat -L -c '%g %a' /creds/token > /out/token; \
if cat /creds/token > /out/token-read 2>/dev/null; then echo readable; else echo denied; fi > /out/token-access; \
busybox stat -L -c '%g %a' /conf/app.conf > /out/conf; \
for d in scratch mem; do \
  busybox stat -c '%g %a' /$d > /out/$d; \
  touch /$d/made && busybox stat -c '%g' /$d/made > /out/$d-made; \
done; \
echo done > /out/done; \
exec sleep 1000";

fn mounts() -> &'static str {
    "    volumeMounts:\n    - name: creds\n      mountPath: /creds\n\
     \x20   - name: conf\n      mountPath: /conf\n\
     \x20   - name: scratch\n      mountPath: /scratch\n\
     \x20   - name: mem\n      mountPath: /mem\n\
     \x20   - name: out\n      mountPath: /out\n"
}

/// What the container wrote to `/out/<name>`, trimmed.
fn answer(out: &Path, name: &str) -> String {
    std::fs::read_to_string(out.join(name))
        .unwrap_or_else(|e| panic!("the container wrote no /out/{name}: {e}"))
        .trim()
        .to_string()
}

fn wait_done(out: &Path) {
    wait_until(
        Duration::from_secs(60),
        "the container to write /out/done",
        || out.join("done").is_file().then_some(()),
    );
}

fn fs_group_and_item_modes_reach_the_container(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let out = world.dirs.temp.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    // The container user (uid 1000) writes its answers here.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod out");
    world.write_manifest(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: pw-value\n  token: tok-value\n",
    );
    world.write_manifest(
        "cfg.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  app.conf: level=debug\n",
    );
    let mut containers = world.shell_container("app", SCRIPT);
    containers.push_str(mounts());
    world.write_manifest(
        "files.yaml",
        &world.pod_yaml("files", &pod_spec(&out, MODE_0400), &containers),
    );
    let first = world.wait_pod("files", "app running", |p| running_pid(p, "app").is_some());
    wait_done(&out);

    assert_eq!(
        answer(&out, "groups"),
        "0 2000",
        "primary group 0 (no runAsGroup), fsGroup supplementary"
    );
    assert_eq!(answer(&out, "password"), "2000 440", "defaultMode, fsGroup");
    assert_eq!(
        answer(&out, "password-read"),
        "pw-value",
        "uid 1000 reads a 0440 file through fsGroup"
    );
    assert_eq!(
        answer(&out, "token"),
        "2000 440",
        "the item's own 0400, readable by the fsGroup as kubelet makes it"
    );
    assert_eq!(answer(&out, "token-access"), "readable");
    assert_eq!(answer(&out, "conf"), "2000 644", "configMap: fsGroup");
    for dir in ["scratch", "mem"] {
        assert_eq!(
            answer(&out, dir),
            "2000 2777",
            "emptyDir {dir}: fsGroup, setgid, group rwx"
        );
        assert_eq!(
            answer(&out, &format!("{dir}-made")),
            "2000",
            "a file made in emptyDir {dir} inherits fsGroup"
        );
    }
    // hostPath volumes are never touched.
    let meta = std::fs::metadata(&out).expect("stat out");
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (0, 0o777));

    // Editing an item's mode edits the pod's volumes: a pod-level change,
    // so the pod is made again and its new files have the new mode.
    std::fs::remove_file(out.join("done")).expect("removing done");
    world.write_manifest(
        "files.yaml",
        &world.pod_yaml("files", &pod_spec(&out, MODE_0700), &containers),
    );
    let second = world.wait_pod("files", "app running again", |p| {
        running_pid(p, "app").is_some() && running_pid(p, "app") != running_pid(&first, "app")
    });
    wait_done(&out);
    assert_eq!(answer(&out, "token"), "2000 740", "the edited item mode");
    assert_eq!(answer(&out, "token-access"), "readable");
    assert_eq!(answer(&out, "token-read"), "tok-value");
    assert_ne!(
        first["details"]["pod"]["uid"], second["details"]["pod"]["uid"],
        "a new pod incarnation"
    );
}
