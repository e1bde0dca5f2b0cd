//! Running the real agent (`berth run`) in a test, and reading what it
//! reports through the real CLI (`berth status -o json`).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{TestDirs, wait_until};

/// How long a test waits for the agent to react to a change.
pub const REACT: Duration = Duration::from_secs(20);

/// A `berth run` child process. Dropping it stops the agent (SIGTERM, then
/// SIGKILL after a deadline), by PID.
pub struct AgentProcess {
    child: Option<Child>,
    /// How it ended, once reaped.
    exit: Option<ExitStatus>,
    log: PathBuf,
}

impl AgentProcess {
    /// Spawns `berth --root .. --run-root .. --manifests .. run <extra_args>`
    /// with its logs in a file under the test's temp dir.
    pub fn start(dirs: &TestDirs, extra_args: &[&str]) -> Self {
        Self::start_with(dirs, extra_args, &[])
    }

    /// Like [`Self::start`], with extra environment variables.
    pub fn start_with(dirs: &TestDirs, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dirs.temp.path().join(format!("agent-{n}.log"));
        let log_file = File::create(&log).expect("creating the agent log file");
        let mut args = vec!["run", "--log-level", "debug"];
        args.extend_from_slice(extra_args);
        let mut command = dirs.berth_command(&args);
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("cloning log file"))
            .stderr(log_file)
            .env_remove("NOTIFY_SOCKET");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawning berth run");
        Self {
            child: Some(child),
            exit: None,
            log,
        }
    }

    /// Starts the agent and waits until it reports the initial state
    /// reconciled. The status must come from this agent (its pid): after a
    /// restart, the status file still says what the previous one reached.
    pub fn start_ready(dirs: &TestDirs, extra_args: &[&str]) -> Self {
        Self::start_ready_with(dirs, extra_args, &[])
    }

    /// Like [`Self::start_ready`], with extra environment variables.
    pub fn start_ready_with(dirs: &TestDirs, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        let agent = Self::start_with(dirs, extra_args, env);
        let pid = agent.pid();
        agent.wait_for_status(dirs, "the agent to become ready", |s| {
            s["agentRunning"] == true && s["agent"]["state"] == "Ready" && s["agent"]["pid"] == pid
        });
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The agent's log output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the agent (which must not have been reaped: its
    /// pid may belong to another process by now).
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("the agent has not exited");
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        kill(Pid::from_raw(pid), signal).expect("signalling the agent");
    }

    /// Waits for the agent to exit on its own (after a signal, or because
    /// it refused to start), failing the test after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("agent already reaped");
        let status = wait_until(timeout, "the agent to exit", || {
            child.try_wait().expect("waiting for the agent")
        });
        self.child = None;
        self.exit = Some(status);
        status
    }

    /// How the agent ended, if it has (without waiting).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait().expect("waiting for the agent")
        {
            self.exit = Some(status);
            self.child = None;
        }
        self.exit
    }

    /// Stops the agent with SIGTERM and returns its exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(REACT)
    }

    /// Polls `berth status -o json` until `predicate` holds; on timeout
    /// fails with the last status and the agent's log.
    pub fn wait_for_status(
        &self,
        dirs: &TestDirs,
        what: &str,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = None;
        crate::poll_until(REACT, || {
            last = status_json(dirs);
            last.as_ref().filter(|status| predicate(status)).cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after {REACT:?} waiting for {what}\nlast status: {}\nagent log:\n{}",
                last.map_or_else(|| "<none>".to_owned(), |s| format!("{s:#}")),
                tail(&self.log(), 60)
            )
        })
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let exited = crate::poll_until(Duration::from_secs(15), || child.try_wait().ok().flatten());
        if exited.is_some() {
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `berth status -o json` for these dirs, or `None` if it fails.
pub fn status_json(dirs: &TestDirs) -> Option<Value> {
    let output = dirs.berth(&["status", "-o", "json"]);
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

/// The status entry of one object.
pub fn object<'a>(status: &'a Value, kind: &str, namespace: &str, name: &str) -> Option<&'a Value> {
    status["objects"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == kind && o["namespace"] == namespace && o["name"] == name)
}

/// The status entry of one manifest file, by its path relative to the
/// manifest directory.
pub fn file<'a>(status: &'a Value, dirs: &TestDirs, relative: &str) -> Option<&'a Value> {
    let path = dirs.manifests.join(relative);
    status["files"]
        .as_array()?
        .iter()
        .find(|f| f["path"].as_str() == path.to_str())
}

/// Names of all objects of `kind`, sorted.
pub fn names_of(status: &Value, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = status["objects"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .filter(|o| o["kind"] == kind)
                .filter_map(|o| o["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
