//! `berth run`: the agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;
use crate::agent::logging::{self, LogFormat};
use crate::agent::{self, Options};
use crate::config::AgentConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent configuration file (TOML); every setting has a default.
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `berth=debug,warn`); default: RUST_LOG, else info.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Serve Prometheus metrics at /metrics on HOST:PORT or a unix socket
    /// path (overrides `[metrics] listen`).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<crate::metrics::ListenAddr>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    logging::init(args.log_format, args.log_level.as_deref())?;
    let mut config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    if let Some(addr) = args.metrics_listen {
        config.metrics.listen = Some(addr);
    }
    // Before any thread exists: threads made later share these arenas.
    crate::memory::limit_arenas(crate::memory::ARENAS);
    // Nothing berth creates is group- or world-writable, whatever umask it
    // was started with. (Its state roots are 0700 and its databases 0600
    // anyway; a stricter umask would reach files containers must read,
    // such as their /etc/hosts and the overlay's root, and the containers'
    // own umask through the runtime.)
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    match crate::runtime::oom::protect_agent() {
        Ok(()) => tracing::debug!(
            oom_score_adj = crate::runtime::oom::AGENT_OOM_SCORE_ADJ,
            "the OOM killer takes containers before the agent"
        ),
        Err(err) => tracing::info!(
            error = %err,
            oom_score_adj = crate::runtime::oom::own_score(),
            "cannot lower the agent's OOM score (no CAP_SYS_RESOURCE); containers still get higher ones. Under systemd, OOMScoreAdjust=-999 does it"
        ),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("berth")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(agent::run(Options {
        paths: global.paths(),
        manifests: global.manifests.clone(),
        config,
    }));
    // Dropping a runtime waits for every blocking-pool thread; one stuck in
    // a syscall (a hung mount, a dead NFS server) would keep the agent from
    // ever exiting. The agent has shut down cleanly by now: don't wait.
    runtime.shutdown_timeout(BLOCKING_THREADS_GRACE);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// How long an exiting agent waits for blocking work still running.
const BLOCKING_THREADS_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
