//! `berth events`: recent events from the agent's bounded event log;
//! `-f` keeps printing new ones as they are written, as `kubectl get
//! events -w` (with `-o json`: one JSON object per line).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;

use super::status::{finish_output, print_rows, truncate};
use super::{GlobalArgs, OutputFormat};
use crate::status::event_tail::EventTail;
use crate::status::events::{Event, read_events};
use crate::status::time::rfc3339;
use manifests::duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Only events newer than this (e.g. 10m, 2h).
    #[arg(long, value_parser = duration::parse_config)]
    pub since: Option<std::time::Duration>,
    /// Only the last N events.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only events about this subject (`Pod/default/web`, a file path, or
    /// `agent`); a prefix is enough.
    #[arg(long = "for")]
    pub subject: Option<String>,
    /// Keep printing events as they are written (until interrupted).
    #[arg(short = 'f', long)]
    pub follow: bool,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let path = global.paths().events_file();
    if args.follow {
        let opened = EventTail::open(&path).map_err(|err| no_log(global, &path, err))?;
        return follow(opened, &args);
    }
    let events = read_events(&path).map_err(|err| no_log(global, &path, err))?;
    let events = select(events, &args, SystemTime::now());
    let mut out = std::io::stdout().lock();
    let printed = match args.output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &events)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table => {
            let rows: Vec<[String; 5]> = events.iter().map(row).collect();
            print_rows(&mut out, &HEADER, &rows)
        }
    };
    finish_output(printed)
}

fn no_log(global: &GlobalArgs, path: &Path, err: std::io::Error) -> anyhow::Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "no berth agent has run with --run-root {} since boot ({} does not exist); start one with `berth run`",
            global.run_root.display(),
            path.display()
        )
    } else {
        anyhow::Error::new(err).context(format!("reading {}", path.display()))
    }
}

/// How often a follower looks for new events (the writer appends whole
/// lines; a fifth of a second is as prompt as a person needs).
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Prints the selected backlog, then every new event about the subject,
/// until the process is interrupted or its reader goes away.
fn follow((mut tail, backlog): (EventTail, Vec<Event>), args: &Args) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut printed = match args.output {
        OutputFormat::Table => writeln!(out, "{}", follow_row(&HEADER.map(String::from))),
        OutputFormat::Json => Ok(()),
    };
    let mut events = select(backlog, args, SystemTime::now());
    loop {
        for event in &events {
            if printed.is_err() {
                break;
            }
            printed = match args.output {
                OutputFormat::Json => serde_json::to_writer(&mut out, event)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out)),
                OutputFormat::Table => writeln!(out, "{}", follow_row(&row(event))),
            };
        }
        printed = printed.and_then(|()| out.flush());
        if printed.is_err() {
            return finish_output(printed);
        }
        std::thread::sleep(FOLLOW_INTERVAL);
        events = tail
            .poll()
            .context("reading the event log")?
            .into_iter()
            .filter(|event| matches_subject(event, args))
            .collect();
    }
}

const HEADER: [&str; 5] = ["TIME", "TYPE", "SUBJECT", "REASON", "MESSAGE"];

/// A followed row: widths cannot wait for rows not written yet, so they
/// are fixed (an RFC 3339 time, `Warning`, typical subjects and reasons).
fn follow_row(cells: &[String; 5]) -> String {
    format!(
        "{:<24}   {:<7}   {:<32}   {:<24}   {}",
        cells[0], cells[1], cells[2], cells[3], cells[4]
    )
    .trim_end()
    .to_owned()
}

fn row(e: &Event) -> [String; 5] {
    [
        e.time.clone(),
        format!("{:?}", e.event_type),
        e.subject.clone(),
        e.reason.clone(),
        truncate(&e.message, 100),
    ]
}

fn matches_subject(event: &Event, args: &Args) -> bool {
    args.subject
        .as_ref()
        .is_none_or(|s| event.subject.starts_with(s.as_str()))
}

fn select(events: Vec<Event>, args: &Args, now: SystemTime) -> Vec<Event> {
    // Timestamps are fixed-width RFC 3339 in UTC: text order is time order.
    let cutoff = args
        .since
        .map(|since| rfc3339(now.checked_sub(since).unwrap_or(SystemTime::UNIX_EPOCH)));
    let mut events: Vec<Event> = events
        .into_iter()
        .filter(|e| cutoff.as_ref().is_none_or(|c| &e.time >= c))
        .filter(|e| matches_subject(e, args))
        .collect();
    if let Some(limit) = args.limit {
        let skip = events.len().saturating_sub(limit);
        events.drain(..skip);
    }
    events
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::status::EventType;

    fn event_at(secs: u64, subject: &str) -> Event {
        Event {
            time: rfc3339(UNIX_EPOCH + Duration::from_secs(secs)),
            event_type: EventType::Normal,
            subject: subject.into(),
            reason: "Applied".into(),
            message: String::new(),
        }
    }

    #[test]
    fn since_limit_and_subject_filter_the_log() {
        let events = vec![
            event_at(1000, "Pod/default/a"),
            event_at(2000, "Pod/default/b"),
            event_at(3000, "Pod/default/a"),
            event_at(4000, "agent"),
        ];
        let args = |since, limit, subject: Option<&str>| Args {
            output: OutputFormat::Table,
            since,
            limit,
            subject: subject.map(String::from),
            follow: false,
        };
        let now = UNIX_EPOCH + Duration::from_secs(4000);
        let times = |v: Vec<Event>| v.into_iter().map(|e| e.subject).collect::<Vec<_>>();
        assert_eq!(
            times(select(
                events.clone(),
                &args(Some(Duration::from_secs(2000)), None, None),
                now
            )),
            ["Pod/default/b", "Pod/default/a", "agent"]
        );
        assert_eq!(
            times(select(events.clone(), &args(None, Some(1), None), now)),
            ["agent"]
        );
        assert_eq!(
            times(select(
                events,
                &args(None, None, Some("Pod/default/a")),
                now
            )),
            ["Pod/default/a", "Pod/default/a"]
        );
    }
}
