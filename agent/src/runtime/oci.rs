//! The OCI runtime binary (runc, crun, or a CLI-compatible one) behind a
//! runtime handler: which one it is, and the commands the agent runs itself
//! (`state`, `kill`, `delete`, `exec`). `run --detach` is the shim's.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("runtime handler {handler}: running {binary}")]
    Spawn {
        handler: String,
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "runtime handler {handler}: `{command}` for container {id} failed ({status}): {stderr}"
    )]
    Failed {
        handler: String,
        command: &'static str,
        id: String,
        status: String,
        stderr: String,
    },
    #[error("runtime handler {handler}: `state` of container {id} is not valid JSON")]
    BadState {
        handler: String,
        id: String,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Runc,
    Crun,
    /// gVisor: `runsc` (see `flavor.rs` for what berth derives for it).
    Runsc,
    /// Another runtime that follows the OCI runtime CLI (youki,
    /// kata-runtime, a wrapper script…): used exactly as runc.
    Other,
}

impl RuntimeKind {
    /// Which runtime `binary` is, from the first line of its `--version`
    /// (a wrapper named after the runtime counts too: gVisor's
    /// `runsc --version` says `runsc version …`).
    pub fn identify(version: &str, binary: &Path) -> Self {
        let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let says = |word: &str| version.starts_with(word) || name == word;
        if says("runc") {
            Self::Runc
        } else if says("crun") {
            Self::Crun
        } else if says("runsc") {
            Self::Runsc
        } else {
            Self::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runc => "runc",
            Self::Crun => "crun",
            Self::Runsc => "runsc",
            Self::Other => "other",
        }
    }
}

/// A configured runtime handler.
#[derive(Debug, Clone)]
pub struct Handler {
    /// The handler's name (`runtimeClassName` maps to it).
    pub name: String,
    pub binary: PathBuf,
    /// Global flags before every subcommand: what berth derives for the
    /// runtime's kind (`derived`), then the handler's configured `args`.
    pub args: Vec<String>,
    /// The part of `args` berth derived (see `flavor.rs`).
    pub derived: Vec<String>,
    pub kind: RuntimeKind,
    /// First line of `--version`.
    pub version: String,
    /// The runtime's `--root`: its state directory, one per handler.
    pub root: PathBuf,
}

/// The part of `RUNTIME state` the agent uses.
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeState {
    pub id: String,
    pub status: String,
    pub pid: Option<i32>,
}

impl Handler {
    /// Identifies the runtime by running `BINARY --version`.
    pub fn detect(
        name: &str,
        binary: &Path,
        args: &[String],
        root: PathBuf,
    ) -> Result<Self, OciError> {
        let out = std::process::Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| OciError::Spawn {
                handler: name.to_string(),
                binary: binary.to_path_buf(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.lines().next().unwrap_or("").trim().to_string();
        let kind = RuntimeKind::identify(&version, binary);
        let derived = super::flavor::derived_args(kind);
        Ok(Self {
            name: name.to_string(),
            binary: binary.to_path_buf(),
            args: derived.iter().chain(args).cloned().collect(),
            derived,
            kind,
            version,
            root,
        })
    }

    /// `BINARY [args] --root ROOT`, ready for a subcommand.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(&self.args).arg("--root").arg(&self.root);
        cmd
    }

    /// The same, for a caller that runs it with its own stdio (exec -it).
    pub fn std_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.args(&self.args).arg("--root").arg(&self.root);
        cmd
    }

    /// Whether the runtime still knows container `id`. runc and crun keep
    /// a directory per container under their root; other runtimes lay
    /// their root out their own way (runsc: `ID_sandbox:ID.state` files),
    /// so they are asked.
    pub async fn knows(&self, id: &str) -> bool {
        match self.kind {
            RuntimeKind::Runc | RuntimeKind::Crun => tokio::fs::try_exists(self.root.join(id))
                .await
                .unwrap_or(false),
            RuntimeKind::Runsc | RuntimeKind::Other => {
                if !tokio::fs::try_exists(&self.root).await.unwrap_or(false) {
                    return false;
                }
                self.run("state", id, &["state", id]).await.is_ok()
            }
        }
    }

    pub async fn state(&self, id: &str) -> Result<Option<RuntimeState>, OciError> {
        if !self.knows(id).await {
            return Ok(None);
        }
        let out = self.run("state", id, &["state", id]).await?;
        serde_json::from_slice(&out)
            .map(Some)
            .map_err(|source| OciError::BadState {
                handler: self.name.clone(),
                id: id.to_string(),
                source,
            })
    }

    /// Sends `signal` (a name such as `SIGTERM`, or a number) to the
    /// container's init.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), OciError> {
        self.run("kill", id, &["kill", id, signal]).await.map(drop)
    }

    /// `delete --force`: kills what is left and removes the runtime's state
    /// (and the container's cgroup). A container it does not know is fine.
    pub async fn delete(&self, id: &str) -> Result<(), OciError> {
        if !self.knows(id).await {
            return Ok(());
        }
        match self.run("delete", id, &["delete", "--force", id]).await {
            Err(_) if !self.knows(id).await => Ok(()),
            other => other.map(drop),
        }
    }

    async fn run(
        &self,
        command: &'static str,
        id: &str,
        args: &[&str],
    ) -> Result<Vec<u8>, OciError> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| OciError::Spawn {
                handler: self.name.clone(),
                binary: self.binary.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(OciError::Failed {
            handler: self.name.clone(),
            command,
            id: id.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_known_by_their_version_or_their_name_never_the_handler_name() {
        let kind = |version: &str, binary: &str| RuntimeKind::identify(version, Path::new(binary));
        assert_eq!(kind("runc version 1.1.5", "/x/y"), RuntimeKind::Runc);
        assert_eq!(kind("crun version 1.8.1", "/x/y"), RuntimeKind::Crun);
        assert_eq!(
            kind("runsc version 0.0~20221219.0", "/opt/gvisor/bin/sandbox"),
            RuntimeKind::Runsc
        );
        // A wrapper that prints nothing useful, named after the runtime.
        assert_eq!(kind("", "/usr/local/bin/runsc"), RuntimeKind::Runsc);
        assert_eq!(
            kind("kata-runtime  : 3.2.0", "/usr/bin/kata-runtime"),
            RuntimeKind::Other
        );
        assert_eq!(
            kind("youki version 0.3", "/usr/bin/youki"),
            RuntimeKind::Other
        );
    }
}
