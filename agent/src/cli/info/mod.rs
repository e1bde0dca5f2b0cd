//! `berth info [-o json]`: the node as berth sees it, like `crictl info` /
//! `nerdctl info` — versions, kernel, cgroups, runtime handlers and the
//! default one with the reason, the pod network, the store with its size
//! and free space, counts, and the agent's state. Read from the host and
//! the agent's files; works with or without a running agent. A section
//! that cannot be read is left out and its problem listed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use super::status::finish_output;
use super::{GlobalArgs, OutputFormat};
use crate::agent::lock;
use crate::config::AgentConfig;
use crate::image::service::ImageService;
use crate::metrics::endpoint::measure_store;
use crate::runtime::{CgroupLayout, CgroupMode};
use crate::runtime::{DefaultChoice, HandlerReport, Runtime};
use crate::status::{ContainerState, StatusDocument};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// The agent's configuration file (runtime handlers, network, cgroups).
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Info {
    version: &'static str,
    kernel: Kernel,
    #[serde(skip_serializing_if = "Option::is_none")]
    os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroups: Option<Cgroups>,
    runtimes: Runtimes,
    network: Network,
    store: Store,
    #[serde(skip_serializing_if = "Option::is_none")]
    workloads: Option<Workloads>,
    agent: Agent,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Kernel {
    /// `uname -r`.
    release: String,
    /// `uname -v`.
    version: String,
    machine: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Cgroups {
    /// `v1`, `hybrid` or `v2`.
    mode: &'static str,
    /// Controllers with a v1 hierarchy each (`name=systemd` included).
    v1_controllers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    v2_mount: Option<PathBuf>,
    /// Controllers of the cgroup2 hierarchy.
    v2_controllers: Vec<String>,
    /// berth's cgroups are `<parent>/pod-<uid>/<container-id>`.
    parent: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Runtimes {
    /// As `berth runtimes --no-probe` reports them.
    handlers: Vec<HandlerReport>,
    default: Option<DefaultChoice>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Network {
    driver: netplugins::factory::DriverKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cni_conflist: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Store {
    root: PathBuf,
    run_root: PathBuf,
    /// Blobs plus unpacked layers; `None` before the store exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    images: Option<usize>,
    /// The file system holding `root` (or its nearest existing parent).
    #[serde(skip_serializing_if = "Option::is_none")]
    filesystem: Option<Filesystem>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Filesystem {
    size_bytes: u64,
    free_bytes: u64,
    /// Free for an unprivileged user (what `df` shows as Avail).
    available_bytes: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Workloads {
    pods: usize,
    containers: usize,
    running_containers: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Agent {
    running: bool,
    /// `None`: no agent has run with this run-root since boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<crate::status::AgentState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifests: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    let info = gather(global, &config);
    let mut out = std::io::stdout().lock();
    finish_output(match args.output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &info)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table => print_text(&mut out, &info),
    })
}

fn gather(global: &GlobalArgs, config: &AgentConfig) -> Info {
    let mut problems = Vec::new();
    let layout = CgroupLayout::detect()
        .map_err(|err| problems.push(crate::status::chain(&err)))
        .ok();
    let paths = global.paths();
    let runtimes = match Runtime::new(paths.clone(), config.runtime.clone()) {
        // Without probe containers nothing in it waits: no async runtime needed.
        Ok(runtime) => Runtimes {
            handlers: futures::executor::block_on(runtime.handler_reports(false)),
            default: Some(runtime.default_choice()),
        },
        Err(err) => {
            problems.push(crate::status::chain(&err));
            Runtimes {
                handlers: Vec::new(),
                default: None,
            }
        }
    };
    let status = StatusDocument::load(&paths.status_file())
        .map_err(|err| problems.push(crate::status::chain(&err)))
        .ok()
        .flatten();
    let running = lock::is_held(&paths.agent_lock()).unwrap_or(false);
    Info {
        version: env!("CARGO_PKG_VERSION"),
        kernel: Kernel {
            release: kernel_file("osrelease"),
            version: kernel_file("version"),
            machine: std::env::consts::ARCH,
        },
        os: os_name(),
        cgroups: layout.map(|l| cgroups(&l, &config.runtime.cgroup_parent)),
        runtimes,
        network: network(&config.network),
        store: store(&paths, &mut problems),
        workloads: status.as_ref().map(workloads),
        agent: Agent {
            running,
            state: status.as_ref().map(|s| s.agent.state),
            pid: status.as_ref().map(|s| s.agent.pid),
            version: status.as_ref().map(|s| s.agent.version.clone()),
            started_at: status.as_ref().map(|s| s.agent.started_at.clone()),
            manifests: status.as_ref().map(|s| s.agent.manifests.clone()),
        },
        problems,
    }
}

fn kernel_file(name: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys/kernel").join(name))
        .map(|text| text.trim().to_owned())
        .unwrap_or_default()
}

/// `PRETTY_NAME` of /etc/os-release.
fn os_name() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim_matches('"').to_owned())
}

fn cgroups(layout: &CgroupLayout, parent: &str) -> Cgroups {
    Cgroups {
        mode: match layout.mode {
            CgroupMode::Legacy => "v1",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::Unified => "v2",
        },
        v1_controllers: layout
            .v1
            .iter()
            .flat_map(|h| h.controllers.iter().cloned())
            .collect(),
        v2_mount: layout.v2.clone(),
        v2_controllers: layout.v2_controllers.clone(),
        parent: parent.to_owned(),
    }
}

fn network(config: &netplugins::factory::NetworkConfig) -> Network {
    use netplugins::factory::DriverKind;
    let bridge = &config.bridge;
    let mut network = Network {
        driver: config.driver,
        bridge: None,
        subnet: None,
        gateway: None,
        cni_conflist: None,
    };
    match config.driver {
        DriverKind::Bridge => {
            network.bridge = Some(bridge.bridge.clone());
            network.subnet = Some(bridge.subnet.to_string());
            network.gateway = bridge
                .gateway
                .or_else(|| bridge.subnet.hosts().next())
                .map(|ip| ip.to_string());
        }
        DriverKind::Cni => network.cni_conflist = Some(config.cni.conflist.clone()),
        DriverKind::Host | DriverKind::None => {}
    }
    network
}

fn store(paths: &crate::paths::Paths, problems: &mut Vec<String>) -> Store {
    let mut store = Store {
        root: paths.root.clone(),
        run_root: paths.run_root.clone(),
        size_bytes: None,
        content_bytes: None,
        snapshot_bytes: None,
        images: None,
        filesystem: filesystem(&paths.root),
    };
    // Opening the store creates it: look only at one that exists.
    if paths.database().exists() {
        match ImageService::open(paths).and_then(|service| {
            let bytes = measure_store(&service)?;
            Ok((bytes, service.list()?.len()))
        }) {
            Ok((bytes, images)) => {
                store.content_bytes = Some(bytes.content);
                store.snapshot_bytes = Some(bytes.snapshots);
                store.size_bytes = Some(bytes.content + bytes.snapshots);
                store.images = Some(images);
            }
            Err(err) => problems.push(format!(
                "reading the image store under {}: {}",
                paths.root.display(),
                crate::status::chain(&err)
            )),
        }
    }
    store
}

fn filesystem(root: &Path) -> Option<Filesystem> {
    let existing = root.ancestors().find(|p| p.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(Filesystem {
        size_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
        free_bytes: stat.f_bfree.saturating_mul(stat.f_frsize),
        available_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
    })
}

fn workloads(doc: &StatusDocument) -> Workloads {
    let pods: Vec<_> = doc
        .objects
        .iter()
        .filter(|o| o.kind == manifests::Kind::Pod)
        .collect();
    let containers: Vec<_> = pods
        .iter()
        .filter_map(|p| super::pods::pod_details(p))
        .flat_map(|d| d.init_containers.iter().chain(&d.containers))
        .collect();
    Workloads {
        pods: pods.len(),
        containers: containers.len(),
        running_containers: containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
            .count(),
    }
}

fn print_text(out: &mut impl Write, info: &Info) -> std::io::Result<()> {
    use super::images::human_size;
    writeln!(out, "Version:          {}", info.version)?;
    writeln!(
        out,
        "Kernel:           {} {} ({})",
        info.kernel.release, info.kernel.version, info.kernel.machine
    )?;
    if let Some(os) = &info.os {
        writeln!(out, "Operating system: {os}")?;
    }
    if let Some(c) = &info.cgroups {
        writeln!(out, "Cgroups:          {} (parent /{})", c.mode, c.parent)?;
        if !c.v1_controllers.is_empty() {
            writeln!(out, "  v1 controllers: {}", c.v1_controllers.join(", "))?;
        }
        if let Some(mount) = &c.v2_mount {
            let controllers = if c.v2_controllers.is_empty() {
                "no controllers".to_owned()
            } else {
                c.v2_controllers.join(", ")
            };
            writeln!(out, "  cgroup2:        {} ({controllers})", mount.display())?;
        }
    }
    writeln!(out, "Runtimes:")?;
    for h in &info.runtimes.handlers {
        let state = match &h.problem {
            None => h.version.clone(),
            Some(problem) => format!("unusable: {problem}"),
        };
        writeln!(out, "  {:<15} {}: {state}", h.name, h.binary.display())?;
    }
    if let Some(default) = &info.runtimes.default {
        writeln!(
            out,
            "Default runtime:  {} ({})",
            default.name.as_deref().unwrap_or("none"),
            default.reason
        )?;
    }
    let n = &info.network;
    let mut network = serde_json::to_value(n.driver)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    for part in [&n.bridge, &n.subnet].into_iter().flatten() {
        network.push(' ');
        network.push_str(part);
    }
    if let Some(gateway) = &n.gateway {
        network.push_str(&format!(" (gateway {gateway})"));
    }
    if let Some(conflist) = &n.cni_conflist {
        network.push_str(&format!(" {}", conflist.display()));
    }
    writeln!(out, "Network:          {network}")?;
    let s = &info.store;
    let size = match (s.size_bytes, s.content_bytes, s.snapshot_bytes) {
        (Some(all), Some(content), Some(snapshots)) => format!(
            "{} (content {}, snapshots {})",
            human_size(all),
            human_size(content),
            human_size(snapshots)
        ),
        _ => "not created yet".to_owned(),
    };
    writeln!(out, "Store:            {}: {size}", s.root.display())?;
    if let Some(fs) = &s.filesystem {
        writeln!(
            out,
            "  file system:    {} total, {} available",
            human_size(fs.size_bytes),
            human_size(fs.available_bytes)
        )?;
    }
    writeln!(out, "Run root:         {}", s.run_root.display())?;
    if let Some(images) = s.images {
        writeln!(out, "Images:           {images}")?;
    }
    if let Some(w) = &info.workloads {
        writeln!(
            out,
            "Pods:             {} ({} containers, {} running)",
            w.pods, w.containers, w.running_containers
        )?;
    }
    let a = &info.agent;
    let agent = match (&a.state, a.running) {
        (None, _) => "never ran with this run-root".to_owned(),
        (Some(state), true) => format!(
            "running (pid {}, {state:?}, since {})",
            a.pid.unwrap_or(0),
            a.started_at.as_deref().unwrap_or("?")
        ),
        (Some(state), false) => format!("not running (last state {state:?})"),
    };
    writeln!(out, "Agent:            {agent}")?;
    for problem in &info.problems {
        writeln!(out, "Problem:          {problem}")?;
    }
    Ok(())
}
