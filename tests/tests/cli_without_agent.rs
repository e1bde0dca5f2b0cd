//! `berth ps`, `logs`, `exec` and `inspect` while no agent runs — the
//! containers keep running then, and the CLI must still work: real
//! containers made through berth's runtime library (real berth-shim, real
//! runc), and the status file exactly as an agent leaves it behind.

mod runtime_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use berth::runtime::spec::EnvVar;
use berth::status::{
    AgentInfo, AgentState, ContainerDetails, ContainerState, Details, ObjectStatus, Phase,
    PodDetails, STATUS_FORMAT_VERSION, SourceRef, StatusDocument,
};
use berth_e2e::wait_until;
use manifests::Kind;
use runtime_common::{Harness, sh};
use serde_json::Value;

const SECRET: &str = "s3cret-never-printed";

/// A pod `web` with containers started by `scripts` (name, shell script),
/// and a status file that says they run, written by an agent that is gone.
struct Fixture {
    h: Harness,
    ids: Vec<String>,
    pids: Vec<i32>,
}

impl Fixture {
    fn new(scripts: &[(&str, &str)]) -> Self {
        let mut h = Harness::new("runc");
        let pod = h.pod("web");
        let (_, volume, mount) = h.data_volume();
        let mut ids = Vec::new();
        let mut pids = Vec::new();
        let mut containers = Vec::new();
        for (name, script) in scripts {
            let mut spec = sh(name, script);
            spec.env.push(EnvVar::new("DB_PASSWORD", SECRET));
            spec.volume_mounts.push(mount.clone());
            let (id, created) = h
                .run_with_volumes(&pod, &spec, std::slice::from_ref(&volume))
                .expect("container started");
            containers.push(ContainerDetails {
                name: name.to_string(),
                image: "localhost/berth/busybox:1.35".into(),
                image_digest: None,
                container_id: Some(id.clone()),
                runtime: Some("runc".into()),
                state: ContainerState::Running {
                    started_at: berth::status::time::now(),
                    pid: created.pid,
                },
                last_state: None,
                restart_count: 0,
                ready: true,
            });
            ids.push(id);
            pids.push(created.pid);
        }
        let manifest = h.dirs.manifests.join("web.yaml");
        std::fs::write(&manifest, POD_YAML).expect("manifest");
        let now = berth::status::time::now();
        let doc = StatusDocument {
            format_version: STATUS_FORMAT_VERSION,
            agent: AgentInfo {
                pid: 1,
                version: "test".into(),
                state: AgentState::Stopped,
                started_at: now.clone(),
                updated_at: now.clone(),
                manifests: h.dirs.manifests.clone(),
                resolved_manifests: None,
                desired_revision: 1,
                source_error: None,
            },
            objects: vec![ObjectStatus {
                kind: Kind::Pod,
                namespace: "default".into(),
                name: "web".into(),
                phase: Phase::Running,
                message: format!("{}/{} running", scripts.len(), scripts.len()),
                last_error: None,
                source: SourceRef {
                    file: manifest,
                    line: 1,
                    column: 1,
                },
                generation: 1,
                observed_generation: Some(1),
                last_transition_time: now,
                details: Some(Details::Pod(PodDetails {
                    uid: pod.0.uid.clone(),
                    containers,
                    ..Default::default()
                })),
            }],
            files: Vec::new(),
        };
        doc.save(&h.paths.status_file()).expect("status file");
        Self { h, ids, pids }
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.h.dirs.berth(args)
    }

    fn data(&self) -> std::path::PathBuf {
        self.h.dirs.temp.path().join("data")
    }
}

/// The pod the fixture's status describes (only `berth inspect` reads it).
const POD_YAML: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: app
      image: localhost/berth/busybox:1.35
      env:
        - name: DB_PASSWORD
          valueFrom:
            secretKeyRef:
              name: db
              key: password
";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "berth failed: {}\n{}",
        stderr(&output),
        stdout(&output)
    );
    stdout(&output)
}

fn err(output: Output) -> String {
    assert!(
        !output.status.success(),
        "berth should have failed: {}",
        stdout(&output)
    );
    stderr(&output)
}

/// Lines a child prints, delivered through a channel as they come.
fn line_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("no {what} within 20s: {e}"))
}

#[test]
fn ps_shows_running_containers_and_exits_the_agent_did_not_see() {
    let f = Fixture::new(&[
        ("app", "sleep 1000"),
        (
            "job",
            "while [ ! -f /data/stop ]; do sleep 0.05; done; exit 3",
        ),
    ]);
    let table = f.berth(&["ps"]);
    let text = ok(table.clone());
    assert!(
        stderr(&table).contains("no berth agent is running"),
        "the stale status is pointed out: {}",
        stderr(&table)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows[0],
        [
            "POD",
            "CONTAINER",
            "IMAGE",
            "STATE",
            "RESTARTS",
            "AGE",
            "IP"
        ]
    );
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(
        &rows[1][..5],
        ["web", "app", "localhost/berth/busybox:1.35", "Running", "0"]
    );

    // The job exits while no agent watches: its shim's exit file tells.
    std::fs::write(f.data().join("stop"), "").expect("trigger");
    f.h.wait_exit(&f.ids[1]);
    let text = ok(f.berth(&["ps"]));
    assert!(!text.contains("job"), "exited containers need -a: {text}");
    let text = ok(f.berth(&["ps", "-a"]));
    assert!(text.contains("Exited (3)"), "{text}");

    let json: Value =
        serde_json::from_str(&ok(f.berth(&["ps", "-a", "-o", "json"]))).expect("json");
    assert_eq!(json["agentRunning"], false);
    let job = &json["containers"][1];
    assert_eq!(job["container"], "job");
    assert_eq!(job["containerId"], f.ids[1].as_str());
    assert_eq!(job["state"]["terminated"]["exitCode"], 3);
    assert_eq!(json["containers"][0]["state"]["running"]["pid"], f.pids[0]);
}

#[test]
fn logs_print_tail_timestamps_and_follow_until_the_container_exits() {
    let f = Fixture::new(&[(
        "app",
        "echo one; echo two; echo three; \
         while [ ! -f /data/more ]; do sleep 0.05; done; echo four; \
         while [ ! -f /data/stop ]; do sleep 0.05; done; echo five",
    )]);
    let log_dir = f.h.paths.container_logs("default", "web", "app");
    wait_until(Duration::from_secs(20), "three lines logged", || {
        (berth::runtime::logs::read_lines(&log_dir, 0, false)
            .unwrap_or_default()
            .len()
            == 3)
            .then_some(())
    });
    // On disk: CRI records.
    let raw = std::fs::read_to_string(log_dir.join("0.log")).expect("log file");
    let first: Vec<&str> = raw
        .lines()
        .next()
        .expect("a record")
        .splitn(4, ' ')
        .collect();
    assert!(first[0].ends_with('Z') && first[0].contains('T'), "{raw}");
    assert_eq!(&first[1..], ["stdout", "F", "one"], "{raw}");

    assert_eq!(ok(f.berth(&["logs", "web"])), "one\ntwo\nthree\n");
    assert_eq!(ok(f.berth(&["logs", "--tail", "1", "web/app"])), "three\n");
    let stamped = ok(f.berth(&["logs", "--timestamps", "default/web/app"]));
    assert_eq!(stamped.lines().count(), 3);
    assert!(
        stamped
            .lines()
            .all(|l| l.split_once(' ').is_some_and(|(t, _)| t.ends_with('Z'))),
        "{stamped}"
    );
    let text = err(f.berth(&["logs", "--previous", "web"]));
    assert!(
        text.contains("logs of container app of pod default/web")
            && text.contains("has not restarted"),
        "{text}"
    );

    let mut follow =
        f.h.dirs
            .berth_command(&["logs", "-f", "--tail", "1", "web"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth logs -f");
    let lines = line_reader(&mut follow);
    assert_eq!(next_line(&lines, "the tail"), "three");
    std::fs::write(f.data().join("more"), "").expect("trigger");
    assert_eq!(next_line(&lines, "a followed line"), "four");
    assert!(
        follow.try_wait().expect("try_wait").is_none(),
        "-f keeps going while the container runs"
    );
    std::fs::write(f.data().join("stop"), "").expect("trigger");
    assert_eq!(next_line(&lines, "the last line"), "five");
    let status = wait_until(Duration::from_secs(20), "berth logs -f to end", || {
        follow.try_wait().expect("try_wait")
    });
    assert!(status.success(), "{status:?}");
}

#[test]
fn exec_runs_in_the_container_namespaces_and_returns_its_exit_code() {
    let f = Fixture::new(&[("app", "sleep 1000")]);
    let pid = f.pids[0];
    for ns in ["pid", "mnt", "net", "ipc", "uts", "cgroup"] {
        let inside = ok(f.berth(&[
            "exec",
            "web",
            "--",
            "readlink",
            &format!("/proc/self/ns/{ns}"),
        ]));
        let container = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).expect("container ns");
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("host ns");
        assert_eq!(Path::new(inside.trim()), container, "{ns} namespace");
        if ns != "cgroup" {
            assert_ne!(container, host, "{ns}: the container's own");
        }
    }
    let out = f.berth(&[
        "exec",
        "web/app",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the command's exit code is berth's"
    );
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // docker's form without `--`, an extra variable, and stdin with -i.
    let mut child =
        f.h.dirs
            .berth_command(&[
                "exec",
                "-i",
                "-e",
                "GREETING=hi",
                "web",
                "sh",
                "-c",
                "read x; echo $GREETING $x",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("berth exec -i");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"there\n")
        .expect("write stdin");
    assert_eq!(ok(child.wait_with_output().expect("exec -i")), "hi there\n");
    // Without -i the command's stdin is empty, not berth's.
    let out = ok(f.berth(&["exec", "web", "--", "sh", "-c", "cat; echo end"]));
    assert_eq!(out, "end\n");
}

#[test]
fn exec_t_gets_a_terminal_and_refuses_without_one() {
    let f = Fixture::new(&[("app", "sleep 1000")]);
    let text = err(f.berth(&["exec", "-t", "web", "--", "tty"]));
    assert!(text.contains("not a terminal"), "{text}");

    // `script` gives berth a pseudo-terminal as its stdin, as a user's shell would.
    let command_line: Vec<String> = [berth_e2e::berth_bin().display().to_string()]
        .into_iter()
        .chain(
            [
                "--root",
                f.h.dirs.root.to_str().expect("utf8"),
                "--run-root",
                f.h.dirs.run_root.to_str().expect("utf8"),
                "exec",
                "-it",
                "web",
                "--",
                "sh",
                "-c",
                "tty; test -t 0 && echo stdin-is-a-tty; exit 5",
            ]
            .map(String::from),
        )
        .map(|a| format!("'{a}'"))
        .collect();
    let out = std::process::Command::new("script")
        .args(["-qec", &command_line.join(" "), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("running berth exec -it under script");
    let text = stdout(&out);
    assert!(text.contains("/dev/pts/"), "a pty inside: {text}");
    assert!(text.contains("stdin-is-a-tty"), "{text}");
    assert_eq!(
        out.status.code(),
        Some(5),
        "exit code through the tty: {text}"
    );
}

#[test]
fn inspect_shows_pids_paths_and_mounts_but_no_secret() {
    let f = Fixture::new(&[("app", "sleep 1000")]);
    let text = ok(f.berth(&["inspect", "web"]));
    assert!(
        !text.contains(SECRET),
        "the environment is never printed: {text}"
    );
    let json: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(json["namespace"], "default");
    assert_eq!(json["agentRunning"], false);
    assert_eq!(json["spec"]["spec"]["containers"][0]["name"], "app");
    assert_eq!(json["status"]["phase"], "Running");
    let c = &json["containers"][0];
    assert_eq!(c["containerId"], f.ids[0].as_str());
    assert_eq!(c["runtimeState"], "running");
    assert_eq!(c["pid"], f.pids[0], "the PID the host sees");
    let shim_pid = c["shimPid"].as_i64().expect("shim pid");
    let shim_cmdline = std::fs::read(format!("/proc/{shim_pid}/cmdline")).expect("shim alive");
    assert!(String::from_utf8_lossy(&shim_cmdline).contains("berth-shim"));
    assert_eq!(c["runtime"], "runc");
    let bundle = c["bundle"].as_str().expect("bundle");
    assert!(Path::new(bundle).join("config.json").is_file());
    assert_eq!(c["rootfs"]["mounted"], true);
    assert_eq!(c["rootfs"]["fsType"], "overlay");
    let mounts = c["mounts"].as_array().expect("mounts");
    assert!(
        mounts.iter().any(|m| m["destination"] == "/data"),
        "{mounts:?}"
    );
    assert!(
        mounts.iter().any(|m| m["destination"] == "/proc"),
        "{mounts:?}"
    );
    let netns = c["netns"].as_str().expect("netns");
    assert_eq!(
        std::fs::metadata(netns)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok(),
        std::fs::metadata(format!("/proc/{}/ns/net", f.pids[0]))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok(),
        "netns {netns} is the container's"
    );
    let cgroup = c["cgroupsPath"].as_str().expect("cgroup path");
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", f.pids[0])).expect("cgroup");
    assert!(
        own.contains(cgroup.trim_start_matches('/')),
        "{cgroup} in {own}"
    );
    assert!(c["logPath"].as_str().expect("log").ends_with("/0.log"));

    let text = err(f.berth(&["inspect", "nope"]));
    assert!(
        text.contains("no pod default/nope") && text.contains("pods: default/web"),
        "{text}"
    );
}
