//! The controller: a keyed work queue that drives reconcilers, in the style
//! of kube-runtime's controller.
//!
//! - A reconciler gets a **key**, never a diff. It reads the desired state
//!   and what exists on the host itself, and makes them match.
//! - The queue **dedupes**: a key triggered many times before it runs runs
//!   once; a key is **never reconciled twice at once** (a trigger that
//!   arrives while it runs queues exactly one more run after it); at most
//!   `workers` reconciles run at a time.
//! - A reconcile returns an [`Action`]: run again after a delay, or only when
//!   something changes. An error retries with exponential backoff and jitter
//!   ([`backoff`]), capped, reset by the next success.
//! - Triggers: every key the caller sends on the trigger stream (desired
//!   state changes, [`ObservedEvent`]s from the runtime), plus a full relist
//!   ([`Reconciler::relist`]) at start and periodically, which catches
//!   anything an event missed, including deletions.
//! - Reconcilers must be idempotent and must tolerate being cancelled at any
//!   `.await`: on shutdown, running reconciles get a bounded time to finish
//!   and are then dropped; the next start relists and runs them again.

pub mod backoff;
mod runner;
pub mod scheduler;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use manifests::ObjectKey;
use serde::Deserialize;

pub use backoff::{Backoff, BackoffConfig};
pub use runner::Controller;

/// What a reconcile asks the controller to do next with its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile the key again after `after`, even if nothing changes (for
    /// polling work such as waiting on a pull or a probe).
    pub fn requeue(after: Duration) -> Self {
        Self {
            requeue_after: Some(after),
        }
    }

    /// Reconcile the key again only when a trigger or relist names it.
    pub fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Reconciles one key at a time; the [`Controller`] decides when.
///
/// Contract:
/// - `reconcile` reads the current desired state for the key itself (the
///   key's absence there means "deleted": remove what was made for it) and
///   is idempotent: with nothing changed it changes nothing.
/// - It can be cancelled at any `.await` and run again from scratch.
/// - An `Err` is retried with backoff; use `Ok(Action::requeue(..))` for
///   expected waiting.
pub trait Reconciler: Send + Sync + 'static {
    type Key: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static;
    /// Logged with its causes (`status::chain`) when a reconcile fails.
    type Error: std::error::Error + Send + 'static;

    /// `why` is what made the key due (the latest trigger when several
    /// were merged).
    fn reconcile(
        &self,
        key: &Self::Key,
        why: &Why,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send;

    /// Every key that may need a reconcile: all desired keys, plus every key
    /// something still exists for on the host (so deletions that happened
    /// while the agent was down are cleaned up).
    fn relist(&self) -> impl Future<Output = Vec<Self::Key>> + Send;

    /// Called when the last running reconcile finished and no key is due:
    /// a burst of work is over (for housekeeping such as returning memory).
    fn idle(&self) {}
}

/// Why a key is reconciled: recorded in the reconcile's span, so a log line
/// says "reconciling web because container web exited".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Its manifest (or an object it uses) changed.
    Changed,
    /// Something observed on the host: a container exit, a probe verdict.
    Observed(String),
    /// The previous reconcile asked to run again (a back-off ended).
    Requeue,
    /// The previous reconcile failed.
    Retry,
    /// A full relist (at start and periodically).
    Relist,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Changed => f.write_str("its manifest changed"),
            Self::Observed(what) => f.write_str(what),
            Self::Requeue => f.write_str("a requeue came due"),
            Self::Retry => f.write_str("retrying after an error"),
            Self::Relist => f.write_str("relist"),
        }
    }
}

/// Something observed on the host that may need a reconcile (a container
/// exited, a probe failed). Subsystems send these; the controller queues
/// the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedEvent {
    pub key: ObjectKey,
    /// Why, for the logs (`container web exited with 137`).
    pub reason: String,
}

/// `[controller]` in the agent config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControllerConfig {
    /// Reconciles that may run at the same time (of different keys).
    pub workers: usize,
    /// How often every key is reconciled even without a trigger.
    #[serde(with = "manifests::duration::config")]
    pub relist_interval: Duration,
    /// How long running reconciles may take to finish on shutdown.
    #[serde(with = "manifests::duration::config")]
    pub shutdown_timeout: Duration,
    /// Retry spacing after errors.
    pub backoff: BackoffConfig,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            relist_interval: Duration::from_secs(5 * 60),
            shutdown_timeout: Duration::from_secs(10),
            backoff: BackoffConfig::default(),
        }
    }
}
