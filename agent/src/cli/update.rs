//! `berth update --force POD`: overrides, once, the update lock a
//! container of POD holds (`/tmp/berth/updates.lock`), so the update that
//! waits for it goes ahead. The agent takes the override at its next try
//! (every few seconds); this command waits until it has.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use manifests::{Kind, ObjectKey};

use super::GlobalArgs;
use super::pods::{LoadedStatus, find_pod, pod_name};
use crate::pod::update;

/// How long to wait for the agent to take the override: it tries a held
/// update again every `update::RETRY`.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Go ahead with the update although a container holds its update lock
    /// (once; the lock counts again for the next update).
    #[arg(long, required = true)]
    pub force: bool,
    /// The pod: NAME or NAMESPACE/NAME.
    pub pod: String,
}

pub fn run(global: &GlobalArgs, args: Args) -> anyhow::Result<ExitCode> {
    let loaded = LoadedStatus::load(global)?;
    if !loaded.agent_running {
        bail!(
            "no berth agent is running with run-root {}; only a running agent updates pods",
            global.run_root.display()
        );
    }
    let pod = find_pod(&loaded.doc, &args.pod)?;
    let name = pod_name(pod);
    if !pod.message.starts_with("UpdateHeldByLock") {
        bail!(
            "pod {name} has no update waiting for an update lock (its status: {:?}); nothing to force",
            pod.message
        );
    }
    let paths = global.paths();
    let key = ObjectKey::new(Kind::Pod, &pod.namespace, &pod.name);
    let file = update::force_file(&paths, &key);
    crate::fsutil::create_dir_all_with_mode(&paths.update_force(), 0o700)
        .with_context(|| format!("creating {}", paths.update_force().display()))?;
    crate::fsutil::write_atomic(&file, b"", 0o600)
        .with_context(|| format!("writing {}", file.display()))?;
    let started = Instant::now();
    while file.exists() {
        if started.elapsed() > WAIT {
            // A stale override would surprise the next update.
            let _ = std::fs::remove_file(&file);
            bail!(
                "the agent did not take the override of pod {name} within {}s; nothing was forced",
                WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("pod {name}: the update goes ahead despite its update lock");
    Ok(ExitCode::SUCCESS)
}
