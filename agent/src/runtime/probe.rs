//! Whether a runtime handler can run a container on this host, found by
//! running one: `RUNTIME [args] --root R run` of a bundle whose process is
//! `/bin/sh -c 'exit 42'` from the host's own `/usr` (bind-mounted read-only
//! by the runtime, in the container's mount namespace: nothing is mounted
//! on the host), in fresh namespaces with its own network namespace. Only
//! the OCI runtime CLI is used, so it judges any runtime the same way; the
//! exit code 42 proves the process really ran.
//!
//! A result is kept in `--run-root/runtime-probes/NAME.json` for as long
//! as the runtime binary (path, size, mtime), its flags and the kernel are
//! the same: a probe costs a container start (runsc: about half a second).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Handler;
use crate::paths::Paths;

/// The exit code the probe's process exits with.
const PROBE_EXIT: i32 = 42;
/// How long a probe container may take (runsc starts in ~0.5 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeOutcome {
    /// The probe container ran and exited with the expected code.
    pub works: bool,
    /// What went wrong (the runtime's own words), or how it went.
    pub detail: String,
    pub took_ms: u64,
    /// Taken from the cache of an earlier probe of the same binary.
    #[serde(default)]
    pub cached: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    key: String,
    outcome: ProbeOutcome,
}

fn cache_file(paths: &Paths, handler: &str) -> PathBuf {
    paths
        .run_root
        .join("runtime-probes")
        .join(format!("{handler}.json"))
}

/// What makes an earlier result still true: the binary, its flags and
/// the kernel.
fn cache_key(handler: &Handler) -> String {
    use std::os::unix::fs::MetadataExt;
    let binary = std::fs::metadata(&handler.binary)
        .map(|m| format!("{}:{}.{}", m.size(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    serde_json::json!([handler.binary, binary, handler.args, kernel]).to_string()
}

/// Probes `handler`, or returns the cached result of the same binary on
/// the same kernel.
pub async fn probe(paths: &Paths, handler: &Handler) -> ProbeOutcome {
    let key = cache_key(handler);
    let file = cache_file(paths, &handler.name);
    if let Some(entry) = std::fs::read(&file)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<CacheEntry>(&bytes).ok())
        .filter(|entry| entry.key == key)
    {
        return ProbeOutcome {
            cached: true,
            ..entry.outcome
        };
    }
    let outcome = run_probe(paths, handler).await;
    if let Some(dir) = file.parent() {
        let entry = CacheEntry {
            key,
            outcome: outcome.clone(),
        };
        // A cache: failing to keep it only costs the next probe.
        let _ = crate::fsutil::create_dir_all_with_mode(dir, 0o700).and_then(|()| {
            crate::fsutil::write_atomic(
                &file,
                &serde_json::to_vec(&entry).expect("plain data serializes"),
                0o600,
            )
        });
    }
    outcome
}

async fn run_probe(paths: &Paths, handler: &Handler) -> ProbeOutcome {
    let started = Instant::now();
    let done = |works: bool, detail: String| ProbeOutcome {
        works,
        detail,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        cached: false,
    };
    let dir = paths.run_root.join("runtime-probes");
    let bundle = match tempfile::Builder::new()
        .prefix(&format!("{}-", handler.name))
        .tempdir_in(&dir)
        .or_else(|_| {
            crate::fsutil::create_dir_all_with_mode(&dir, 0o700)?;
            tempfile::Builder::new()
                .prefix(&format!("{}-", handler.name))
                .tempdir_in(&dir)
        }) {
        Ok(bundle) => bundle,
        Err(err) => {
            return done(
                false,
                format!("making a probe bundle in {}: {err}", dir.display()),
            );
        }
    };
    if let Err(err) = write_bundle(bundle.path()) {
        return done(false, format!("writing the probe bundle: {err}"));
    }
    let id = format!(
        "berth-probe-{}-{}",
        std::process::id(),
        bundle
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
    );
    let mut run = tokio::process::Command::from(handler.std_command());
    run.arg("run")
        .arg("--bundle")
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let result = tokio::time::timeout(PROBE_TIMEOUT, run.output()).await;
    // `run` removes what it made when the process ends; after a timeout or
    // a failure it may not have.
    let _ = tokio::process::Command::from(handler.std_command())
        .args(["delete", "--force", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match result {
        Err(_) => done(
            false,
            format!("a probe container did not finish within {PROBE_TIMEOUT:?}"),
        ),
        Ok(Err(err)) => done(
            false,
            format!("running {}: {err}", handler.binary.display()),
        ),
        Ok(Ok(out)) if out.status.code() == Some(PROBE_EXIT) => {
            done(true, "a probe container ran and exited as expected".into())
        }
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let said = if stderr.trim().is_empty() {
                stdout.trim().to_string()
            } else {
                stderr.trim().to_string()
            };
            done(
                false,
                format!(
                    "a probe container failed ({}): {}",
                    out.status,
                    last_lines(&said, 3)
                ),
            )
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A bundle running `/bin/sh -c 'exit 42'` from the host's `/usr`: the
/// top-level entries a shell needs are copied as symlinks where the host
/// has symlinks (merged /usr), bind-mounted read-only otherwise.
fn write_bundle(bundle: &Path) -> std::io::Result<()> {
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir(&rootfs)?;
    let mut mounts = vec![
        serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        serde_json::json!({"destination": "/usr", "type": "bind", "source": "/usr",
                           "options": ["rbind", "ro"]}),
    ];
    std::fs::create_dir(rootfs.join("usr"))?;
    for dir in ["proc", "dev"] {
        std::fs::create_dir(rootfs.join(dir))?;
    }
    for top in ["bin", "lib", "lib64", "sbin"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => std::os::unix::fs::symlink(target, rootfs.join(top))?,
            Err(_) if host.is_dir() => {
                std::fs::create_dir(rootfs.join(top))?;
                mounts.push(serde_json::json!({"destination": format!("/{top}"),
                    "type": "bind", "source": host, "options": ["rbind", "ro"]}));
            }
            Err(_) => {}
        }
    }
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", format!("exit {PROBE_EXIT}")],
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "berth-probe",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "network"}],
            "maskedPaths": [],
            "readonlyPaths": []
        }
    });
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).expect("plain data serializes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_of_an_error_are_kept() {
        assert_eq!(last_lines("a\nb\nc\nd", 2), "c | d");
        assert_eq!(last_lines("only", 3), "only");
        assert_eq!(last_lines("", 3), "");
    }
}
