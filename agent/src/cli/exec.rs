//! `berth exec`: runs a command inside a running container through the
//! OCI runtime's `exec` (the container's namespaces, cgroup, user,
//! capabilities, seccomp profile and environment), with the caller's
//! stdio — a real pseudo-terminal with `-t` — and the command's exit code
//! as berth's own.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use super::GlobalArgs;
use super::pods::{ContainerTarget, LoadedStatus, find_container};
use crate::config::AgentConfig;
use crate::runtime::{self, ExecRequest, Runtime};
use crate::status::ContainerState;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the command a pseudo-terminal (berth's stdin must be a terminal).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an extra environment variable for the command.
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The agent's configuration file, for runtime handlers it defines.
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// POD[/CONTAINER]: the pod as NAME or NAMESPACE/NAME; the container
    /// may be left out when the pod has only one.
    #[arg(value_name = "POD[/CONTAINER]")]
    pub target: String,
    /// The command and its arguments (after `--`).
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    if args.tty && !std::io::stdin().is_terminal() {
        bail!(
            "the input device is not a terminal: run berth exec -t from a terminal, or leave out -t"
        );
    }
    for var in &args.env {
        if var.split_once('=').is_none_or(|(name, _)| name.is_empty()) {
            bail!("--env {var:?} is not NAME=VALUE");
        }
    }
    let loaded = LoadedStatus::load(global)?;
    let target = find_container(&loaded.doc, &args.target)?;
    let id = running_container_id(&target)?;
    let runtime = open_runtime(global, args.config.as_deref())?;
    let exec = runtime
        .exec_command(
            id,
            &ExecRequest {
                argv: args.command,
                tty: args.tty,
                env: args.env,
            },
        )
        .with_context(|| format!("exec in {}", target.describe()))?;
    let mut command = exec.command;
    if !args.interactive {
        command.stdin(std::process::Stdio::null());
    }
    // `exec`'s process file (which the runtime reads) is removed when the
    // rest of `exec` drops, at the end of this function.
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run_forwarding_signals(command))
        .with_context(|| format!("running the OCI runtime's exec in {}", target.describe()))?;
    let code = runtime::exit_code(status);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)))
}

/// The container's current id, if it is running (as the status says; the
/// runtime checks again).
fn running_container_id<'a>(target: &ContainerTarget<'a>) -> anyhow::Result<&'a str> {
    let state = &target.container.state;
    match (&target.container.container_id, state) {
        (Some(id), ContainerState::Running { .. }) => Ok(id),
        _ => bail!(
            "{} is not running ({}); berth exec needs a running container",
            target.describe(),
            state_summary(state)
        ),
    }
}

fn state_summary(state: &ContainerState) -> String {
    match state {
        ContainerState::Running { .. } => "running".into(),
        ContainerState::Waiting { reason, .. } => format!("waiting: {reason}"),
        ContainerState::Terminated {
            exit_code, reason, ..
        } => format!("terminated: {reason}, exit code {exit_code}"),
    }
}

/// The runtime as the agent configured it (handlers, shim, cgroup parent).
pub(super) fn open_runtime(global: &GlobalArgs, config: Option<&Path>) -> anyhow::Result<Runtime> {
    let config = match config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    Runtime::new(global.paths(), config.runtime).context("looking at the host's OCI runtimes")
}

/// Runs the runtime's exec to its end. A terminal's SIGINT and SIGQUIT
/// reach the whole foreground process group, the runtime included, which
/// passes them to the command: berth outlives them to report the exit
/// code. SIGTERM and SIGHUP sent to berth alone are passed on.
async fn run_forwarding_signals(
    command: std::process::Command,
) -> std::io::Result<std::process::ExitStatus> {
    let mut child = tokio::process::Command::from(command).spawn()?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let forward = |child: &tokio::process::Child, sig: nix::sys::signal::Signal| {
        if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    };
    loop {
        tokio::select! {
            status = child.wait() => return status,
            _ = terminate.recv() => forward(&child, nix::sys::signal::Signal::SIGTERM),
            _ = hangup.recv() => forward(&child, nix::sys::signal::Signal::SIGHUP),
            _ = interrupt.recv() => {}
            _ = quit.recv() => {}
        }
    }
}
