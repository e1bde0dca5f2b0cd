//! `berth ps`, `exec` and `inspect` while no agent runs — the
//! containers keep running then, and the CLI must still work: real
//! containers made through berth's runtime library (real berth-shim, real
//! runc), and the status file exactly as an agent leaves it behind.

mod cli_common;
mod runtime_common;

use std::path::Path;
use std::process::{Output, Stdio};

use berth::runtime::spec::EnvVar;
use berth::status::{
    AgentInfo, AgentState, ContainerDetails, ContainerState, Details, ObjectStatus, Phase,
    PodDetails, STATUS_FORMAT_VERSION, SourceRef, StatusDocument,
};
use cli_common::{PS_COLUMNS, cells, err, ok, stderr, stdout};
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
    let rows = cells(&text);
    assert_eq!(rows[0], PS_COLUMNS);
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
fn exec_passes_stdin_env_and_exit_codes_without_an_agent() {
    let f = Fixture::new(&[("app", "sleep 1000")]);
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
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("out\n", "err\n")
    );
    let inside = ok(f.berth(&["exec", "web", "--", "readlink", "/proc/self/ns/pid"]));
    let container = std::fs::read_link(format!("/proc/{}/ns/pid", f.pids[0])).expect("ns");
    assert_eq!(
        Path::new(inside.trim()),
        container,
        "the container's pid namespace"
    );
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
    assert_eq!(
        ok(f.berth(&["exec", "web", "--", "sh", "-c", "cat; echo end"])),
        "end\n"
    );
    let text = err(f.berth(&["exec", "-e", "=x", "web", "--", "true"]));
    assert!(text.contains("is not NAME=VALUE"), "{text}");
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
    assert_eq!(json["manifest"]["spec"]["containers"][0]["name"], "app");
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

    // A manifest that stops parsing: the agent keeps the last good version,
    // and inspect says the file no longer shows it.
    std::fs::write(
        f.h.dirs.manifests.join("web.yaml"),
        "kind: Pod\nmetadata: [",
    )
    .expect("edit");
    let json: Value = serde_json::from_str(&ok(f.berth(&["inspect", "web"]))).expect("json");
    assert!(json["manifest"].is_null(), "{json:#}");
    let note = json["manifestNote"].as_str().expect("a note");
    assert!(note.contains("does not define Pod/default/web"), "{note}");

    let text = err(f.berth(&["inspect", "nope"]));
    assert!(
        text.contains("no pod default/nope") && text.contains("pods: default/web"),
        "{text}"
    );
}
