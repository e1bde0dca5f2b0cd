//! The host's cgroup layout and berth's cgroup tree in it.
//!
//! Every pod gets a parent cgroup `/<parent>/pod-<uid>` and every container
//! a child `/<parent>/pod-<uid>/<container-id>` (the runtime's cgroupfs
//! driver creates both from `linux.cgroupsPath`). The runtime removes the
//! container's cgroup on `delete`, but never the parents: berth removes those
//! itself when the pod goes.
//!
//! Three layouts exist: cgroup v1 (one hierarchy per controller under
//! `/sys/fs/cgroup/<name>`), v2 (one unified hierarchy at `/sys/fs/cgroup`)
//! and hybrid (v1 hierarchies plus a cgroup2 mount at
//! `/sys/fs/cgroup/unified`, which may hold controllers such as hugetlb).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::mountinfo::{self, MountEntry};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading the mount table to find the cgroup hierarchies: {0}")]
    MountTable(std::io::Error),
    #[error(
        "no cgroup hierarchy is mounted (neither cgroup v1 nor cgroup2 in /proc/self/mountinfo)"
    )]
    NoCgroups,
    #[error("removing cgroup {path}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 only.
    Legacy,
    /// cgroup v1 hierarchies plus a cgroup2 mount beside them.
    Hybrid,
    /// cgroup v2 only.
    Unified,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mount_point: PathBuf,
    /// Controllers bound to it, and `name=…` for named hierarchies.
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLayout {
    pub mode: CgroupMode,
    pub v1: Vec<V1Hierarchy>,
    pub v2: Option<PathBuf>,
    /// Controllers available in the cgroup2 hierarchy (its root's
    /// `cgroup.controllers`).
    pub v2_controllers: Vec<String>,
}

impl CgroupLayout {
    /// The layout of this host, from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self, CgroupError> {
        let mounts = mountinfo::read().map_err(CgroupError::MountTable)?;
        Self::from_mounts(&mounts, |v2| {
            std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    /// The layout described by a mount table; `read_v2_controllers` reads
    /// `cgroup.controllers` of the cgroup2 mount it is given.
    pub fn from_mounts(
        mounts: &[MountEntry],
        read_v2_controllers: impl FnOnce(&Path) -> String,
    ) -> Result<Self, CgroupError> {
        let mut v1: Vec<V1Hierarchy> = Vec::new();
        let mut v2: Option<PathBuf> = None;
        // A mount of a sub-cgroup (root other than "/") is a bind mount, as
        // inside a container; the hierarchy's own mount is what we manage.
        for mount in mounts.iter().filter(|m| m.root == "/") {
            match mount.fs_type.as_str() {
                "cgroup2" if v2.is_none() || mount.mount_point == Path::new("/sys/fs/cgroup") => {
                    v2 = Some(mount.mount_point.clone());
                }
                "cgroup" => {
                    let controllers: Vec<String> = mount
                        .super_options
                        .split(',')
                        .filter(|opt| is_v1_controller_option(opt))
                        .map(str::to_string)
                        .collect();
                    if !v1.iter().any(|h| h.controllers == controllers) {
                        v1.push(V1Hierarchy {
                            mount_point: mount.mount_point.clone(),
                            controllers,
                        });
                    }
                }
                _ => {}
            }
        }
        let mode = match (&v2, v1.is_empty()) {
            (None, true) => return Err(CgroupError::NoCgroups),
            (Some(_), true) => CgroupMode::Unified,
            (Some(path), false) if path == Path::new("/sys/fs/cgroup") => CgroupMode::Unified,
            (Some(_), false) => CgroupMode::Hybrid,
            (None, false) => CgroupMode::Legacy,
        };
        if mode == CgroupMode::Unified {
            v1.clear();
        }
        let v2_controllers = v2
            .as_deref()
            .map(read_v2_controllers)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Ok(Self {
            mode,
            v1,
            v2,
            v2_controllers,
        })
    }

    /// The directory of `cgroup_path` in every hierarchy (v1 and cgroup2).
    pub fn hierarchy_dirs(&self, cgroup_path: &str) -> Vec<PathBuf> {
        self.v1
            .iter()
            .map(|h| h.mount_point.as_path())
            .chain(self.v2.as_deref())
            .map(|mount| join_cgroup(mount, cgroup_path))
            .collect()
    }

    /// The directory holding `controller`'s files for `cgroup_path`: its v1
    /// hierarchy if it has one, else the cgroup2 hierarchy if the controller
    /// is available there.
    pub fn controller_dir(&self, controller: &str, cgroup_path: &str) -> Option<PathBuf> {
        if let Some(h) = self
            .v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
        {
            return Some(join_cgroup(&h.mount_point, cgroup_path));
        }
        let v2 = self.v2.as_deref()?;
        self.v2_controllers
            .iter()
            .any(|c| c == controller)
            .then(|| join_cgroup(v2, cgroup_path))
    }

    /// Whether `controller` is driven through cgroup2 files (`memory.max`)
    /// rather than v1 files (`memory.limit_in_bytes`).
    pub fn is_v2(&self, controller: &str) -> bool {
        !self
            .v1
            .iter()
            .any(|h| h.controllers.iter().any(|c| c == controller))
    }

    /// The file whose `oom_kill` counter tells whether the kernel OOM-killed
    /// something in the cgroup: v1 `memory.oom_control`, v2 `memory.events`.
    pub fn oom_file(&self, cgroup_path: &str) -> Option<PathBuf> {
        let dir = self.controller_dir("memory", cgroup_path)?;
        Some(if self.is_v2("memory") {
            dir.join("memory.events")
        } else {
            dir.join("memory.oom_control")
        })
    }

    /// Why crun 1.8 cannot run containers on this host, if it cannot: in
    /// hybrid mode it refuses to work while the cgroup2 hierarchy holds any
    /// controller ("cgroups in hybrid mode not supported").
    pub fn crun_blocker(&self) -> Option<String> {
        if self.mode != CgroupMode::Hybrid || self.v2_controllers.is_empty() {
            return None;
        }
        let v2 = self
            .v2
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let controllers = self.v2_controllers.join(", ");
        let fix = self
            .v2_controllers
            .iter()
            .map(|c| {
                format!(
                    "mkdir -p /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}"
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Some(format!(
            "this host has hybrid cgroups (v1 hierarchies plus cgroup2 at {v2}) and the cgroup2 \
             hierarchy holds the {controllers} controller; crun 1.8 refuses to create any \
             container in that layout (\"cgroups in hybrid mode not supported\") and could not \
             apply its resource limits. Fix: run the pod with runc (runtimeClassName, or \
             default-handler in the agent's [runtime] config), or move the controller to cgroup \
             v1 as a plain v1 host has it: {fix}"
        ))
    }

    /// Removes `cgroup_path` from every hierarchy, waiting briefly for
    /// exiting processes to leave it. Missing directories are fine.
    /// Returns every failure instead of stopping at the first.
    pub fn remove(&self, cgroup_path: &str) -> Vec<CgroupError> {
        self.hierarchy_dirs(cgroup_path)
            .into_iter()
            .filter_map(|dir| remove_dir(&dir).err())
            .collect()
    }

    /// Removes `cgroup_path` and every cgroup below it, deepest first.
    pub fn remove_tree(&self, cgroup_path: &str) -> Vec<CgroupError> {
        let mut errors = Vec::new();
        for top in self.hierarchy_dirs(cgroup_path) {
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            errors.extend(dirs.iter().filter_map(|d| remove_dir(d).err()));
        }
        errors
    }
}

/// `/berth/pod-<uid>`: a pod's parent cgroup.
pub fn pod_cgroup(parent: &str, pod_uid: &str) -> String {
    format!("/{}/pod-{pod_uid}", parent.trim_matches('/'))
}

/// `/berth/pod-<uid>/<id>`: a container's cgroup (`linux.cgroupsPath`).
pub fn container_cgroup(parent: &str, pod_uid: &str, container_id: &str) -> String {
    format!("{}/{container_id}", pod_cgroup(parent, pod_uid))
}

fn join_cgroup(mount: &Path, cgroup_path: &str) -> PathBuf {
    mount.join(cgroup_path.trim_start_matches('/'))
}

fn is_v1_controller_option(opt: &str) -> bool {
    // Everything but generic mount flags and the v1 hierarchy options.
    !matches!(
        opt,
        "rw" | "ro"
            | "nosuid"
            | "nodev"
            | "noexec"
            | "relatime"
            | "noatime"
            | "xattr"
            | "noprefix"
            | "clone_children"
            | "cpuset_v2_mode"
            | "favordynmods"
    ) && !opt.starts_with("release_agent=")
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
        out.push(dir.to_path_buf());
    }
}

fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    // A cgroup is busy until its last task is reaped; give exiting
    // processes a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's layout as it boots: hugetlb sits on cgroup2.
    pub const HYBRID_MOUNTINFO: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:25 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
28 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
30 25 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
31 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
32 28 0:26 /some/pod /mnt/bound rw,relatime - cgroup cgroup rw,memory
";

    const UNIFIED_MOUNTINFO: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn layout(mountinfo: &str, v2_controllers: &str) -> CgroupLayout {
        CgroupLayout::from_mounts(&mountinfo::parse(mountinfo), |_| v2_controllers.to_string())
            .expect("a layout")
    }

    #[test]
    fn hybrid_host_with_a_controller_on_cgroup2_blocks_crun() {
        let l = layout(HYBRID_MOUNTINFO, "hugetlb\n");
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(l.v1.len(), 5, "the bind mount of a sub-cgroup is ignored");
        assert_eq!(l.v1[4].controllers, vec!["name=systemd".to_string()]);
        let reason = l.crun_blocker().expect("crun cannot run");
        assert!(reason.contains("hugetlb"), "{reason}");
        assert!(
            reason.contains("mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"),
            "{reason}"
        );
        assert!(reason.contains("runc"), "{reason}");
    }

    #[test]
    fn hybrid_host_with_an_empty_cgroup2_lets_crun_run() {
        let l = layout(HYBRID_MOUNTINFO, "");
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(l.crun_blocker(), None);
    }

    #[test]
    fn finds_controller_files_in_v1_and_v2() {
        let hybrid = layout(HYBRID_MOUNTINFO, "hugetlb");
        let path = container_cgroup("berth", "u1", "c1");
        assert_eq!(path, "/berth/pod-u1/c1");
        assert_eq!(
            hybrid.oom_file(&path),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/berth/pod-u1/c1/memory.oom_control"
            ))
        );
        assert_eq!(
            hybrid.controller_dir("hugetlb", &path),
            Some(PathBuf::from("/sys/fs/cgroup/unified/berth/pod-u1/c1"))
        );
        assert_eq!(hybrid.hierarchy_dirs(&path).len(), 6);

        let unified = layout(UNIFIED_MOUNTINFO, "cpuset cpu io memory pids");
        assert_eq!(unified.mode, CgroupMode::Unified);
        assert!(unified.is_v2("memory"));
        assert_eq!(
            unified.oom_file(&path),
            Some(PathBuf::from(
                "/sys/fs/cgroup/berth/pod-u1/c1/memory.events"
            ))
        );
        assert_eq!(unified.crun_blocker(), None);
    }

    #[test]
    fn no_cgroups_is_an_error() {
        let err = CgroupLayout::from_mounts(&[], |_| String::new()).expect_err("no cgroups");
        assert!(matches!(err, CgroupError::NoCgroups));
    }
}
