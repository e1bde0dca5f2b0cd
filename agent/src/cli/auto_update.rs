//! `berth auto-update [--dry-run] [-o json]`: for every pod annotated
//! `berth.dev/auto-update: registry`, resolve each container's tag through
//! the configured mirrors now and list what would change (`update`), what
//! is current (`up-to-date`) and what failed its probation before
//! (`refused`). Without `--dry-run`, the running agent is asked to check
//! now (`pod::autoupdate`): its pods pull and roll forward through the same
//! path as their periodic checks, probation and rollback included.
//!
//! Pods and the tags they check come from the agent's pod records (what it
//! runs); hosts from the manifest directory and the agent config's
//! `[images] hosts-dir`, as the agent reads them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::{GlobalArgs, OutputFormat};
use crate::agent::lock;
use crate::image::auth::Credentials;
use crate::image::hosts::Resolver;
use crate::image::remote::{ImageReference, NoProgress, Platform, Puller};
use crate::pod::autoupdate::{self, Finding};
use crate::pod::state::PodState;
use crate::status::StatusDocument;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only list what would change; the agent is not asked to act.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// The agent's configuration file (for `[images] hosts-dir` and
    /// `auth-file`).
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

/// One container's check.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    pod: String,
    container: String,
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest: Option<String>,
    /// `update`, `up-to-date`, `refused`, or `error`.
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    dry_run: bool,
    /// The agent was asked to check now.
    requested: bool,
    containers: Vec<Row>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let paths = global.paths();
    let config = match &args.config {
        Some(path) => crate::config::AgentConfig::load(path)?,
        None => crate::config::AgentConfig::default(),
    };
    let hosts = super::pull::hosts_config(&global.manifests, config.images.hosts_dir.as_deref())?;
    let resolver = Arc::new(Resolver::new(hosts).context("applying the registry host config")?);
    let credentials = Credentials::discover(config.images.auth_file.as_deref())?;
    let service = super::images::open_service(global)?;
    let puller = Puller::new(resolver, credentials, service.content().clone());
    let (states, unreadable) = PodState::list(&paths);
    for err in unreadable {
        eprintln!("warning: {}", crate::status::chain(&err));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let platform = Platform::host();
    let mut rows = Vec::new();
    for state in &states {
        let refused = state.rollout.refused.as_ref().filter(|r| r.auto_update);
        for (container, tag) in &state.rollout.auto_update {
            let running = state
                .incarnation
                .containers
                .get(container)
                .and_then(|slot| slot.current.as_ref())
                .and_then(|i| i.image_digest.clone());
            let resolved = match tag.parse::<ImageReference>() {
                Ok(reference) => runtime
                    .block_on(puller.resolve(&reference, &platform, &NoProgress))
                    .map(|(_, manifest)| manifest.to_string())
                    .map_err(|err| crate::status::chain(&err)),
                Err(err) => Err(crate::status::chain(&err)),
            };
            let (latest, action, error) = match resolved {
                Ok(latest) => {
                    let refused = refused.and_then(|r| r.digests.get(container));
                    let finding =
                        Finding::of(running.as_deref(), &latest, refused.map(String::as_str));
                    (Some(latest), finding.as_str(), None)
                }
                Err(err) => (None, "error", Some(one_line(&err))),
            };
            rows.push(Row {
                pod: format!("{}/{}", state.namespace, state.name),
                container: container.clone(),
                image: tag.clone(),
                running,
                latest,
                action,
                error,
            });
        }
    }
    let updates = rows
        .iter()
        .filter(|r| r.action == Finding::Update.as_str())
        .count();
    let requested = !args.dry_run && updates > 0 && request(global)?;
    let failed = rows.iter().any(|r| r.error.is_some());
    let report = Report {
        dry_run: args.dry_run,
        requested,
        containers: rows,
    };
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        OutputFormat::Table => table(&report, updates),
    };
    super::images::emit(&text)?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Asks the running agent to check now: the request file, then SIGHUP.
fn request(global: &GlobalArgs) -> anyhow::Result<bool> {
    let paths = global.paths();
    let running = lock::is_held(&paths.agent_lock())
        .with_context(|| format!("checking agent lock {}", paths.agent_lock().display()))?;
    if !running {
        anyhow::bail!(
            "no berth agent runs with --run-root {}: start one (`berth run`), or pass --dry-run to only list",
            global.run_root.display()
        );
    }
    let doc = StatusDocument::load(&paths.status_file())?
        .with_context(|| format!("{} does not exist", paths.status_file().display()))?;
    let file = autoupdate::request_file(&paths);
    crate::fsutil::write_atomic(&file, b"", 0o600)
        .with_context(|| format!("writing {}", file.display()))?;
    let pid = i32::try_from(doc.agent.pid).context("the agent's pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("signalling the agent (pid {pid})"))?;
    Ok(true)
}

fn table(report: &Report, updates: usize) -> String {
    use std::fmt::Write as _;
    let rows: Vec<[String; 6]> = report
        .containers
        .iter()
        .map(|r| {
            [
                r.pod.clone(),
                r.container.clone(),
                r.image.clone(),
                short(r.running.as_deref()),
                short(r.latest.as_deref()),
                match &r.error {
                    Some(err) => format!("error: {err}"),
                    None => r.action.to_owned(),
                },
            ]
        })
        .collect();
    let mut out = Vec::new();
    if rows.is_empty() {
        out.extend_from_slice(b"No pod has berth.dev/auto-update.\n");
    } else {
        let _ = super::status::print_rows(
            &mut out,
            &["POD", "CONTAINER", "IMAGE", "RUNNING", "LATEST", "ACTION"],
            &rows,
        );
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    let _ = match (report.dry_run, report.requested) {
        (true, _) => writeln!(text, "{updates} container(s) would roll forward (dry run)."),
        (false, true) => writeln!(
            text,
            "{updates} container(s) roll forward now; follow with `berth events -f`."
        ),
        (false, false) => writeln!(text, "Nothing to update."),
    };
    text
}

/// `sha256:0123456789ab` (12 hex digits), or `-`.
fn short(digest: Option<&str>) -> String {
    digest.map_or_else(
        || "-".to_owned(),
        |d| d.chars().take("sha256:".len() + 12).collect(),
    )
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
