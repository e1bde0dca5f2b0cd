//! The event log: one JSON object per line in `Paths::events_file()`.
//!
//! Bounded by rotation: when the current file reaches `max_per_file` lines
//! it becomes `<file>.1` (replacing the older one) and a new file starts, so
//! between `max_per_file` and twice that many of the latest events are kept.
//! A line cut short by a crash is skipped on reading.
//!
//! Events are appended by a thread of their own: recording one never does
//! file system work on the caller's (async) thread.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// What it is about: an object (`Pod/default/web`), a manifest file,
    /// or `agent`.
    pub subject: String,
    /// A short CamelCase reason (`Applied`, `ParseError`, `Deleted`).
    pub reason: String,
    pub message: String,
}

impl Event {
    pub fn new(
        event_type: EventType,
        subject: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            time: time::now(),
            event_type,
            subject: subject.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The path of the previous, rotated event file.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    lines: usize,
    max_per_file: usize,
    /// The file ends in a torn line (a crash mid-write): end it first.
    torn: bool,
}

enum Job {
    Append(Event),
    /// Answered once every event sent before it is written.
    Flush(mpsc::SyncSender<()>),
}

/// Appends events; cheap to clone, safe to share between tasks.
#[derive(Debug, Clone)]
pub struct EventLog {
    jobs: Arc<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl EventLog {
    pub const DEFAULT_MAX_PER_FILE: usize = 1000;

    /// The log at `path` (continuing what is there), and the thread that
    /// writes it, which ends with the last clone of the log.
    pub fn open(path: PathBuf, max_per_file: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("berth-events".into())
            .spawn(move || {
                let existing = fs::read(&path).unwrap_or_default();
                let mut writer = Writer {
                    lines: existing
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .count(),
                    torn: existing.last().is_some_and(|b| *b != b'\n'),
                    path,
                    max_per_file: max_per_file.max(1),
                };
                for job in queue {
                    match job {
                        Job::Append(event) => {
                            if let Err(err) = writer.append(&event) {
                                warn!(path = %writer.path.display(), error = %err, "could not write event log");
                            }
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(err) = spawned {
            warn!(error = %err, "could not start the event log's writer; events go to the log only");
        }
        Self {
            jobs: Arc::new(jobs),
        }
    }

    /// Logs the event through tracing and hands it to the writer. A failure
    /// to write is logged, never fatal: the agent's job is the workloads.
    pub fn record(&self, event: Event) {
        match event.event_type {
            EventType::Normal => {
                info!(subject = %event.subject, reason = %event.reason, "{}", event.message);
            }
            EventType::Warning => {
                warn!(subject = %event.subject, reason = %event.reason, "{}", event.message);
            }
        }
        let _ = self.jobs.send(Job::Append(event));
    }

    /// Waits until every event recorded so far is in the file (at shutdown,
    /// and in tests). Blocking.
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.jobs.send(Job::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Writer {
    fn append(&mut self, event: &Event) -> io::Result<()> {
        if self.lines >= self.max_per_file {
            fs::rename(&self.path, rotated_path(&self.path))?;
            self.lines = 0;
            self.torn = false;
        }
        let mut line = Vec::new();
        if self.torn {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, event).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write of a whole line on an O_APPEND file: concurrent readers
        // see whole lines (or a torn last line after a crash, skipped).
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&self.path)?
            .write_all(&line)?;
        self.lines += 1;
        self.torn = false;
        Ok(())
    }
}

/// Reads the events in both files, oldest first.
pub fn read_events(path: &Path) -> io::Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut found = false;
    for file in [rotated_path(path), path.to_owned()] {
        let file = match fs::File::open(&file) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        found = true;
        for line in BufReader::new(file).lines() {
            if let Ok(event) = serde_json::from_str::<Event>(&line?) {
                events.push(event);
            }
        }
    }
    if !found {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no event log"));
    }
    Ok(events)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `n`th event about one pod (also for `event_tail`'s tests).
    pub(crate) fn event(n: usize) -> Event {
        Event::new(
            EventType::Normal,
            "Pod/default/web",
            "Applied",
            format!("event {n}"),
        )
    }

    #[test]
    fn keeps_the_latest_events_within_two_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(path.clone(), 10);
        for n in 0..35 {
            log.record(event(n));
        }
        log.flush();
        let events = read_events(&path).expect("read");
        let messages: Vec<_> = events.iter().map(|e| e.message.as_str()).collect();
        // 35 events, 10 per file: files hold 20-29 and 30-34.
        assert_eq!(messages.first(), Some(&"event 20"));
        assert_eq!(messages.last(), Some(&"event 34"));
        assert_eq!(messages.len(), 15);
    }

    #[test]
    fn a_reopened_log_continues_counting_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let first = EventLog::open(path.clone(), 3);
        first.record(event(0));
        first.flush();
        // A crash in the middle of a write leaves half a line.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open")
            .write_all(b"{\"time\":\"20")
            .expect("write");
        let log = EventLog::open(path.clone(), 3);
        log.record(event(1));
        log.record(event(2));
        log.flush();
        let messages: Vec<_> = read_events(&path)
            .expect("read")
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(messages, ["event 0", "event 1", "event 2"]);
    }

    #[test]
    fn reading_without_a_log_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_events(&dir.path().join("events.jsonl")).expect_err("none");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
