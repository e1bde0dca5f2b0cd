//! How an update replaces what runs (balena's update strategies and update
//! locks, under berth's names).
//!
//! - The strategy (`berth.dev/update-strategy`) orders the pull against
//!   the stop: `download-then-kill` (the default) pulls the new image
//!   while the old container runs; `kill-then-download` stops it first;
//!   `delete-then-download` also deletes the old image (when nothing else
//!   uses it) before the pull, for disks that cannot hold both.
//! - A container defers an update of its pod by holding an exclusive
//!   `flock` on `/tmp/berth/updates.lock` in its own file system. Before
//!   stopping a container for an update (never for a deletion) berth takes
//!   that lock itself without waiting: when it cannot, the update waits
//!   (`UpdateHeldByLock`, retried every [`RETRY`]) until the lock is
//!   released, `berth.dev/update-lock-timeout` has passed since the wait
//!   began, or `berth update --force POD` overrides it once. When it can,
//!   it keeps the lock until the container has stopped, so the container
//!   cannot take it in between.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use manifests::ObjectKey;
use manifests::annotations::UpdateStrategy;

use super::executor::Executor;
pub use super::host::{Lock, TakenLock, UpdateLocks};
use super::plan::millis;
use super::state::{Instance, PodState};
use crate::status::EventType;

pub use manifests::annotations::{update_lock_timeout, update_strategy};

/// The lock file, inside the container's root.
pub const LOCK_FILE: &str = "/tmp/berth/updates.lock";

/// How often a held update is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

/// Whether the old containers may be stopped now.
pub enum Gate {
    /// Yes; the locks taken are held until they have stopped.
    Go(Vec<TakenLock>),
    /// No: the update waits. The message is for the status; sync again at
    /// `retry_at_ms`. `began`: the wait began now (an image to pull first
    /// may be pulled meanwhile, once).
    Held {
        message: String,
        retry_at_ms: u64,
        began: bool,
    },
}

/// The update settings of a pod, from its annotations (validation refuses
/// bad values, so defaults stand in only for what it never lets through).
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    pub strategy: UpdateStrategy,
    pub lock_timeout: Option<Duration>,
}

impl Settings {
    pub fn of(meta: &manifests::types::ObjectMeta) -> Self {
        Self {
            strategy: update_strategy(meta).unwrap_or_default(),
            lock_timeout: update_lock_timeout(meta).unwrap_or_default(),
        }
    }
}

/// Checks the update locks of `stopping` (the running containers an
/// update is about to stop, by name) and records in `state` when a wait
/// began, so the timeout survives an agent restart. The caller saves
/// `state`.
pub async fn gate(
    ex: &Executor<'_>,
    state: &mut PodState,
    stopping: &[(&str, &Instance)],
    settings: Settings,
) -> Gate {
    let mut taken = Vec::new();
    let mut holders = Vec::new();
    for (name, instance) in stopping {
        let Some(pid) = instance.pid.filter(|_| instance.exit.is_none()) else {
            continue;
        };
        match ex.host.locks.take(pid).await {
            Lock::Taken(lock) => taken.push(lock),
            Lock::Absent => {}
            Lock::Held => holders.push(*name),
        }
    }
    if holders.is_empty() {
        state.update_held_since_ms = None;
        return Gate::Go(taken);
    }
    let who = holders.join(", ");
    let now_ms = ex.now_ms();
    if ex.host.locks.take_force(ex.key).await {
        state.update_held_since_ms = None;
        ex.event(
            EventType::Normal,
            "UpdateLockOverridden",
            format!("berth update --force: updating although {who} holds {LOCK_FILE}"),
        );
        return Gate::Go(taken);
    }
    let began = state.update_held_since_ms.is_none();
    let since = *state.update_held_since_ms.get_or_insert(now_ms);
    if let Some(timeout) = settings.lock_timeout
        && now_ms.saturating_sub(since) >= millis(timeout)
    {
        state.update_held_since_ms = None;
        ex.event(
            EventType::Warning,
            "UpdateLockTimeout",
            format!(
                "{who} held {LOCK_FILE} for longer than {}: updating anyway",
                manifests::duration::format(timeout)
            ),
        );
        return Gate::Go(taken);
    }
    if began {
        ex.event(
            EventType::Normal,
            "UpdateHeldByLock",
            format!(
                "{who} holds {LOCK_FILE}: the update waits (tried again every {}; `berth update --force {}` overrides)",
                manifests::duration::format(RETRY),
                ex.key.to_string().trim_start_matches("Pod/")
            ),
        );
    }
    let mut retry_at_ms = now_ms + millis(RETRY);
    if let Some(timeout) = settings.lock_timeout {
        retry_at_ms = retry_at_ms.min(since + millis(timeout));
    }
    Gate::Held {
        message: format!("UpdateHeldByLock: {who} holds {LOCK_FILE}; the update waits"),
        retry_at_ms,
        began,
    }
}

/// Where `berth update --force` leaves its one-time overrides (under
/// `--run-root`), one file per pod.
pub fn force_file(paths: &crate::paths::Paths, key: &ObjectKey) -> PathBuf {
    paths
        .update_force()
        .join(format!("{}_{}", key.namespace, key.name))
}

/// The real locks: the lock file is opened through `/proc/PID/root`,
/// resolved inside the container's root (no symlink leads out), and only
/// if it is a regular file; never created.
pub struct HostUpdateLocks(pub crate::paths::Paths);

impl UpdateLocks for HostUpdateLocks {
    fn take(&self, pid: i32) -> BoxFuture<'_, Lock> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || take_lock(pid))
                .await
                .unwrap_or(Lock::Absent)
        })
    }

    fn take_force<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, bool> {
        let path = force_file(&self.0, key);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || std::fs::remove_file(path).is_ok())
                .await
                .unwrap_or(false)
        })
    }
}

fn take_lock(pid: i32) -> Lock {
    take_lock_in(&PathBuf::from(format!("/proc/{pid}/root")))
}

/// [`LOCK_FILE`] under `root`, a container's root.
fn take_lock_in(root: &std::path::Path) -> Lock {
    use pathrs::flags::OpenFlags;
    use rustix::fs::{FileType, FlockOperation};

    // Opened following the link (`/proc/PID/root` is a magic link to the
    // container's root), then everything below resolved inside it.
    let opened = rustix::fs::open(
        root,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    );
    let root = match opened {
        Ok(fd) => pathrs::Root::from_fd(fd),
        Err(errno) => {
            // The container is gone: nothing holds anything.
            tracing::debug!(root = %root.display(), %errno, "no root to look for an update lock in");
            return Lock::Absent;
        }
    };
    let handle = match root.resolve(LOCK_FILE) {
        Ok(handle) => handle,
        Err(err) => {
            if err.kind() != pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) {
                tracing::debug!(error = %netplugins::chain(&err), "the update lock cannot be looked at: ignored");
            }
            return Lock::Absent;
        }
    };
    let regular = rustix::fs::fstat(&handle)
        .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile);
    if !regular {
        tracing::debug!("the update lock is not a regular file: ignored");
        return Lock::Absent;
    }
    let file =
        match handle.reopen(OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK | OpenFlags::O_NOFOLLOW) {
            Ok(file) => file,
            Err(err) => {
                tracing::debug!(error = %netplugins::chain(&err), "cannot open the update lock");
                return Lock::Absent;
            }
        };
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Lock::Taken(TakenLock(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Lock::Held,
        Err(errno) => {
            tracing::debug!(%errno, "flock on the update lock failed: ignored");
            Lock::Absent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_by_another_process_is_seen_and_a_free_one_taken() {
        let root = tempfile::tempdir().expect("a temp dir");
        assert!(matches!(take_lock_in(root.path()), Lock::Absent));
        let dir = root.path().join("tmp/berth");
        std::fs::create_dir_all(&dir).expect("tmp/berth");
        let file = dir.join("updates.lock");
        std::fs::write(&file, "").expect("the lock file");
        let taken = take_lock_in(root.path());
        assert!(matches!(taken, Lock::Taken(_)));
        // While berth holds it, another taker (the container) cannot.
        let other = std::fs::File::open(&file).expect("open");
        assert!(
            rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_err()
        );
        drop(taken);
        rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .expect("released when dropped");
        assert!(matches!(take_lock_in(root.path()), Lock::Held));
        drop(other);
        // A symlink out of the root is not followed.
        std::fs::remove_file(&file).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", &file).expect("symlink");
        assert!(matches!(take_lock_in(root.path()), Lock::Absent));
    }
}
