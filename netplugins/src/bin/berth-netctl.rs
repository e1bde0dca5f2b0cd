//! `berth-netctl`: one pod network operation by hand, outside the agent,
//! for debugging a host's networking and for the crash tests.
//!
//! ```text
//! berth-netctl CONFIG.json setup|teardown|check POD_ID
//! berth-netctl CONFIG.json cleanup [ALIVE_POD_ID...]
//! ```
//!
//! CONFIG.json: `{"network": {<the [network] section>}, "database": PATH,
//! "netns-dir": DIR, "cni-cache-dir": DIR}`. With
//! `BERTH_NETCTL_PAUSE_AT=namespace|lease|veth|pod-interface|firewall`, a
//! bridge setup prints `paused at <stage>` and waits there forever (to be
//! killed, simulating a crash at that point).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use netplugins::bridge::BridgeDriver;
use netplugins::driver::{Environment, NetworkDriver, PodNetwork};
use netplugins::factory::{self, DriverKind, NetworkConfig};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct CtlConfig {
    #[serde(default)]
    network: NetworkConfig,
    database: PathBuf,
    netns_dir: PathBuf,
    cni_cache_dir: PathBuf,
}

async fn driver(config: &CtlConfig) -> anyhow::Result<Box<dyn NetworkDriver>> {
    let env = Environment {
        database: config.database.clone(),
        netns_dir: config.netns_dir.clone(),
        cni_cache_dir: config.cni_cache_dir.clone(),
    };
    let pause_at = std::env::var("BERTH_NETCTL_PAUSE_AT").ok();
    if config.network.driver == DriverKind::Bridge
        && let Some(pause_at) = pause_at
    {
        let bridge = BridgeDriver::new(config.network.bridge.clone(), env).await?;
        return Ok(Box::new(bridge.with_stage_hook(move |stage| {
            if stage.name() == pause_at {
                println!("paused at {pause_at}");
                let _ = std::io::stdout().flush();
                loop {
                    std::thread::park();
                }
            }
        })));
    }
    Ok(factory::build(config.network.driver, &config.network, &env).await?)
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let [config_path, command, rest @ ..] = args.as_slice() else {
        bail!(
            "usage: berth-netctl CONFIG.json setup|teardown|check POD_ID | cleanup [ALIVE_POD_ID...]"
        );
    };
    let text = std::fs::read(config_path).with_context(|| format!("reading {config_path}"))?;
    let config: CtlConfig =
        serde_json::from_slice(&text).with_context(|| format!("parsing {config_path}"))?;
    let driver = driver(&config).await?;
    let pod = |id: Option<&String>| -> anyhow::Result<PodNetwork> {
        let Some(id) = id else {
            bail!("{command} needs a POD_ID")
        };
        Ok(PodNetwork {
            pod_id: id.clone(),
            name: id.clone(),
            namespace: "default".to_string(),
            hostname: id.clone(),
            ..PodNetwork::default()
        })
    };
    match command.as_str() {
        "setup" => {
            let status = driver.setup(&pod(rest.first())?).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        "teardown" => driver.teardown(&pod(rest.first())?).await?,
        "check" => driver.check(&pod(rest.first())?).await?,
        "cleanup" => {
            let alive: HashSet<String> = rest.iter().cloned().collect();
            let report = driver.cleanup_orphans(&alive).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        other => bail!("unknown command {other:?} (setup, teardown, check, cleanup)"),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("berth-netctl: starting the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(std::env::args().skip(1).collect())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth-netctl: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
