//! Follows the labels file: when the node's labels change, every pod is
//! synced again, so a pod a new label selects starts (and one it no longer
//! selects stops) without an agent restart.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::controller::ObservedEvent;
use crate::desired::DesiredState;
use crate::status::{Event, EventLog, EventType, chain};

/// Reads the labels file every `interval` until `stop`; nothing to do
/// without a labels file.
pub async fn follow_labels(
    node: Arc<Node>,
    interval: Duration,
    desired: watch::Receiver<Arc<DesiredState>>,
    observed: mpsc::Sender<ObservedEvent>,
    events: EventLog,
    stop: CancellationToken,
) {
    let Some(file) = node.labels_file().map(|f| f.display().to_string()) else {
        return;
    };
    // Reported once per distinct problem, not every interval.
    let mut last_problem: Option<String> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        let reloaded = {
            let node = Arc::clone(&node);
            tokio::task::spawn_blocking(move || node.reload()).await
        };
        let changed = match reloaded {
            Ok(Ok(changed)) => {
                last_problem = None;
                changed
            }
            Ok(Err(err)) => {
                let problem = chain(&err);
                if last_problem.as_ref() != Some(&problem) {
                    events.record(Event::new(
                        EventType::Warning,
                        "agent",
                        "NodeLabelsInvalid",
                        format!("{problem}; the labels stay as they were"),
                    ));
                    last_problem = Some(problem);
                }
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading the node labels stopped");
                false
            }
        };
        if !changed {
            continue;
        }
        let labels = node.labels();
        let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        events.record(Event::new(
            EventType::Normal,
            "agent",
            "NodeLabelsChanged",
            format!("{file}: the node's labels are now {}", shown.join(",")),
        ));
        let pods: Vec<_> = desired
            .borrow()
            .objects
            .keys()
            .filter(|key| key.kind == manifests::Kind::Pod)
            .cloned()
            .collect();
        for key in pods {
            let event = ObservedEvent {
                key,
                reason: "the node's labels changed".into(),
            };
            if observed.send(event).await.is_err() {
                return;
            }
        }
    }
}
