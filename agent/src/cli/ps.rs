//! `berth ps`: the containers of every pod, from the status file the agent
//! keeps — running ones by default, every one (exited, waiting, init) with
//! `-a`. Works while the agent is down: then the status is its last word,
//! except that a container's exit is read from the exit file its shim
//! wrote, which is the truth even when no agent saw it.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;

use super::images::parse_rfc3339;
use super::pods::{LoadedStatus, pod_details, pods, short_pod_name};
use super::status::{finish_output, print_rows};
use super::{GlobalArgs, OutputFormat};
use crate::paths::Paths;
use crate::runtime::shim;
use crate::status::{ContainerDetails, ContainerState, ObjectStatus, Phase};

/// The table's columns, in order.
const COLUMNS: [&str; 7] = [
    "POD",
    "CONTAINER",
    "IMAGE",
    "STATE",
    "RESTARTS",
    "AGE",
    "IP",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Every container: also exited, waiting and init containers, and pods
    /// that have none yet.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One row: a container, or (with `-a`) a pod without containers yet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row<'a> {
    namespace: &'a str,
    pod: &'a str,
    pod_phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    init: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<ContainerState>,
    restarts: u32,
    /// As its readiness (and startup) probe says; a running container
    /// without one is ready.
    ready: bool,
    pod_ips: &'a [String],
    host_network: bool,
    #[serde(skip)]
    pod_status: &'a ObjectStatus,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonOutput<'a> {
    agent_running: bool,
    status_updated_at: &'a str,
    containers: &'a [Row<'a>],
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let loaded = LoadedStatus::load(global)?;
    let paths = global.paths();
    let overlay = (!loaded.agent_running).then_some(&paths);
    let rows: Vec<Row<'_>> = pods(&loaded.doc)
        .flat_map(|pod| rows_of(pod, overlay))
        .filter(|row| args.all || is_running(row))
        .collect();
    let mut out = std::io::stdout().lock();
    let printed = match args.output {
        OutputFormat::Json => serde_json::to_writer_pretty(
            &mut out,
            &JsonOutput {
                agent_running: loaded.agent_running,
                status_updated_at: &loaded.doc.agent.updated_at,
                containers: &rows,
            },
        )
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out)),
        OutputFormat::Table => {
            if let Some(warning) = loaded.stale_warning() {
                eprintln!("{warning}");
            }
            print_table(&mut out, &rows, args.all, unix_now())
        }
    };
    finish_output(printed)
}

/// The rows of one pod: init containers first, as they run. `overlay`:
/// read exits from the shims' exit files (when no agent keeps the status
/// current).
fn rows_of<'a>(pod: &'a ObjectStatus, overlay: Option<&Paths>) -> Vec<Row<'a>> {
    let details = pod_details(pod);
    let base = |container: Option<(&'a ContainerDetails, bool)>| Row {
        namespace: &pod.namespace,
        pod: &pod.name,
        pod_phase: pod.phase,
        container: container.map(|(c, _)| c.name.as_str()),
        init: container.is_some_and(|(_, init)| init),
        image: container.map(|(c, _)| c.image.as_str()),
        image_digest: container.and_then(|(c, _)| c.image_digest.as_deref()),
        container_id: container.and_then(|(c, _)| c.container_id.as_deref()),
        state: container.map(|(c, _)| observed_state(c, overlay)),
        restarts: container.map_or(0, |(c, _)| c.restart_count),
        ready: container.is_some_and(|(c, _)| c.ready),
        pod_ips: details.map_or(&[], |d| d.pod_ips.as_slice()),
        host_network: details.is_some_and(|d| d.host_network),
        pod_status: pod,
    };
    let containers: Vec<(&ContainerDetails, bool)> = details
        .map(|d| {
            let init = d.init_containers.iter().map(|c| (c, true));
            init.chain(d.containers.iter().map(|c| (c, false)))
                .collect()
        })
        .unwrap_or_default();
    if containers.is_empty() {
        return vec![base(None)];
    }
    containers.into_iter().map(|c| base(Some(c))).collect()
}

/// The container's state as published, or its real end when its shim
/// recorded one the status does not show yet.
fn observed_state(container: &ContainerDetails, overlay: Option<&Paths>) -> ContainerState {
    let published = container.state.clone();
    let (Some(paths), Some(id), ContainerState::Running { .. }) =
        (overlay, &container.container_id, &published)
    else {
        return published;
    };
    match shim::read_exit(&paths.shim_dir(id)) {
        Ok(Some(exit)) => ContainerState::Terminated {
            exit_code: exit.exit_code,
            signal: exit.signal,
            reason: exit.reason().to_owned(),
            message: String::new(),
            started_at: exit.started_at.clone(),
            finished_at: exit.finished_at.clone(),
        },
        _ => published,
    }
}

fn is_running(row: &Row<'_>) -> bool {
    matches!(row.state, Some(ContainerState::Running { .. }))
}

fn unix_now() -> i64 {
    crate::status::time::unix_secs()
}

fn print_table(out: &mut impl Write, rows: &[Row<'_>], all: bool, now: i64) -> std::io::Result<()> {
    if rows.is_empty() {
        let what = if all {
            "containers"
        } else {
            "running containers"
        };
        return writeln!(out, "No {what}.");
    }
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            let container = match (row.container, row.init) {
                (Some(name), true) => format!("{name} (init)"),
                (Some(name), false) => name.to_owned(),
                (None, _) => "-".to_owned(),
            };
            [
                short_pod_name(row.pod_status),
                container,
                row.image.unwrap_or("-").to_owned(),
                row.state
                    .as_ref()
                    .map_or_else(|| row.pod_phase.to_string(), |s| state_text(s, now))
                    + if is_running(row) && !row.ready {
                        " (not ready)"
                    } else {
                        ""
                    },
                row.restarts.to_string(),
                row.state
                    .as_ref()
                    .and_then(|s| age(s, now))
                    .unwrap_or_else(|| "-".to_owned()),
                ip_text(row),
            ]
        })
        .collect();
    print_rows(out, &COLUMNS, &cells)
}

/// `Running`, `CrashLoopBackOff`, `Exited (3) 2m ago`, `OOMKilled (137) 5s ago`.
fn state_text(state: &ContainerState, now: i64) -> String {
    match state {
        ContainerState::Running { .. } => "Running".to_owned(),
        ContainerState::Waiting { reason, .. } => reason.clone(),
        ContainerState::Terminated {
            exit_code,
            reason,
            finished_at,
            ..
        } => {
            let what = match reason.as_str() {
                "Completed" | "Error" | "" => "Exited",
                other => other,
            };
            let ago = parse_rfc3339(finished_at)
                .map(|t| format!(" {} ago", short_duration(now - t)))
                .unwrap_or_default();
            format!("{what} ({exit_code}){ago}")
        }
    }
}

/// How long the current instance has existed (started, or ran before it
/// ended); `None` while it waits to be created.
fn age(state: &ContainerState, now: i64) -> Option<String> {
    let started = match state {
        ContainerState::Running { started_at, .. } => Some(started_at.as_str()),
        ContainerState::Terminated {
            started_at,
            finished_at,
            ..
        } => Some(started_at.as_deref().unwrap_or(finished_at)),
        ContainerState::Waiting { .. } => None,
    }?;
    parse_rfc3339(started).map(|t| short_duration(now - t))
}

fn ip_text(row: &Row<'_>) -> String {
    if !row.pod_ips.is_empty() {
        row.pod_ips.join(",")
    } else if row.host_network {
        "host".to_owned()
    } else {
        "-".to_owned()
    }
}

/// kubectl's compact ages: `45s`, `12m`, `5h`, `3d`, `2y`.
fn short_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 2 * 365 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::pods::tests::{container, details, document, pod, running};
    use super::*;

    const IMAGE: &str = "localhost/berth/busybox:1.35";
    /// 2026-01-01T00:10:00Z
    const NOW: i64 = 1_767_226_200;

    fn table(rows: &[Row<'_>], all: bool) -> String {
        let mut out = Vec::new();
        print_table(&mut out, rows, all, NOW).expect("print");
        String::from_utf8(out).expect("utf8")
    }

    fn exited(name: &str, code: i32, reason: &str) -> ContainerDetails {
        let mut c = container(
            name,
            ContainerState::Terminated {
                exit_code: code,
                signal: None,
                reason: reason.into(),
                message: String::new(),
                started_at: Some("2026-01-01T00:05:00.000Z".into()),
                finished_at: "2026-01-01T00:08:00.000000000Z".into(),
            },
        );
        c.restart_count = 4;
        c
    }

    #[test]
    fn rows_show_running_containers_by_default_and_everything_with_all() {
        let mut web = details(
            vec![running("httpd"), exited("job", 3, "Error")],
            vec![exited("setup", 0, "Completed")],
        );
        web.containers.push(container(
            "crashy",
            ContainerState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "restart in 40s".into(),
            },
        ));
        let mut etcd = details(vec![exited("etcd", 137, "OOMKilled")], vec![]);
        etcd.pod_ips.clear();
        etcd.host_network = true;
        let doc = document(vec![
            pod("default", "web", Some(web)),
            pod("kube-system", "etcd", Some(etcd)),
            pod("default", "pending", None),
        ]);
        let rows: Vec<Row<'_>> = pods(&doc).flat_map(|p| rows_of(p, None)).collect();
        let running: Vec<Row<'_>> = pods(&doc)
            .flat_map(|p| rows_of(p, None))
            .filter(is_running)
            .collect();
        assert_eq!(
            table(&running, false),
            "\
POD   CONTAINER   IMAGE                          STATE     RESTARTS   AGE   IP
web   httpd       localhost/berth/busybox:1.35   Running   0          10m   10.88.0.5
"
        );
        let all = table(&rows, true);
        let cells: Vec<Vec<&str>> = all
            .lines()
            .map(|line| {
                line.split("   ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        // Pods in key order (default before kube-system), init first; a pod
        // without containers shows its phase.
        let expected: [&[&str]; 7] = [
            &COLUMNS,
            &["pending", "-", "-", "Running", "0", "-", "-"],
            &[
                "web",
                "setup (init)",
                IMAGE,
                "Exited (0) 2m ago",
                "4",
                "5m",
                "10.88.0.5",
            ],
            &["web", "httpd", IMAGE, "Running", "0", "10m", "10.88.0.5"],
            &[
                "web",
                "job",
                IMAGE,
                "Exited (3) 2m ago",
                "4",
                "5m",
                "10.88.0.5",
            ],
            &[
                "web",
                "crashy",
                IMAGE,
                "CrashLoopBackOff",
                "0",
                "-",
                "10.88.0.5",
            ],
            &[
                "kube-system/etcd",
                "etcd",
                IMAGE,
                "OOMKilled (137) 2m ago",
                "4",
                "5m",
                "host",
            ],
        ];
        assert_eq!(cells, expected, "{all}");
        assert_eq!(table(&[], false), "No running containers.\n");
    }

    #[test]
    fn json_rows_carry_ids_and_structured_states() {
        let doc = document(vec![pod(
            "default",
            "web",
            Some(details(vec![running("httpd")], vec![])),
        )]);
        let rows: Vec<Row<'_>> = pods(&doc).flat_map(|p| rows_of(p, None)).collect();
        let json = serde_json::to_value(&rows).expect("json");
        assert_eq!(json[0]["containerId"], "id-httpd");
        assert_eq!(json[0]["state"]["running"]["pid"], 4242);
        assert_eq!(json[0]["podIps"][0], "10.88.0.5");
        assert_eq!(json[0]["podPhase"], "Running");
        assert_eq!(json[0]["ready"], true);
    }

    #[test]
    fn running_containers_that_are_not_ready_say_so() {
        let mut httpd = running("httpd");
        httpd.ready = false;
        let doc = document(vec![pod(
            "default",
            "web",
            Some(details(vec![httpd, running("sidecar")], vec![])),
        )]);
        let rows: Vec<Row<'_>> = pods(&doc).flat_map(|p| rows_of(p, None)).collect();
        let json = serde_json::to_value(&rows).expect("json");
        assert_eq!(json[0]["ready"], false);
        let text = table(&rows, false);
        let states: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .find(|c| c.starts_with("Running"))
            })
            .collect();
        assert_eq!(states, ["Running (not ready)", "Running"], "{text}");
    }

    #[test]
    fn without_an_agent_exits_come_from_the_shims_exit_file() {
        let temp = tempfile::tempdir().expect("tempdir");
        let paths = Paths::new(&temp.path().join("root"), &temp.path().join("run"));
        let shim_dir = paths.shim_dir("id-httpd");
        std::fs::create_dir_all(&shim_dir).expect("mkdir");
        std::fs::write(
            shim_dir.join(shim::EXIT_FILE),
            r#"{"pid":42,"exit_code":143,"signal":15,"oom_killed":false,"started_at":"2026-01-01T00:00:00.000000000Z","started_at_ns":0,"finished_at":"2026-01-01T00:09:00.000000000Z","finished_at_ns":0,"start_error":null}"#,
        )
        .expect("exit file");
        let httpd = running("httpd");
        let state = observed_state(&httpd, Some(&paths));
        assert_eq!(state_text(&state, NOW), "Exited (143) 60s ago");
        assert_eq!(observed_state(&httpd, None), httpd.state);
        let other = running("other");
        assert_eq!(observed_state(&other, Some(&paths)), other.state);
    }

    #[test]
    fn ages_are_compact() {
        assert_eq!(short_duration(-3), "0s");
        assert_eq!(short_duration(119), "119s");
        assert_eq!(short_duration(600), "10m");
        assert_eq!(short_duration(5 * 3600), "5h");
        assert_eq!(short_duration(3 * 86_400), "3d");
        assert_eq!(short_duration(3 * 365 * 86_400), "3y");
    }
}
