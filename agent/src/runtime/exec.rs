//! Running a command inside a running container (`berth exec`, probes,
//! hooks) through the runtime's `exec`.

use std::path::{Path, PathBuf};

use super::{ContainerState, Runtime, RuntimeError};

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
    _process_file: tempfile::TempPath,
}

impl Runtime {
    /// `RUNTIME exec` of `req` in container `id`, to be run by the caller
    /// with its own stdio (so `-t` gets a real terminal). The process
    /// inherits the container's user, capabilities, no_new_privs and
    /// environment (the runtime applies its seccomp profile).
    pub fn exec_command(&self, id: &str, req: &ExecRequest) -> Result<ExecCommand, RuntimeError> {
        let record = self.record(id)?;
        let handler = self.handler_of(&record)?;
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
        let mut command = handler.std_command();
        command
            .arg("exec")
            .arg("--process")
            .arg(&process_file)
            .arg(id);
        Ok(ExecCommand {
            command,
            _process_file: process_file,
        })
    }

    /// Runs `argv` in container `id` and returns (exit code, stdout,
    /// stderr); for probes and tests.
    pub async fn exec_output(
        &self,
        id: &str,
        argv: &[&str],
    ) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError> {
        let exec = self.exec_command(
            id,
            &ExecRequest {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )?;
        let mut command = tokio::process::Command::from(exec.command);
        command.stdin(std::process::Stdio::null());
        let out = command.output().await.map_err(|source| RuntimeError::Io {
            action: "running exec in",
            path: PathBuf::from(id),
            source,
        })?;
        Ok((exit_code(out.status), out.stdout, out.stderr))
    }
}

/// The exit code of a finished process, 128 + signal for a signal death.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
