//! `berth schema --out DIR`: write the JSON Schema of every kind
//! (`pod.json`, `configmap.json`, …). `schemas/` in the repository is this
//! command's output; editors use it through yaml-language-server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the schemas into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(_global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for (file_name, schema) in manifests::schema::all_schemas() {
        let path = args.out.join(&file_name);
        std::fs::write(&path, manifests::schema::render(&schema))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
