//! Following the event log as it grows (`berth events -f`), across the
//! writer's rotations (`events.jsonl` renamed to `events.jsonl.1`, a new
//! file started): the live file is held open, so everything appended to it
//! is read through that handle, and once the path names another file the
//! old handle is drained first. Only whole lines are parsed; a line a
//! crash cut short is skipped, as [`super::events::read_events`] does.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::events::{Event, rotated_path};

pub struct EventTail {
    path: PathBuf,
    live: Option<File>,
    /// Bytes of a line not finished yet.
    partial: Vec<u8>,
}

impl EventTail {
    /// Opens the log at `path` and returns it with every event already in
    /// it (rotated file first). `NotFound` when neither file exists.
    pub fn open(path: &Path) -> io::Result<(Self, Vec<Event>)> {
        // The live file first: what is appended from now on comes through
        // this handle, so nothing falls between the backlog and following.
        let live = open_if_present(path)?;
        let rotated = rotated_path(path);
        let mut events = Vec::new();
        if let Some(mut old) = open_if_present(&rotated)? {
            // A rotation in between made the live handle the rotated file.
            if !live.as_ref().is_some_and(|live| same_file(live, &old)) {
                let mut bytes = Vec::new();
                old.read_to_end(&mut bytes)?;
                let mut partial = bytes;
                partial.push(b'\n');
                events.extend(take_lines(&mut partial));
            }
        } else if live.is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no event log"));
        }
        let mut tail = Self {
            path: path.to_path_buf(),
            live,
            partial: Vec::new(),
        };
        events.extend(tail.poll()?);
        Ok((tail, events))
    }

    /// The events appended since the last call (none when nothing new).
    pub fn poll(&mut self) -> io::Result<Vec<Event>> {
        let mut events = Vec::new();
        loop {
            if let Some(live) = self.live.as_mut() {
                live.read_to_end(&mut self.partial)?;
                events.extend(take_lines(&mut self.partial));
            }
            // Rotated or created: the path names another file now; the old
            // handle was read to its end just above.
            let Some(current) = open_if_present(&self.path)? else {
                return Ok(events);
            };
            if self
                .live
                .as_ref()
                .is_some_and(|live| same_file(live, &current))
            {
                return Ok(events);
            }
            self.live = Some(current);
            self.partial.clear();
        }
    }
}

fn open_if_present(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

fn same_file(a: &File, b: &File) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

/// Parses and removes every whole line of `buffer`, keeping the rest.
fn take_lines(buffer: &mut Vec<u8>) -> Vec<Event> {
    let Some(end) = buffer.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    let events = buffer[..end]
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Event>(line).ok())
        .collect();
    buffer.drain(..=end);
    events
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::status::events::EventLog;
    use crate::status::events::tests::event;

    fn messages(events: Vec<Event>) -> Vec<String> {
        events.into_iter().map(|e| e.message).collect()
    }

    #[test]
    fn follows_appends_across_rotation_and_waits_out_torn_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let log = EventLog::open(path.clone(), 3);
        log.record(event(0));
        log.record(event(1));
        log.flush();
        let (mut tail, backlog) = EventTail::open(&path).expect("open");
        assert_eq!(messages(backlog), ["event 0", "event 1"]);
        assert!(tail.poll().expect("poll").is_empty());

        // 2 fills the file, 3 rotates it and starts a new one, 4 follows.
        for n in 2..5 {
            log.record(event(n));
        }
        log.flush();
        assert_eq!(
            messages(tail.poll().expect("poll")),
            ["event 2", "event 3", "event 4"]
        );

        // Half a line is held back until its end arrives.
        let line = serde_json::to_vec(&event(5)).expect("json");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(&line[..10]).expect("write");
        assert!(tail.poll().expect("poll").is_empty());
        file.write_all(&line[10..]).expect("write");
        file.write_all(b"\n").expect("write");
        assert_eq!(messages(tail.poll().expect("poll")), ["event 5"]);
    }

    #[test]
    fn no_log_at_all_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = EventTail::open(&dir.path().join("events.jsonl"))
            .err()
            .expect("no log");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
