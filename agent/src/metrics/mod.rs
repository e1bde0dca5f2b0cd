//! Node observability: the agent's Prometheus endpoint (`[metrics]
//! listen`, `berth run --metrics-listen`) and the container figures that
//! `berth stats` shows.
//!
//! - `cgroup.rs` a container's cpu, memory and pids from its cgroup (v1,
//!   v2, hybrid); `netdev.rs` a pod's network counters from its
//!   namespace; `disk.rs` its writable layer's size;
//! - `sample.rs` one reading of every running container;
//! - `exposition.rs` a scrape in the Prometheus text format, with what
//!   the agent counts as it works ([`crate::activity`]);
//! - `endpoint.rs` scrapes served from a cache, computed on blocking
//!   threads; `server.rs` the HTTP listener (TCP or a unix socket).

pub mod cgroup;
pub mod disk;
pub mod endpoint;
pub mod exposition;
pub mod netdev;
pub mod sample;
pub mod server;

use std::path::PathBuf;

use serde::Deserialize;

/// `[metrics]` in the agent config.
///
/// ```toml
/// [metrics]
/// listen = "127.0.0.1:9337"   # or a unix socket path; unset: no endpoint
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsConfig {
    /// Where `/metrics` is served; `None`: nowhere.
    pub listen: Option<ListenAddr>,
}

/// A TCP address (`127.0.0.1:9337`, `[::1]:9337`) or a unix socket path
/// (anything with a `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.contains('/') {
            return Ok(Self::Unix(PathBuf::from(text)));
        }
        text.parse().map(Self::Tcp).map_err(|_| {
            format!(
                "metrics listen address {text:?} is neither HOST:PORT (127.0.0.1:9337, [::1]:9337) nor a unix socket path"
            )
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Starts serving `/metrics` if `[metrics] listen` is set. A listener
/// that cannot be bound (address in use) costs the metrics, not the
/// agent: a `MetricsUnavailable` warning event says why. `layout`: the
/// host's cgroups, if any were found. The task ends after `stop`, its
/// unix socket file removed.
pub async fn start(
    config: &MetricsConfig,
    paths: crate::paths::Paths,
    layout: Option<crate::runtime::CgroupLayout>,
    images: crate::image::service::ImageService,
    status: crate::status::StatusStore,
    events: &crate::status::EventLog,
    stop: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    use crate::status::{Event, EventType};
    let addr = config.listen.as_ref()?;
    let listener = match server::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            let message = crate::status::chain(&err);
            tracing::warn!(error = %message, "no metrics endpoint");
            events.record(Event::new(
                EventType::Warning,
                "agent",
                "MetricsUnavailable",
                message,
            ));
            return None;
        }
    };
    let endpoint = endpoint::Endpoint::new(status, paths, layout, images);
    tracing::info!(%addr, "serving metrics at /metrics");
    Some(tokio::spawn(server::serve(listener, endpoint, stop)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "127.0.0.1:9337".parse::<ListenAddr>(),
            Ok(ListenAddr::Tcp("127.0.0.1:9337".parse().expect("addr")))
        );
        assert_eq!(
            "/run/berth/metrics.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/run/berth/metrics.sock".into()))
        );
        let err = "localhost".parse::<ListenAddr>().expect_err("no port");
        assert!(err.contains("HOST:PORT"), "{err}");
        let config: MetricsConfig = toml::from_str("listen = \"[::1]:9337\"").expect("config");
        assert!(matches!(config.listen, Some(ListenAddr::Tcp(_))));
        assert!(toml::from_str::<MetricsConfig>("listen = \"nope\"").is_err());
    }
}
