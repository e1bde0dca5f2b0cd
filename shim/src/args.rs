//! Command-line flags. The agent is the only caller; flags are long-form
//! `--name value` pairs so the command line in `ps` explains itself.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::crilog::LogLimits;

pub struct Args {
    /// Container ID, as the runtime knows it.
    pub id: String,
    pub bundle: PathBuf,
    /// `shims/<id>/`: where the shim keeps its pid, the container's pid and
    /// the exit file.
    pub state_dir: PathBuf,
    /// The runtime binary (runc or crun).
    pub runtime: PathBuf,
    /// Global runtime flags placed before the subcommand.
    pub runtime_args: Vec<OsString>,
    /// The runtime's `--root`.
    pub runtime_root: PathBuf,
    pub log_file: PathBuf,
    pub log_limits: LogLimits,
    /// Allocate a pty (`--console-socket`) instead of stdio pipes.
    pub tty: bool,
    /// The container cgroup's `memory.oom_control` (v1) or `memory.events`
    /// (v2); its `oom_kill` counter says whether the kernel OOM-killed.
    pub oom_file: Option<PathBuf>,
    /// How long to keep reading output after the container's init exited,
    /// for writers it left behind.
    pub drain_ms: i32,
}

pub const USAGE: &str = "usage: berth-shim --id ID --bundle DIR --state-dir DIR --runtime BIN \
--runtime-root DIR --log-file FILE [--runtime-arg ARG]... [--log-max-size BYTES] \
[--log-max-files N] [--log-max-line BYTES] [--tty] [--oom-file FILE] [--drain-ms MS]";

impl Args {
    pub fn parse(mut argv: impl Iterator<Item = OsString>) -> Result<Self, String> {
        let mut id = None;
        let mut bundle = None;
        let mut state_dir = None;
        let mut runtime = None;
        let mut runtime_root = None;
        let mut log_file = None;
        let mut runtime_args = Vec::new();
        let mut log_limits = LogLimits {
            max_size: 10 << 20,
            max_files: 5,
            max_line: 16 << 10,
        };
        let mut tty = false;
        let mut oom_file = None;
        let mut drain_ms = 2000;
        while let Some(flag) = argv.next() {
            let flag = flag
                .into_string()
                .map_err(|f| format!("unknown flag {}", f.to_string_lossy()))?;
            if flag == "--tty" {
                tty = true;
                continue;
            }
            let value = argv
                .next()
                .ok_or_else(|| format!("flag {flag} needs a value"))?;
            match flag.as_str() {
                "--id" => id = Some(string(&flag, value)?),
                "--bundle" => bundle = Some(PathBuf::from(value)),
                "--state-dir" => state_dir = Some(PathBuf::from(value)),
                "--runtime" => runtime = Some(PathBuf::from(value)),
                "--runtime-root" => runtime_root = Some(PathBuf::from(value)),
                "--runtime-arg" => runtime_args.push(value),
                "--log-file" => log_file = Some(PathBuf::from(value)),
                "--log-max-size" => log_limits.max_size = number(&flag, value)?,
                "--log-max-files" => log_limits.max_files = number(&flag, value)?,
                "--log-max-line" => log_limits.max_line = number(&flag, value)?,
                "--oom-file" => oom_file = Some(PathBuf::from(value)),
                "--drain-ms" => drain_ms = number(&flag, value)?,
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        if log_limits.max_line == 0 || log_limits.max_files == 0 {
            return Err("--log-max-line and --log-max-files must be at least 1".into());
        }
        let missing = |name: &str| format!("missing {name}\n{USAGE}");
        Ok(Self {
            id: id.ok_or_else(|| missing("--id"))?,
            bundle: bundle.ok_or_else(|| missing("--bundle"))?,
            state_dir: state_dir.ok_or_else(|| missing("--state-dir"))?,
            runtime: runtime.ok_or_else(|| missing("--runtime"))?,
            runtime_root: runtime_root.ok_or_else(|| missing("--runtime-root"))?,
            log_file: log_file.ok_or_else(|| missing("--log-file"))?,
            runtime_args,
            log_limits,
            tty,
            oom_file,
            drain_ms,
        })
    }
}

fn string(flag: &str, value: OsString) -> Result<String, String> {
    value
        .into_string()
        .map_err(|v| format!("{flag}: {} is not UTF-8", v.to_string_lossy()))
}

fn number<T: std::str::FromStr>(flag: &str, value: OsString) -> Result<T, String> {
    let text = string(flag, value)?;
    text.parse()
        .map_err(|_| format!("{flag}: {text} is not a valid number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_a_full_command_line() {
        let args = parse(&[
            "--id",
            "c1",
            "--bundle",
            "/b",
            "--state-dir",
            "/s",
            "--runtime",
            "/usr/sbin/runc",
            "--runtime-root",
            "/r",
            "--log-file",
            "/l/0.log",
            "--runtime-arg",
            "--debug",
            "--log-max-size",
            "1024",
            "--tty",
            "--oom-file",
            "/sys/x",
        ])
        .expect("valid");
        assert_eq!(args.id, "c1");
        assert_eq!(args.runtime_args, vec![OsString::from("--debug")]);
        assert_eq!(args.log_limits.max_size, 1024);
        assert!(args.tty);
        assert_eq!(args.oom_file, Some(PathBuf::from("/sys/x")));
    }

    #[test]
    fn names_what_is_wrong() {
        let err = parse(&["--id", "c1"]).err().expect("incomplete");
        assert!(err.starts_with("missing --bundle"), "{err}");
        let err = parse(&["--log-max-size", "lots"])
            .err()
            .expect("bad number");
        assert!(err.contains("lots is not a valid number"), "{err}");
        let err = parse(&["--nope", "x"]).err().expect("unknown");
        assert!(err.starts_with("unknown flag --nope"), "{err}");
    }
}
