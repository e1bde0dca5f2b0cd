//! The files the shim leaves in its state directory for the agent:
//! `shim.pid` and `container.pid` (`<pid> <start time in clock ticks>`, so a
//! reader can tell a reused pid apart) and `exit.json`. All are written
//! atomically: temp file, fsync, rename, fsync of the directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::sys::ExitKind;
use crate::timefmt;

pub const SHIM_PID: &str = "shim.pid";
pub const CONTAINER_PID: &str = "container.pid";
/// Where the runtime writes the bare pid (`--pid-file`).
pub const RUNTIME_PID: &str = "runtime.pid";
pub const EXIT_FILE: &str = "exit.json";
pub const CONSOLE_SOCKET: &str = "console.sock";
/// The shim's own diagnostics (its stderr).
pub const SHIM_LOG: &str = "shim.log";

pub fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks
/// since boot. Together with the pid it names one process for good.
pub fn start_time(pid: libc::pid_t) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces and parentheses; the
    // fields after the last ')' are plain numbers and letters.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))?;
    rest.split_whitespace()
        .nth(19)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| io::Error::other("no start time in /proc/<pid>/stat"))
}

pub fn write_pid_file(dir: &Path, name: &str, pid: libc::pid_t) -> io::Result<()> {
    let start = start_time(pid)?;
    write_atomic(dir, name, format!("{pid} {start}\n").as_bytes())
}

/// What `exit.json` records.
pub struct ExitRecord {
    pub pid: Option<libc::pid_t>,
    pub exit: Option<ExitKind>,
    pub oom_killed: bool,
    pub started_at_ns: Option<u64>,
    pub finished_at_ns: u64,
    /// Why the container never ran (the runtime's own error output).
    pub start_error: Option<String>,
}

impl ExitRecord {
    pub fn to_json(&self) -> String {
        // Like kubelet and docker: a signal death is 128 + signal, and a
        // container that could not start at all reports 128.
        let (exit_code, signal) = match self.exit {
            Some(ExitKind::Code(code)) => (code, None),
            Some(ExitKind::Signal(sig)) => (128 + sig, Some(sig)),
            None => (128, None),
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "null".into());
        format!(
            "{{\"version\":1,\"pid\":{},\"exit_code\":{exit_code},\"signal\":{},\
\"oom_killed\":{},\"started_at\":{},\"started_at_ns\":{},\
\"finished_at\":\"{}\",\"finished_at_ns\":{},\"start_error\":{}}}\n",
            opt(self.pid.map(|p| p.to_string())),
            opt(signal.map(|s| s.to_string())),
            self.oom_killed,
            opt(self
                .started_at_ns
                .map(|ns| format!("\"{}\"", timefmt::rfc3339_nano(ns)))),
            opt(self.started_at_ns.map(|ns| ns.to_string())),
            timefmt::rfc3339_nano(self.finished_at_ns),
            self.finished_at_ns,
            opt(self.start_error.as_deref().map(json_string)),
        )
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads the `oom_kill` counter from a cgroup v1 `memory.oom_control` or a
/// v2 `memory.events` file: both use `oom_kill <n>` lines.
pub fn oom_kills(content: &str) -> u64 {
    content
        .lines()
        .filter_map(|line| line.strip_prefix("oom_kill "))
        .find_map(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_json_for_a_signal_death() {
        let record = ExitRecord {
            pid: Some(42),
            exit: Some(ExitKind::Signal(9)),
            oom_killed: true,
            started_at_ns: Some(1_000_000_000),
            finished_at_ns: 2_000_000_001,
            start_error: None,
        };
        assert_eq!(
            record.to_json(),
            "{\"version\":1,\"pid\":42,\"exit_code\":137,\"signal\":9,\"oom_killed\":true,\
\"started_at\":\"1970-01-01T00:00:01.000000000Z\",\"started_at_ns\":1000000000,\
\"finished_at\":\"1970-01-01T00:00:02.000000001Z\",\"finished_at_ns\":2000000001,\
\"start_error\":null}\n"
        );
    }

    #[test]
    fn start_errors_are_escaped() {
        assert_eq!(
            json_string("a \"b\"\n\\\u{1}"),
            "\"a \\\"b\\\"\\n\\\\\\u0001\""
        );
    }

    #[test]
    fn reads_oom_kill_counters_of_both_cgroup_versions() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(v1), 2);
        assert_eq!(oom_kills(v2), 1);
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
    }

    #[test]
    fn reads_its_own_start_time() {
        let pid = libc::pid_t::try_from(std::process::id()).expect("pid fits");
        assert!(start_time(pid).expect("own stat") > 0);
    }
}
