//! Namespace files: a namespace (net, ipc, uts) that lives on as a bind mount
//! of its nsfs file, so it outlives every process in it and can be joined by
//! path (`linux.namespaces[].path` in an OCI spec, or [`run_in`] here).
//!
//! Every `unshare`/`setns` happens on a fresh `std::thread` that exits right
//! after. A pooled thread (a tokio worker or a `spawn_blocking` thread) must
//! never switch namespaces: the next task scheduled on it would silently run
//! inside the pod's namespace.
//!
//! Creating is idempotent (an existing namespace mount at the path is kept),
//! and so is removing (a missing file or a file that is not mounted is fine).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// The kinds of namespace berth keeps as files. Mount and PID namespaces are
/// the OCI runtime's business and cannot be joined from a threaded process
/// this way, so they are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsKind {
    Net,
    Ipc,
    Uts,
}

impl NsKind {
    /// The name under `/proc/<pid>/ns/` and in OCI specs (`network` there).
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }

    /// This thread's namespace of this kind.
    fn thread_self_path(self) -> PathBuf {
        Path::new("/proc/thread-self/ns").join(self.proc_name())
    }
}

impl std::fmt::Display for NsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.proc_name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("creating directory {path} for namespace files")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating namespace file {path}")]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unsharing a new {kind} namespace for {path}")]
    Unshare {
        kind: NsKind,
        path: PathBuf,
        source: Errno,
    },
    #[error("bind-mounting the new {kind} namespace onto {path}")]
    BindMount {
        kind: NsKind,
        path: PathBuf,
        source: Errno,
    },
    #[error("unmounting namespace file {path}")]
    Unmount { path: PathBuf, source: Errno },
    #[error("removing namespace file {path}")]
    RemoveFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a namespace file (not an nsfs mount); was the namespace removed?")]
    NotANamespace { path: PathBuf },
    #[error("opening namespace file {path}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("entering the {kind} namespace {path}")]
    Enter {
        kind: NsKind,
        path: PathBuf,
        source: Errno,
    },
    #[error("starting a thread to switch namespaces: {0}")]
    SpawnThread(std::io::Error),
    #[error("the code run inside namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// Creates a new namespace of `kind` and keeps it at `path` (a bind mount of
/// its nsfs file). If `path` already holds a namespace mount, it is kept as
/// it is. The parent directory is created if needed.
pub fn create(kind: NsKind, path: &Path) -> Result<(), NsError> {
    if is_namespace(path) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| NsError::CreateDir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    // The mount point: an empty file. A leftover from a crash between this
    // and the mount below is reused.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| NsError::CreateFile {
            path: path.to_path_buf(),
            source,
        })?;

    let target = path.to_path_buf();
    let made = on_throwaway_thread(path, move || {
        nix::sched::unshare(kind.clone_flag()).map_err(|source| NsError::Unshare {
            kind,
            path: target.clone(),
            source,
        })?;
        nix::mount::mount(
            Some(&kind.thread_self_path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| NsError::BindMount {
            kind,
            path: target.clone(),
            source,
        })
    })
    .and_then(|inner| inner);
    if made.is_err() {
        // Leave nothing half-made behind; the original error matters more
        // than a failure to delete an empty file.
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmounts and deletes the namespace file at `path`. The namespace itself
/// goes away when its last process exits. Idempotent: a missing file, or a
/// file that is not mounted, is not an error.
pub fn remove(path: &Path) -> Result<(), NsError> {
    // A crash-and-retry of `create` may have stacked mounts: peel them all.
    while is_namespace(path) {
        match nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(source) => {
                return Err(NsError::Unmount {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NsError::RemoveFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether `path` is a live namespace file (an nsfs mount).
pub fn is_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Runs `f` inside the namespace kept at `path`, on a throw-away thread, and
/// returns its result. Blocks the caller until `f` returns; from async code
/// use [`run_in_async`]. `f` may borrow from the caller.
pub fn run_in<T, F>(kind: NsKind, path: &Path, f: F) -> Result<T, NsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let ns = open_namespace(path)?;
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name(format!("ns-{kind}"))
            .spawn_scoped(scope, move || enter(kind, path, &ns).map(|()| f()))
            .map_err(NsError::SpawnThread)?;
        worker.join().map_err(|_| NsError::Panicked {
            path: path.to_path_buf(),
        })?
    })
}

/// [`run_in`] for async callers: the namespace switch happens on a fresh
/// `std::thread` (never a runtime thread) and the caller awaits its result.
pub async fn run_in_async<T, F>(kind: NsKind, path: PathBuf, f: F) -> Result<T, NsError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::Builder::new()
        .name(format!("ns-{kind}"))
        .spawn(move || {
            let result = open_namespace(&thread_path)
                .and_then(|ns| enter(kind, &thread_path, &ns))
                .map(|()| f());
            // The receiver is gone only if the caller stopped waiting.
            let _ = tx.send(result);
        })
        .map_err(NsError::SpawnThread)?;
    // A dropped sender means the thread panicked inside `f`.
    rx.await.unwrap_or(Err(NsError::Panicked { path }))
}

/// Runs `f` on a fresh thread that is thrown away afterwards, for code that
/// changes the thread's namespaces itself.
fn on_throwaway_thread<T, F>(path: &Path, f: F) -> Result<T, NsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("ns-create".to_string())
            .spawn_scoped(scope, f)
            .map_err(NsError::SpawnThread)?;
        worker.join().map_err(|_| NsError::Panicked {
            path: path.to_path_buf(),
        })
    })
}

fn open_namespace(path: &Path) -> Result<File, NsError> {
    if !is_namespace(path) {
        return Err(NsError::NotANamespace {
            path: path.to_path_buf(),
        });
    }
    File::open(path).map_err(|source| NsError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn enter(kind: NsKind, path: &Path, ns: &File) -> Result<(), NsError> {
    nix::sched::setns(ns, kind.clone_flag()).map_err(|source| NsError::Enter {
        kind,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_their_proc_files() {
        assert_eq!(NsKind::Net.proc_name(), "net");
        assert_eq!(
            NsKind::Ipc.thread_self_path(),
            Path::new("/proc/thread-self/ns/ipc")
        );
        assert_eq!(NsKind::Uts.to_string(), "uts");
    }

    #[test]
    fn an_ordinary_file_is_not_a_namespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").expect("write");
        assert!(!is_namespace(&file));
        assert!(!is_namespace(&dir.path().join("missing")));
        let err = run_in(NsKind::Net, &file, || ()).expect_err("not a namespace");
        assert!(matches!(err, NsError::NotANamespace { .. }), "{err}");
        assert!(err.to_string().contains("plain"), "{err}");
    }

    #[test]
    fn removing_what_is_not_there_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        remove(&dir.path().join("never-created")).expect("idempotent remove");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").expect("write");
        remove(&plain).expect("remove an unmounted leftover");
        assert!(!plain.exists());
    }
}
