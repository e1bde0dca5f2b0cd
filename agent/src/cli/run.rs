//! `berth run`.

use std::process::ExitCode;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_global: &GlobalArgs, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`berth run` is not part of this build yet")
}
