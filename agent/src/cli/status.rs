//! `berth status`: each object's phase, message and source, and every
//! manifest problem, read from the status file the agent keeps.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::{GlobalArgs, OutputFormat};
use crate::agent::lock;
use crate::status::{AgentState, ObjectStatus, StatusDocument};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// `-o json` output: the status file plus whether the agent runs now.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonStatus<'a> {
    agent_running: bool,
    #[serde(flatten)]
    status: &'a StatusDocument,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let paths = global.paths();
    let doc = load(&paths.status_file(), &global.run_root)?;
    let running = lock::is_held(&paths.agent_lock())
        .with_context(|| format!("checking agent lock {}", paths.agent_lock().display()))?;
    let mut out = std::io::stdout().lock();
    let printed = match args.output {
        OutputFormat::Json => serde_json::to_writer_pretty(
            &mut out,
            &JsonStatus {
                agent_running: running,
                status: &doc,
            },
        )
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out)),
        OutputFormat::Table => print_table(&mut out, &doc, running),
    };
    finish_output(printed)
}

/// A reader that went away (`berth status | head`) is not an error.
pub fn finish_output(printed: std::io::Result<()>) -> anyhow::Result<ExitCode> {
    match printed {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        other => {
            other.context("writing to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the status file, or explains why there is none.
pub fn load(status_file: &Path, run_root: &Path) -> anyhow::Result<StatusDocument> {
    StatusDocument::load(status_file)?.with_context(|| {
        format!(
            "no berth agent has run with --run-root {} since boot ({} does not exist); start one with `berth run`",
            run_root.display(),
            status_file.display()
        )
    })
}

fn print_table(out: &mut impl Write, doc: &StatusDocument, running: bool) -> std::io::Result<()> {
    let agent = &doc.agent;
    let state = match (running, agent.state) {
        (true, AgentState::Starting) => "starting".to_owned(),
        (true, _) => "running".to_owned(),
        (false, AgentState::Stopped) => format!("stopped at {}", agent.updated_at),
        (false, _) => format!(
            "not running (ended without a clean shutdown; last update {})",
            agent.updated_at
        ),
    };
    writeln!(
        out,
        "Agent: {state}, pid {}, manifests {}",
        agent.pid,
        agent.manifests.display()
    )?;
    if let Some(error) = &agent.source_error {
        writeln!(out, "Manifest directory problem: {error}")?;
    }
    writeln!(out)?;
    let rows: Vec<[String; 6]> = doc
        .objects
        .iter()
        .map(|o| {
            [
                o.kind.to_string(),
                dash_if_empty(&o.namespace),
                o.name.clone(),
                o.phase.to_string(),
                truncate(&message_of(o), 70),
                source_of(o, &agent.manifests),
            ]
        })
        .collect();
    if rows.is_empty() {
        writeln!(out, "No objects.")?;
    } else {
        print_rows(
            out,
            &["KIND", "NAMESPACE", "NAME", "PHASE", "MESSAGE", "SOURCE"],
            &rows,
        )?;
    }
    let problems: Vec<_> = doc
        .files
        .iter()
        .filter(|f| !f.diagnostics.is_empty() || !f.conflicts.is_empty())
        .collect();
    if !problems.is_empty() {
        writeln!(out, "\nManifest problems:")?;
        for file in problems {
            for diag in file.diagnostics.iter().chain(&file.conflicts) {
                writeln!(out, "  {diag}")?;
            }
            if file.last_known_good {
                writeln!(
                    out,
                    "  {}: has errors; its last good version stays applied",
                    file.path.display()
                )?;
            }
        }
    }
    Ok(())
}

fn message_of(status: &ObjectStatus) -> String {
    match &status.last_error {
        Some(error) => format!("error: {error}"),
        None => status.message.clone(),
    }
}

fn source_of(status: &ObjectStatus, manifests: &Path) -> String {
    let file = status
        .source
        .file
        .strip_prefix(manifests)
        .unwrap_or(&status.source.file);
    if status.source.line == 0 {
        file.display().to_string()
    } else {
        format!("{}:{}", file.display(), status.source.line)
    }
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.into()
    }
}

/// Cuts `text` to `max` characters (on a char boundary), marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Prints left-aligned columns separated by three spaces, like kubectl.
pub fn print_rows<const N: usize>(
    out: &mut impl Write,
    header: &[&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 3));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(header.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_long_messages_are_cut() {
        let mut out = Vec::new();
        print_rows(
            &mut out,
            &["A", "LONGER"],
            &[["wide-cell".into(), "x".into()], ["b".into(), "y".into()]],
        )
        .expect("print");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "A           LONGER\nwide-cell   x\nb           y\n"
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("a\nb", 4), "a b");
    }
}
