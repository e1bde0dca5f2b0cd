//! What a container sees of its own confinement, read from inside it
//! (`/proc/self/status`, `/proc/self/mountinfo`), for the default and each
//! `securityContext` variant, with runc and crun.

mod runtime_common;

use berth::runtime::RuntimeError;
use berth::runtime::spec::{Capabilities, ContainerSpec, SeccompProfile};
use berth_e2e::for_each_runtime;
use berth_e2e::rootfs::{MARKER_CONTENT, MARKER_PATH};
use runtime_common::{Harness, sh};

for_each_runtime!(
    a_default_container_is_confined,
    privileged_lifts_the_confinement,
    capabilities_add_and_drop,
    read_only_root_filesystem,
    run_as_user_with_supplementary_groups,
    run_as_non_root_refuses_a_root_image,
    seccomp_blocks_unshare_unless_unconfined,
    devices_outside_the_allowlist_cannot_be_opened,
);

/// Docker's default capability set as /proc/self/status prints it.
const DOCKER_DEFAULT_CAPS: u64 = 0xa80425fb;

/// Prints what the tests inspect, one `key=value` per line: status fields,
/// the size of files that must be masked (or `absent`: this kernel has no
/// /proc/kcore), every mount point, the root filesystem type, the marker
/// file of the top image layer and `id`.
const REPORT: &str = "grep -E '^(CapEff|CapBnd|CapInh|CapAmb|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t'; \
for f in /proc/kcore /proc/keys /proc/timer_list; do \
  if [ -e $f ]; then echo \"$f=$(wc -c < $f)\"; else echo \"$f=absent\"; fi; done; \
awk '{ print \"mount=\" $5 }' /proc/self/mountinfo; \
awk '$5 == \"/\" { print \"rootfs=\" $(NF-2) }' /proc/self/mountinfo; \
echo marker=$(cat /etc/berth-test-layer); \
echo id=$(id)";

/// Runs `spec` (its command replaced by the report) to completion and
/// returns the report as (key, value) pairs.
fn report(runtime: &str, mut spec: ContainerSpec) -> Vec<(String, String)> {
    let mut h = Harness::new(runtime);
    let pod = h.pod("sec");
    spec.command = vec!["/bin/sh".into(), "-c".into(), REPORT.into()];
    let (id, _) = h.run(&pod, &spec);
    let exit = h.wait_exit(&id);
    assert_eq!(exit.exit_code, 0, "{exit:?}");
    let dir = h.paths.container_logs("default", "sec", &spec.name);
    berth::runtime::logs::read_lines(&dir, 0, false)
        .expect("log")
        .iter()
        .filter_map(|l| l.split_once(['=', ':']))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mounts(report: &[(String, String)]) -> Vec<&str> {
    report
        .iter()
        .filter(|(k, _)| k == "mount")
        .map(|(_, v)| v.as_str())
        .collect()
}

fn value<'a>(report: &'a [(String, String)], key: &str) -> &'a str {
    report
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing from {report:?}"))
}

fn hex(report: &[(String, String)], key: &str) -> u64 {
    u64::from_str_radix(value(report, key), 16).expect("a hex mask")
}

fn host_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd");
    u64::from_str_radix(line.trim(), 16).expect("hex")
}

fn a_default_container_is_confined(runtime: &str) {
    let r = report(runtime, sh("app", ""));
    assert_eq!(hex(&r, "CapEff"), DOCKER_DEFAULT_CAPS, "{r:?}");
    assert_eq!(hex(&r, "CapBnd"), DOCKER_DEFAULT_CAPS);
    assert_eq!(hex(&r, "CapInh"), 0);
    assert_eq!(hex(&r, "CapAmb"), 0);
    assert_eq!(value(&r, "Seccomp"), "2", "seccomp filter mode");
    assert_eq!(value(&r, "NoNewPrivs"), "1");
    let mounted = mounts(&r);
    for path in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if std::path::Path::new(path).exists() {
            assert_eq!(value(&r, path), "0", "{path} reads as empty");
            assert!(mounted.contains(&path), "{path} is masked: {mounted:?}");
        } else {
            // This kernel lacks it (no CONFIG_PROC_KCORE): nothing to mask.
            assert_eq!(value(&r, path), "absent");
        }
    }
    assert!(mounted.contains(&"/sys/firmware"), "{mounted:?}");
    assert_eq!(
        value(&r, "rootfs"),
        "overlay",
        "the root filesystem is the overlay"
    );
    assert_eq!(
        value(&r, "marker"),
        MARKER_CONTENT.trim(),
        "{MARKER_PATH} from the top layer"
    );
}

fn privileged_lifts_the_confinement(runtime: &str) {
    let mut spec = sh("app", "");
    spec.security_context.privileged = true;
    let r = report(runtime, spec);
    assert_eq!(hex(&r, "CapEff"), host_bounding_set(), "all the agent has");
    assert_eq!(value(&r, "Seccomp"), "0");
    assert_eq!(value(&r, "NoNewPrivs"), "0");
    assert!(!mounts(&r).contains(&"/proc/keys"), "nothing masked: {r:?}");
}

fn capabilities_add_and_drop(runtime: &str) {
    let mut spec = sh("app", "");
    spec.security_context.capabilities = Capabilities {
        add: vec!["NET_ADMIN".into()],
        drop: vec!["KILL".into(), "CAP_MKNOD".into()],
    };
    let r = report(runtime, spec);
    let want = (DOCKER_DEFAULT_CAPS & !(1 << 5) & !(1 << 27)) | (1 << 12);
    assert_eq!(hex(&r, "CapEff"), want);
    let mut spec = sh("app", "");
    spec.security_context.capabilities = Capabilities {
        add: vec!["CHOWN".into()],
        drop: vec!["ALL".into()],
    };
    let r = report(runtime, spec);
    assert_eq!(hex(&r, "CapEff"), 1, "only CHOWN");
}

fn read_only_root_filesystem(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("sec");
    let mut spec = sh(
        "app",
        "touch /new-file 2>&1; echo root=$?; touch /dev/shm/ok && echo shm=writable",
    );
    spec.security_context.read_only_root_filesystem = true;
    let (id, _) = h.run(&pod, &spec);
    h.wait_exit(&id);
    let dir = h.paths.container_logs("default", "sec", "app");
    let lines = berth::runtime::logs::read_lines(&dir, 0, false).expect("log");
    assert!(
        lines.iter().any(|l| l.contains("Read-only file system")),
        "{lines:?}"
    );
    assert!(lines.contains(&"root=1".to_string()), "{lines:?}");
    assert!(lines.contains(&"shm=writable".to_string()), "{lines:?}");
}

fn run_as_user_with_supplementary_groups(runtime: &str) {
    let mut spec = sh("app", "");
    spec.security_context.run_as_user = Some(1000);
    let r = report(runtime, spec);
    let id = value(&r, "id");
    assert!(id.starts_with("uid=1000(app) gid=1000(app)"), "{id}");
    assert!(
        id.contains("2000(extra)"),
        "groups from the image's /etc/group: {id}"
    );
    assert_eq!(
        hex(&r, "CapEff"),
        0,
        "a non-root process has no effective capabilities"
    );
}

fn run_as_non_root_refuses_a_root_image(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("sec");
    let mut spec = sh("app", "true");
    spec.security_context.run_as_non_root = Some(true);
    let err = h
        .run_with_volumes(&pod, &spec, &[])
        .map(|_| ())
        .expect_err("refused");
    assert!(
        matches!(&err, RuntimeError::Bundle(e) if e.to_string().contains("runAsNonRoot")),
        "{err}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(h.paths.shims())
        .into_iter()
        .flatten()
        .collect();
    assert!(leftovers.is_empty(), "a refused container leaves no state");
    assert!(
        std::fs::read_dir(h.paths.bundles())
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "nor a bundle"
    );
}

fn seccomp_blocks_unshare_unless_unconfined(runtime: &str) {
    let script = "unshare -U true 2>&1; echo unshare=$?";
    let mut h = Harness::new(runtime);
    let pod = h.pod("sec");
    let (confined, _) = h.run(&pod, &sh("confined", script));
    let mut unconfined = sh("unconfined", script);
    unconfined.security_context.seccomp_profile = Some(SeccompProfile::Unconfined);
    let (free, _) = h.run(&pod, &unconfined);
    h.wait_exit(&confined);
    h.wait_exit(&free);
    let lines = |name: &str| {
        let dir = h.paths.container_logs("default", "sec", name);
        berth::runtime::logs::read_lines(&dir, 0, false).expect("log")
    };
    // A user namespace needs no capability, so only seccomp stops it.
    let blocked = lines("confined");
    assert!(
        blocked
            .iter()
            .any(|l| l.contains("Operation not permitted")),
        "{blocked:?}"
    );
    assert!(blocked.contains(&"unshare=1".to_string()), "{blocked:?}");
    assert!(lines("unconfined").contains(&"unshare=0".to_string()));
}

fn devices_outside_the_allowlist_cannot_be_opened(runtime: &str) {
    let mut h = Harness::new(runtime);
    let pod = h.pod("sec");
    // mknod is allowed (Docker's default), using the node is not: the
    // devices cgroup only lets the standard pseudo-devices through.
    let spec = sh(
        "app",
        "mknod /tmp/mem c 1 1 && echo made; head -c1 /tmp/mem > /dev/null 2>&1; echo mem=$?; \
         head -c1 /dev/zero > /dev/null && echo zero=ok",
    );
    let (id, _) = h.run(&pod, &spec);
    h.wait_exit(&id);
    let dir = h.paths.container_logs("default", "sec", "app");
    let lines = berth::runtime::logs::read_lines(&dir, 0, false).expect("log");
    assert_eq!(lines, ["made", "mem=1", "zero=ok"], "{lines:?}");
}
