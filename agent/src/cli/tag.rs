//! `berth tag SOURCE TARGET`: a second name for a stored image, as
//! `ctr image tag` / `docker tag` (the seed's migration scripts preload
//! images under their docker.io names this way).

use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;
use super::images::open_service;
use crate::image::service::ImageReference;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stored image (a name `berth images` lists, or name@digest).
    pub source: String,
    /// The new name; an image it named before keeps only its other names.
    pub target: String,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let source: ImageReference = args
        .source
        .parse()
        .with_context(|| format!("image name {:?}", args.source))?;
    let target: ImageReference = args
        .target
        .parse()
        .with_context(|| format!("image name {:?}", args.target))?;
    let service = open_service(global)?;
    let record = service
        .tag(&source, &target)
        .with_context(|| format!("tagging {source} as {target}"))?;
    println!("tagged {} as {}", source, record.name);
    Ok(ExitCode::SUCCESS)
}
