//! `berth pull`.

use std::process::ExitCode;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`berth pull` is not part of this build yet")
}
