//! The agent's side of berth-shim: start one per container, and read what
//! it leaves in `Paths::shim_dir(id)`:
//!
//! ```text
//! container.json   the agent's record of the container (written before the shim starts)
//! shim.pid         "<pid> <start time>" of the shim
//! container.pid    "<pid> <start time>" of the container's init
//! exit.json        how the container ended (written once, atomically, by the shim)
//! shim.log         the shim's own diagnostics
//! ```
//!
//! A pid alone can be reused after its process died; the start time (field
//! 22 of `/proc/<pid>/stat`) makes the pair unique, so a restarted agent
//! never mistakes a stranger for its shim or container.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

pub const RECORD_FILE: &str = "container.json";
pub const SHIM_PID_FILE: &str = "shim.pid";
pub const CONTAINER_PID_FILE: &str = "container.pid";
pub const EXIT_FILE: &str = "exit.json";
pub const SHIM_LOG_FILE: &str = "shim.log";

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("starting the shim {shim}")]
    Spawn {
        shim: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id}: {message}")]
    StartFailed { id: String, message: String },
    #[error("container {id}: the shim did not report within {timeout:?} (its log: {log})")]
    Timeout {
        id: String,
        timeout: Duration,
        log: PathBuf,
    },
    #[error("container {id}: the shim exited without reporting (its log: {log})")]
    NoReport { id: String, log: PathBuf },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// How a container ended, as the shim recorded it in `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub pid: Option<i32>,
    /// The exit code, or 128 + signal number for a signal death, or 128
    /// when the container could not start at all.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub started_at_ns: Option<u64>,
    pub finished_at: String,
    pub finished_at_ns: u64,
    /// The runtime's error output when `run` failed.
    pub start_error: Option<String>,
}

impl ExitStatus {
    /// Kubernetes' `reason` for a terminated container.
    pub fn reason(&self) -> &'static str {
        if self.start_error.is_some() {
            "StartError"
        } else if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }

    pub fn finished_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.finished_at_ns)
    }
}

/// What the agent records about a container before starting it: enough to
/// stop, exec into and clean up the container after an agent restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_name: String,
    /// The runtime handler (runc, crun, …) that runs it.
    pub handler: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub cgroups_path: String,
    pub log_path: PathBuf,
    /// Sent first by `stop` (the image's StopSignal, else SIGTERM).
    pub stop_signal: String,
    pub tty: bool,
    pub created_at_ns: u64,
    /// Owner labels from the caller (source file, object, generation).
    pub labels: BTreeMap<String, String>,
}

/// A process named by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessRef {
    /// Parses `"<pid> <start time>"`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split_whitespace();
        Some(Self {
            pid: fields.next()?.parse().ok()?,
            start_time: fields.next()?.parse().ok()?,
        })
    }

    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// Whether this very process still exists (not a zombie, not a reused
    /// pid).
    pub fn is_alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => parse_stat(&stat).is_some_and(|(state, start)| {
                start == self.start_time && state != 'Z' && state != 'X'
            }),
            Err(_) => false,
        }
    }

    /// A pidfd for this process, if it is still the same process.
    pub fn pidfd(&self) -> Option<OwnedFd> {
        let pid = rustix::process::Pid::from_raw(self.pid)?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        // Checked after opening: the pidfd now pins the process we verify.
        self.is_alive().then_some(fd)
    }
}

/// (state, start time) from a `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Everything needed to start a shim.
#[derive(Debug, Clone)]
pub struct ShimLaunch {
    pub shim_binary: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: PathBuf,
    pub runtime_args: Vec<String>,
    pub runtime_root: PathBuf,
    pub log_file: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub tty: bool,
    pub oom_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// What a started shim reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub container_pid: i32,
}

/// Starts the shim and waits for its report: the container's pid, or why
/// the runtime could not create or start it.
pub async fn launch(launch: &ShimLaunch) -> Result<Started, ShimError> {
    let mut cmd = tokio::process::Command::new(&launch.shim_binary);
    cmd.arg("--id")
        .arg(&launch.id)
        .arg("--bundle")
        .arg(&launch.bundle)
        .arg("--state-dir")
        .arg(&launch.state_dir)
        .arg("--runtime")
        .arg(&launch.runtime)
        .arg("--runtime-root")
        .arg(&launch.runtime_root)
        .arg("--log-file")
        .arg(&launch.log_file)
        .arg("--log-max-size")
        .arg(launch.log_max_size.to_string())
        .arg("--log-max-files")
        .arg(launch.log_max_files.to_string());
    for arg in &launch.runtime_args {
        cmd.arg("--runtime-arg").arg(arg);
    }
    if launch.tty {
        cmd.arg("--tty");
    }
    if let Some(oom) = &launch.oom_file {
        cmd.arg("--oom-file").arg(oom);
    }
    // stdout is the sync pipe; the shim keeps it until it reports.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        );
    let mut child = cmd.spawn().map_err(|source| ShimError::Spawn {
        shim: launch.shim_binary.clone(),
        source,
    })?;
    let mut stdout = child.stdout.take().expect("stdout was piped");
    let mut report = String::new();
    let log = launch.state_dir.join(SHIM_LOG_FILE);
    let read = tokio::time::timeout(launch.timeout, stdout.read_to_string(&mut report)).await;
    // The launcher process exits right after forking the real shim.
    let _ = child.wait().await;
    match read {
        Err(_) => {
            return Err(ShimError::Timeout {
                id: launch.id.clone(),
                timeout: launch.timeout,
                log,
            });
        }
        Ok(Err(source)) => {
            return Err(ShimError::Io {
                action: "reading the shim's report",
                path: launch.shim_binary.clone(),
                source,
            });
        }
        Ok(Ok(_)) => {}
    }
    let report = report.trim();
    if let Some(pid) = report.strip_prefix("ok ")
        && let Ok(container_pid) = pid.trim().parse()
    {
        return Ok(Started { container_pid });
    }
    match report.strip_prefix("error ") {
        Some(message) => Err(ShimError::StartFailed {
            id: launch.id.clone(),
            message: message.to_string(),
        }),
        None => Err(ShimError::NoReport {
            id: launch.id.clone(),
            log,
        }),
    }
}

/// The exit file of a container, if the shim wrote one.
pub fn read_exit(state_dir: &Path) -> Result<Option<ExitStatus>, ShimError> {
    let path = state_dir.join(EXIT_FILE);
    let read = std::fs::read(&path);
    parse_exit(path, read)
}

/// [`read_exit`] on the blocking pool, for async callers.
pub async fn read_exit_async(state_dir: &Path) -> Result<Option<ExitStatus>, ShimError> {
    let path = state_dir.join(EXIT_FILE);
    let read = tokio::fs::read(&path).await;
    parse_exit(path, read)
}

fn parse_exit(
    path: PathBuf,
    read: std::io::Result<Vec<u8>>,
) -> Result<Option<ExitStatus>, ShimError> {
    match read {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ShimError::Corrupt { path, source }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ShimError::Io {
            action: "reading",
            path,
            source,
        }),
    }
}

pub fn read_record(state_dir: &Path) -> Result<ContainerRecord, ShimError> {
    let path = state_dir.join(RECORD_FILE);
    let bytes = std::fs::read(&path).map_err(|source| ShimError::Io {
        action: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ShimError::Corrupt { path, source })
}

pub fn write_record(state_dir: &Path, record: &ContainerRecord) -> Result<(), ShimError> {
    let path = state_dir.join(RECORD_FILE);
    let io = |action| {
        let path = path.clone();
        move |source| ShimError::Io {
            action,
            path,
            source,
        }
    };
    let json = serde_json::to_vec_pretty(record).map_err(|e| ShimError::Io {
        action: "encoding",
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    crate::fsutil::write_atomic(&path, &json, 0o600).map_err(io("writing"))
}

/// Waits until the shim of `state_dir` has written the exit file, at most
/// `timeout`. The file appears once, atomically, so polling it is exact; the
/// interval only bounds how late a caller learns of the exit.
pub async fn wait_exit(
    state_dir: &Path,
    timeout: Duration,
) -> Result<Option<ExitStatus>, ShimError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(exit) = read_exit_async(state_dir).await? {
            return Ok(Some(exit));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_refs_tell_reused_pids_apart() {
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let (state, start) = parse_stat(&stat).expect("parsed");
        assert_ne!(state, 'Z');
        let pid = i32::try_from(std::process::id()).expect("pid");
        let me = ProcessRef {
            pid,
            start_time: start,
        };
        assert!(me.is_alive());
        assert!(me.pidfd().is_some());
        let impostor = ProcessRef {
            pid,
            start_time: start + 1,
        };
        assert!(!impostor.is_alive(), "same pid, other start time");
        assert_eq!(
            ProcessRef::parse("12 345\n"),
            Some(ProcessRef {
                pid: 12,
                start_time: 345
            })
        );
        assert_eq!(ProcessRef::parse("12"), None);
    }

    #[test]
    fn parses_the_shims_exit_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_exit(dir.path()).expect("no file"), None);
        std::fs::write(
            dir.path().join(EXIT_FILE),
            r#"{"version":1,"pid":42,"exit_code":137,"signal":9,"oom_killed":true,"started_at":"1970-01-01T00:00:01.000000000Z","started_at_ns":1000000000,"finished_at":"1970-01-01T00:00:02.000000001Z","finished_at_ns":2000000001,"start_error":null}"#,
        )
        .expect("write");
        let exit = read_exit(dir.path()).expect("read").expect("present");
        assert_eq!(
            (exit.exit_code, exit.signal, exit.oom_killed),
            (137, Some(9), true)
        );
        assert_eq!(exit.reason(), "OOMKilled");
        std::fs::write(dir.path().join(EXIT_FILE), "{").expect("write");
        let err = read_exit(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("exit.json is not valid"), "{err}");
    }
}
