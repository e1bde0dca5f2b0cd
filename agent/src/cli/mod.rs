//! The command line: global flags and one module per subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::paths::Paths;

mod auto_update;
mod diff;
mod events;
mod exec;
mod export;
mod images;
mod import;
mod info;
mod inspect;
mod logs;
mod pods;
mod prune;
mod ps;
mod pull;
mod rmi;
mod run;
mod runtimes;
mod schema;
mod stats;
mod status;
mod tag;
mod update;
mod validate;

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "A declarative container node agent")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Persistent state: images, snapshots, metadata, container layers.
    #[arg(
        long,
        global = true,
        env = "BERTH_ROOT",
        default_value = "/var/lib/berth"
    )]
    pub root: PathBuf,
    /// Volatile state: bundles, shim state, netns mounts, status.
    #[arg(
        long,
        global = true,
        env = "BERTH_RUN_ROOT",
        default_value = "/run/berth"
    )]
    pub run_root: PathBuf,
    /// Directory of manifests that defines the desired state.
    #[arg(
        long,
        global = true,
        env = "BERTH_MANIFESTS",
        default_value = "/etc/agent.d"
    )]
    pub manifests: PathBuf,
}

impl GlobalArgs {
    pub fn paths(&self) -> Paths {
        Paths::new(&self.root, &self.run_root)
    }
}

/// `-o table|json` wherever a table is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch the manifest directory and keep the machine in that state.
    Run(run::Args),
    /// Check manifests and print every problem as path:line:col.
    Validate(validate::Args),
    /// Write the JSON Schema of every kind.
    Schema(schema::Args),
    /// Show each object's phase, message and source file.
    Status(status::Args),
    /// Show recent events.
    Events(events::Args),
    /// List containers.
    Ps(ps::Args),
    /// Print a container's logs.
    Logs(logs::Args),
    /// Run a command in a running container.
    Exec(exec::Args),
    /// Show everything berth knows about a pod, as JSON.
    Inspect(inspect::Args),
    /// Pull an image from a registry.
    Pull(pull::Args),
    /// Import an image from an OCI archive or a `docker save` tarball.
    Import(import::Args),
    /// List images, or check their content (--check).
    Images(images::Args),
    /// Remove images.
    Rmi(rmi::Args),
    /// Give a stored image a second name.
    Tag(tag::Args),
    /// Write stored images to one archive (OCI or docker format).
    #[command(visible_alias = "save")]
    Export(export::Args),
    /// Remove unused images, blobs and snapshots.
    Prune(prune::Args),
    /// Show what running containers use: cpu, memory, pids, network, disk.
    Stats(stats::Args),
    /// Show the node: versions, cgroups, runtimes, network, store, agent.
    Info(info::Args),
    /// Show the OCI runtime handlers: version, whether each works here, what each supports.
    Runtimes(runtimes::Args),
    /// Show what the agent would do if DIR became the manifest directory (exit 0 same, 1 changes, 2 errors).
    Diff(diff::Args),
    /// Override, once, the update lock that holds a pod's update back.
    Update(update::Args),
    /// Check the tags of pods with berth.dev/auto-update now; list what changes.
    AutoUpdate(auto_update::Args),
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Run(args) => run::run(&global, args),
        Command::Validate(args) => validate::run(&global, args),
        Command::Schema(args) => schema::run(&global, args),
        Command::Status(args) => status::run(&global, args),
        Command::Events(args) => events::run(&global, args),
        Command::Ps(args) => ps::run(&global, args),
        Command::Logs(args) => logs::run(&global, args),
        Command::Exec(args) => exec::run(&global, args),
        Command::Inspect(args) => inspect::run(&global, args),
        Command::Pull(args) => pull::run(&global, args),
        Command::Import(args) => import::run(&global, args),
        Command::Images(args) => images::run(&global, args),
        Command::Rmi(args) => rmi::run(&global, args),
        Command::Tag(args) => tag::run(&global, args),
        Command::Export(args) => export::run(&global, args),
        Command::Prune(args) => prune::run(&global, args),
        Command::Stats(args) => stats::run(&global, args),
        Command::Info(args) => info::run(&global, args),
        Command::Runtimes(args) => runtimes::run(&global, args),
        Command::Update(args) => update::run(&global, args),
        Command::Diff(args) => diff::run(&global, args),
        Command::AutoUpdate(args) => auto_update::run(&global, args),
    }
}
