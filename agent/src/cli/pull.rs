//! `berth pull [--platform P] [--hosts-dir DIR] [--auth-file FILE] IMAGE`:
//! fetch an image through the configured mirrors into the content store
//! (under a lease, so GC leaves it alone), unpack its layers and record it,
//! with a progress bar per layer on a terminal (plain lines otherwise) and a
//! summary (bytes, time, MB/s).
//!
//! Host configuration: the manifest directory's `certs.d/*/hosts.toml` files
//! and `Registry` objects (what the agent would use), then `--hosts-dir`
//! (its hosts win). Credentials: `--auth-file`, else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` when present.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci_spec::image::Digest;

use super::{GlobalArgs, OutputFormat};
use crate::image::auth::Credentials;
use crate::image::hosts::{HostsConfig, Resolver};
use crate::image::hosts_dir::{load_certs_d, load_manifest_dir};
use crate::image::remote::{
    DEFAULT_CONCURRENCY, DEFAULT_STALL_TIMEOUT, FetchOptions, FetchedImage, ImageReference,
    Platform, Progress, Puller, RemoteError,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: name[:tag] or name@sha256:… (`busybox` is docker.io/library/busybox:latest).
    pub image: String,
    /// Platform to pick from a multi-platform image, os/arch[/variant]
    /// (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// A containerd-style certs.d directory (<host>/hosts.toml); its hosts
    /// override those configured in the manifest directory.
    #[arg(long, env = "BERTH_HOSTS_DIR")]
    pub hosts_dir: Option<PathBuf>,
    /// Docker-style credentials file (`auths`).
    #[arg(long, env = "BERTH_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Layers downloaded at the same time.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// How long a registry may send nothing before its host is given up
    /// for the next one (as `[images] stall-timeout`; default 30s).
    #[arg(long, value_parser = manifests::duration::parse_config)]
    pub stall_timeout: Option<std::time::Duration>,
    /// `json` prints the result as one JSON object.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
    /// The agent's configuration file: layers are unpacked under its
    /// `[store]` limits.
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let reference: ImageReference = args.image.parse()?;
    let platform = match &args.platform {
        Some(text) => text.parse()?,
        None => Platform::host(),
    };
    let hosts = hosts_config(&global.manifests, args.hosts_dir.as_deref())?;
    let resolver = Arc::new(Resolver::new(hosts).context("applying the registry host config")?);
    let credentials = Credentials::discover(args.auth_file.as_deref())?;
    let service = super::images::open_configured_service(global, args.config.as_deref())?;
    let puller = Puller::new(resolver, credentials, service.content().clone())
        .with_concurrency(args.concurrency)
        .with_stall_timeout(args.stall_timeout.unwrap_or(DEFAULT_STALL_TIMEOUT));

    let progress = CliProgress::new(args.output == OutputFormat::Table);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The lease keeps a concurrent `berth prune` or the agent's GC away from
    // blobs this pull has written but not yet recorded.
    let lease = service.lease(&format!("pull {reference}"))?;
    // Layers unpack while they download; what that could not do is done
    // by install_fetched below.
    let streaming = service.streaming_unpack(&lease);
    let fetched = runtime
        .block_on(async {
            let options = FetchOptions {
                guard: Some(&lease),
                tee: Some(&streaming),
                // An explicit pull repairs: a stored blob that no longer
                // matches its digest is fetched again.
                verify_stored: true,
                ..FetchOptions::new(&progress)
            };
            let fetched = puller.fetch_with(&reference, &platform, options).await;
            let streamed = streaming.finish().await;
            fetched.map(|fetched| (fetched, streamed))
        })
        .map_err(|err| pull_failed(&reference, err))?;
    let (fetched, streamed) = fetched;
    progress.finish();
    let record = service
        .install_fetched_under(&fetched, &lease)
        .with_context(|| format!("unpacking and recording {reference}"))?;
    lease.release()?;
    print_result(&fetched, &record.name, streamed, args.output)?;
    Ok(ExitCode::SUCCESS)
}

fn pull_failed(reference: &ImageReference, err: RemoteError) -> anyhow::Error {
    anyhow::Error::new(err).context(format!("pulling {reference}"))
}

pub(super) fn hosts_config(
    manifests: &Path,
    hosts_dir: Option<&Path>,
) -> anyhow::Result<HostsConfig> {
    let mut config = HostsConfig::new();
    if manifests.is_dir() {
        config.overlay(load_manifest_dir(manifests).with_context(|| {
            format!(
                "reading registry configuration in the manifest directory {}",
                manifests.display()
            )
        })?);
    }
    if let Some(dir) = hosts_dir {
        let loaded =
            load_certs_d(dir).with_context(|| format!("reading --hosts-dir {}", dir.display()))?;
        config.overlay(loaded);
    }
    Ok(config)
}

/// `streamed`: layers unpacked while they downloaded.
fn print_result(
    fetched: &FetchedImage,
    name: &str,
    streamed: usize,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let digest = fetched
        .index_digest
        .as_ref()
        .unwrap_or(&fetched.manifest_digest);
    match output {
        OutputFormat::Json => {
            let layers: Vec<serde_json::Value> = fetched
                .layers
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "digest": l.digest().to_string(),
                        "size": l.size(),
                        "mediaType": l.media_type().to_string(),
                    })
                })
                .collect();
            let json = serde_json::json!({
                "name": name,
                "reference": fetched.reference.to_string(),
                "digest": digest.to_string(),
                "indexDigest": fetched.index_digest.as_ref().map(ToString::to_string),
                "manifestDigest": fetched.manifest_digest.to_string(),
                "manifestMediaType": fetched.manifest_media_type,
                "configDigest": fetched.config_digest.to_string(),
                "platform": fetched.platform.to_string(),
                "layers": layers,
                "bytesTransferred": fetched.stats.bytes_transferred,
                "blobsDownloaded": fetched.stats.blobs_downloaded,
                "blobsAlreadyPresent": fetched.stats.blobs_already_present,
                "seconds": fetched.stats.elapsed.as_secs_f64(),
                "layersUnpackedWhileDownloading": streamed,
            });
            println!("{json}");
        }
        OutputFormat::Table => {
            println!("pulled {name} ({})", fetched.platform);
            println!("digest: {digest}");
            if fetched.index_digest.is_some() {
                println!("manifest: {}", fetched.manifest_digest);
            }
            println!("{}", fetched.stats);
            if streamed > 0 {
                println!("{streamed} layers unpacked while downloading");
            }
        }
    }
    Ok(())
}

/// Bars on a terminal, one line per finished blob otherwise.
struct CliProgress {
    enabled: bool,
    bars: Option<MultiProgress>,
    blobs: Mutex<HashMap<Digest, (Option<ProgressBar>, u64)>>,
}

impl CliProgress {
    fn new(enabled: bool) -> Self {
        let tty = enabled && std::io::stderr().is_terminal();
        Self {
            enabled,
            bars: tty.then(MultiProgress::new),
            blobs: Mutex::new(HashMap::new()),
        }
    }

    fn say(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.clear();
        }
    }
}

fn short(digest: &Digest) -> String {
    let hex = digest.digest();
    format!("{}:{}", digest.algorithm(), &hex[..hex.len().min(12)])
}

impl Progress for CliProgress {
    fn blob_progress(&self, digest: &Digest, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        let entry = blobs.entry(digest.clone()).or_insert_with(|| {
            let bar = self.bars.as_ref().map(|bars| {
                let bar = bars.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("a valid progress template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(short(digest));
                bar
            });
            (bar, total)
        });
        if let Some(bar) = &entry.0 {
            bar.set_position(done);
        }
    }

    fn blob_done(&self, digest: &Digest, downloaded: bool) {
        if !self.enabled {
            return;
        }
        let what = if downloaded {
            "downloaded"
        } else {
            "already present"
        };
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        match blobs.remove(digest) {
            Some((Some(bar), _)) => bar.finish_with_message(what),
            Some((None, total)) => self.say(&format!("{} {total} bytes {what}", short(digest))),
            None => self.say(&format!("{} {what}", short(digest))),
        }
    }

    fn host_failed(&self, host: &str, error: &RemoteError) {
        self.say(&format!(
            "warning: {host}: {}; trying the next host",
            crate::status::chain(error)
        ));
    }
}
