//! `hostUsers: false`: the pod's own user namespace, as the kubelet makes
//! it. Each pod gets 65536 host IDs from `[runtime] userns-first-id` /
//! `userns-id-count` (the kubelet's default range: from 65536 to 2^32),
//! the lowest block no other sandbox holds, recorded in the sandbox
//! (`<sandbox>/userns`); its root is the block's first ID. The user
//! namespace and the pod's IPC, UTS and network namespaces, owned by it
//! (so the pod's root may mount sysfs and mqueue, set its sysctls and bind
//! low ports, as with the kubelet), are made before the network is set up
//! (the driver adopts the network namespace) by `berth-shim --userns-hold` (a multi-threaded agent cannot make or
//! join a user namespace) and kept as nsfs bind mounts in `<sandbox>/ns/`.
//! The containers join them; their root file systems are overlays of
//! idmapped image layers (see `rootfs`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use nix::mount::MsFlags;

/// IDs per pod, as the kubelet gives them.
pub const IDS_PER_POD: u32 = 65536;

#[derive(Debug, thiserror::Error)]
pub enum UserNsError {
    #[error("hostUsers: false needs user namespaces, which this kernel does not offer ({reason})")]
    Unsupported { reason: String },
    #[error(
        "no free block of {IDS_PER_POD} IDs left in [runtime] userns-first-id {first} / userns-id-count {count} (every block is held by another pod)"
    )]
    Exhausted { first: u32, count: u32 },
    #[error("starting {shim} --userns-hold")]
    Spawn {
        shim: PathBuf,
        source: std::io::Error,
    },
    #[error("{shim} --userns-hold failed: {report}")]
    Report { shim: PathBuf, report: String },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keeping namespace {source_path} at {path}")]
    Mount {
        source_path: PathBuf,
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Namespace(#[from] netplugins::ns::NsError),
}

/// The host IDs a pod's IDs 0..size map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    /// The host ID of the pod's root.
    pub host_id: u32,
    pub size: u32,
}

/// The configured range pods' blocks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u32,
    pub count: u32,
}

/// Where a sandbox keeps its user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespace {
    pub ns: PathBuf,
    map_file: PathBuf,
}

/// Allocations are read from the sandboxes: one at a time, so two pods
/// never take the same block.
static ALLOCATING: Mutex<()> = Mutex::new(());

impl UserNamespace {
    pub fn at(sandbox_dir: &Path) -> Self {
        Self {
            ns: sandbox_dir.join("ns/user"),
            map_file: sandbox_dir.join("userns"),
        }
    }

    /// The sandbox's mapping, if it has one.
    pub fn mapping(&self) -> Option<IdMapping> {
        read_mapping(&self.map_file)
    }

    /// Makes the user namespace unless it exists, with the namespaces
    /// `owned` (path, `ipc`/`uts`/`net`) owned by it. `pods_dir` holds
    /// every sandbox (to see which blocks are taken).
    pub fn ensure(
        &self,
        shim: &Path,
        owned: &[(&Path, &str)],
        range: IdRange,
        pods_dir: &Path,
    ) -> Result<IdMapping, UserNsError> {
        if netplugins::ns::is_namespace(&self.ns)
            && let Some(mapping) = self.mapping()
        {
            return Ok(mapping);
        }
        supported()?;
        // A half-made one (a crash in the middle) is made again whole.
        netplugins::ns::remove(&self.ns)?;
        for (path, _) in owned {
            netplugins::ns::remove(path)?;
        }
        let mapping = {
            let _guard = ALLOCATING.lock().unwrap_or_else(|e| e.into_inner());
            let mapping = match self.mapping() {
                Some(mapping) => mapping,
                None => {
                    let taken = taken_blocks(pods_dir);
                    let host_id = first_free(range, &taken).ok_or(UserNsError::Exhausted {
                        first: range.first,
                        count: range.count,
                    })?;
                    IdMapping {
                        host_id,
                        size: IDS_PER_POD,
                    }
                }
            };
            let io = io_error("writing", &self.map_file);
            if let Some(parent) = self.map_file.parent() {
                std::fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
            }
            std::fs::write(
                &self.map_file,
                format!("{} {}\n", mapping.host_id, mapping.size),
            )
            .map_err(io)?;
            mapping
        };
        let mut keep = vec![(self.ns.as_path(), "user")];
        keep.extend_from_slice(owned);
        hold_and_keep(shim, mapping, &keep)?;
        Ok(mapping)
    }

    /// Unmounts the namespace file and forgets the mapping. Idempotent.
    pub fn remove(&self) -> Result<(), UserNsError> {
        netplugins::ns::remove(&self.ns)?;
        crate::fsutil::remove_file_if_exists(&self.map_file).map_err(|source| UserNsError::Io {
            action: "removing",
            path: self.map_file.clone(),
            source,
        })
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UserNsError {
    let path = path.to_path_buf();
    move |source| UserNsError::Io {
        action,
        path,
        source,
    }
}

/// Whether this kernel lets root make user namespaces.
fn supported() -> Result<(), UserNsError> {
    if !Path::new("/proc/self/ns/user").exists() {
        return Err(UserNsError::Unsupported {
            reason: "no /proc/self/ns/user: CONFIG_USER_NS is off".into(),
        });
    }
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        return Err(UserNsError::Unsupported {
            reason: "user.max_user_namespaces is 0".into(),
        });
    }
    Ok(())
}

fn read_mapping(file: &Path) -> Option<IdMapping> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut parts = text.split_whitespace();
    Some(IdMapping {
        host_id: parts.next()?.parse().ok()?,
        size: parts.next()?.parse().ok()?,
    })
}

/// The first host ID of every block a sandbox under `pods_dir` holds.
fn taken_blocks(pods_dir: &Path) -> Vec<u32> {
    std::fs::read_dir(pods_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| read_mapping(&entry.path().join("userns")))
        .map(|m| m.host_id)
        .collect()
}

/// The lowest block of `range` not in `taken`.
pub fn first_free(range: IdRange, taken: &[u32]) -> Option<u32> {
    let end = u64::from(range.first) + u64::from(range.count);
    let mut start = u64::from(range.first);
    while start + u64::from(IDS_PER_POD) <= end {
        let id = u32::try_from(start).ok()?;
        if !taken.contains(&id) {
            return Some(id);
        }
        start += u64::from(IDS_PER_POD);
    }
    None
}

/// Runs the holder, maps its IDs and keeps its namespaces at `keep`.
fn hold_and_keep(
    shim: &Path,
    mapping: IdMapping,
    keep: &[(&Path, &str)],
) -> Result<(), UserNsError> {
    let spawn_error = |source| UserNsError::Spawn {
        shim: shim.to_path_buf(),
        source,
    };
    let mut child = Command::new(shim)
        .arg("--userns-hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .spawn()
        .map_err(spawn_error)?;
    let result = (|| {
        let mut report = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut report)
                .map_err(spawn_error)?;
        }
        if report.trim() != "ok" {
            return Err(UserNsError::Report {
                shim: shim.to_path_buf(),
                report: report.trim().to_string(),
            });
        }
        let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
        let line = format!("0 {} {}\n", mapping.host_id, mapping.size);
        for map in ["uid_map", "gid_map"] {
            let path = proc_dir.join(map);
            std::fs::write(&path, &line).map_err(io_error("writing", &path))?;
        }
        for (path, kind) in keep {
            bind_namespace(&proc_dir.join("ns").join(kind), path)?;
        }
        Ok(())
    })();
    // Closing stdin ends the holder; the namespaces stay (bind mounts).
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.flush();
    }
    let _ = child.wait();
    result
}

fn bind_namespace(source: &Path, target: &Path) -> Result<(), UserNsError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_error("creating", parent))?;
    }
    std::fs::write(target, b"").map_err(io_error("creating", target))?;
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| UserNsError::Mount {
        source_path: source.to_path_buf(),
        path: target.to_path_buf(),
        source: errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_allocated_lowest_first_within_the_range() {
        let range = IdRange {
            first: 65536,
            count: 3 * IDS_PER_POD,
        };
        assert_eq!(first_free(range, &[]), Some(65536));
        assert_eq!(first_free(range, &[65536]), Some(131072));
        assert_eq!(first_free(range, &[131072]), Some(65536));
        assert_eq!(first_free(range, &[65536, 131072, 196608]), None);
        // The kubelet's default range reaches the top of the ID space.
        let default = IdRange {
            first: 65536,
            count: u32::MAX - 65535,
        };
        let last = first_free(default, &[]).expect("a block");
        assert_eq!(last, 65536);
        assert!(
            first_free(
                IdRange {
                    first: 0,
                    count: 100
                },
                &[]
            )
            .is_none()
        );
    }
}
