//! `berth runtimes`: the OCI runtime handlers the agent would have with
//! this config — binary, version, the flags berth derives, whether each
//! can run a container on this kernel (a probe container, cached per
//! binary and kernel) and what it supports.

use std::path::PathBuf;
use std::process::ExitCode;

use super::exec::open_runtime;
use super::images::emit;
use super::{GlobalArgs, OutputFormat};
use crate::runtime::HandlerReport;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent's configuration file (its `[runtime.handlers]`).
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Do not run probe containers; report only what the binaries say.
    #[arg(long)]
    pub no_probe: bool,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let runtime = open_runtime(global, args.config.as_deref())?;
    let reports = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(runtime.handler_reports(!args.no_probe));
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&reports)? + "\n",
        OutputFormat::Table => table(&reports),
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn table(reports: &[HandlerReport]) -> String {
    let rows: Vec<[String; 6]> = reports
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.kind.to_string(),
                if r.version.is_empty() {
                    "-".into()
                } else {
                    r.version.clone()
                },
                if r.default { "yes" } else { "" }.to_string(),
                works(r),
                notes(r),
            ]
        })
        .collect();
    let header = ["NAME", "KIND", "VERSION", "DEFAULT", "WORKS", "NOTES"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn works(r: &HandlerReport) -> String {
    match (&r.problem, &r.probe) {
        (Some(_), _) => "no".into(),
        (None, Some(p)) if p.works && p.cached => "yes (cached)".into(),
        (None, Some(p)) if p.works => format!("yes ({} ms)", p.took_ms),
        (None, Some(_)) => "no".into(),
        (None, None) => "not probed".into(),
    }
}

fn notes(r: &HandlerReport) -> String {
    let mut notes = Vec::new();
    if let Some(problem) = &r.problem {
        notes.push(problem.clone());
    }
    if let Some(p) = r.probe.as_ref().filter(|p| !p.works) {
        notes.push(p.detail.clone());
    }
    if !r.derived_args.is_empty() {
        notes.push(format!("berth adds {}", r.derived_args.join(" ")));
    }
    if let Some(s) = &r.supports {
        let missing: Vec<&str> = [
            (s.privileged, "privileged"),
            (s.shared_pod_ipc, "IPC shared in a pod"),
            (s.exec_seccomp, "seccomp for exec"),
            (s.exec_tty, "exec -t"),
        ]
        .into_iter()
        .filter_map(|(ok, what)| (!ok).then_some(what))
        .collect();
        if !missing.is_empty() {
            notes.push(format!("no {}", missing.join(", ")));
        }
        if s.source == "assumed" {
            notes.push("supports what the OCI runtime CLI promises".into());
        }
    }
    notes.join("; ")
}
