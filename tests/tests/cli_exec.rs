//! `berth exec` on a pod the real agent runs (its own network namespace
//! from the `none` driver, two containers, runc): the command runs in the
//! container's namespaces — compared with the container's init from the
//! host — its exit code becomes berth's, `-t` gets a terminal, and a pod
//! with two containers needs the container named.

mod cli_common;

use std::path::Path;

use berth_e2e::pods::{PodWorld, running_pid};
use cli_common::{berth_in_a_terminal, err, namespace_of, ok, stderr, stdout};

#[test]
fn exec_runs_in_the_container_namespaces_and_returns_its_exit_code() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let script = "trap 'exit 0' TERM; sleep 1000 & wait";
    let containers = format!(
        "{}{}",
        world.shell_container("app", script),
        world.shell_container("sidecar", script)
    );
    // The test image links only some applets; `busybox APPLET` reaches all.
    // Not pod_yaml's hostNetwork: the pod gets a network namespace of its own.
    let yaml = world
        .pod_yaml("web", "", &containers)
        .replace("hostNetwork: true", "hostNetwork: false");
    world.write_manifest("web.yaml", &yaml);
    let pod = world.wait_pod("web", "both containers running", |p| {
        running_pid(p, "app").is_some() && running_pid(p, "sidecar").is_some()
    });
    let app = running_pid(&pod, "app").expect("app pid");
    let sidecar = running_pid(&pod, "sidecar").expect("sidecar pid");

    let inside = |target: &str, ns: &str| {
        ok(world.dirs.berth(&[
            "exec",
            target,
            "--",
            "busybox",
            "readlink",
            &format!("/proc/self/ns/{ns}"),
        ]))
        .trim()
        .to_owned()
    };
    for ns in ["pid", "mnt", "net", "ipc", "uts"] {
        let container = namespace_of(Path::new(&format!("/proc/{app}/ns/{ns}")));
        let host = namespace_of(Path::new(&format!("/proc/self/ns/{ns}")));
        assert_eq!(inside("web/app", ns), container, "{ns}: the container's");
        assert_ne!(container, host, "{ns}: not the host's");
    }
    // The sidecar shares the pod's network, IPC and UTS, not app's pid and mounts.
    for ns in ["net", "ipc", "uts"] {
        assert_eq!(inside("web/sidecar", ns), inside("web/app", ns), "{ns}");
    }
    for ns in ["pid", "mnt"] {
        let own = namespace_of(Path::new(&format!("/proc/{sidecar}/ns/{ns}")));
        assert_eq!(inside("default/web/sidecar", ns), own, "{ns}");
        assert_ne!(own, inside("web/app", ns), "{ns}");
    }
    // The exec'd process is in the container's cgroups too: it sees the
    // same ones as the container's init (pid 1 in there).
    let cgroups = |path: &str| ok(world.dirs.berth(&["exec", "web/app", "--", "cat", path]));
    assert_eq!(cgroups("/proc/self/cgroup"), cgroups("/proc/1/cgroup"));
    assert_eq!(
        inside("web/app", "cgroup"),
        namespace_of(Path::new(&format!("/proc/{app}/ns/cgroup")))
    );

    let out = world.dirs.berth(&[
        "exec",
        "web/app",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 42",
    ]);
    assert_eq!(
        out.status.code(),
        Some(42),
        "the command's exit code is berth's"
    );
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("out\n", "err\n")
    );
    let out = world
        .dirs
        .berth(&["exec", "web/app", "--", "no-such-command"]);
    assert_ne!(out.status.code(), Some(0), "a missing command fails");

    let term = berth_in_a_terminal(
        &world.dirs,
        &[
            "exec",
            "-it",
            "web/sidecar",
            "--",
            "sh",
            "-c",
            "busybox tty; test -t 0 && echo interactive; exit 3",
        ],
    );
    let text = stdout(&term);
    assert!(
        text.contains("/dev/pts/") && text.contains("interactive"),
        "{text}"
    );
    assert_eq!(term.status.code(), Some(3), "{text}");
    let text = err(world.dirs.berth(&["exec", "-t", "web/app", "--", "tty"]));
    assert!(text.contains("not a terminal"), "{text}");

    let text = err(world.dirs.berth(&["exec", "web", "--", "true"]));
    assert!(
        text.contains("pod default/web has 2 containers") && text.contains("web/app, web/sidecar"),
        "{text}"
    );
}
