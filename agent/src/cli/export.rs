//! `berth export IMAGE... -o FILE [--format oci-archive|docker-archive]`
//! (alias `save`): stored images into one archive for another node
//! (`berth import`, `podman load`, `docker load`, `skopeo`, `ctr import`).
//! The file appears whole or not at all (written beside it, synced,
//! renamed); `-o -` writes to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;

use super::GlobalArgs;
use super::images::{open_service, parse_references};
use crate::image::export::ArchiveFormat;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An OCI image layout as a tar (`skopeo … oci-archive:`).
    #[default]
    OciArchive,
    /// `docker save`'s format (with the OCI layout inside, as Docker 25+).
    DockerArchive,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images to export, as `berth images` lists them.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// The archive to write (`-` for stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Archive format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let references = parse_references(&args.images)?;
    let format = match args.format {
        Format::OciArchive => ArchiveFormat::OciArchive,
        Format::DockerArchive => ArchiveFormat::DockerArchive,
    };
    let service = open_service(global)?;
    let exported = if args.output.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        service
            .export(&references, format, &mut out)
            .context("exporting to stdout")?
    } else {
        let path = &args.output;
        let mut failure = None;
        // The service's error is kept whole (the I/O wrapper only carries it).
        let written = crate::fsutil::atomic::write_atomic_with(path, 0o600, |file| {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            match service.export(&references, format, &mut out) {
                Ok(exported) => {
                    std::io::Write::flush(&mut out)?;
                    Ok(exported)
                }
                Err(err) => {
                    failure = Some(err);
                    Err(std::io::Error::other("export failed"))
                }
            }
        });
        match (written, failure) {
            (Ok(exported), _) => exported,
            (Err(_), Some(err)) => {
                return Err(err).with_context(|| format!("exporting to {}", path.display()));
            }
            (Err(err), None) => {
                return Err(err).with_context(|| format!("writing {}", path.display()));
            }
        }
    };
    for image in exported {
        eprintln!(
            "exported {} (manifest {}, config {})",
            image.name, image.manifest_digest, image.config_digest
        );
    }
    Ok(ExitCode::SUCCESS)
}
