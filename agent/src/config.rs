//! The agent's own configuration file (TOML, `berth run --config FILE`).
//! Every section has defaults, so no file is needed on a typical host.
//! Each subsystem owns its section.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    pub images: ImagesConfig,
    /// `[source]`: how the manifest directory is watched.
    pub source: crate::source::SourceConfig,
    /// `[controller]`: reconcile concurrency, relist interval, error backoff.
    pub controller: crate::controller::ControllerConfig,
    /// `[runtime]`: OCI runtime handlers, cgroups, logs, rlimits.
    pub runtime: crate::runtime::config::RuntimeConfig,
    /// `[network]`: the pod network driver and its settings.
    pub network: netplugins::factory::NetworkConfig,
    /// `[pods]`: restart back-off of crashing containers.
    pub pods: crate::pod::PodsConfig,
    /// `[store]`: the image store's garbage collection and unpacking.
    pub store: StoreConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: crate::metrics::MetricsConfig,
    /// `[node]`: the node's name and labels (which pods it runs).
    pub node: crate::node::NodeConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImagesConfig {
    /// A containerd-style `certs.d` directory, in addition to the one inside
    /// the manifest directory. Re-read every 10 s; for a host both
    /// configure, the manifest directory's Registry object wins
    /// (`crate::image::registries`).
    pub hosts_dir: Option<PathBuf>,
    /// Docker-style credentials file (`auths`).
    pub auth_file: Option<PathBuf>,
    /// Layers downloaded at the same time per pull (default 3).
    pub max_concurrent_downloads: Option<usize>,
    /// How long a registry may send nothing (no answer after connecting, no
    /// body byte) before that host is given up for the next one (default
    /// 30s). Connecting has its own limit: a host's `dial_timeout`.
    #[serde(with = "manifests::duration::config")]
    pub stall_timeout: std::time::Duration,
    /// Pulls running at once, for pods and Image objects together (pods
    /// that need an image being pulled share that pull). Default 4.
    pub parallel_pulls: usize,
    /// When no host of an image's registry answers and the image is in the
    /// store, use the stored copy (event `PulledFromLocalStore`) and check
    /// the tag again later. `false` is the kubelet's strict behaviour: the
    /// pod waits for its registry. Default true.
    pub offline_fallback: bool,
    /// Bytes per second for every download together, in bytes or with a
    /// unit (`"2MiB"`): for metered or shared links. Default 0: no limit.
    #[serde(with = "size")]
    pub max_download_rate: u64,
    /// How often pods annotated `berth.dev/auto-update: registry` resolve
    /// their tags again (each check jittered by ±20%, so a fleet started
    /// together does not ask its registry at once). Default 1h.
    #[serde(with = "manifests::duration::config")]
    pub auto_update_interval: std::time::Duration,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            hosts_dir: None,
            auth_file: None,
            max_concurrent_downloads: None,
            stall_timeout: crate::image::remote::DEFAULT_STALL_TIMEOUT,
            parallel_pulls: crate::image::manager::DEFAULT_PARALLEL_PULLS,
            offline_fallback: true,
            max_download_rate: 0,
            auto_update_interval: crate::pod::config::DEFAULT_AUTO_UPDATE_INTERVAL,
        }
    }
}

/// `[store]`: how the agent keeps its image store tidy and how hard it
/// unpacks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreConfig {
    /// How often the agent collects unreferenced blobs and snapshots
    /// (`0s`: never; `berth prune` still does).
    #[serde(with = "manifests::duration::config")]
    pub gc_interval: std::time::Duration,
    /// Layers unpacked at the same time.
    pub unpack_parallelism: usize,
    /// How long a pull or import may go without progress before GC stops
    /// protecting what it wrote (a crashed `berth pull`'s blobs).
    #[serde(with = "manifests::duration::config")]
    pub lease_ttl: std::time::Duration,
    /// Partial downloads and unpack staging directories older than this
    /// are removed by GC even if their owner might still be alive.
    #[serde(with = "manifests::duration::config")]
    pub leftover_age: std::time::Duration,
    /// The most one layer may take unpacked, in bytes or with a unit
    /// (`"64GiB"`, `"512MiB"`; default 64 GiB): both its uncompressed tar
    /// stream and the file content it writes (a sparse file at its full
    /// size). A larger layer is refused, naming its digest and this limit.
    /// Whatever this says, a layer is also refused when it would leave
    /// the store's file system less than 5% of its size (at most 1 GiB)
    /// free.
    #[serde(with = "size")]
    pub max_layer_size: u64,
    /// The most entries (files, directories, links) one layer may have
    /// (default 1000000); the store's free inodes are checked as well.
    pub max_layer_entries: u64,
    /// Free space a pull must leave on the store's file system: a size
    /// (`"2GiB"`) or a share (`"10%"`); default 5%, at most 1 GiB. A pull
    /// that would not (compressed layers + an estimate of their unpacked
    /// size) is refused with `InsufficientDisk` after unreferenced images
    /// were collected.
    #[serde(with = "min_free")]
    pub min_free: crate::image::preflight::MinFree,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let service = crate::image::service::ServiceOptions::default();
        Self {
            gc_interval: std::time::Duration::from_secs(3600),
            unpack_parallelism: service.unpack_parallelism,
            lease_ttl: service.lease_ttl,
            leftover_age: service.gc.leftover_age,
            max_layer_size: service.limits.max_layer_bytes,
            max_layer_entries: service.limits.max_entries,
            min_free: crate::image::preflight::MinFree::default(),
        }
    }
}

impl StoreConfig {
    /// The image service's options for this section.
    pub fn service_options(&self) -> crate::image::service::ServiceOptions {
        crate::image::service::ServiceOptions {
            unpack_parallelism: self.unpack_parallelism.max(1),
            lease_ttl: self.lease_ttl,
            gc: crate::image::gc::GcOptions {
                leftover_age: self.leftover_age,
            },
            limits: crate::image::unpack::UnpackLimits {
                max_layer_bytes: self.max_layer_size,
                max_entries: self.max_layer_entries,
                ..Default::default()
            },
        }
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading agent config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing agent config {}", path.display()))
    }
}

/// Sizes in the config file: a number of bytes, or a string with a
/// binary unit (`"512KiB"`, `"64MiB"`, `"32GiB"`, `"1TiB"`). Use with
/// `#[serde(with = "crate::config::size")]`.
/// `[store] min-free`: a size (`"2GiB"`, or a number of bytes) or a
/// share of the file system (`"10%"`).
pub mod min_free {
    use serde::{Deserialize, Deserializer};

    use crate::image::preflight::MinFree;

    pub fn parse(text: &str) -> Result<MinFree, String> {
        match text.trim().strip_suffix('%') {
            Some(percent) => match percent.trim().parse::<u64>() {
                Ok(p) if p <= 100 => Ok(MinFree::Percent(p)),
                _ => Err(format!(
                    "invalid min-free {text:?}: a percentage is 0% to 100%"
                )),
            },
            None => super::size::parse(text)
                .map(MinFree::Bytes)
                .map_err(|err| err.to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<MinFree, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(MinFree::Bytes(bytes)),
            Written::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn min_free_is_a_size_or_a_share() {
            assert_eq!(parse("10%"), Ok(MinFree::Percent(10)));
            assert_eq!(parse("2GiB"), Ok(MinFree::Bytes(2 << 30)));
            assert!(parse("120%").is_err());
            assert!(parse("lots").is_err());
            let config: crate::config::AgentConfig =
                toml::from_str("[store]\nmin-free = \"10%\"\n").expect("parses");
            assert_eq!(config.store.min_free, MinFree::Percent(10));
        }
    }
}

pub mod size {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    #[error("invalid size {text:?}: {reason} (write a number of bytes or e.g. 512MiB, 32GiB)")]
    pub struct ParseSizeError {
        text: String,
        reason: &'static str,
    }

    pub fn parse(text: &str) -> Result<u64, ParseSizeError> {
        let fail = |reason| ParseSizeError {
            text: text.to_owned(),
            reason,
        };
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if digits == 0 {
            return Err(fail("expected a number"));
        }
        let number: u64 = text[..digits]
            .parse()
            .map_err(|_| fail("number too large"))?;
        let shift = match text[digits..].trim() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            "TiB" => 40,
            _ => return Err(fail("unknown unit (KiB, MiB, GiB or TiB)")),
        };
        number
            .checked_mul(1 << shift)
            .ok_or_else(|| fail("too large"))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Bytes(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        match Written::deserialize(deserializer)? {
            Written::Bytes(bytes) => Ok(bytes),
            Written::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(size: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*size)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_bytes_and_binary_units() {
            assert_eq!(parse("1024"), Ok(1024));
            assert_eq!(parse("512KiB"), Ok(512 << 10));
            assert_eq!(parse("64 MiB"), Ok(64 << 20));
            assert_eq!(parse("32GiB"), Ok(32 << 30));
            assert_eq!(parse("1TiB"), Ok(1 << 40));
        }

        #[test]
        fn rejects_what_it_cannot_read_naming_the_text() {
            for bad in ["", "GiB", "5GB", "1.5GiB", "-1", "99999999999TiB"] {
                let err = parse(bad).expect_err(bad);
                assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_config_is_valid_and_matches_the_defaults_it_claims() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml block") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("closed toml block");
        let config: AgentConfig =
            toml::from_str(&readme[start..end]).expect("README config parses");
        assert_shows_the_defaults(&config);
    }

    #[test]
    fn the_example_config_file_is_valid_and_shows_the_defaults() {
        let example = include_str!("../../examples/systemd/config.toml");
        let config: AgentConfig = toml::from_str(example).expect("example config parses");
        assert_shows_the_defaults(&config);
    }

    /// The sample configs users copy say "shown with its default": hold
    /// them to it.
    fn assert_shows_the_defaults(config: &AgentConfig) {
        let defaults = AgentConfig::default();
        assert_eq!(config.source, defaults.source);
        assert_eq!(config.controller, defaults.controller);
        assert_eq!(config.store, defaults.store);
        assert_eq!(config.pods, defaults.pods);
        assert_eq!(config.node, defaults.node);
        assert_eq!(config.network, defaults.network);
        assert_eq!(config.metrics, defaults.metrics);
        let (runtime, default_runtime) = (&config.runtime, &defaults.runtime);
        assert_eq!(runtime.cgroup_parent, default_runtime.cgroup_parent);
        assert_eq!(runtime.log_max_size, default_runtime.log_max_size);
        assert_eq!(runtime.log_max_files, default_runtime.log_max_files);
        assert_eq!(runtime.default_handler, default_runtime.default_handler);
        assert_eq!(runtime.shm_size, default_runtime.shm_size);
        assert_eq!(
            runtime.start_timeout_secs,
            default_runtime.start_timeout_secs
        );
        assert_eq!(runtime.rlimits, default_runtime.rlimits);
        assert_eq!(runtime.shim, default_runtime.shim);
        assert!(runtime.handlers.is_empty());
    }

    #[test]
    fn sections_parse_from_kebab_case_toml_and_unknown_keys_are_errors() {
        let config: AgentConfig = toml::from_str(
            "[source]\nresync-interval = \"30s\"\ndebounce = \"100ms\"\n[controller]\nworkers = 2\n",
        )
        .expect("valid config");
        assert_eq!(
            config.source.resync_interval,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            config.source.debounce,
            std::time::Duration::from_millis(100)
        );
        assert_eq!(config.controller.workers, 2);
        let err =
            toml::from_str::<AgentConfig>("[source]\nresync = \"1s\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("resync"), "{err}");
    }

    #[test]
    fn images_stall_timeout_is_a_duration_with_a_30s_default() {
        let config: AgentConfig =
            toml::from_str("[images]\nstall-timeout = \"5s\"\n").expect("valid [images]");
        assert_eq!(
            config.images.stall_timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(
            AgentConfig::default().images.stall_timeout,
            std::time::Duration::from_secs(30)
        );
        let err = toml::from_str::<AgentConfig>("[images]\nstall-timeout = \"soon\"\n")
            .expect_err("not a duration");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn store_section_maps_to_the_image_service_options() {
        let config: AgentConfig = toml::from_str(
            "[store]\ngc-interval = \"10m\"\nunpack-parallelism = 4\nlease-ttl = \"2h\"\nleftover-age = \"3d\"\n",
        )
        .expect("valid [store]");
        assert_eq!(
            config.store.gc_interval,
            std::time::Duration::from_secs(600)
        );
        let options = config.store.service_options();
        assert_eq!(options.unpack_parallelism, 4);
        assert_eq!(options.lease_ttl, std::time::Duration::from_secs(7200));
        assert_eq!(
            options.gc.leftover_age,
            std::time::Duration::from_secs(3 * 86400)
        );
        let defaults = StoreConfig::default();
        assert_eq!(defaults.gc_interval, std::time::Duration::from_secs(3600));
        assert_eq!(
            defaults.service_options().unpack_parallelism,
            crate::image::service::ServiceOptions::default().unpack_parallelism
        );
        let limits = toml::from_str::<AgentConfig>(
            "[store]\nmax-layer-size = \"512MiB\"\nmax-layer-entries = 1000\n",
        )
        .expect("valid limits")
        .store
        .service_options()
        .limits;
        assert_eq!(limits.max_layer_bytes, 512 << 20);
        assert_eq!(limits.max_entries, 1000);
        assert_eq!(
            limits.max_header_bytes,
            crate::image::unpack::UnpackLimits::default().max_header_bytes
        );
        let bytes = toml::from_str::<AgentConfig>("[store]\nmax-layer-size = 4096\n")
            .expect("a plain number of bytes");
        assert_eq!(bytes.store.max_layer_size, 4096);
        assert_eq!(
            defaults.service_options().limits,
            crate::image::unpack::UnpackLimits::default()
        );
        let err = toml::from_str::<AgentConfig>("[store]\ngc = \"1h\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("gc"), "{err}");
    }
    #[test]
    fn the_pods_section_parses_durations() {
        let config: crate::config::AgentConfig =
            toml::from_str("[pods]\nbackoff-initial = \"200ms\"\nbackoff-max = \"1600ms\"\n")
                .expect("parse");
        assert_eq!(
            config.pods.backoff_initial,
            std::time::Duration::from_millis(200)
        );
        assert_eq!(
            config.pods.backoff_max,
            std::time::Duration::from_millis(1600)
        );
        assert_eq!(
            config.pods.backoff_reset,
            std::time::Duration::from_secs(600)
        );
    }
}
