//! One scrape's text: a fresh registry holding the agent's counters
//! (shared, see [`crate::activity`]), the status figures and the
//! containers' figures of one [`NodeSample`], encoded in the Prometheus
//! text format (0.0.4). Container figures use cAdvisor's names and
//! `namespace`/`pod`/`container` labels, so dashboards made for the
//! kubelet work unchanged.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::sample::NodeSample;
use crate::status::{ContainerState, Details, Phase, StatusDocument};

pub use prometheus_text::CONTENT_TYPE;

/// Bytes the image store takes, by part.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreBytes {
    /// Blobs: manifests, configs, compressed layers.
    pub content: u64,
    /// Unpacked layers.
    pub snapshots: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    namespace: String,
    pod: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    namespace: String,
    pod: String,
    interface: String,
}

type Gauges<L> = Family<L, Gauge>;
type Counters<L> = Family<L, Counter>;

/// The whole scrape, as text.
pub fn encode(sample: &NodeSample, doc: &StatusDocument, store: Option<StoreBytes>) -> String {
    let mut registry = Registry::default();
    register_agent(&mut registry, doc, store);
    crate::activity::register(&mut registry);
    register_containers(&mut registry, sample);
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

fn labelled_gauges<K: AsRef<str>>(
    label: &'static str,
    values: impl IntoIterator<Item = (K, u64)>,
) -> Family<Vec<(&'static str, String)>, Gauge> {
    let family: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
    for (key, value) in values {
        family
            .get_or_create(&vec![(label, key.as_ref().to_owned())])
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
    family
}

fn register_agent(registry: &mut Registry, doc: &StatusDocument, store: Option<StoreBytes>) {
    let build = labelled_gauges("version", [(env!("CARGO_PKG_VERSION"), 1)]);
    registry.register(
        "berth_build_info",
        "The berth version running (always 1)",
        build,
    );

    // Every phase and state, zero ones too: a series that vanishes reads
    // as "no data", not as zero.
    let mut phases: BTreeMap<String, u64> = [
        Phase::Pending,
        Phase::Running,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Terminating,
    ]
    .iter()
    .map(|p| (p.to_string(), 0))
    .collect();
    let mut states: BTreeMap<String, u64> = ["running", "waiting", "terminated"]
        .iter()
        .map(|s| ((*s).to_owned(), 0))
        .collect();
    let restarts: Counters<ContainerLabels> = Family::default();
    for pod in doc
        .objects
        .iter()
        .filter(|o| o.kind == manifests::Kind::Pod)
    {
        *phases.entry(pod.phase.to_string()).or_default() += 1;
        let Some(Details::Pod(details)) = &pod.details else {
            continue;
        };
        for container in details.init_containers.iter().chain(&details.containers) {
            let state = match container.state {
                ContainerState::Running { .. } => "running",
                ContainerState::Waiting { .. } => "waiting",
                ContainerState::Terminated { .. } => "terminated",
            };
            *states.entry(state.to_owned()).or_default() += 1;
            restarts
                .get_or_create(&ContainerLabels {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    container: container.name.clone(),
                })
                .inc_by(u64::from(container.restart_count));
        }
    }
    registry.register(
        "berth_pods",
        "Pods by phase",
        labelled_gauges("phase", phases),
    );
    registry.register(
        "berth_containers",
        "Containers (init containers too) by state",
        labelled_gauges("state", states),
    );
    registry.register(
        "berth_container_restarts",
        "Restarts of each container, as in its pod's status",
        restarts,
    );
    if let Some(store) = store {
        registry.register(
            "berth_store_bytes",
            "Bytes the image store takes: content (blobs) and snapshots (unpacked layers)",
            labelled_gauges(
                "kind",
                [("content", store.content), ("snapshots", store.snapshots)],
            ),
        );
    }
}

fn register_containers(registry: &mut Registry, sample: &NodeSample) {
    let cpu: Family<ContainerLabels, Counter<f64, AtomicU64>> = Family::default();
    let working_set: Gauges<ContainerLabels> = Family::default();
    let usage: Gauges<ContainerLabels> = Family::default();
    let rss: Gauges<ContainerLabels> = Family::default();
    let limit: Gauges<ContainerLabels> = Family::default();
    let processes: Gauges<ContainerLabels> = Family::default();
    let fs: Gauges<ContainerLabels> = Family::default();
    let set = |family: &Gauges<ContainerLabels>, labels: &ContainerLabels, value: Option<u64>| {
        if let Some(value) = value {
            family
                .get_or_create(labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    };
    for c in &sample.containers {
        let labels = ContainerLabels {
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            container: c.container.clone(),
        };
        if let Some(ns) = c.usage.cpu_usage_ns {
            // Nanoseconds to seconds: exact enough for any real usage.
            #[allow(clippy::cast_precision_loss)]
            cpu.get_or_create(&labels).inc_by(ns as f64 / 1e9);
        }
        set(&working_set, &labels, c.usage.memory_working_set_bytes);
        set(&usage, &labels, c.usage.memory_usage_bytes);
        set(&rss, &labels, c.usage.memory_rss_bytes);
        set(&limit, &labels, c.usage.memory_limit_bytes);
        set(&processes, &labels, c.usage.pids);
        set(&fs, &labels, c.disk_bytes);
    }
    registry.register(
        "container_cpu_usage_seconds",
        "Cumulative cpu time consumed in seconds",
        cpu,
    );
    registry.register(
        "container_memory_working_set_bytes",
        "Current working set in bytes",
        working_set,
    );
    registry.register(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        usage,
    );
    registry.register("container_memory_rss", "Size of RSS in bytes", rss);
    registry.register(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container (absent: none)",
        limit,
    );
    registry.register(
        "container_processes",
        "Number of processes running inside the container",
        processes,
    );
    registry.register(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container's writable layer",
        fs,
    );
    register_network(registry, sample);
}

fn register_network(registry: &mut Registry, sample: &NodeSample) {
    type Field = fn(&super::netdev::InterfaceCounters) -> u64;
    let families: [(&str, &str, Field); 8] = [
        (
            "container_network_receive_bytes",
            "Cumulative count of bytes received",
            |i| i.rx_bytes,
        ),
        (
            "container_network_receive_packets",
            "Cumulative count of packets received",
            |i| i.rx_packets,
        ),
        (
            "container_network_receive_errors",
            "Cumulative count of errors encountered while receiving",
            |i| i.rx_errors,
        ),
        (
            "container_network_receive_packets_dropped",
            "Cumulative count of packets dropped while receiving",
            |i| i.rx_dropped,
        ),
        (
            "container_network_transmit_bytes",
            "Cumulative count of bytes transmitted",
            |i| i.tx_bytes,
        ),
        (
            "container_network_transmit_packets",
            "Cumulative count of packets transmitted",
            |i| i.tx_packets,
        ),
        (
            "container_network_transmit_errors",
            "Cumulative count of errors encountered while transmitting",
            |i| i.tx_errors,
        ),
        (
            "container_network_transmit_packets_dropped",
            "Cumulative count of packets dropped while transmitting",
            |i| i.tx_dropped,
        ),
    ];
    for (name, help, field) in families {
        let family: Counters<InterfaceLabels> = Family::default();
        for pod in &sample.pods {
            for interface in &pod.interfaces {
                family
                    .get_or_create(&InterfaceLabels {
                        namespace: pod.namespace.clone(),
                        pod: pod.pod.clone(),
                        interface: interface.interface.clone(),
                    })
                    .inc_by(field(interface));
            }
        }
        registry.register(name, help, family);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::metrics::cgroup::CgroupUsage;
    use crate::metrics::netdev::InterfaceCounters;
    use crate::metrics::sample::{ContainerSample, PodNetwork};

    fn doc() -> StatusDocument {
        serde_json::from_value(serde_json::json!({
            "formatVersion": crate::status::STATUS_FORMAT_VERSION,
            "agent": {"pid": 1, "version": "t", "state": "Ready", "startedAt": "", "updatedAt": "",
                      "manifests": "/m", "desiredRevision": 1},
            "objects": [{
                "kind": "Pod", "namespace": "shop", "name": "web", "phase": "Running", "message": "",
                "source": {"file": "/m/web.yaml", "line": 1, "column": 1}, "generation": 1,
                "lastTransitionTime": "",
                "details": {"pod": {"uid": "u1", "hostNetwork": false, "containers": [
                    {"name": "app", "image": "i", "containerId": "c1", "restartCount": 3, "ready": true,
                     "state": {"running": {"startedAt": "", "pid": 42}}},
                    {"name": "side", "image": "i", "restartCount": 0, "ready": false,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]}}
            }],
            "files": []
        }))
        .expect("a status document")
    }

    #[test]
    fn cadvisor_names_and_labels() {
        let sample = NodeSample {
            taken: Instant::now(),
            containers: vec![ContainerSample {
                namespace: "shop".into(),
                pod: "web".into(),
                container: "app".into(),
                id: "c1".into(),
                usage: CgroupUsage {
                    cpu_usage_ns: Some(2_500_000_000),
                    memory_usage_bytes: Some(3000),
                    memory_working_set_bytes: Some(2000),
                    memory_rss_bytes: Some(1000),
                    memory_limit_bytes: None,
                    pids: Some(4),
                },
                disk_bytes: Some(8192),
            }],
            pods: vec![PodNetwork {
                namespace: "shop".into(),
                pod: "web".into(),
                interfaces: vec![InterfaceCounters {
                    interface: "eth0".into(),
                    rx_bytes: 100,
                    tx_bytes: 50,
                    ..InterfaceCounters::default()
                }],
            }],
        };
        let text = encode(
            &sample,
            &doc(),
            Some(StoreBytes {
                content: 10,
                snapshots: 20,
            }),
        );
        let labels = r#"{namespace="shop",pod="web",container="app"}"#;
        for line in [
            format!("container_cpu_usage_seconds_total{labels} 2.5"),
            format!("container_memory_working_set_bytes{labels} 2000"),
            format!("container_memory_usage_bytes{labels} 3000"),
            format!("container_memory_rss{labels} 1000"),
            format!("container_processes{labels} 4"),
            format!("container_fs_usage_bytes{labels} 8192"),
            format!("berth_container_restarts_total{labels} 3"),
            r#"container_network_receive_bytes_total{namespace="shop",pod="web",interface="eth0"} 100"#.into(),
            r#"container_network_transmit_bytes_total{namespace="shop",pod="web",interface="eth0"} 50"#.into(),
            "# TYPE container_cpu_usage_seconds_total counter".into(),
            r#"berth_pods{phase="Running"} 1"#.into(),
            r#"berth_pods{phase="Pending"} 0"#.into(),
            r#"berth_containers{state="running"} 1"#.into(),
            r#"berth_containers{state="waiting"} 1"#.into(),
            r#"berth_store_bytes{kind="snapshots"} 20"#.into(),
            format!(r#"berth_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")),
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("container_spec_memory_limit_bytes{"),
            "no limit, no series:\n{text}"
        );
    }
}
