//! `berth logs`: a container's output, from the CRI-format files its shim
//! writes (see `runtime::logs`), with kubectl's options. `-f` follows the
//! file across rotation and ends when the container instance that writes
//! it exits — learnt from that instance's exit file, not from the status,
//! so it works while the agent is down too.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;
use super::pods::{ContainerTarget, LoadedStatus, find_container};
use crate::paths::Paths;
use crate::runtime::logs::{self, LogError, LogOptions};
use crate::runtime::shim;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep printing new lines until the container exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (of what is there before following).
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Start each line with the time it was written (RFC 3339, UTC).
    #[arg(long)]
    pub timestamps: bool,
    /// The log of the previous instance, before the last restart.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// POD[/CONTAINER]: the pod as NAME or NAMESPACE/NAME; the container
    /// may be left out when the pod has only one.
    #[arg(value_name = "POD[/CONTAINER]")]
    pub target: String,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let loaded = LoadedStatus::load(global)?;
    let target = find_container(&loaded.doc, &args.target)?;
    let paths = global.paths();
    let dir = paths.container_logs(
        &target.pod.namespace,
        &target.pod.name,
        &target.container.name,
    );
    let current = current_instance(&paths, &target);
    let instance =
        pick_instance(&logs::instances(&dir), current, args.previous).ok_or_else(|| {
            match (args.previous, current) {
                (true, Some(_)) => anyhow::anyhow!(
                    "{} has no previous instance: it has not restarted",
                    target.describe()
                ),
                _ => anyhow::anyhow!(
                    "{} has no logs: it has not started yet ({})",
                    target.describe(),
                    dir.display()
                ),
            }
        })?;
    let writer = writer_of(&paths, &logs::instance_log(&dir, instance));
    let exited = || writer.as_deref().is_none_or(has_exited);
    let options = LogOptions {
        tail: args.tail,
        follow: args.follow,
        timestamps: args.timestamps,
    };
    let mut out = std::io::stdout().lock();
    match logs::write_logs(&dir, instance, options, &mut out, &exited) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A reader that went away (`berth logs web | head`) is not an error.
        Err(LogError::Write(err)) if err.kind() == ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        // The shim creates the log file with the container's first output: a
        // container that has printed nothing yet has an empty log.
        Err(LogError::NoLogs { .. }) if current == Some(instance) => Ok(ExitCode::SUCCESS),
        Err(err) => Err(err).with_context(|| format!("logs of {}", target.describe())),
    }
}

/// Which instance's log to show: the current one (even before its first
/// line), or with `previous` the newest one before it.
fn pick_instance(on_disk: &[u32], current: Option<u32>, previous: bool) -> Option<u32> {
    let latest = on_disk.last().copied().max(current)?;
    if previous {
        on_disk.iter().rev().copied().find(|&i| i < latest)
    } else {
        Some(latest)
    }
}

/// The instance (restart count) of the container's current incarnation, from
/// the log file its runtime record names.
fn current_instance(paths: &Paths, target: &ContainerTarget<'_>) -> Option<u32> {
    let id = target.container.container_id.as_deref()?;
    let record = shim::read_record(&paths.shim_dir(id)).ok()?;
    record
        .log_path
        .file_name()?
        .to_str()?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The shim state directory of the container instance that writes `log`,
/// if it still exists: each container's record names its log file.
fn writer_of(paths: &Paths, log: &Path) -> Option<PathBuf> {
    std::fs::read_dir(paths.shims())
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|dir| shim::read_record(dir).is_ok_and(|record| record.log_path == log))
}

/// Whether the container of a shim state directory has ended (or has been
/// removed, which only happens after it ended).
fn has_exited(shim_dir: &Path) -> bool {
    !shim_dir.is_dir() || !matches!(shim::read_exit(shim_dir), Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_instance_wins_even_before_its_first_line() {
        assert_eq!(pick_instance(&[0, 1], None, false), Some(1));
        assert_eq!(pick_instance(&[0, 1], None, true), Some(0));
        assert_eq!(pick_instance(&[0], Some(1), false), Some(1));
        assert_eq!(pick_instance(&[0], Some(1), true), Some(0));
        assert_eq!(pick_instance(&[], Some(0), false), Some(0));
        assert_eq!(pick_instance(&[], Some(0), true), None);
        assert_eq!(pick_instance(&[3], Some(3), true), None);
        assert_eq!(pick_instance(&[], None, false), None);
    }
}
