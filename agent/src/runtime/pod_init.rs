//! The init of a pod's shared PID namespace (`shareProcessNamespace`):
//! `berth-shim --pod-init`, started with the sandbox and killed with it.
//! The namespace is kept as a bind mount of its nsfs file at
//! `<sandbox>/ns/pid` (the path the containers join), the init's host PID
//! in `<sandbox>/ns/pid.init`; the init's root is the empty
//! `<sandbox>/init-root`.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::MsFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum PodInitError {
    #[error("starting {shim} --pod-init")]
    Spawn {
        shim: PathBuf,
        source: std::io::Error,
    },
    #[error("{shim} --pod-init failed: {report}")]
    Report { shim: PathBuf, report: String },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Namespace(#[from] netplugins::ns::NsError),
    #[error("keeping the PID namespace of init {pid} at {path}")]
    Mount {
        pid: i32,
        path: PathBuf,
        source: nix::errno::Errno,
    },
}

/// Where a sandbox keeps its shared PID namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidNamespace {
    /// The nsfs bind mount the containers join.
    pub ns: PathBuf,
    pid_file: PathBuf,
    root: PathBuf,
}

impl PidNamespace {
    pub fn at(sandbox_dir: &Path) -> Self {
        Self {
            ns: sandbox_dir.join("ns/pid"),
            pid_file: sandbox_dir.join("ns/pid.init"),
            root: sandbox_dir.join("init-root"),
        }
    }

    /// The init's host PID, when it still runs and holds this namespace.
    pub fn running_init(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let kept = std::fs::metadata(&self.ns).ok()?;
        let live = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?;
        // The same namespace (a recycled PID would be in another one).
        (kept.ino() == live.ino() && kept.dev() == live.dev()).then_some(pid)
    }

    /// Whether this sandbox has a shared PID namespace at all.
    pub fn exists(&self) -> bool {
        self.ns.exists()
    }

    /// Starts the init (unless it runs) and keeps its namespace.
    pub fn ensure(&self, shim: &Path) -> Result<(), PodInitError> {
        if self.running_init().is_some() {
            return Ok(());
        }
        // A dead namespace (its init was killed) cannot be joined again.
        self.remove()?;
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| PodInitError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o555)
            .create(&self.root)
            .map_err(io("creating", &self.root))?;
        let parent = self.ns.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        let pid = spawn(shim, &self.root)?;
        std::fs::write(&self.pid_file, pid.to_string()).map_err(io("writing", &self.pid_file))?;
        std::fs::write(&self.ns, b"").map_err(io("creating", &self.ns))?;
        nix::mount::mount(
            Some(Path::new(&format!("/proc/{pid}/ns/pid"))),
            &self.ns,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| PodInitError::Mount {
            pid,
            path: self.ns.clone(),
            source,
        })
    }

    /// Kills the init (which ends every process left in the namespace)
    /// and removes the namespace file. Idempotent.
    pub fn remove(&self) -> Result<(), PodInitError> {
        if let Some(pid) = self.running_init() {
            // ESRCH: it ended meanwhile.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        netplugins::ns::remove(&self.ns)?;
        crate::fsutil::remove_file_if_exists(&self.pid_file).map_err(|source| PodInitError::Io {
            action: "removing",
            path: self.pid_file.clone(),
            source,
        })
    }
}

/// Runs the shim's launcher and reads the init's PID from its report.
fn spawn(shim: &Path, root: &Path) -> Result<i32, PodInitError> {
    let mut child = Command::new(shim)
        .arg("--pod-init")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .spawn()
        .map_err(|source| PodInitError::Spawn {
            shim: shim.to_path_buf(),
            source,
        })?;
    let mut report = String::new();
    // EOF once the init has pointed its stdout away (or died).
    let read = child
        .stdout
        .take()
        .map(|mut out| out.read_to_string(&mut report));
    let _ = child.wait();
    if let Some(Err(source)) = read {
        return Err(PodInitError::Spawn {
            shim: shim.to_path_buf(),
            source,
        });
    }
    report
        .trim()
        .strip_prefix("ok ")
        .and_then(|pid| pid.parse().ok())
        .ok_or_else(|| PodInitError::Report {
            shim: shim.to_path_buf(),
            report: report.trim().to_string(),
        })
}
