//! `berth inspect POD`: everything berth knows about a pod, as JSON — its
//! manifest (redacted: never a Secret value), its status with the details the
//! pod reconciler publishes, and for each container what the runtime has
//! on disk: ids, PIDs, bundle, rootfs mount, mounts, cgroup, log and
//! network namespace paths. The container's environment is left out on
//! purpose: it carries values resolved from Secrets.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::GlobalArgs;
use super::exec::open_runtime;
use super::pods::{LoadedStatus, find_pod, pod_details};
use super::status::finish_output;
use crate::paths::Paths;
use crate::runtime::{self, ContainerInfo, ExitStatus, Runtime, mountinfo};
use crate::status::{ObjectStatus, StatusDocument};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectFormat {
    #[default]
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pod: NAME (namespace `default`) or NAMESPACE/NAME.
    #[arg(value_name = "POD")]
    pub target: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: InspectFormat,
    /// The agent's configuration file, for runtime handlers it defines.
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspection<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    agent_running: bool,
    /// The pod as its manifest file defines it now, redacted.
    manifest: Option<Value>,
    /// Why `manifest` is missing or may differ from what runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_note: Option<String>,
    status: &'a ObjectStatus,
    containers: Vec<ContainerInspection>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerInspection {
    name: String,
    init: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<String>,
    /// `running`, `creating`, `exited`, `unknown`, or `absent` (no
    /// container on disk).
    runtime_state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime_state_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<String>,
    /// The container's init process, as the host sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shim_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<ExitStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rootfs: Option<RootfsInspection>,
    /// The mounts of the bundle's config.json (destination, type, source,
    /// options).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroups_path: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cgroup_dirs: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_path: Option<PathBuf>,
    /// The network namespace it joined; `None` with the host's network.
    #[serde(skip_serializing_if = "Option::is_none")]
    netns: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RootfsInspection {
    path: PathBuf,
    mounted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fs_type: Option<String>,
    /// Overlay layers, top first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lowerdirs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upperdir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workdir: Option<String>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let loaded = LoadedStatus::load(global)?;
    let pod = find_pod(&loaded.doc, &args.target)?;
    let runtime = open_runtime(global, args.config.as_deref())?;
    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    let (manifest, manifest_note) = manifest_of(pod, &loaded.doc);
    let containers = pod_details(pod)
        .map(|details| {
            let init = details.init_containers.iter().map(|c| (c, true));
            init.chain(details.containers.iter().map(|c| (c, false)))
                .map(|(c, init)| {
                    let mut found = match &c.container_id {
                        Some(id) => inspect_container(&runtime, id, &mounts),
                        None => ContainerInspection {
                            runtime_state: "absent".into(),
                            ..Default::default()
                        },
                    };
                    found.name = c.name.clone();
                    found.init = init;
                    found.runtime = found.runtime.or_else(|| c.runtime.clone());
                    found
                })
                .collect()
        })
        .unwrap_or_default();
    let inspection = Inspection {
        kind: "Pod",
        namespace: &pod.namespace,
        name: &pod.name,
        agent_running: loaded.agent_running,
        manifest,
        manifest_note,
        status: pod,
        containers,
    };
    let InspectFormat::Json = args.output;
    let mut out = std::io::stdout().lock();
    finish_output(
        serde_json::to_writer_pretty(&mut out, &inspection)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
    )
}

/// The pod as its manifest file defines it now, redacted, and a note when
/// that may not be what the agent runs.
fn manifest_of(pod: &ObjectStatus, doc: &StatusDocument) -> (Option<Value>, Option<String>) {
    let path = &pod.source.file;
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            return (None, Some(format!("cannot read {}: {err}", path.display())));
        }
    };
    let parsed = manifests::parse::parse_file(path, &bytes);
    let key = pod.key();
    let Some(object) = parsed.objects().find(|o| o.key() == key) else {
        return (
            None,
            Some(format!(
                "{} does not define {key} (without errors) any more; the agent keeps running the version it applied last",
                path.display()
            )),
        );
    };
    let manifest = serde_json::to_value(object.redacted()).ok();
    let last_known_good = doc
        .files
        .iter()
        .any(|f| &f.path == path && f.last_known_good);
    let note = last_known_good.then(|| {
        format!(
            "{} has errors: the agent runs its last good version, which may differ from this one",
            path.display()
        )
    });
    (manifest, note)
}

/// What the runtime has on disk for container `id`.
fn inspect_container(
    runtime: &Runtime,
    id: &str,
    mounts: &[mountinfo::MountEntry],
) -> ContainerInspection {
    let mut found = ContainerInspection {
        container_id: Some(id.to_owned()),
        ..Default::default()
    };
    let info: ContainerInfo = match runtime.container(id) {
        Ok(info) => info,
        Err(err) => {
            found.runtime_state = "absent".into();
            found.problems.push(crate::status::chain(&err));
            return found;
        }
    };
    match info.state {
        runtime::ContainerState::Creating { shim_pid } => {
            found.runtime_state = "creating".into();
            found.shim_pid = Some(shim_pid);
        }
        runtime::ContainerState::Running {
            pid,
            shim_pid,
            shim_alive,
        } => {
            found.runtime_state = "running".into();
            found.pid = Some(pid);
            found.shim_pid = shim_pid;
            if !shim_alive {
                found.runtime_state_reason =
                    Some("its shim is gone: nobody collects its output or exit status".into());
            }
        }
        runtime::ContainerState::Exited(exit) => {
            found.runtime_state = "exited".into();
            found.exit = Some(exit);
        }
        runtime::ContainerState::Unknown { reason } => {
            found.runtime_state = "unknown".into();
            found.runtime_state_reason = Some(reason);
        }
    }
    let Some(record) = info.record else {
        found
            .problems
            .push(format!("container {id} has no readable record"));
        return found;
    };
    found.runtime = Some(record.handler.clone());
    found.rootfs = Some(rootfs_of(runtime.paths(), id, &record.rootfs, mounts));
    match read_bundle_config(&record.bundle) {
        Ok(config) => {
            found.mounts = config["mounts"].as_array().cloned().unwrap_or_default();
            found.netns = network_namespace(&config);
        }
        Err(err) => found.problems.push(format!("{err:#}")),
    }
    found.cgroup_dirs = runtime
        .layout()
        .hierarchy_dirs(&record.cgroups_path)
        .into_iter()
        .filter(|dir| dir.is_dir())
        .collect();
    found.bundle = Some(record.bundle);
    found.cgroups_path = Some(record.cgroups_path);
    found.log_path = Some(record.log_path);
    found
}

fn read_bundle_config(bundle: &Path) -> anyhow::Result<Value> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// The path of the network namespace the container joins, from its OCI
/// config; `None` when it shares the host's.
fn network_namespace(config: &Value) -> Option<String> {
    config["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")
        .map(|ns| ns["path"].as_str().unwrap_or("(new namespace)").to_owned())
}

/// The container's overlay as the kernel shows it mounted.
fn rootfs_of(
    paths: &Paths,
    id: &str,
    rootfs: &Path,
    mounts: &[mountinfo::MountEntry],
) -> RootfsInspection {
    let entry = mounts.iter().rev().find(|m| m.mount_point == rootfs);
    let mut inspection = RootfsInspection {
        path: rootfs.to_path_buf(),
        mounted: entry.is_some(),
        fs_type: entry.map(|m| m.fs_type.clone()),
        lowerdirs: Vec::new(),
        upperdir: None,
        workdir: None,
    };
    if let Some(entry) = entry {
        for option in entry.super_options.split(',') {
            match option.split_once('=') {
                Some(("lowerdir" | "lowerdir+", dirs)) => inspection
                    .lowerdirs
                    .extend(dirs.split(':').map(str::to_owned)),
                Some(("upperdir", dir)) => inspection.upperdir = Some(dir.to_owned()),
                Some(("workdir", dir)) => inspection.workdir = Some(dir.to_owned()),
                _ => {}
            }
        }
    }
    // Older kernels show the layers by their short relative names; the
    // container's own layer directory says where they live.
    if inspection.upperdir.is_none() && entry.is_some() {
        let layer = paths.container_layer(id);
        inspection.upperdir = Some(layer.join("upper").display().to_string());
        inspection.workdir = Some(layer.join("work").display().to_string());
    }
    inspection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_become_layers() {
        let mounts = mountinfo::parse(
            "50 22 0:60 / /run/b/bundles/c1/rootfs rw - overlay overlay rw,lowerdir=/s/a:/s/b,upperdir=/r/containers/c1/upper,workdir=/r/containers/c1/work\n",
        );
        let paths = Paths::new(Path::new("/r"), Path::new("/run/b"));
        let rootfs = rootfs_of(&paths, "c1", Path::new("/run/b/bundles/c1/rootfs"), &mounts);
        assert!(rootfs.mounted);
        assert_eq!(rootfs.fs_type.as_deref(), Some("overlay"));
        assert_eq!(rootfs.lowerdirs, ["/s/a", "/s/b"]);
        assert_eq!(rootfs.upperdir.as_deref(), Some("/r/containers/c1/upper"));
        let missing = rootfs_of(&paths, "c2", Path::new("/run/b/bundles/c2/rootfs"), &mounts);
        assert!(!missing.mounted && missing.upperdir.is_none());
    }

    #[test]
    fn the_network_namespace_comes_from_the_oci_config() {
        let config = serde_json::json!({"linux": {"namespaces": [
            {"type": "pid"},
            {"type": "network", "path": "/run/berth/netns/p1"}
        ]}});
        assert_eq!(
            network_namespace(&config).as_deref(),
            Some("/run/berth/netns/p1")
        );
        let host = serde_json::json!({"linux": {"namespaces": [{"type": "pid"}]}});
        assert_eq!(network_namespace(&host), None);
    }
}
