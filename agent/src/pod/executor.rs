//! What carries a pod's actions out: the host's traits, the node-wide
//! limits and the pod worker's memory of stops in progress, for one pod.
//! The sync ([`super::sync`]) and the operations on containers, sandboxes
//! and incarnations take it instead of a handful of arguments each.

use manifests::ObjectKey;

use super::host::Host;
use super::limits::{Limits, StopTracker};
use crate::status::{Event, EventType};

#[derive(Clone, Copy)]
pub struct Executor<'a> {
    pub host: &'a Host,
    pub limits: &'a Limits,
    pub stops: &'a StopTracker,
    pub key: &'a ObjectKey,
}

impl Executor<'_> {
    /// Records an event about this pod.
    pub fn event(&self, event_type: EventType, reason: &str, message: String) {
        self.host.events.record(Event::new(
            event_type,
            self.key.to_string(),
            reason,
            message,
        ));
    }

    /// Unix time in ms, from the host's clock.
    pub fn now_ms(&self) -> u64 {
        self.host.clock.now_ms()
    }
}
