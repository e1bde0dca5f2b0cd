//! Running a command inside a running container (`berth exec`, probes,
//! hooks) through the runtime's `exec`.

use std::path::{Path, PathBuf};

use super::{ContainerState, Handler, Runtime, RuntimeError, RuntimeKind};

/// A command to run inside a running container (`berth exec`, probes).
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// A real pty (`-t`).
    pub tty: bool,
    /// Extra `NAME=value` variables.
    pub env: Vec<String>,
}

/// `RUNTIME exec` ready to run; the process file is removed on drop.
pub struct ExecCommand {
    pub command: std::process::Command,
    /// Where the runtime writes the pid (host view) of the process it
    /// starts in the container.
    pub pid_file: PathBuf,
    /// How to kill the command inside when the exec is abandoned.
    inside: KillInside,
    _process_file: tempfile::TempPath,
    _pid_file: tempfile::TempPath,
    _internal_pid_file: Option<tempfile::TempPath>,
}

/// How the process an exec started is found and killed.
#[derive(Clone)]
enum KillInside {
    /// runc and the like: the pid file holds the process's host pid.
    HostPid(PathBuf),
    /// gVisor: the process lives in the sandbox's kernel; the pid file
    /// holds only `runsc exec`'s own pid (killing it leaves the command
    /// running), the internal pid file the command's pid in the sandbox,
    /// which `runsc kill --pid` signals.
    SandboxPid {
        handler: Handler,
        id: String,
        internal_pid_file: PathBuf,
    },
}

impl Runtime {
    /// `RUNTIME exec` of `req` in container `id`, to be run by the caller
    /// with its own stdio (so `-t` gets a real terminal). The process
    /// inherits the container's user, capabilities, no_new_privs and
    /// environment (the runtime applies its seccomp profile).
    pub fn exec_command(&self, id: &str, req: &ExecRequest) -> Result<ExecCommand, RuntimeError> {
        let record = self.record(id)?;
        let handler = self.handler_of(&record)?;
        super::flavor::check_exec(handler.kind, &handler.name, req.tty)
            .map_err(|reason| RuntimeError::NotHonoured { reason })?;
        if !matches!(self.container(id)?.state, ContainerState::Running { .. }) {
            return Err(RuntimeError::NotRunning { id: id.to_string() });
        }
        let config_path = record.bundle.join("config.json");
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Io {
                action,
                path,
                source,
            }
        };
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&config_path).map_err(io("reading", &config_path))?,
        )
        .map_err(|e| RuntimeError::Io {
            action: "parsing",
            path: config_path.clone(),
            source: std::io::Error::other(e),
        })?;
        let mut process = config["process"].clone();
        process["args"] = serde_json::json!(req.argv);
        process["terminal"] = serde_json::json!(req.tty);
        if let Some(env) = process["env"].as_array_mut() {
            env.extend(req.env.iter().map(|e| serde_json::json!(e)));
        }
        let file = tempfile::Builder::new()
            .prefix("exec-")
            .suffix(".json")
            .tempfile_in(&record.bundle)
            .map_err(io("creating a process file in", &record.bundle))?;
        serde_json::to_writer(file.as_file(), &process).map_err(|e| RuntimeError::Io {
            action: "writing",
            path: file.path().to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let process_file = file.into_temp_path();
        let pid_file = process_file.with_extension("pid");
        let mut command = handler.std_command();
        command
            .arg("exec")
            .arg("--process")
            .arg(&process_file)
            .arg("--pid-file")
            .arg(&pid_file);
        let (inside, internal_guard) = if handler.kind == RuntimeKind::Runsc {
            let internal_pid_file = process_file.with_extension("internal-pid");
            command.arg("--internal-pid-file").arg(&internal_pid_file);
            let guard = tempfile::TempPath::try_from_path(&internal_pid_file)
                .map_err(io("naming a pid file in", &record.bundle))?;
            let inside = KillInside::SandboxPid {
                handler: handler.clone(),
                id: id.to_string(),
                internal_pid_file,
            };
            (inside, Some(guard))
        } else {
            (KillInside::HostPid(pid_file.clone()), None)
        };
        command.arg(id);
        let pid_file_guard = tempfile::TempPath::try_from_path(&pid_file)
            .map_err(io("naming a pid file in", &record.bundle))?;
        Ok(ExecCommand {
            command,
            pid_file,
            inside,
            _process_file: process_file,
            _pid_file: pid_file_guard,
            _internal_pid_file: internal_guard,
        })
    }

    /// Runs `argv` in container `id` and returns (exit code, stdout,
    /// stderr), each cut at [`EXEC_OUTPUT_LIMIT`]; for tests.
    pub async fn exec_output(
        &self,
        id: &str,
        argv: &[&str],
    ) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError> {
        let request = ExecRequest {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let out = self.exec_capped(id, &request, EXEC_OUTPUT_LIMIT).await?;
        Ok((exit_code(out.status), out.stdout, out.stderr))
    }

    /// Runs `req` in container `id` without a terminal or stdin, keeping
    /// at most `limit` bytes of its stdout and of its stderr (see
    /// [`run_capped`]). If the returned future is dropped (a timeout, a
    /// cancelled hook), the process in the container is killed, as
    /// containerd does for a CRI exec that times out; the runtime's exec
    /// process then reaps it and exits. (Killing the runtime's process
    /// instead would leave the command running, an orphan only the host's
    /// init reaps: until then its container could not even die.)
    pub async fn exec_capped(
        &self,
        id: &str,
        req: &ExecRequest,
        limit: usize,
    ) -> Result<CappedOutput, RuntimeError> {
        let exec = {
            let (id, req) = (id.to_string(), req.clone());
            self.blocking("preparing the exec", move |rt| rt.exec_command(&id, &req))
                .await??
        };
        let inside = KillInsideOnDrop {
            inside: exec.inside.clone(),
        };
        let out = run_capped_with(exec.command, limit, false)
            .await
            .map_err(|source| RuntimeError::Io {
                action: "running exec in",
                path: PathBuf::from(id),
                source,
            });
        inside.disarm();
        out
    }
}

/// Kills the process an exec started in a container when the exec's future
/// is dropped before it finished.
struct KillInsideOnDrop {
    inside: KillInside,
}

impl KillInsideOnDrop {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for KillInsideOnDrop {
    fn drop(&mut self) {
        // A file of a few bytes on the run-root's tmpfs: no reason to
        // block. Not there yet: the command never started, and the
        // runtime's exec process ends by itself.
        let read_pid = |path: &Path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|pid| *pid > 1)
        };
        match &self.inside {
            KillInside::HostPid(pid_file) => {
                if let Some(pid) = read_pid(pid_file) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            KillInside::SandboxPid {
                handler,
                id,
                internal_pid_file,
            } => {
                if let Some(pid) = read_pid(internal_pid_file) {
                    // A runtime command: on a thread of its own, which
                    // also reaps it; drop never waits.
                    let mut kill = handler.std_command();
                    kill.args(["kill", "--pid", &pid.to_string(), id, "SIGKILL"])
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null());
                    std::thread::spawn(move || kill.status());
                }
            }
        }
    }
}

/// What [`Runtime::exec_output`] keeps of each stream: far more than a
/// test or probe prints, far less than a runaway command can.
pub const EXEC_OUTPUT_LIMIT: usize = 16 << 20;

/// A finished command's status and the start of its output.
#[derive(Debug)]
pub struct CappedOutput {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether either stream printed more than the limit.
    pub truncated: bool,
}

/// Runs `command` with stdin from /dev/null and both output streams read
/// at once, each into at most `limit` bytes: what comes after is read and
/// thrown away (never stored), so a command printing gigabytes neither
/// grows the agent nor blocks on a full pipe. The child is killed if the
/// future is dropped.
pub async fn run_capped(
    command: std::process::Command,
    limit: usize,
) -> std::io::Result<CappedOutput> {
    run_capped_with(command, limit, true).await
}

/// [`run_capped`]; `kill_on_drop` false leaves a dropped child running
/// (tokio reaps it when it ends).
async fn run_capped_with(
    command: std::process::Command,
    limit: usize,
    kill_on_drop: bool,
) -> std::io::Result<CappedOutput> {
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(kill_on_drop);
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let (stdout, stderr) =
        tokio::try_join!(read_capped(stdout, limit), read_capped(stderr, limit))?;
    let status = child.wait().await?;
    Ok(CappedOutput {
        status,
        truncated: stdout.1 || stderr.1,
        stdout: stdout.0,
        stderr: stderr.0,
    })
}

/// Reads `pipe` to its end, keeping the first `limit` bytes; true if there
/// was more.
async fn read_capped(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    limit: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = limit - kept.len();
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
}

/// The exit code of a finished process, 128 + signal for a signal death.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_beyond_the_limit_is_drained_not_kept() {
        let mut command = std::process::Command::new("/bin/sh");
        // 64 MiB on stdout (a full pipe would block the writer if it were
        // not drained), then a line on stderr and an exit code.
        command.args(["-c", "head -c 67108864 /dev/zero; echo done >&2; exit 3"]);
        let out = run_capped(command, 10 << 10).await.expect("runs");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout.len(), 10 << 10);
        assert!(out.stdout.capacity() < 1 << 20, "{}", out.stdout.capacity());
        assert_eq!(out.stderr, b"done\n");
        assert!(out.truncated);
    }
}
