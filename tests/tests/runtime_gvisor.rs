//! Pods under gVisor (`runtimeClassName: gvisor`, Debian's runsc with only
//! its path in the agent config) through the real agent: a bridged pod
//! and a hostNetwork pod, each proved from inside to run on gVisor's
//! kernel; exec, probes, hooks, logs, OOM, an agent kill -9, an edit from
//! runc to gvisor and back; what gVisor cannot honour refused clearly;
//! and a runtime berth knows nothing about (a wrapper script around runc)
//! used as the OCI runtime CLI, without code for it.
//!
//! runsc takes about half a second per container, so each case covers
//! several things at once.

mod cli_common;

use std::time::Duration;

use berth_e2e::net::NetWorld;
use berth_e2e::pods::{DataDir, GVISOR_HANDLER, PodWorld, container, restarts, running_pid};
use berth_e2e::wait_until;
use serde_json::Value;

/// The first lines of gVisor's `dmesg`, as a command inside prints them
/// (exec'd commands only: the container's own processes get the
/// RuntimeDefault seccomp profile, which refuses `syslog`).
const GVISOR_BOOT: &str = "Starting gVisor";
/// gVisor's `/proc/version` (runsc 20221219 says it is Linux 4.4.0).
const GVISOR_KERNEL: &str = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016";

fn config_arg(world: &PodWorld) -> String {
    world.config.to_str().expect("utf-8 path").to_owned()
}

/// `berth exec POD -- ARGV` (with the agent's config, which defines the
/// handler): (exit code, stdout, stderr).
fn exec(world: &PodWorld, target: &str, argv: &[&str]) -> (i32, String, String) {
    let config = config_arg(world);
    let mut args = vec!["exec", "--config", &config, target, "--"];
    args.extend_from_slice(argv);
    let out = world.dirs.berth(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `http://IP:PORT/` answers, once it answers.
fn answer_of(ip: std::net::Ipv4Addr, port: u16) -> String {
    wait_until(Duration::from_secs(20), "the pod IP to answer", || {
        let out = std::process::Command::new("curl")
            .args(["-fsS", "--max-time", "2", &format!("http://{ip}:{port}/")])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
}

fn waiting_message(pod: &Value, name: &str) -> Option<String> {
    container(pod, name)?["state"]["waiting"]["message"]
        .as_str()
        .map(str::to_owned)
}

/// A bridged pod of two containers: the pod IP and a hostPort answer from
/// the host, the
/// containers share the pod's network (localhost), each runs on gVisor's
/// kernel; deleting it leaves no veth, lease, netns or runtime state.
#[test]
fn a_bridged_pod_runs_under_gvisor_in_the_pods_network_namespace() {
    let mut net = NetWorld::bridge_with(GVISOR_HANDLER);
    net.world.runtime = "gvisor".into();
    net.world.start_agent();
    let host_port = berth_e2e::net::free_port();
    let mut containers = net.web_container("web", 8080, "hello-from-gvisor");
    containers.push_str(&format!(
        "    ports:\n    - {{containerPort: 8080, hostPort: {host_port}}}\n"
    ));
    containers.push_str(&net.world.shell_container("side", "exec sleep 1000"));
    net.world
        .write_manifest("web.yaml", &net.pod_yaml("web", "", &containers));
    let (pod, ip) = net.wait_running_ip("web");
    assert!(net.net.contains(ip), "{ip} is on the test's bridge");
    assert_eq!(container(&pod, "web").expect("web")["runtime"], "gvisor");

    let body = answer_of(ip, 8080);
    assert_eq!(body.trim(), "hello-from-gvisor");
    let through_host_port = answer_of(std::net::Ipv4Addr::LOCALHOST, host_port);
    assert_eq!(through_host_port.trim(), "hello-from-gvisor");

    // From inside: gVisor's kernel, the pod's address, and the sibling's
    // server on localhost (one network per pod, as in Kubernetes).
    let (code, dmesg, _) = exec(&net.world, "web/side", &["busybox", "dmesg"]);
    assert_eq!(code, 0);
    assert!(dmesg.contains(GVISOR_BOOT), "{dmesg}");
    let (_, addrs, _) = exec(&net.world, "web/side", &["ip", "-4", "addr"]);
    assert!(addrs.contains(&format!("inet {ip}/")), "{addrs}");
    let (code, reply, err) = exec(
        &net.world,
        "web/side",
        &[
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(reply.contains("hello-from-gvisor"), "{reply}");

    let runtime_root = net.world.dirs.run_root.join("runtime/gvisor");
    net.world.remove_manifest("web.yaml");
    net.world.wait_pod_gone("web");
    net.assert_nothing_left("after the gVisor pod");
    let left: Vec<_> = std::fs::read_dir(&runtime_root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "runsc state left: {left:?}");
    assert_eq!(net.world.processes(), Vec::<i32>::new());
}

/// A hostNetwork pod under gVisor: `berth exec` (output, exit code; `-t`
/// refused with the reason), exec
/// liveness and readiness probes, a postStart exec hook, logs, `ps` and
/// `inspect`, then an agent kill -9: the new agent adopts the running
/// container (same pid) and exec still works.
#[test]
fn exec_probes_hooks_logs_and_recovery_work_under_gvisor() {
    let mut world = PodWorld::new("gvisor");
    world.start_agent();
    let data = world.data_dir("data");
    let mut containers = world.shell_container(
        "app",
        "echo started; cat /proc/version; echo inside > /written; trap 'exit 0' TERM; sleep 1000 & wait",
    );
    containers.push_str(DataDir::MOUNT);
    containers.push_str(
        "    lifecycle:\n      postStart:\n        exec:\n          command: [\"sh\", \"-c\", \"echo hook > /data/hook\"]\n\
         \x20   livenessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n\
         \x20   readinessProbe:\n      exec:\n        command: [\"cat\", \"/data/hook\"]\n      periodSeconds: 1\n",
    );
    world.write_manifest(
        "app.yaml",
        &world.pod_yaml("app", &data.volume, &containers),
    );
    let pod = world.wait_pod("app", "running and ready", |p| {
        container(p, "app").is_some_and(|c| c["ready"] == true)
    });
    let pid = running_pid(&pod, "app").expect("pid");
    assert_eq!(
        std::fs::read_to_string(data.path.join("hook")).expect("the hook ran"),
        "hook\n"
    );

    let (code, out, err) = exec(
        &world,
        "app",
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));
    // runsc's exec has no terminal to give without a console socket: -t is
    // refused with the reason rather than run without one.
    let config = config_arg(&world);
    let tty = cli_common::berth_in_a_terminal(
        &world.dirs,
        &["exec", "-it", "--config", &config, "app", "--", "tty"],
    );
    let said = String::from_utf8_lossy(&tty.stdout);
    assert!(!tty.status.success(), "{said}");
    assert!(said.contains("run it without -t"), "{said}");
    let mut last = String::new();
    let logs = berth_e2e::poll_until(Duration::from_secs(10), || {
        let out = world.dirs.berth(&["logs", "app"]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        last.contains(GVISOR_KERNEL).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("no gVisor /proc/version in the log: {last}"));
    assert!(logs.starts_with("started\n"), "{logs}");
    let inspect: Value = serde_json::from_slice(&world.dirs.berth(&["inspect", "app"]).stdout)
        .expect("inspect prints JSON");
    let inspected = &inspect["containers"][0];
    assert_eq!(inspected["runtime"], "gvisor", "{inspect:#}");
    assert_eq!(inspected["pid"], pid, "{inspect:#}");
    // The container writes to berth's overlay (--overlay2=none).
    let upper = inspected["rootfs"]["upperdir"].as_str().expect("upperdir");
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(upper).join("written")).ok(),
        Some("inside\n".to_owned()),
        "{inspect:#}"
    );
    let warnings = pod.to_string();
    assert!(
        warnings.contains("applies the seccomp profile to the container's own processes only"),
        "gVisor's limit is in the status: {pod:#}"
    );
    let ps = world.dirs.berth_json(&["ps"]);
    let row = &ps["containers"][0];
    assert_eq!(row["containerId"], inspected["containerId"], "{ps:#}");
    assert_eq!(row["ready"], true, "{ps:#}");

    world.kill_agent();
    world.start_agent();
    let again = world.wait_pod("app", "adopted and ready", |p| {
        container(p, "app").is_some_and(|c| c["ready"] == true)
    });
    assert_eq!(running_pid(&again, "app"), Some(pid), "{again:#}");
    assert_eq!(restarts(&again, "app"), Some(0));
    let (code, dmesg, _) = exec(&world, "app", &["busybox", "dmesg"]);
    assert_eq!(code, 0);
    assert!(dmesg.contains(GVISOR_BOOT), "{dmesg}");
}

/// A container over its memory limit under gVisor: the host kills the
/// sandbox in the container's cgroup, and the pod says OOMKilled.
#[test]
fn an_out_of_memory_container_under_gvisor_is_oom_killed() {
    let mut world = PodWorld::new("gvisor");
    world.start_agent();
    let mut containers = world.shell_container(
        "hog",
        // tail keeps the last line, and /dev/zero has no line end.
        "busybox tail /dev/zero; echo survived",
    );
    containers.push_str("    resources:\n      limits:\n        memory: 64Mi\n");
    world.write_manifest(
        "hog.yaml",
        &world.pod_yaml("hog", "  restartPolicy: Never\n", &containers),
    );
    let pod = world.wait_pod("hog", "terminated", |p| p["phase"] == "Failed");
    let state = &container(&pod, "hog").expect("hog")["state"]["terminated"];
    assert_eq!(state["reason"], "OOMKilled", "{pod:#}");
    assert_eq!(state["exitCode"], 137, "{pod:#}");
}

/// A pod edited from runc to gvisor is made again under gVisor, and back.
/// The pod is on the `none` driver: its own namespace with only `lo`.
#[test]
fn a_pod_edited_from_runc_to_gvisor_and_back_is_recreated_under_each() {
    let mut world = PodWorld::with_config("runc", GVISOR_HANDLER);
    world.start_agent();
    let containers = world.shell_container("app", "trap 'exit 0' TERM; sleep 1000 & wait");
    let mut pids = Vec::new();
    for runtime in ["runc", "gvisor", "runc"] {
        let yaml = world
            .pod_yaml("edited", "", &containers)
            .replace("hostNetwork: true", "hostNetwork: false")
            .replace(
                "runtimeClassName: runc",
                &format!("runtimeClassName: {runtime}"),
            );
        world.write_manifest("edited.yaml", &yaml);
        let pod = world.wait_pod("edited", &format!("running under {runtime}"), |p| {
            container(p, "app").is_some_and(|c| c["runtime"] == runtime)
                && running_pid(p, "app").is_some()
        });
        let pid = running_pid(&pod, "app").expect("pid");
        assert!(
            !pids.contains(&pid),
            "a new container each time: {pids:?} {pid}"
        );
        pids.push(pid);
        let (code, dmesg, err) = exec(&world, "edited", &["busybox", "dmesg"]);
        assert_eq!(
            code == 0 && dmesg.contains(GVISOR_BOOT),
            runtime == "gvisor",
            "{runtime}: {code} {dmesg} {err}"
        );
        let (_, addrs, _) = exec(&world, "edited", &["ip", "-4", "addr"]);
        let inet: Vec<&str> = addrs.lines().filter(|l| l.contains("inet ")).collect();
        assert_eq!(inet.len(), 1, "{runtime}: only lo: {addrs}");
        assert!(inet[0].contains("127.0.0.1"), "{runtime}: {addrs}");
    }
}

/// The cni driver under gVisor: the plugin chain's address is the one the
/// sandbox uses, and the host reaches the pod on it.
#[test]
fn a_cni_pod_runs_under_gvisor() {
    let mut net = NetWorld::cni();
    std::fs::write(
        &net.world.config,
        std::fs::read_to_string(&net.world.config).expect("config") + GVISOR_HANDLER,
    )
    .expect("adding the gvisor handler");
    net.world.runtime = "gvisor".into();
    net.world.start_agent();
    let containers = net.web_container("web", 8080, "cni-under-gvisor");
    net.world
        .write_manifest("web.yaml", &net.pod_yaml("web", "", &containers));
    let (_, ip) = net.wait_running_ip("web");
    let (code, addrs, err) = exec(&net.world, "web", &["ip", "-4", "addr"]);
    assert_eq!(code, 0, "{err}");
    assert!(addrs.contains(&format!("inet {ip}/")), "{addrs}");
    let body = answer_of(ip, 8080);
    assert_eq!(body.trim(), "cni-under-gvisor");
    net.world.remove_manifest("web.yaml");
    net.world.wait_pod_gone("web");
}

/// What gVisor cannot honour is refused with the reason, before anything
/// runs; a capability that only acts on the host kernel is a warning.
#[test]
fn privileged_under_gvisor_is_refused_with_the_reason() {
    let mut world = PodWorld::new("gvisor");
    world.start_agent();
    let mut privileged = world.shell_container("app", "exec sleep 1000");
    privileged.push_str("    securityContext:\n      privileged: true\n");
    world.write_manifest("priv.yaml", &world.pod_yaml("priv", "", &privileged));
    let pod = world.wait_pod("priv", "refused", |p| waiting_message(p, "app").is_some());
    let message = waiting_message(&pod, "app").expect("checked");
    assert!(
        message.contains("privileged") && message.contains("gVisor"),
        "{message}"
    );
    assert!(running_pid(&pod, "app").is_none());
}

/// A runtime berth has no code for — a shell script that logs its
/// arguments and runs runc — works as a handler: create, exec, stop and
/// delete go through it with only the OCI runtime CLI.
#[test]
fn a_wrapper_runtime_is_driven_through_the_oci_runtime_cli() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("calls.log");
    let wrapper = dir.path().join("oci-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {log:?}\nexec runc \"$@\"\n",
            log = log.display().to_string()
        ),
    )
    .expect("writing the wrapper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let handler = format!(
        "[runtime.handlers.wrapped]\npath = {:?}\nargs = [\"--log-format\", \"text\"]\n",
        wrapper.display().to_string()
    );
    let mut world = PodWorld::with_config("wrapped", &handler);
    world.start_agent();
    let containers = world.shell_container("app", "trap 'exit 0' TERM; sleep 1000 & wait");
    world.write_manifest("w.yaml", &world.pod_yaml("w", "", &containers));
    let pod = world.wait_pod("w", "running", |p| running_pid(p, "app").is_some());
    assert_eq!(container(&pod, "app").expect("app")["runtime"], "wrapped");
    let (code, out, _) = exec(&world, "w", &["echo", "through the wrapper"]);
    assert_eq!((code, out.as_str()), (0, "through the wrapper\n"));
    world.remove_manifest("w.yaml");
    world.wait_pod_gone("w");

    let calls = std::fs::read_to_string(&log).expect("the wrapper logged its calls");
    let root = world.dirs.run_root.join("runtime/wrapped");
    for subcommand in ["run --detach", "exec --process", "kill", "delete --force"] {
        let expected = format!("--log-format text --root {} {subcommand}", root.display());
        assert!(
            calls.lines().any(|l| l.starts_with(&expected)),
            "no call starting {expected:?} in:\n{calls}"
        );
    }
    assert!(!calls.contains("--network"), "nothing runsc-only: {calls}");
    assert_eq!(world.processes(), Vec::<i32>::new());
}

/// An exec probe that times out has its command killed inside the sandbox
/// (the runtime's exec process has no host pid for it): probes do not pile
/// up in the container.
#[test]
fn a_timed_out_exec_probe_is_killed_inside_the_sandbox() {
    let mut world = PodWorld::new("gvisor");
    world.start_agent();
    let data = world.data_dir("data");
    let mut containers = world.shell_container("app", "trap 'exit 0' TERM; sleep 1000 & wait");
    containers.push_str(DataDir::MOUNT);
    containers.push_str(
        "    readinessProbe:\n      exec:\n        command: [\"sh\", \"-c\", \"echo run >> /data/probes; exec sleep 3600\"]\n      periodSeconds: 1\n      timeoutSeconds: 1\n",
    );
    world.write_manifest(
        "slow.yaml",
        &world.pod_yaml("slow", &data.volume, &containers),
    );
    world.wait_pod("slow", "running", |p| running_pid(p, "app").is_some());
    wait_until(Duration::from_secs(30), "four probe runs", || {
        let runs = std::fs::read_to_string(data.path.join("probes")).ok()?;
        (runs.lines().count() >= 4).then_some(())
    });
    let (code, ps, err) = exec(&world, "slow", &["ps"]);
    assert_eq!(code, 0, "{err}");
    let probes = ps.lines().filter(|l| l.contains("sleep 3600")).count();
    assert!(probes <= 1, "timed-out probes still run:\n{ps}");
}

/// `berth runtimes` before any agent runs: which handlers exist, whether a
/// container runs under each on this kernel (a cached probe), the flags
/// berth derives and what each supports; a broken handler says why.
#[test]
fn berth_runtimes_says_which_handlers_work_here_and_why_not() {
    berth_e2e::require_root();
    let dirs = berth_e2e::TestDirs::new();
    let config = dirs.temp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{GVISOR_HANDLER}\
             [runtime.handlers.systrap]\npath = \"/usr/bin/runsc\"\nargs = [\"--platform=systrap\"]\n\
             [runtime.handlers.kata]\npath = \"/nonexistent/kata-runtime\"\n"
        ),
    )
    .expect("writing the config");
    let config = config.to_str().expect("utf-8 path");
    let report = dirs.berth_json(&["runtimes", "--config", config]);
    let handler = |name: &str| -> Value {
        report
            .as_array()
            .expect("a list")
            .iter()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no handler {name}: {report:#}"))
    };
    let gvisor = handler("gvisor");
    assert_eq!(gvisor["kind"], "runsc", "{gvisor:#}");
    assert_eq!(gvisor["probe"]["works"], true, "{gvisor:#}");
    assert_eq!(gvisor["probe"]["cached"], false, "{gvisor:#}");
    assert_eq!(
        gvisor["derivedArgs"],
        serde_json::json!(["--network=host", "--oci-seccomp", "--overlay2=none"])
    );
    assert_eq!(gvisor["supports"]["privileged"], false, "{gvisor:#}");
    assert_eq!(gvisor["supports"]["hostNetwork"], true, "{gvisor:#}");
    assert_eq!(handler("runc")["probe"]["works"], true);
    // runsc 20221219 has ptrace and kvm, not systrap (added in 2023).
    let systrap = handler("systrap");
    assert_eq!(systrap["probe"]["works"], false, "{systrap:#}");
    assert!(
        systrap["probe"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unknown platform: systrap")),
        "{systrap:#}"
    );
    let kata = handler("kata");
    assert!(
        kata["problem"]
            .as_str()
            .is_some_and(|p| p.contains("/nonexistent/kata-runtime")),
        "{kata:#}"
    );
    let again = dirs.berth_json(&["runtimes", "--config", config]);
    let cached = again
        .as_array()
        .and_then(|a| a.iter().find(|h| h["name"] == "gvisor"))
        .expect("gvisor again");
    assert_eq!(cached["probe"]["cached"], true, "{cached:#}");
    let table = dirs.berth(&["runtimes", "--config", config, "--no-probe"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("gvisor") && l.contains("berth adds --network=host")),
        "{text}"
    );
}
