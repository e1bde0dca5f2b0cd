//! `berth import FILE [--name NAME]`: load an image from an OCI archive or
//! a `docker save` tarball (the air-gapped path), unpack and record it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;
use super::images::{human_size, open_configured_service};
use crate::image::service::ImageReference;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The archive: `skopeo copy … oci-archive:FILE`, `docker save -o FILE`
    /// or `skopeo copy … docker-archive:FILE` (optionally gzip/zstd-compressed).
    pub file: PathBuf,
    /// Store the image under this name instead of the archive's own.
    #[arg(long)]
    pub name: Option<String>,
    /// The agent's configuration file: layers are unpacked under its
    /// `[store]` limits.
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let name: Option<ImageReference> = args
        .name
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--name")?;
    let service = open_configured_service(global, args.config.as_deref())?;
    let images = service
        .import(&args.file, name.as_ref())
        .with_context(|| format!("importing {}", args.file.display()))?;
    for image in images {
        println!(
            "imported {} ({}, {})",
            image.name,
            image.manifest_digest,
            human_size(image.unpacked_size.unwrap_or(image.compressed_size))
        );
    }
    Ok(ExitCode::SUCCESS)
}
