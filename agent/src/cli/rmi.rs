//! `berth rmi NAME...`: remove image names, then free their content.

use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;
use super::images::{human_size, open_service};
use crate::image::remote::reference::ImageReference;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images to remove (as they were pulled or listed by `berth images`).
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Remove even images that containers use or Image objects pin
    /// (running containers keep their layers until they are removed).
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let service = open_service(global)?;
    let mut failed = false;
    for name in &args.names {
        let removed = name
            .parse::<ImageReference>()
            .with_context(|| format!("image name {name:?}"))
            .and_then(|reference| Ok(service.remove(&reference, args.force)?));
        match removed {
            Ok(record) => println!("untagged {}", record.name),
            Err(err) => {
                eprintln!("berth: {err:#}");
                failed = true;
            }
        }
    }
    let report = service.gc().context("freeing unused content")?;
    if !report.blobs.is_empty() || !report.snapshots.is_empty() {
        println!(
            "deleted {} blobs and {} snapshots, {} freed",
            report.blobs.len(),
            report.snapshots.len(),
            human_size(report.bytes_freed())
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
