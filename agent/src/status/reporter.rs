//! Status and events reported together: every reconcile of an object (and
//! every sync of a pod) ends here, and the event log records what a person
//! watching would want to know — a new generation applied, a phase change,
//! a new error, the object gone — without repeating itself.

use manifests::ObjectKey;

use super::{Details, Event, EventLog, EventType, Phase, SourceRef, StatusStore};

/// Where an object's reports go. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub status: StatusStore,
    pub events: EventLog,
}

impl Reporter {
    pub fn new(status: StatusStore, events: EventLog) -> Self {
        Self { status, events }
    }

    fn record(&self, event_type: EventType, key: &ObjectKey, reason: &str, message: String) {
        self.events
            .record(Event::new(event_type, key.to_string(), reason, message));
    }

    /// The desired object `key` (from `source`, at `generation`) is in
    /// `phase`.
    pub fn applied(
        &self,
        key: &ObjectKey,
        source: &SourceRef,
        generation: u64,
        phase: Phase,
        message: String,
        details: Option<Details>,
    ) {
        let outcome = self
            .status
            .report(key, source, generation, phase, message.clone(), details);
        if outcome.generation_observed || outcome.phase_changed || outcome.recovered {
            let reason = if outcome.generation_observed {
                "Applied"
            } else {
                "PhaseChanged"
            };
            self.record(
                EventType::Normal,
                key,
                reason,
                format!("generation {generation} from {source}: {phase}: {message}"),
            );
        }
    }

    /// Making `key` as desired failed (`desired` is where it is defined),
    /// or removing it failed (`desired` is `None`). An event when the error
    /// is new.
    pub fn failed(&self, key: &ObjectKey, desired: Option<(&SourceRef, u64)>, error: &str) {
        if self.status.report_error(key, desired, error) {
            let reason = if desired.is_some() {
                "ReconcileFailed"
            } else {
                "CleanupFailed"
            };
            self.record(EventType::Warning, key, reason, error.to_string());
        }
    }

    /// `key` is being removed.
    pub fn terminating(&self, key: &ObjectKey, message: &str) {
        self.status.terminating(key, message);
    }

    /// `key` is gone and its cleanup is done.
    pub fn removed(&self, key: &ObjectKey) {
        if self.status.remove(key) {
            self.record(
                EventType::Normal,
                key,
                "Deleted",
                "removed from the manifests; cleanup done".into(),
            );
        }
    }
}
