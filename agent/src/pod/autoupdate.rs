//! `berth auto-update` asks the running agent to check the tags of every
//! pod annotated `berth.dev/auto-update: registry` now, rather than at the
//! next `[images] auto-update-interval`: it leaves a request file under
//! `--run-root` and sends SIGHUP; the agent takes the request ([`take`])
//! and queues every pod; a pod's next sync checks its tags when the request
//! is newer than the last one it served ([`requested_ms`] against the
//! record's `rollout.checkedRequestMs`). The checks themselves are the
//! pods' own (`pod::sync`), so probation and rollback apply as to any
//! auto-update.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::paths::Paths;

/// Unix ms of the last request this agent took (0: none since it started).
static REQUESTED_MS: AtomicU64 = AtomicU64::new(0);

/// Where the CLI leaves its request.
pub fn request_file(paths: &Paths) -> PathBuf {
    paths.status_file().with_file_name("auto-update.request")
}

/// Takes a request the CLI left, if any: true when there was one (the
/// caller then queues every pod).
pub fn take(paths: &Paths, now_ms: u64) -> bool {
    take_file(&request_file(paths), now_ms)
}

fn take_file(path: &Path, now_ms: u64) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => {
            REQUESTED_MS.fetch_max(now_ms, Ordering::SeqCst);
            true
        }
        Err(_) => false,
    }
}

/// When the last request was taken.
pub fn requested_ms() -> u64 {
    REQUESTED_MS.load(Ordering::SeqCst)
}

/// What a check found for one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finding {
    /// The tag points where the container runs.
    UpToDate,
    /// The tag points to a digest that failed its probation before: it is
    /// left alone until the tag moves on.
    Refused,
    /// A new digest: the container rolls forward.
    Update,
}

impl Finding {
    pub fn of(running: Option<&str>, latest: &str, refused: Option<&str>) -> Self {
        if running == Some(latest) {
            Finding::UpToDate
        } else if refused == Some(latest) {
            Finding::Refused
        } else {
            Finding::Update
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Finding::UpToDate => "up-to-date",
            Finding::Refused => "refused",
            Finding::Update => "update",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings() {
        assert_eq!(Finding::of(Some("a"), "a", None), Finding::UpToDate);
        assert_eq!(Finding::of(Some("a"), "b", Some("b")), Finding::Refused);
        assert_eq!(Finding::of(Some("a"), "b", Some("c")), Finding::Update);
        assert_eq!(Finding::of(None, "b", None), Finding::Update);
    }

    #[test]
    fn a_request_is_taken_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("auto-update.request");
        assert!(!take_file(&file, 5));
        std::fs::write(&file, "").expect("request");
        assert!(take_file(&file, 7));
        assert!(requested_ms() >= 7);
        assert!(!take_file(&file, 9), "taken already");
    }
}
