//! The node's capacity: what a limit a pod leaves out reads as in a
//! downwardAPI `resourceFieldRef` (the kubelet uses the node's
//! allocatable; berth reserves nothing, so it is the capacity).

use std::path::Path;

/// What a limit the pod leaves out reads as (the kubelet uses the node's
/// allocatable resources).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_millis: i128,
    pub memory_bytes: i128,
    pub ephemeral_storage_bytes: i128,
}

/// CPUs the agent may use, total memory, and the size of the file system
/// holding `root` (berth's state: container layers, emptyDirs, logs).
pub fn measure(root: &Path) -> Capacity {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text))
        .unwrap_or(0);
    let storage = rustix::fs::statvfs(root)
        .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
        .unwrap_or(0);
    Capacity {
        cpu_millis: i128::try_from(cpus).unwrap_or(1).saturating_mul(1000),
        memory_bytes: i128::from(memory),
        ephemeral_storage_bytes: i128::from(storage),
    }
}

/// `MemTotal:  24576000 kB` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mem_total_is_read_in_bytes() {
        assert_eq!(
            super::mem_total("MemFree: 1 kB\nMemTotal:       2048 kB\n"),
            Some(2 << 20)
        );
        assert_eq!(super::mem_total("nothing"), None);
    }
}
