//! What the agent reports: each object's phase and message, each manifest
//! file's problems, and a bounded event log.
//!
//! The agent keeps the current status in a [`StatusStore`] and persists it
//! to `Paths::status_file()` (atomically, mode 0644) whenever it changes, so
//! `berth status` reads it from another process while the agent runs and
//! after it stopped. Nothing in it may carry a secret value: reconcilers
//! write messages, never object contents.

pub mod details;
pub mod event_tail;
pub mod events;
mod reporter;
mod store;
pub mod time;

use std::path::{Path, PathBuf};

use manifests::{Diagnostic, Kind, ObjectKey};
use serde::{Deserialize, Serialize};

pub use details::{ContainerDetails, ContainerState, Details, PodDetails, RolloutDetails};
pub use events::{Event, EventLog, EventType};
pub use reporter::Reporter;
pub use store::{ReportOutcome, StatusStore};

/// Version of the status file format; readers refuse newer ones.
pub const STATUS_FORMAT_VERSION: u32 = 1;

/// Where in the manifests an object is defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Where an object stands. Reconcilers of later subsystems add meaning to
/// `Running`, `Succeeded` and `Failed`; the plumbing treats them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Accepted, not yet in place (waiting on an image, a dependency, or a
    /// subsystem not built yet).
    Pending,
    /// In place (data objects, registry configuration).
    Ready,
    Running,
    Succeeded,
    Failed,
    /// Removed from the manifests; cleanup has not finished.
    Terminating,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub phase: Phase,
    pub message: String,
    /// The last reconcile error, cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub source: SourceRef,
    /// The desired object's generation: bumped whenever its content changes.
    pub generation: u64,
    /// The generation the last successful reconcile applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// When `phase` last changed.
    pub last_transition_time: String,
    /// Kind-specific status (containers of a pod), when the reconciler
    /// publishes any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
}

impl ObjectStatus {
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.kind, self.namespace.clone(), self.name.clone())
    }
}

/// One manifest file's parse result, as the user needs to see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileStatus {
    pub path: PathBuf,
    /// The objects this file provides to the desired state right now
    /// (`Pod/default/web`); with errors, those are its last-known-good ones.
    pub objects: Vec<String>,
    /// Parse and validation problems (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
    /// Objects this file defines that another file defines too.
    pub conflicts: Vec<Diagnostic>,
    /// True when the file has errors and its previous objects stay applied.
    pub last_known_good: bool,
}

impl FileStatus {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .chain(&self.conflicts)
            .any(Diagnostic::is_error)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    /// Started; the initial desired state is being reconciled.
    Starting,
    /// Every object of the initial desired state has been reconciled once.
    Ready,
    /// Shut down cleanly. (An agent that was killed leaves its last state
    /// here; `berth status` checks the agent lock to tell.)
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub pid: u32,
    pub version: String,
    pub state: AgentState,
    pub started_at: String,
    pub updated_at: String,
    /// The manifest directory as configured.
    pub manifests: PathBuf,
    /// Its resolved target (differs when it is a symlink, e.g. git-sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_manifests: Option<PathBuf>,
    /// Increments with every new desired state published.
    pub desired_revision: u64,
    /// A problem with the directory as a whole (it vanished, is unreadable);
    /// the previous desired state stays in force meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_error: Option<String>,
}

/// The whole status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDocument {
    pub format_version: u32,
    pub agent: AgentInfo,
    pub objects: Vec<ObjectStatus>,
    pub files: Vec<FileStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("reading status file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("status file {path} is not valid status JSON")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "status file {path} has format version {found}, newer than this berth understands ({STATUS_FORMAT_VERSION}); use the berth binary that wrote it"
    )]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("writing status file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StatusDocument {
    /// Reads a status file; `Ok(None)` when there is none (no agent ever
    /// ran with this run-root, or the machine rebooted since).
    pub fn load(path: &Path) -> Result<Option<Self>, StatusError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StatusError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct VersionOnly {
            format_version: u32,
        }
        let parse_err = |source| StatusError::Parse {
            path: path.to_owned(),
            source,
        };
        let version: VersionOnly = serde_json::from_slice(&bytes).map_err(parse_err)?;
        if version.format_version > STATUS_FORMAT_VERSION {
            return Err(StatusError::NewerFormat {
                path: path.to_owned(),
                found: version.format_version,
            });
        }
        serde_json::from_slice(&bytes).map(Some).map_err(parse_err)
    }

    /// Persists atomically with mode 0644: readable by monitoring tools,
    /// which is why no secret value may ever be in it.
    pub fn save(&self, path: &Path) -> Result<(), StatusError> {
        let write_err = |source| StatusError::Write {
            path: path.to_owned(),
            source,
        };
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| write_err(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(path, &bytes, 0o644).map_err(write_err)
    }
}

/// An error and its causes on one line (`a: b: c`), for logs, status
/// messages and events. netplugins shows its own errors' causes the same
/// way, so the one implementation is there.
pub use netplugins::chain;
