//! A container's resource usage as its cgroup files tell it, with
//! cAdvisor's definitions, on cgroup v1, v2 and hybrid hosts alike: each
//! controller is read where [`CgroupLayout`] finds it (its v1 hierarchy,
//! else the cgroup2 one), so a hybrid host reads v1 files for the
//! controllers bound there and cgroup2 files for the rest.
//!
//! | figure | v1 | v2 |
//! |---|---|---|
//! | cpu | `cpuacct.usage` (ns) | `cpu.stat` `usage_usec` |
//! | memory usage | `memory.usage_in_bytes` | `memory.current` |
//! | working set | usage − `total_inactive_file` | usage − `inactive_file` |
//! | rss | `total_rss` | `anon` |
//! | limit | `memory.limit_in_bytes` | `memory.max` |
//! | pids | `pids.current` | `pids.current` |

use std::path::{Path, PathBuf};

use crate::runtime::CgroupLayout;

/// Above this a v1 memory limit means "none" (the kernel shows
/// `PAGE_COUNTER_MAX` pages as bytes, about 2^63).
const V1_UNLIMITED: u64 = 1 << 62;

/// One reading of a cgroup. `None`: the host does not account it (no
/// such controller) or the file could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time used since the cgroup was made, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    /// What the kubelet evicts on and `kubectl top` shows: usage less
    /// inactive page cache.
    pub memory_working_set_bytes: Option<u64>,
    /// Anonymous memory (and swap cache).
    pub memory_rss_bytes: Option<u64>,
    /// `None`: no limit.
    pub memory_limit_bytes: Option<u64>,
    pub pids: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path} does not exist in any hierarchy (the container has gone)")]
pub struct CgroupGone {
    pub path: String,
}

/// Reads `cgroup_path` (`/berth/pod-<uid>/<id>`) in `layout`.
pub fn read(layout: &CgroupLayout, cgroup_path: &str) -> Result<CgroupUsage, CgroupGone> {
    let exists = layout
        .hierarchy_dirs(cgroup_path)
        .iter()
        .any(|dir| dir.is_dir());
    if !exists {
        return Err(CgroupGone {
            path: cgroup_path.to_owned(),
        });
    }
    let mut usage = CgroupUsage {
        cpu_usage_ns: cpu_usage_ns(layout, cgroup_path),
        pids: controller_file(layout, "pids", cgroup_path, "pids.current")
            .and_then(|p| read_u64(&p)),
        ..CgroupUsage::default()
    };
    if let Some(dir) = layout.controller_dir("memory", cgroup_path) {
        read_memory(&dir, layout.is_v2("memory"), &mut usage);
    }
    Ok(usage)
}

fn controller_file(
    layout: &CgroupLayout,
    controller: &str,
    cgroup_path: &str,
    file: &str,
) -> Option<PathBuf> {
    layout
        .controller_dir(controller, cgroup_path)
        .map(|dir| dir.join(file))
}

fn cpu_usage_ns(layout: &CgroupLayout, cgroup_path: &str) -> Option<u64> {
    if !layout.is_v2("cpuacct") {
        return controller_file(layout, "cpuacct", cgroup_path, "cpuacct.usage")
            .and_then(|p| read_u64(&p));
    }
    // cgroup2 keeps `cpu.stat`'s usage in every cgroup, whether or not the
    // cpu controller is enabled there.
    let v2 = layout.v2.as_deref()?;
    let text = std::fs::read_to_string(
        v2.join(cgroup_path.trim_start_matches('/'))
            .join("cpu.stat"),
    )
    .ok()?;
    keyed(&text, "usage_usec").map(|us| us.saturating_mul(1000))
}

fn read_memory(dir: &Path, v2: bool, usage: &mut CgroupUsage) {
    let (current, limit, inactive, rss) = if v2 {
        ("memory.current", "memory.max", "inactive_file", "anon")
    } else {
        (
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "total_inactive_file",
            "total_rss",
        )
    };
    usage.memory_usage_bytes = read_u64(&dir.join(current));
    usage.memory_limit_bytes = std::fs::read_to_string(dir.join(limit))
        .ok()
        .and_then(|text| parse_limit(&text));
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    usage.memory_rss_bytes = keyed(&stat, rss);
    usage.memory_working_set_bytes = usage
        .memory_usage_bytes
        .map(|used| used.saturating_sub(keyed(&stat, inactive).unwrap_or(0)));
}

/// A memory limit file: `max` (v2) or a huge number (v1) is no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse().ok().filter(|&bytes| bytes < V1_UNLIMITED)
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::CgroupMode;
    use crate::runtime::cgroups::V1Hierarchy;

    const CGROUP: &str = "/berth/pod-u1/c1";

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).expect("cgroup dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("cgroup file");
        }
    }

    fn v1(root: &Path, controllers: &[&str]) -> Vec<V1Hierarchy> {
        controllers
            .iter()
            .map(|c| V1Hierarchy {
                mount_point: root.join(c),
                controllers: c.split(',').map(str::to_owned).collect(),
            })
            .collect()
    }

    /// What the kernel shows in a v1 memory cgroup (the leaf's own
    /// counters and the hierarchical `total_*` ones).
    const V1_MEMORY_STAT: &str = "cache 1048576\nrss 50331648\nrss_huge 0\nshmem 0\n\
inactive_anon 0\nactive_anon 50331648\ninactive_file 1048576\nactive_file 0\n\
hierarchical_memory_limit 134217728\ntotal_cache 2097152\ntotal_rss 52428800\n\
total_shmem 0\ntotal_inactive_anon 0\ntotal_active_anon 52428800\n\
total_inactive_file 2097152\ntotal_active_file 0\n";

    const V2_MEMORY_STAT: &str = "anon 52428800\nfile 4194304\nkernel 294912\n\
kernel_stack 16384\nshmem 0\nfile_mapped 0\nactive_anon 52428800\n\
inactive_anon 0\nactive_file 1048576\ninactive_file 3145728\n";

    #[test]
    fn cgroup_v1_figures() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        let c = CGROUP.trim_start_matches('/');
        write(
            &root.join("cpu,cpuacct").join(c),
            &[("cpuacct.usage", "1500000000\n")],
        );
        write(
            &root.join("memory").join(c),
            &[
                ("memory.usage_in_bytes", "60817408\n"),
                ("memory.limit_in_bytes", "134217728\n"),
                ("memory.stat", V1_MEMORY_STAT),
            ],
        );
        write(&root.join("pids").join(c), &[("pids.current", "3\n")]);
        let layout = CgroupLayout {
            mode: CgroupMode::Legacy,
            v1: v1(root, &["cpu,cpuacct", "memory", "pids"]),
            v2: None,
            v2_controllers: Vec::new(),
        };
        let usage = read(&layout, CGROUP).expect("usage");
        assert_eq!(
            usage,
            CgroupUsage {
                cpu_usage_ns: Some(1_500_000_000),
                memory_usage_bytes: Some(60_817_408),
                memory_working_set_bytes: Some(60_817_408 - 2_097_152),
                memory_rss_bytes: Some(52_428_800),
                memory_limit_bytes: Some(134_217_728),
                pids: Some(3),
            }
        );
    }

    #[test]
    fn cgroup_v2_figures() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        write(
            &root.join(CGROUP.trim_start_matches('/')),
            &[
                (
                    "cpu.stat",
                    "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\n",
                ),
                ("memory.current", "56623104\n"),
                ("memory.max", "max\n"),
                ("memory.stat", V2_MEMORY_STAT),
                ("pids.current", "2\n"),
            ],
        );
        let layout = CgroupLayout {
            mode: CgroupMode::Unified,
            v1: Vec::new(),
            v2: Some(root.to_path_buf()),
            v2_controllers: ["cpuset", "cpu", "io", "memory", "pids"]
                .map(str::to_owned)
                .to_vec(),
        };
        let usage = read(&layout, CGROUP).expect("usage");
        assert_eq!(
            usage,
            CgroupUsage {
                cpu_usage_ns: Some(2_500_000_000),
                memory_usage_bytes: Some(56_623_104),
                memory_working_set_bytes: Some(56_623_104 - 3_145_728),
                memory_rss_bytes: Some(52_428_800),
                memory_limit_bytes: None,
                pids: Some(2),
            }
        );
    }

    /// This machine's layout: v1 controllers, and a cgroup2 mount that
    /// holds only hugetlb. Every figure comes from the v1 files, the cpu
    /// one too although cgroup2 has a `cpu.stat` of its own.
    #[test]
    fn hybrid_reads_each_controller_where_it_is_bound() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        let c = CGROUP.trim_start_matches('/');
        write(
            &root.join("cpuacct").join(c),
            &[("cpuacct.usage", "7000\n")],
        );
        write(
            &root.join("memory").join(c),
            &[
                ("memory.usage_in_bytes", "4096000\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.stat", "total_rss 1000\ntotal_inactive_file 96000\n"),
            ],
        );
        write(&root.join("pids").join(c), &[("pids.current", "1\n")]);
        write(
            &root.join("unified").join(c),
            &[("cpu.stat", "usage_usec 99\n")],
        );
        let layout = CgroupLayout {
            mode: CgroupMode::Hybrid,
            v1: v1(root, &["cpu", "cpuacct", "memory", "pids"]),
            v2: Some(root.join("unified")),
            v2_controllers: vec!["hugetlb".into()],
        };
        let usage = read(&layout, CGROUP).expect("usage");
        assert_eq!(usage.cpu_usage_ns, Some(7000));
        assert_eq!(usage.memory_usage_bytes, Some(4_096_000));
        assert_eq!(usage.memory_working_set_bytes, Some(4_000_000));
        assert_eq!(usage.memory_rss_bytes, Some(1000));
        assert_eq!(usage.memory_limit_bytes, None, "v1's huge limit is none");
        assert_eq!(usage.pids, Some(1));

        // A hybrid host whose memory controller sits on cgroup2 reads v2
        // files for memory and v1 files for the rest.
        write(
            &root.join("unified").join(c),
            &[
                ("memory.current", "8192\n"),
                ("memory.max", "65536\n"),
                ("memory.stat", "anon 4096\ninactive_file 4096\n"),
            ],
        );
        let layout = CgroupLayout {
            v1: v1(root, &["cpuacct", "pids"]),
            v2_controllers: vec!["memory".into()],
            ..layout
        };
        let usage = read(&layout, CGROUP).expect("usage");
        assert_eq!(usage.cpu_usage_ns, Some(7000));
        assert_eq!(usage.memory_usage_bytes, Some(8192));
        assert_eq!(usage.memory_working_set_bytes, Some(4096));
        assert_eq!(usage.memory_limit_bytes, Some(65536));
    }

    #[test]
    fn a_removed_cgroup_is_reported_gone() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = CgroupLayout {
            mode: CgroupMode::Unified,
            v1: Vec::new(),
            v2: Some(tmp.path().to_path_buf()),
            v2_controllers: Vec::new(),
        };
        assert!(read(&layout, CGROUP).is_err());
    }
}
