//! `berth`: one binary for the agent (`berth run`) and every CLI command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = berth::cli::Cli::parse();
    match berth::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            // One clear sentence on stderr, with the chain of causes.
            eprintln!("berth: {err:#}");
            ExitCode::FAILURE
        }
    }
}
