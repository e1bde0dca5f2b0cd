//! `berth ps` and `berth inspect` on pods the real agent runs (runc, images
//! from a local registry): the rows match what runs — PIDs the host sees,
//! init containers and exits only with `-a`, restart counts — `inspect`
//! shows the container's process, paths and mounts and never a Secret
//! value, and both keep working, saying the status is stale, while the
//! agent is down.

mod cli_common;

use std::path::Path;

use berth_e2e::pods::{PodWorld, container, running_pid};
use cli_common::{PS_COLUMNS, cells, err, ok, stderr};
use serde_json::Value;

const PASSWORD: &str = "hunter2-never-printed";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The `berth ps -o json` row of one container.
fn row<'a>(ps: &'a Value, pod: &str, name: &str) -> Option<&'a Value> {
    ps["containers"]
        .as_array()?
        .iter()
        .find(|r| r["pod"] == pod && r["container"] == name)
}

#[test]
fn ps_and_inspect_match_what_runs_and_never_show_a_secret() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    world.write_manifest(
        "secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {PASSWORD}\n"
        ),
    );
    let mut app = world.shell_container(
        "app",
        "trap 'exit 0' TERM; test -n \"$DB_PASSWORD\" || exit 9; sleep 1000 & wait",
    );
    app.push_str(
        "    env:\n    - name: DB_PASSWORD\n      valueFrom:\n        secretKeyRef:\n          name: db\n          key: password\n\
         \x20   volumeMounts:\n    - name: creds\n      mountPath: /creds\n      readOnly: true\n",
    );
    let init = world.shell_container("setup", "echo prepared");
    let spec = format!(
        "  volumes:\n  - name: creds\n    secret:\n      secretName: db\n  initContainers:\n{init}"
    );
    world.write_manifest("web.yaml", &world.pod_yaml("web", &spec, &app));
    let job = world.shell_container("job", "echo working; exit 3");
    let job_spec = "  restartPolicy: Never\n";
    world.write_manifest("job.yaml", &world.pod_yaml("job", job_spec, &job));

    let web = world.wait_pod("web", "app running", |p| running_pid(p, "app").is_some());
    world.wait_pod("job", "job failed", |p| {
        container(p, "job").is_some_and(|c| c["state"]["terminated"]["exitCode"] == 3)
    });
    let pid = running_pid(&web, "app").expect("app pid");

    // Running containers only, with the pid the host sees.
    let ps = json(&ok(world.dirs.berth(&["ps", "-o", "json"])));
    assert_eq!(ps["agentRunning"], true);
    let rows = ps["containers"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "only app runs: {ps:#}");
    let app_row = row(&ps, "web", "app").expect("app row");
    assert_eq!(app_row["state"]["running"]["pid"], pid);
    assert_eq!(app_row["image"], world.image.reference.as_str());
    assert_eq!(app_row["imageDigest"], world.image.digest.as_str());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the container's process");
    assert!(String::from_utf8_lossy(&cmdline).starts_with("/bin/sh"));

    // -a: the init container and the failed job too.
    let all = json(&ok(world.dirs.berth(&["ps", "-a", "-o", "json"])));
    let setup = row(&all, "web", "setup").expect("init row");
    assert_eq!(setup["init"], true);
    assert_eq!(setup["state"]["terminated"]["exitCode"], 0);
    let failed = row(&all, "job", "job").expect("job row");
    assert_eq!(failed["state"]["terminated"]["exitCode"], 3);
    assert_eq!(failed["restarts"], 0);

    let table = ok(world.dirs.berth(&["ps", "-a"]));
    let table = cells(&table);
    assert_eq!(table[0], PS_COLUMNS);
    let find = |pod: &str, name: &str| {
        table
            .iter()
            .find(|r| r[0] == pod && r[1] == name)
            .unwrap_or_else(|| panic!("no {pod} {name} row in {table:?}"))
    };
    assert!(
        find("job", "job")[3].starts_with("Exited (3) "),
        "{table:?}"
    );
    assert!(
        find("web", "setup (init)")[3].starts_with("Exited (0) "),
        "{table:?}"
    );
    assert_eq!(find("web", "app")[3], "Running");
    let ips: Vec<&str> = app_row["podIps"]
        .as_array()
        .expect("pod IPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        find("web", "app")[6],
        ips.join(","),
        "hostNetwork: the host's"
    );

    // inspect: the process, its paths and mounts; the spec; no secret.
    let text = ok(world.dirs.berth(&["inspect", "web"]));
    assert!(
        !text.contains(PASSWORD),
        "a secret value in inspect: {text}"
    );
    let inspect = json(&text);
    assert_eq!(inspect["manifest"]["metadata"]["name"], "web");
    assert_eq!(inspect["status"]["phase"], "Running");
    let containers = inspect["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 2, "init and app: {inspect:#}");
    let app = containers.iter().find(|c| c["name"] == "app").expect("app");
    assert_eq!(app["pid"], pid, "the pid the host sees");
    assert_eq!(app["runtimeState"], "running");
    assert_eq!(app["runtime"], "runc");
    assert!(
        Path::new(app["bundle"].as_str().expect("bundle"))
            .join("config.json")
            .is_file()
    );
    assert_eq!(app["rootfs"]["fsType"], "overlay");
    let mounts = app["mounts"].as_array().expect("mounts");
    assert!(
        mounts.iter().any(|m| m["destination"] == "/creds"),
        "{mounts:?}"
    );
    assert!(
        app.get("netns").is_none(),
        "hostNetwork: no netns of its own"
    );
    let own_cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let cgroup = app["cgroupsPath"].as_str().expect("cgroup path");
    assert!(
        own_cgroups.contains(cgroup),
        "{cgroup} not in {own_cgroups}"
    );
    let log = app["logPath"].as_str().expect("log path");
    assert!(log.ends_with("/logs/default_web/app/0.log"), "{log}");
    // app has printed nothing (its log file does not exist yet): no lines.
    assert_eq!(ok(world.dirs.berth(&["logs", "web"])), "");
    assert_eq!(ok(world.dirs.berth(&["logs", "web/setup"])), "prepared\n");
    let setup = containers
        .iter()
        .find(|c| c["name"] == "setup")
        .expect("setup");
    assert_eq!(setup["init"], true);
    assert_eq!(setup["runtimeState"], "exited");
    for args in [&["ps", "-a", "-o", "json"][..], &["status", "-o", "json"]] {
        let out = ok(world.dirs.berth(args));
        assert!(!out.contains(PASSWORD), "a secret value in {args:?}");
    }
    let text = err(world.dirs.berth(&["exec", "job", "--", "true"]));
    assert!(
        text.contains(
            "container job of pod default/job is not running (terminated: Error, exit code 3)"
        ),
        "{text}"
    );
    let text = err(world.dirs.berth(&["inspect", "web/app"]));
    assert!(text.contains("takes a pod, not a container"), "{text}");

    // kill -9 the agent: the containers run on, and so does berth ps.
    world.kill_agent();
    let out = world.dirs.berth(&["ps"]);
    let text = ok(out.clone());
    assert!(
        stderr(&out).contains("no berth agent is running"),
        "{}",
        stderr(&out)
    );
    assert!(
        cells(&text)
            .iter()
            .any(|r| r[..2] == ["web", "app"] && r[3] == "Running"),
        "{text}"
    );
    let inspect = json(&ok(world.dirs.berth(&["inspect", "web"])));
    assert_eq!(inspect["agentRunning"], false);
    // The world's cleanup needs an agent to delete the pods.
    world.start_agent();
}
