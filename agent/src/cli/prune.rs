//! `berth prune`: remove images nothing uses, and every blob and snapshot
//! no image, container or pull in progress references.

use std::process::ExitCode;

use anyhow::Context;

use super::images::{emit, human_size, open_service};
use super::{GlobalArgs, OutputFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let service = open_service(global)?;
    let report = service.prune().context("pruning images")?;
    if args.output == OutputFormat::Json {
        emit(&(serde_json::to_string_pretty(&report)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    for image in &report.images {
        println!("removed image {image}");
    }
    for blob in &report.gc.blobs {
        println!("removed blob {} ({})", blob.id, human_size(blob.bytes));
    }
    for snapshot in &report.gc.snapshots {
        println!(
            "removed snapshot {} ({})",
            snapshot.id,
            human_size(snapshot.bytes)
        );
    }
    for leftover in &report.gc.leftovers {
        println!("removed leftover {}", leftover.id);
    }
    println!(
        "{} images, {} blobs, {} snapshots removed; {} freed",
        report.images.len(),
        report.gc.blobs.len(),
        report.gc.snapshots.len(),
        human_size(report.gc.bytes_freed())
    );
    Ok(ExitCode::SUCCESS)
}
