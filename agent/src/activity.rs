//! What the agent counts as it works, for `/metrics` (see
//! [`crate::metrics`]): reconciles and image pulls. Kept in one
//! process-wide set, so the controller, the pod workers and the image
//! manager record with one call and no handle threaded through them;
//! recording is a few atomic adds and never waits on a scrape.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Counters {
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: HistogramFamily<KindLabel>,
    pulls: Family<ResultLabel, Counter>,
    pull_bytes: Counter,
    pull_duration: Histogram,
}

fn reconcile_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    ])
}

fn pull_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ])
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| Counters {
    reconciles: Family::default(),
    reconcile_duration: Family::new_with_constructor(reconcile_histogram),
    pulls: Family::default(),
    pull_bytes: Counter::default(),
    pull_duration: pull_histogram(),
});

fn result(ok: bool) -> String {
    if ok { "success" } else { "error" }.to_owned()
}

/// One reconcile of an object of `kind` (`Pod`: one sync of its worker).
pub fn reconciled(kind: &str, ok: bool, took: Duration) {
    let counters = &*COUNTERS;
    counters
        .reconciles
        .get_or_create(&ReconcileLabels {
            kind: kind.to_owned(),
            result: result(ok),
        })
        .inc();
    counters
        .reconcile_duration
        .get_or_create(&KindLabel {
            kind: kind.to_owned(),
        })
        .observe(took.as_secs_f64());
}

/// One image pull from a registry; `bytes` received over the network.
pub fn pulled(ok: bool, bytes: u64, took: Duration) {
    let counters = &*COUNTERS;
    counters
        .pulls
        .get_or_create(&ResultLabel { result: result(ok) })
        .inc();
    counters.pull_bytes.inc_by(bytes);
    counters.pull_duration.observe(took.as_secs_f64());
}

/// Adds the counters to a scrape's registry (they are shared, not copied).
pub fn register(registry: &mut Registry) {
    let counters = &*COUNTERS;
    registry.register(
        "berth_reconciles",
        "Reconciles by object kind and result (a Pod's are its worker's syncs)",
        counters.reconciles.clone(),
    );
    registry.register(
        "berth_reconcile_duration_seconds",
        "How long reconciles took, by object kind",
        counters.reconcile_duration.clone(),
    );
    registry.register(
        "berth_image_pulls",
        "Image pulls from registries by result",
        counters.pulls.clone(),
    );
    registry.register(
        "berth_image_pull_bytes",
        "Bytes received from registries by image pulls",
        counters.pull_bytes.clone(),
    );
    registry.register(
        "berth_image_pull_duration_seconds",
        "How long image pulls took",
        counters.pull_duration.clone(),
    );
}
