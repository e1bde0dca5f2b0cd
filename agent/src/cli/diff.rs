//! `berth diff DIR`, like `kubectl diff`: what the agent would do if DIR
//! became its manifest directory. DIR is read exactly as the agent reads a
//! manifest directory and compared with the current one (`--manifests`),
//! object by object: created, deleted, unchanged, or changed — for a pod,
//! through the agent's own change rules (`pod::hash`): which containers
//! would be replaced, started or removed, or whether the whole pod would
//! be recreated (a pod-level field). Values read from ConfigMaps and
//! Secrets count, as they do for the agent.
//!
//! Exit code: 0 nothing changes, 1 something does, 2 DIR has errors
//! (validation errors and conflicts included) or cannot be read.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use manifests::{Object, ObjectKey};
use serde::Serialize;

use super::{GlobalArgs, OutputFormat};
use crate::desired::generations::Generations;
use crate::desired::{DesiredState, DesiredStore};
use crate::pod::hash;
use crate::pod::plan::Wanted;
use crate::source::scan;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manifest directory to compare with the current one.
    pub dir: std::path::PathBuf,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// What would happen to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Create,
    Delete,
    Unchanged,
    /// A ConfigMap, Secret, Image or Registry with new content; a pod whose
    /// edit restarts nothing (restartPolicy, grace period, pull secrets).
    Update,
    /// A pod-level field changed: a new sandbox, every container restarts.
    Recreate,
    /// Some of the pod's containers change; the others run on.
    Replace {
        replaced: Vec<String>,
        started: Vec<String>,
        removed: Vec<String>,
    },
    /// The pod cannot be started from DIR (a missing ConfigMap key, …).
    Error {
        message: String,
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    object: String,
    #[serde(flatten)]
    change: Change,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    match diff(global, &args) {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("berth: {err:#}");
            Ok(ExitCode::from(2))
        }
    }
}

fn diff(global: &GlobalArgs, args: &Args) -> anyhow::Result<ExitCode> {
    let new = load(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    let mut problems = 0;
    for file in &new.files {
        for diagnostic in file.diagnostics.iter().chain(&file.conflicts) {
            if diagnostic.severity == manifests::Severity::Error {
                eprintln!("{diagnostic}");
                problems += 1;
            }
        }
    }
    if problems > 0 {
        eprintln!(
            "berth: {} has {problems} error(s); the agent would keep the last good version of those files",
            args.dir.display()
        );
        return Ok(ExitCode::from(2));
    }
    let old = if global.manifests.exists() {
        load(&global.manifests)
            .with_context(|| format!("reading the current {}", global.manifests.display()))?
    } else {
        Arc::new(DesiredState::default())
    };
    let rows = compare(&old, &new);
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).context("encoding the diff")?
        ),
        OutputFormat::Table => {
            for row in &rows {
                println!(
                    "{:<10} {}{}",
                    verb(&row.change),
                    row.object,
                    detail(&row.change)
                );
            }
        }
    }
    let errors = rows
        .iter()
        .any(|r| matches!(r.change, Change::Error { .. }));
    let changes = rows.iter().any(|r| r.change != Change::Unchanged);
    Ok(ExitCode::from(if errors {
        2
    } else if changes {
        1
    } else {
        0
    }))
}

/// DIR as the agent reads a manifest directory (a symlink is followed).
fn load(dir: &Path) -> anyhow::Result<Arc<DesiredState>> {
    let resolved = std::fs::canonicalize(dir)?;
    let scanned = scan::scan(
        &resolved,
        manifests::MAX_FILE_BYTES,
        manifests::classify_path,
    )?;
    let mut store = DesiredStore::new(dir, Generations::in_memory());
    Ok(store.apply_scan(scanned).unwrap_or_else(|| store.current()))
}

fn verb(change: &Change) -> &'static str {
    match change {
        Change::Create => "create",
        Change::Delete => "delete",
        Change::Unchanged => "unchanged",
        Change::Update => "update",
        Change::Recreate => "recreate",
        Change::Replace { .. } => "replace",
        Change::Error { .. } => "error",
    }
}

fn detail(change: &Change) -> String {
    match change {
        Change::Recreate => ": a pod-level field changed; every container restarts".into(),
        Change::Replace {
            replaced,
            started,
            removed,
        } => {
            let mut parts = Vec::new();
            for (what, names) in [
                ("replace", replaced),
                ("start", started),
                ("remove", removed),
            ] {
                if !names.is_empty() {
                    parts.push(format!("{what} {}", names.join(", ")));
                }
            }
            format!(": {} (the other containers run on)", parts.join("; "))
        }
        Change::Error { message } => format!(": {message}"),
        _ => String::new(),
    }
}

/// Every object of `old` and `new`, in key order, with its change.
fn compare(old: &DesiredState, new: &DesiredState) -> Vec<Row> {
    let keys: std::collections::BTreeSet<&ObjectKey> =
        old.objects.keys().chain(new.objects.keys()).collect();
    keys.into_iter()
        .map(|key| {
            let change = match (old.get(key), new.get(key)) {
                (None, Some(_)) => Change::Create,
                (Some(_), None) => Change::Delete,
                (Some(before), Some(after)) => {
                    match (before.object.as_ref(), after.object.as_ref()) {
                        (Object::Pod(a), Object::Pod(b)) => pod_change(key, a, old, b, new),
                        _ if before.content_hash == after.content_hash => Change::Unchanged,
                        _ => Change::Update,
                    }
                }
                (None, None) => unreachable!("the key came from one of them"),
            };
            Row {
                object: key.to_string(),
                change,
            }
        })
        .collect()
}

/// A pod in both: the agent's own rules decide (pod-level hash, then each
/// container's hash), with the ConfigMaps and Secrets of each side.
fn pod_change(
    key: &ObjectKey,
    before: &manifests::types::Pod,
    old: &DesiredState,
    after: &manifests::types::Pod,
    new: &DesiredState,
) -> Change {
    let (namespace, name) = (key.namespace.as_str(), key.name.as_str());
    let wanted = match hash::wanted(namespace, name, &after.spec, new) {
        Ok(wanted) => wanted,
        Err(err) => {
            return Change::Error {
                message: crate::status::chain(&err),
            };
        }
    };
    // The running version could not start either: everything is new.
    let Ok(running) = hash::wanted(namespace, name, &before.spec, old) else {
        return Change::Recreate;
    };
    if running.0 != wanted.0 {
        return Change::Recreate;
    }
    let find = |list: &[Wanted], name: &str| list.iter().find(|w| w.name == name).cloned();
    let mut replaced = Vec::new();
    let mut started = Vec::new();
    for container in &wanted.1 {
        match find(&running.1, &container.name) {
            Some(old) if old.hash == container.hash => {}
            Some(_) => replaced.push(container.name.clone()),
            None => started.push(container.name.clone()),
        }
    }
    let removed: Vec<String> = running
        .1
        .iter()
        .filter(|c| find(&wanted.1, &c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    if replaced.is_empty() && started.is_empty() && removed.is_empty() {
        if before == after {
            Change::Unchanged
        } else {
            Change::Update
        }
    } else {
        Change::Replace {
            replaced,
            started,
            removed,
        }
    }
}
