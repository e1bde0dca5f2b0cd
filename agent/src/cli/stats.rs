//! `berth stats [POD[/CONTAINER]] [--no-stream] [-o json]`: what each
//! running container uses, like `crictl stats` / `docker stats`, read
//! from the same places as the agent's `/metrics` (cgroups, the pod's
//! network namespace, the writable layer) through
//! [`crate::metrics::sample`]. CPU % is the usage between two readings
//! (100% = one core); memory is the working set, as the kubelet counts it.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use super::images::human_size;
use super::pods::{LoadedStatus, find_container, find_pod};
use super::status::{finish_output, print_rows};
use super::{GlobalArgs, OutputFormat};
use crate::metrics::netdev;
use crate::metrics::sample::{NodeSample, Sampler};
use crate::runtime::CgroupLayout;
use crate::status::{ContainerDetails, ObjectStatus, StatusDocument};

/// Between the two readings of `--no-stream`, and between refreshes.
const INTERVAL: Duration = Duration::from_secs(1);
/// A writable layer is measured again after this long.
const DISK_TTL: Duration = Duration::from_secs(10);

const COLUMNS: [&str; 8] = [
    "POD",
    "CONTAINER",
    "CPU %",
    "MEM USAGE / LIMIT",
    "MEM %",
    "NET RX / TX",
    "DISK",
    "PIDS",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// POD (each of its containers) or POD/CONTAINER; default: every
    /// running container.
    #[arg(value_name = "POD[/CONTAINER]")]
    pub target: Option<String>,
    /// Print one reading and exit, instead of refreshing every second.
    #[arg(long)]
    pub no_stream: bool,
    /// Output format; `json` while streaming prints one JSON document per
    /// line and refresh.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// One container's figures, as `-o json` prints them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    namespace: String,
    pod: String,
    container: String,
    container_id: String,
    /// Over the last interval; 100 is one core busy.
    cpu_percent: Option<f64>,
    cpu_usage_seconds: Option<f64>,
    memory_working_set_bytes: Option<u64>,
    memory_usage_bytes: Option<u64>,
    memory_rss_bytes: Option<u64>,
    /// `None`: no limit (the table shows the host's memory).
    memory_limit_bytes: Option<u64>,
    pids: Option<u64>,
    /// The pod's network: every container of a pod shares it.
    net_rx_bytes: Option<u64>,
    net_tx_bytes: Option<u64>,
    disk_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    agent_running: bool,
    containers: Vec<Row>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let paths = global.paths();
    let layout = CgroupLayout::detect().ok();
    let sampler = Sampler::new(paths, layout, DISK_TTL);
    let host_memory = crate::runtime::oom::memory_total().unwrap_or(0);
    let mut warned = false;
    let mut previous: Option<NodeSample> = None;
    let terminal = std::io::stdout().is_terminal();
    loop {
        let loaded = LoadedStatus::load(global)?;
        if !warned && let Some(warning) = loaded.stale_warning() {
            eprintln!("{warning}");
            warned = true;
        }
        let wanted = Target::parse(&loaded.doc, args.target.as_deref())?;
        let sample = sampler.sample(&loaded.doc, |pod, c| wanted.picks(pod, c));
        let Some(before) = previous.replace(sample) else {
            std::thread::sleep(INTERVAL);
            continue;
        };
        let current = previous.as_ref().expect("just replaced");
        let report = Report {
            agent_running: loaded.agent_running,
            containers: rows(&before, current),
        };
        let mut out = std::io::stdout().lock();
        let printed = match args.output {
            OutputFormat::Json if args.no_stream => serde_json::to_writer_pretty(&mut out, &report)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out)),
            OutputFormat::Json => serde_json::to_writer(&mut out, &report)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out)),
            OutputFormat::Table => {
                let clear = if terminal && !args.no_stream {
                    "\x1b[2J\x1b[H"
                } else {
                    ""
                };
                write!(out, "{clear}")
                    .and_then(|()| print_table(&mut out, &report.containers, host_memory))
            }
        }
        .and_then(|()| out.flush());
        if args.no_stream || printed.is_err() {
            return finish_output(printed);
        }
        drop(out);
        std::thread::sleep(INTERVAL);
    }
}

/// Which containers the user asked for.
enum Target {
    All,
    Pod(String, String),
    Container(String, String, String),
}

impl Target {
    fn parse(doc: &StatusDocument, address: Option<&str>) -> anyhow::Result<Self> {
        let Some(address) = address else {
            return Ok(Self::All);
        };
        if let Ok(pod) = find_pod(doc, address) {
            return Ok(Self::Pod(pod.namespace.clone(), pod.name.clone()));
        }
        let target = find_container(doc, address)?;
        Ok(Self::Container(
            target.pod.namespace.clone(),
            target.pod.name.clone(),
            target.container.name.clone(),
        ))
    }

    fn picks(&self, pod: &ObjectStatus, container: &ContainerDetails) -> bool {
        match self {
            Self::All => true,
            Self::Pod(ns, name) => pod.namespace == *ns && pod.name == *name,
            Self::Container(ns, name, c) => {
                pod.namespace == *ns && pod.name == *name && container.name == *c
            }
        }
    }
}

#[allow(clippy::cast_precision_loss)] // nanoseconds as seconds and ratios
fn rows(before: &NodeSample, now: &NodeSample) -> Vec<Row> {
    let wall_ns = now.taken.duration_since(before.taken).as_nanos() as f64;
    let earlier: HashMap<&str, Option<u64>> = before
        .containers
        .iter()
        .map(|c| (c.id.as_str(), c.usage.cpu_usage_ns))
        .collect();
    let networks: HashMap<(&str, &str), (u64, u64)> = now
        .pods
        .iter()
        .map(|p| {
            (
                (p.namespace.as_str(), p.pod.as_str()),
                netdev::totals(&p.interfaces),
            )
        })
        .collect();
    now.containers
        .iter()
        .map(|c| {
            let cpu_percent = match (earlier.get(c.id.as_str()), c.usage.cpu_usage_ns) {
                (Some(Some(then)), Some(used)) if wall_ns > 0.0 => {
                    Some(used.saturating_sub(*then) as f64 / wall_ns * 100.0)
                }
                _ => None,
            };
            let net = networks.get(&(c.namespace.as_str(), c.pod.as_str()));
            Row {
                namespace: c.namespace.clone(),
                pod: c.pod.clone(),
                container: c.container.clone(),
                container_id: c.id.clone(),
                cpu_percent,
                cpu_usage_seconds: c.usage.cpu_usage_ns.map(|ns| ns as f64 / 1e9),
                memory_working_set_bytes: c.usage.memory_working_set_bytes,
                memory_usage_bytes: c.usage.memory_usage_bytes,
                memory_rss_bytes: c.usage.memory_rss_bytes,
                memory_limit_bytes: c.usage.memory_limit_bytes,
                pids: c.usage.pids,
                net_rx_bytes: net.map(|n| n.0),
                net_tx_bytes: net.map(|n| n.1),
                disk_bytes: c.disk_bytes,
            }
        })
        .collect()
}

#[allow(clippy::cast_precision_loss)] // a percentage
fn print_table(out: &mut impl Write, rows: &[Row], host_memory: u64) -> std::io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "No running containers.");
    }
    let size = |bytes: Option<u64>| bytes.map_or_else(|| "-".to_owned(), human_size);
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|row| {
            let limit = row.memory_limit_bytes.unwrap_or(host_memory);
            let memory_percent = match row.memory_working_set_bytes {
                Some(used) if limit > 0 => format!("{:.2}%", used as f64 / limit as f64 * 100.0),
                _ => "-".to_owned(),
            };
            // As `berth ps` writes pods: bare in `default`.
            let pod = if row.namespace == "default" {
                row.pod.clone()
            } else {
                format!("{}/{}", row.namespace, row.pod)
            };
            [
                pod,
                row.container.clone(),
                row.cpu_percent
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.2}%")),
                format!(
                    "{} / {}",
                    size(row.memory_working_set_bytes),
                    size(Some(limit))
                ),
                memory_percent,
                match (row.net_rx_bytes, row.net_tx_bytes) {
                    (Some(rx), Some(tx)) => format!("{} / {}", human_size(rx), human_size(tx)),
                    _ => "- (host)".to_owned(),
                },
                size(row.disk_bytes),
                row.pids.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            ]
        })
        .collect();
    print_rows(out, &COLUMNS, &cells)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::metrics::cgroup::CgroupUsage;
    use crate::metrics::sample::ContainerSample;

    fn sample(taken: Instant, cpu_ns: u64) -> NodeSample {
        NodeSample {
            taken,
            containers: vec![ContainerSample {
                namespace: "default".into(),
                pod: "web".into(),
                container: "app".into(),
                id: "c1".into(),
                usage: CgroupUsage {
                    cpu_usage_ns: Some(cpu_ns),
                    memory_working_set_bytes: Some(50 << 20),
                    ..CgroupUsage::default()
                },
                disk_bytes: None,
            }],
            pods: Vec::new(),
        }
    }

    #[test]
    fn cpu_percent_is_the_usage_between_two_readings() {
        let start = Instant::now();
        let later = start + Duration::from_secs(2);
        // Half a core for two seconds.
        let rows = rows(&sample(start, 1_000_000_000), &sample(later, 2_000_000_000));
        let percent = rows[0].cpu_percent.expect("two readings");
        assert!((percent - 50.0).abs() < 1e-9, "{percent}");
        assert_eq!(rows[0].net_rx_bytes, None, "no network of its own");

        let mut table = Vec::new();
        print_table(&mut table, &rows, 100 << 20).expect("a table");
        let table = String::from_utf8(table).expect("utf-8");
        let row = table.lines().nth(1).expect("a row");
        assert!(row.starts_with("web "), "{table}");
        for cell in ["50.00%", "52.4MB / 105MB", "50.00%", "- (host)"] {
            assert!(row.contains(cell), "no {cell} in {row}");
        }
    }
}
