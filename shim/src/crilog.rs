//! The container log in the CRI format kubelet and crictl read:
//! `<RFC3339Nano> <stdout|stderr> <F|P> <content>\n`. A line longer than the
//! maximum is split into `P` (partial) records followed by a final `F`.
//! The file rotates by size: `N.log` → `N.log.1` → … → `N.log.<files-1>`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::timefmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

pub struct LogLimits {
    /// Rotate before the file would grow past this many bytes.
    pub max_size: u64,
    /// Files kept, the live one included (at least 1).
    pub max_files: u32,
    /// Longest content of one record; longer lines become `P` records.
    pub max_line: usize,
}

pub struct CriLog {
    path: PathBuf,
    limits: LogLimits,
    file: Option<File>,
    size: u64,
    /// Bytes of an unfinished line per stream, waiting for its newline.
    pending: [Vec<u8>; 2],
    /// The first write error, reported once so a full disk does not flood
    /// the shim's own log.
    reported_error: bool,
}

impl CriLog {
    pub fn new(path: PathBuf, limits: LogLimits) -> Self {
        Self {
            path,
            limits,
            file: None,
            size: 0,
            pending: [Vec::new(), Vec::new()],
            reported_error: false,
        }
    }

    /// Adds output read from a stream; writes every complete line.
    pub fn feed(&mut self, stream: Stream, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.limits.max_line - self.pending[stream.index()].len();
            let take = data.len().min(room);
            let chunk = &data[..take];
            if let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
                self.pending[stream.index()].extend_from_slice(&chunk[..newline]);
                self.emit(stream, false);
                data = &data[newline + 1..];
            } else {
                self.pending[stream.index()].extend_from_slice(chunk);
                data = &data[take..];
                if self.pending[stream.index()].len() >= self.limits.max_line {
                    self.emit(stream, true);
                }
            }
        }
    }

    /// The stream ended: an unfinished last line is written as a full one.
    pub fn finish(&mut self, stream: Stream) {
        if !self.pending[stream.index()].is_empty() {
            self.emit(stream, false);
        }
    }

    fn emit(&mut self, stream: Stream, partial: bool) {
        let content = std::mem::take(&mut self.pending[stream.index()]);
        let mut record = Vec::with_capacity(content.len() + 48);
        record.extend_from_slice(timefmt::rfc3339_nano(timefmt::now_ns()).as_bytes());
        record.push(b' ');
        record.extend_from_slice(stream.name().as_bytes());
        record.extend_from_slice(if partial { b" P " } else { b" F " });
        record.extend_from_slice(&content);
        record.push(b'\n');
        // Keep the allocation for the next line instead of growing it again.
        self.pending[stream.index()] = content;
        self.pending[stream.index()].clear();
        if let Err(err) = self.write_record(&record)
            && !self.reported_error
        {
            eprintln!("berth-shim: writing {}: {err}", self.path.display());
            self.reported_error = true;
        }
    }

    fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        let len = u64::try_from(record.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(len) > self.limits.max_size {
            self.rotate()?;
        }
        if self.file.is_none() {
            let file = open_log(&self.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        if let Some(file) = self.file.as_mut() {
            // One write per record: a reader never sees half a line from us
            // unless the disk is full.
            file.write_all(record)?;
            self.size += len;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        self.size = 0;
        if self.limits.max_files <= 1 {
            return std::fs::remove_file(&self.path).or_else(ignore_not_found);
        }
        for n in (1..self.limits.max_files - 1).rev() {
            let from = rotated(&self.path, n);
            match std::fs::rename(&from, rotated(&self.path, n + 1)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1)).or_else(ignore_not_found)
    }
}

fn ignore_not_found(err: io::Error) -> io::Result<()> {
    if err.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(err)
    }
}

/// `0.log` → `0.log.<n>`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_log(limits: LogLimits) -> (PathBuf, CriLog) {
        let dir = std::env::temp_dir().join(format!(
            "berth-shim-crilog-{}-{}",
            std::process::id(),
            timefmt::now_ns()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("0.log");
        (path.clone(), CriLog::new(path, limits))
    }

    fn records(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .expect("log")
            .lines()
            .map(|line| {
                let mut parts = line.splitn(4, ' ');
                let time = parts.next().expect("time").to_owned();
                assert!(time.ends_with('Z') && time.len() == 30, "timestamp {time}");
                let stream = parts.next().expect("stream").to_owned();
                let tag = parts.next().expect("tag").to_owned();
                (stream, tag, parts.next().unwrap_or("").to_owned())
            })
            .collect()
    }

    #[test]
    fn splits_long_lines_and_keeps_streams_apart() {
        let limits = LogLimits {
            max_size: 1 << 20,
            max_files: 2,
            max_line: 4,
        };
        let (path, mut log) = temp_log(limits);
        log.feed(Stream::Stdout, b"ab");
        log.feed(Stream::Stderr, b"err\n");
        log.feed(Stream::Stdout, b"cdefg\nh");
        log.finish(Stream::Stdout);
        let got = records(&path);
        let want = [
            ("stderr", "F", "err"),
            ("stdout", "P", "abcd"),
            ("stdout", "F", "efg"),
            ("stdout", "F", "h"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str()), w);
        }
        std::fs::remove_dir_all(path.parent().expect("dir")).expect("cleanup");
    }

    #[test]
    fn rotates_by_size_and_keeps_the_configured_number_of_files() {
        let limits = LogLimits {
            max_size: 100,
            max_files: 3,
            max_line: 1000,
        };
        let (path, mut log) = temp_log(limits);
        for n in 0..10 {
            // Each record is 30 (time) + 8 + 40 + 1 = 79 bytes: one per file.
            log.feed(Stream::Stdout, format!("{n:040}\n").as_bytes());
        }
        assert!(records(&path)[0].2.ends_with('9'));
        assert!(records(&rotated(&path, 1))[0].2.ends_with('8'));
        assert!(records(&rotated(&path, 2))[0].2.ends_with('7'));
        assert!(!rotated(&path, 3).exists(), "only 3 files are kept");
        std::fs::remove_dir_all(path.parent().expect("dir")).expect("cleanup");
    }
}
