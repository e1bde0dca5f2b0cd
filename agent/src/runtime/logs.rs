//! Reading the container logs berth-shim writes, in the CRI format
//! (`<RFC3339Nano> <stdout|stderr> <F|P> <content>`), for `berth logs`.
//!
//! Files: `Paths::container_logs(ns, pod, container)/<instance>.log`, where
//! the instance is the container's restart count, so a restarted container
//! keeps its previous log (`--previous`). The shim rotates by size:
//! `<n>.log` → `<n>.log.1` → `<n>.log.2` …
//!
//! Output joins `P` (partial) records back into whole lines and strips the
//! CRI prefix, unless timestamps are asked for: then each line starts with
//! its (first record's) timestamp, as `kubectl logs --timestamps` prints.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("no logs in {dir}: the container has not started yet")]
    NoLogs { dir: PathBuf },
    #[error("no previous instance in {dir}: the container has not restarted")]
    NoPrevious { dir: PathBuf },
    #[error("reading {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing the log output: {0}")]
    Write(io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One CRI record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: &'a str,
    pub stream: Stream,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line (without its newline); `None` for a malformed line.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        timestamp,
        stream,
        partial,
        content: parts.next().unwrap_or(b""),
    })
}

/// `<dir>/<instance>.log`: the live file of one container instance.
pub fn instance_log(dir: &Path, instance: u32) -> PathBuf {
    dir.join(format!("{instance}.log"))
}

/// The instances that have a log in `dir`, ascending.
pub fn instances(dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
        })
        .collect();
    found.sort_unstable();
    found
}

/// The instance `berth logs` shows: the latest, or the one before it.
pub fn select_instance(dir: &Path, previous: bool) -> Result<u32, LogError> {
    let all = instances(dir);
    let pick = if previous {
        all.len().checked_sub(2).map(|i| all[i])
    } else {
        all.last().copied()
    };
    pick.ok_or_else(|| {
        if previous && !all.is_empty() {
            LogError::NoPrevious {
                dir: dir.to_path_buf(),
            }
        } else {
            LogError::NoLogs {
                dir: dir.to_path_buf(),
            }
        }
    })
}

/// Deletes the logs of all but the newest `keep` instances (kubelet keeps
/// the current and the previous one).
pub fn prune_instances(dir: &Path, keep: usize) -> io::Result<()> {
    let all = instances(dir);
    for &instance in all.iter().take(all.len().saturating_sub(keep)) {
        for file in instance_files(dir, instance) {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The files of one instance, oldest first (`N.log.K` … `N.log.1`, `N.log`).
pub fn instance_files(dir: &Path, instance: u32) -> Vec<PathBuf> {
    let live = instance_log(dir, instance);
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name
                .to_str()?
                .strip_prefix(&format!("{instance}.log."))?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(live);
    files
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// Only the last N lines (before following).
    pub tail: Option<usize>,
    /// Keep printing new lines until the container exits.
    pub follow: bool,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
}

/// Turns CRI records into output lines, joining partial records.
struct Joiner {
    timestamps: bool,
    /// Per stream: the first record's timestamp and the content so far.
    pending: [Option<(String, Vec<u8>)>; 2],
}

impl Joiner {
    fn new(timestamps: bool) -> Self {
        Self {
            timestamps,
            pending: [None, None],
        }
    }

    /// Feeds one record; returns a finished output line, if any.
    fn push(&mut self, record: &Record<'_>) -> Option<Vec<u8>> {
        let slot = &mut self.pending[match record.stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }];
        let (timestamp, mut content) = slot
            .take()
            .unwrap_or_else(|| (record.timestamp.to_string(), Vec::new()));
        content.extend_from_slice(record.content);
        if record.partial {
            *slot = Some((timestamp, content));
            return None;
        }
        let mut line = Vec::with_capacity(content.len() + 40);
        if self.timestamps {
            line.extend_from_slice(timestamp.as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(&content);
        line.push(b'\n');
        Some(line)
    }
}

/// Splits `buf` into complete lines, feeding each; keeps the incomplete tail.
fn drain_lines(buf: &mut Vec<u8>, joiner: &mut Joiner, mut emit: impl FnMut(Vec<u8>)) {
    let mut start = 0;
    while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + pos];
        if let Some(record) = parse_record(line)
            && let Some(out) = joiner.push(&record)
        {
            emit(out);
        }
        start += pos + 1;
    }
    buf.drain(..start);
}

/// Writes the log of one container instance (see [`LogOptions`]). With
/// `follow`, returns once `exited()` is true and everything written before
/// has been printed; rotation is followed.
pub fn write_logs(
    dir: &Path,
    instance: u32,
    options: LogOptions,
    out: &mut dyn Write,
    exited: &dyn Fn() -> bool,
) -> Result<(), LogError> {
    let live_path = instance_log(dir, instance);
    // Open the live file first: whatever is appended from now on is read
    // through this handle, so nothing falls between "history" and "follow".
    let mut live = match File::open(&live_path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_err(&live_path)(e)),
    };
    let mut joiner = Joiner::new(options.timestamps);
    let mut buf = Vec::new();
    let lines = history(dir, instance, live.as_mut(), &mut buf, &mut joiner)?;
    if live.is_none() && lines.is_empty() && !options.follow {
        return Err(LogError::NoLogs {
            dir: dir.to_path_buf(),
        });
    }
    let skip = options.tail.map_or(0, |n| lines.len().saturating_sub(n));
    for line in &lines[skip..] {
        out.write_all(line).map_err(LogError::Write)?;
    }
    out.flush().map_err(LogError::Write)?;
    if !options.follow {
        return Ok(());
    }
    follow(&live_path, live, buf, joiner, out, exited)
}

/// Every complete line written so far: the rotated files, then the live
/// handle's file. The file may rotate between opening the live handle and
/// listing the directory: the handle's file is then found under a rotated
/// name, and whatever the listing shows after it is newer, which `follow`
/// reads once the handle is drained. Matching by inode reads each file once.
fn history(
    dir: &Path,
    instance: u32,
    mut live: Option<&mut File>,
    buf: &mut Vec<u8>,
    joiner: &mut Joiner,
) -> Result<Vec<Vec<u8>>, LogError> {
    let live_path = instance_log(dir, instance);
    let mut lines = Vec::new();
    let live_id = match live.as_ref() {
        Some(file) => Some(file_id(&file.metadata().map_err(read_err(&live_path))?)),
        None => None,
    };
    for path in instance_files(dir, instance) {
        if live_id.is_none() && path == live_path {
            continue;
        }
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err(&path)(e)),
        };
        let id = file_id(&file.metadata().map_err(read_err(&path))?);
        if Some(id) == live_id {
            break;
        }
        file.read_to_end(buf).map_err(read_err(&path))?;
        drain_lines(buf, joiner, |line| lines.push(line));
    }
    if let Some(file) = live.as_mut() {
        file.read_to_end(buf).map_err(read_err(&live_path))?;
        drain_lines(buf, joiner, |line| lines.push(line));
    }
    Ok(lines)
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + use<> {
    let path = path.to_path_buf();
    move |source| LogError::Read { path, source }
}

/// Which file a handle or path names, across renames.
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn follow(
    live_path: &Path,
    mut live: Option<File>,
    mut buf: Vec<u8>,
    mut joiner: Joiner,
    out: &mut dyn Write,
    exited: &dyn Fn() -> bool,
) -> Result<(), LogError> {
    let read_err = |source| LogError::Read {
        path: live_path.to_path_buf(),
        source,
    };
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        // Checked before reading, so the last read sees everything the
        // container wrote before it exited.
        let done = exited();
        let mut got_data = false;
        if let Some(file) = live.as_mut() {
            loop {
                let n = file.read(&mut chunk).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                got_data = true;
                buf.extend_from_slice(&chunk[..n]);
                let mut emit_err = None;
                drain_lines(&mut buf, &mut joiner, |line| {
                    if emit_err.is_none() {
                        emit_err = out.write_all(&line).err();
                    }
                });
                if let Some(e) = emit_err {
                    return Err(LogError::Write(e));
                }
            }
            out.flush().map_err(LogError::Write)?;
        }
        if got_data {
            continue;
        }
        // Rotated (or created): the path now names another file. The old
        // handle was read to its end above, so switch to the new file.
        if let Ok(meta) = std::fs::metadata(live_path) {
            let same = live
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .is_some_and(|m| file_id(&m) == file_id(&meta));
            if !same {
                live = Some(File::open(live_path).map_err(read_err)?);
                buf.clear();
                continue;
            }
        }
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads a whole instance log as output lines (for status messages and
/// tests).
pub fn read_lines(dir: &Path, instance: u32, timestamps: bool) -> Result<Vec<String>, LogError> {
    let mut out = Vec::new();
    let options = LogOptions {
        timestamps,
        ..Default::default()
    };
    write_logs(dir, instance, options, &mut out, &|| true)?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-01-01T00:00:00.000000001Z stdout F one
2026-01-01T00:00:00.000000002Z stderr P err-
2026-01-01T00:00:00.000000003Z stdout P tw
2026-01-01T00:00:00.000000004Z stderr F part
2026-01-01T00:00:00.000000005Z stdout F o
2026-01-01T00:00:00.000000006Z stdout F three
";

    fn write(dir: &Path, name: &str, content: &str) {
        std::fs::write(dir.join(name), content).expect("write");
    }

    #[test]
    fn joins_partials_and_strips_prefixes() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "0.log", LOG);
        assert_eq!(
            read_lines(dir.path(), 0, false).expect("read"),
            ["one", "err-part", "two", "three"]
        );
        assert_eq!(
            read_lines(dir.path(), 0, true).expect("read")[2],
            "2026-01-01T00:00:00.000000003Z two"
        );
    }

    #[test]
    fn tail_counts_whole_lines_across_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "0.log.2", "2026-01-01T00:00:00Z stdout F a\n");
        write(dir.path(), "0.log.1", "2026-01-01T00:00:01Z stdout F b\n");
        write(dir.path(), "0.log", "2026-01-01T00:00:02Z stdout F c\n");
        let mut out = Vec::new();
        let options = LogOptions {
            tail: Some(2),
            ..Default::default()
        };
        write_logs(dir.path(), 0, options, &mut out, &|| true).expect("logs");
        assert_eq!(out, b"b\nc\n");
    }

    #[test]
    fn previous_picks_the_instance_before_the_latest() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            select_instance(dir.path(), false),
            Err(LogError::NoLogs { .. })
        ));
        write(dir.path(), "0.log", "");
        assert!(matches!(
            select_instance(dir.path(), true),
            Err(LogError::NoPrevious { .. })
        ));
        write(dir.path(), "1.log", "");
        write(dir.path(), "10.log", "");
        write(dir.path(), "10.log.1", "");
        assert_eq!(select_instance(dir.path(), false).expect("latest"), 10);
        assert_eq!(select_instance(dir.path(), true).expect("previous"), 1);
        prune_instances(dir.path(), 2).expect("prune");
        assert_eq!(instances(dir.path()), [1, 10]);
        assert!(dir.path().join("10.log.1").exists());
    }

    #[test]
    fn follow_reads_across_rotation_until_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "0.log",
            "2026-01-01T00:00:00Z stdout F before\n",
        );
        let path = dir.path().to_path_buf();
        // The "container": rotates the file, writes, then exits. The reader
        // follows until the exit marker exists.
        let writer = std::thread::spawn(move || {
            std::fs::rename(path.join("0.log"), path.join("0.log.1")).expect("rotate");
            write(&path, "0.log", "2026-01-01T00:00:01Z stdout F after\n");
            write(&path, "exited", "");
        });
        let exit_marker = dir.path().join("exited");
        let mut out = Vec::new();
        let options = LogOptions {
            follow: true,
            ..Default::default()
        };
        write_logs(dir.path(), 0, options, &mut out, &|| exit_marker.exists()).expect("follow");
        writer.join().expect("writer");
        assert_eq!(String::from_utf8_lossy(&out), "before\nafter\n");
    }

    #[test]
    fn a_rotation_between_opening_and_listing_is_not_read_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "0.log",
            "2026-01-01T00:00:00Z stdout F before\n",
        );
        let mut live = File::open(dir.path().join("0.log")).expect("open live");
        std::fs::rename(dir.path().join("0.log"), dir.path().join("0.log.1")).expect("rotate");
        write(dir.path(), "0.log", "2026-01-01T00:00:01Z stdout F after\n");
        let mut buf = Vec::new();
        let mut joiner = Joiner::new(false);
        let lines =
            history(dir.path(), 0, Some(&mut live), &mut buf, &mut joiner).expect("history");
        assert_eq!(lines, [b"before\n".to_vec()]);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert!(parse_record(b"garbage").is_none());
        assert!(parse_record(b"2026 stdin F x").is_none());
        let record = parse_record(b"t stdout F  two  spaces ").expect("valid");
        assert_eq!(record.content, b" two  spaces ");
    }
}
