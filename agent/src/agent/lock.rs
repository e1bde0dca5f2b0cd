//! The single-instance lock: two agents must never share a run-root (they
//! would fight over every container). `flock` on `Paths::agent_lock()`: the
//! kernel drops it when the holder dies, so a crash never leaves it stale.
//! The holder writes its PID into the file so a second agent can say who
//! holds it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another berth agent (PID {holder}) is running with this run-root ({path} is locked); stop it first or use another --run-root"
    )]
    Held { path: PathBuf, holder: String },
    #[error("opening agent lock {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("locking {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Held for the agent's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub struct AgentLock {
    _file: Flock<File>,
}

/// `berth status` probes the lock with a shared lock for an instant; if a
/// starting agent hits that instant it retries for this long.
const PROBE_GRACE: Duration = Duration::from_millis(500);

impl AgentLock {
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|source| LockError::Open {
                    path: path.to_owned(),
                    source,
                })
        };
        let deadline = Instant::now() + PROBE_GRACE;
        let mut file = open()?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut locked) => {
                    write_pid(&mut locked).map_err(|source| LockError::Open {
                        path: path.to_owned(),
                        source,
                    })?;
                    return Ok(Self { _file: locked });
                }
                Err((returned, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = returned;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((mut returned, Errno::EWOULDBLOCK)) => {
                    let mut holder = String::new();
                    let _ = returned.read_to_string(&mut holder);
                    let holder = holder.trim();
                    return Err(LockError::Held {
                        path: path.to_owned(),
                        holder: if holder.is_empty() {
                            "unknown".into()
                        } else {
                            holder.into()
                        },
                    });
                }
                Err((_, errno)) => {
                    return Err(LockError::Lock {
                        path: path.to_owned(),
                        source: errno,
                    });
                }
            }
        }
    }
}

fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

/// Whether an agent holds the lock at `path` right now.
pub fn is_held(path: &Path) -> io::Result<bool> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => Ok(false),
        Err((_, Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, errno)) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_the_lock_frees_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.lock");
        assert!(!is_held(&path).expect("probe"));
        let first = AgentLock::acquire(&path).expect("first lock");
        assert!(is_held(&path).expect("probe"));
        let err = AgentLock::acquire(&path).expect_err("second lock");
        let text = err.to_string();
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("agent.lock"), "{text}");
        drop(first);
        assert!(!is_held(&path).expect("probe"));
        AgentLock::acquire(&path).expect("lock again after release");
    }
}
