//! `berth run`: the agent process. Wires the directory source, the desired
//! store, the controller with its reconcilers, and status persistence, and
//! handles signals, readiness and the single-instance lock.
//!
//! Shutdown (SIGTERM/SIGINT) stops taking work, lets running reconciles
//! finish within the controller's bound, writes the final status, and
//! exits. Containers are never stopped by an agent shutdown.

pub mod layout;
pub mod lock;
pub mod logging;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use futures::channel::mpsc as trigger_channel;
use futures::future::OptionFuture;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::AgentConfig;
use crate::controller::{Controller, ObservedEvent, Why};
use crate::desired::generations::Generations;
use crate::desired::{DesiredState, DesiredStore, Publisher};
use crate::paths::Paths;
use crate::pod::host::Host;
use crate::pod::workers::PodWorkers;
use crate::reconcile::{Context, Reconcilers};
use crate::services::{self, Services};
use crate::source::dir::DirSource;
use crate::status::{
    AgentInfo, AgentState, Event, EventLog, EventType, FileStatus, StatusDocument, StatusStore,
    chain, time,
};

/// Bound on queued observed events; senders wait when it is full.
const OBSERVED_EVENTS_CAPACITY: usize = 1024;

pub struct Options {
    pub paths: Paths,
    pub manifests: PathBuf,
    pub config: AgentConfig,
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let Options {
        paths,
        manifests,
        config,
    } = options;
    layout::prepare(&paths)?;
    let _lock = lock::AgentLock::acquire(&paths.agent_lock())?;
    // Installed before anything slow, so a signal during start-up is seen.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    let events = EventLog::open(paths.events_file(), EventLog::DEFAULT_MAX_PER_FILE);
    let previous = StatusDocument::load(&paths.status_file()).unwrap_or_else(|err| {
        warn!(error = %chain(&err), "ignoring the previous status file");
        None
    });
    let status = StatusStore::new(agent_info(&manifests), previous);
    status.save(&paths.status_file())?;
    events.record(Event::new(
        EventType::Normal,
        "agent",
        "Starting",
        format!(
            "berth {} (pid {}) watching {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            manifests.display()
        ),
    ));

    let conn = crate::db::open(&paths.database())?;
    let generations = Generations::open(conn).context("loading object generations")?;
    let store = DesiredStore::new(&manifests, generations);
    let (publisher, desired) = Publisher::new(store);
    let source = DirSource::start(
        &manifests,
        config.source,
        publisher,
        status.clone(),
        events.clone(),
    )?;
    publish_files(&status, &desired.borrow());

    let work = CancellationToken::new();
    let persist_stop = CancellationToken::new();
    let persist = tokio::spawn(
        status
            .clone()
            .persist_until(paths.status_file(), persist_stop.clone()),
    );
    let resync = Arc::new(Notify::new());
    let source_task = tokio::spawn(source.run(Arc::clone(&resync), work.clone()));

    let (trigger_tx, trigger_rx) = trigger_channel::unbounded();
    let (observed_tx, observed_rx) = mpsc::channel(OBSERVED_EVENTS_CAPACITY);
    tokio::spawn(follow_desired(
        desired.clone(),
        status.clone(),
        events.clone(),
        trigger_tx.clone(),
    ));
    tokio::spawn(forward_observed(observed_rx, trigger_tx));

    let node =
        Arc::new(crate::node::Node::new(&config.node, &paths.root).context("reading [node]")?);
    tokio::spawn(crate::node::watch::follow_labels(
        Arc::clone(&node),
        config.node.labels_interval,
        desired.clone(),
        observed_tx.clone(),
        events.clone(),
        work.clone(),
    ));
    let services = Arc::new(Services::open(&paths, &config).await?);
    services.start_background(events.clone(), work.clone());
    for problem in services.problems() {
        events.record(Event::new(
            EventType::Warning,
            "agent",
            "Degraded",
            format!("pods that need it cannot run: {problem}"),
        ));
    }
    let metrics_task = crate::metrics::start(
        &config.metrics,
        services.paths.clone(),
        match &services.runtime {
            Ok(runtime) => Some(runtime.layout().clone()),
            Err(_) => crate::runtime::CgroupLayout::detect().ok(),
        },
        services.images.service().clone(),
        status.clone(),
        &events,
        work.clone(),
    )
    .await;
    let host = services::pod_host::build(
        &services,
        status.clone(),
        events.clone(),
        observed_tx.clone(),
        node,
    );
    recover_pods(&host, &events, &observed_tx).await;
    let pods = PodWorkers::new(host, config.controller.backoff);
    let auto_update_requests = observed_tx.clone();
    let ctx = Context {
        desired,
        status: status.clone(),
        events: events.clone(),
        observed: observed_tx,
        services,
        pods: pods.clone(),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let controller = Controller::new(Arc::new(Reconcilers::new(ctx)), config.controller);
    let controller_task = tokio::spawn(controller.run(trigger_rx, work.clone(), ready_tx));
    tokio::spawn(announce_ready(ready_rx, status.clone(), events.clone()));

    let signal_name = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                events.record(Event::new(EventType::Normal, "agent", "Resync", "SIGHUP: rescanning the manifest directory"));
                resync.notify_one();
                if crate::pod::autoupdate::take(&paths, time::unix_ms()) {
                    events.record(Event::new(EventType::Normal, "agent", "AutoUpdateRequested", "berth auto-update: every pod with berth.dev/auto-update checks its tags now"));
                    tokio::spawn(queue_every_pod(paths.clone(), auto_update_requests.clone()));
                }
            }
        }
    };
    events.record(Event::new(
        EventType::Normal,
        "agent",
        "Stopping",
        format!("{signal_name}: finishing running reconciles; containers keep running"),
    ));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    work.cancel();
    if let Err(err) = controller_task.await {
        warn!(error = %err, "controller task failed");
    }
    pods.shutdown(config.controller.shutdown_timeout).await;
    if let Err(err) = source_task.await {
        warn!(error = %err, "source task failed");
    }
    if let Some(Err(err)) = OptionFuture::from(metrics_task).await {
        warn!(error = %err, "metrics task failed");
    }
    persist_stop.cancel();
    if let Err(err) = persist.await {
        warn!(error = %err, "status task failed");
    }
    events.record(Event::new(
        EventType::Normal,
        "agent",
        "Stopped",
        "clean shutdown",
    ));
    events.flush();
    Ok(())
}

/// Queues every pod on record (`berth auto-update` asked for a check).
async fn queue_every_pod(paths: Paths, observed: mpsc::Sender<ObservedEvent>) {
    let listed =
        tokio::task::spawn_blocking(move || crate::pod::state::PodState::list(&paths)).await;
    let Ok((states, _unreadable)) = listed else {
        return;
    };
    for state in states {
        let key = manifests::ObjectKey::new(manifests::Kind::Pod, state.namespace, state.name);
        let _ = observed
            .send(ObservedEvent {
                key,
                reason: "berth auto-update".into(),
            })
            .await;
    }
}

/// Crash recovery before the first reconcile: adopt the containers that
/// kept running, remove what belongs to no pod (see [`crate::pod::recover`]),
/// and queue every pod on record.
async fn recover_pods(host: &Host, events: &EventLog, observed: &mpsc::Sender<ObservedEvent>) {
    let recovered = crate::pod::recover::run(host).await;
    for key in &recovered.pods {
        let _ = observed
            .send(ObservedEvent {
                key: key.clone(),
                reason: "agent start: pod found on the host".into(),
            })
            .await;
    }
    if !recovered.pods.is_empty()
        || !recovered.removed_containers.is_empty()
        || !recovered.removed_pods.is_empty()
    {
        events.record(Event::new(
            EventType::Normal,
            "agent",
            "Recovered",
            format!(
                "{} pod(s) on record, {} container(s) adopted; removed {} leftover container(s) and {} leftover pod sandbox(es)",
                recovered.pods.len(),
                recovered.adopted,
                recovered.removed_containers.len(),
                recovered.removed_pods.len()
            ),
        ));
    }
    for problem in recovered.problems {
        events.record(Event::new(
            EventType::Warning,
            "agent",
            "RecoveryFailed",
            problem,
        ));
    }
}

fn agent_info(manifests: &std::path::Path) -> AgentInfo {
    let now = time::now();
    AgentInfo {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        state: AgentState::Starting,
        started_at: now.clone(),
        updated_at: now,
        manifests: manifests.to_owned(),
        resolved_manifests: None,
        desired_revision: 0,
        source_error: None,
    }
}

/// Once the first relist has been reconciled: status `Ready`, and
/// `READY=1` to systemd (a no-op without `NOTIFY_SOCKET`).
async fn announce_ready(ready: oneshot::Receiver<()>, status: StatusStore, events: EventLog) {
    if ready.await.is_err() {
        return;
    }
    status.update_agent(|agent| agent.state = AgentState::Ready);
    if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!(error = %err, "could not notify systemd of readiness");
    }
    events.record(Event::new(
        EventType::Normal,
        "agent",
        "Ready",
        "the initial desired state has been reconciled",
    ));
}

/// Follows published desired states: queues the keys that changed, and
/// updates file status and file events.
async fn follow_desired(
    mut desired: watch::Receiver<Arc<DesiredState>>,
    status: StatusStore,
    events: EventLog,
    triggers: trigger_channel::UnboundedSender<(manifests::ObjectKey, Why)>,
) {
    let mut previous = Arc::clone(&desired.borrow_and_update());
    while desired.changed().await.is_ok() {
        let current = Arc::clone(&desired.borrow_and_update());
        for key in current.changed_keys(&previous) {
            if triggers.unbounded_send((key, Why::Changed)).is_err() {
                return;
            }
        }
        record_file_events(&events, &previous.files, &current.files);
        publish_files(&status, &current);
        previous = current;
    }
}

fn publish_files(status: &StatusStore, state: &DesiredState) {
    status.set_files(state.files.clone());
    status.update_agent(|agent| agent.desired_revision = state.revision);
}

/// An event when a file's problems change: new errors, fixed, conflicts.
fn record_file_events(events: &EventLog, before: &[FileStatus], after: &[FileStatus]) {
    for file in after {
        let old = before.iter().find(|f| f.path == file.path);
        let unchanged =
            old.is_some_and(|o| o.diagnostics == file.diagnostics && o.conflicts == file.conflicts);
        if unchanged {
            continue;
        }
        let subject = file.path.display().to_string();
        let errors: Vec<_> = file
            .diagnostics
            .iter()
            .chain(&file.conflicts)
            .filter(|d| d.is_error())
            .collect();
        if let Some(first) = errors.first() {
            let kept = if file.last_known_good {
                "; its last good version stays applied"
            } else {
                ""
            };
            events.record(Event::new(
                EventType::Warning,
                subject,
                "InvalidManifest",
                format!("{} error(s), first: {first}{kept}", errors.len()),
            ));
        } else if old.is_some_and(FileStatus::has_errors) {
            events.record(Event::new(
                EventType::Normal,
                subject,
                "ManifestFixed",
                "no errors any more",
            ));
        }
    }
}

/// Hands observed events (container exits, probe results) to the
/// controller as triggers.
async fn forward_observed(
    mut observed: mpsc::Receiver<ObservedEvent>,
    triggers: trigger_channel::UnboundedSender<(manifests::ObjectKey, Why)>,
) {
    while let Some(event) = observed.recv().await {
        debug!(key = %event.key, reason = %event.reason, "observed event");
        if triggers
            .unbounded_send((event.key, Why::Observed(event.reason)))
            .is_err()
        {
            return;
        }
    }
    debug!("observed-event channel closed");
}
