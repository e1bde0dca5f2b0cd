//! Shared by the `cli_*` tests: running berth commands and reading what
//! they print, following a command's output line by line, and running a
//! command under a pseudo-terminal (`script`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use berth_e2e::TestDirs;

/// The header of `berth ps`, as users (and scripts) see it.
pub const PS_COLUMNS: [&str; 7] = [
    "POD",
    "CONTAINER",
    "IMAGE",
    "STATE",
    "RESTARTS",
    "AGE",
    "IP",
];

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The stdout of a command that must succeed.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "berth failed ({}): {}\n{}",
        output.status,
        stderr(&output),
        stdout(&output)
    );
    stdout(&output)
}

/// The stderr of a command that must fail.
pub fn err(output: Output) -> String {
    assert!(
        !output.status.success(),
        "berth should have failed: {}",
        stdout(&output)
    );
    stderr(&output)
}

/// Table output as cells (columns are separated by at least 3 spaces).
pub fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|line| {
            line.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// A berth command with piped stdout, its lines delivered as they come.
pub struct Follower {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    pub fn start(dirs: &TestDirs, args: &[&str]) -> Self {
        let mut child = dirs
            .berth_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning berth");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line, failing the test after 20 s.
    pub fn next_line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("no {what} within 20s: {e}"))
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `berth <args>` with a pseudo-terminal as its stdin and stdout, as
/// from a user's shell: `script` from util-linux provides it.
pub fn berth_in_a_terminal(dirs: &TestDirs, args: &[&str]) -> Output {
    let command = dirs.berth_command(args);
    let words: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    Command::new("script")
        .args(["-qec", &words.join(" "), "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("running berth under script")
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The inode of a namespace file, e.g. `/proc/<pid>/ns/net`.
pub fn namespace_of(path: &Path) -> String {
    std::fs::read_link(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .display()
        .to_string()
}
