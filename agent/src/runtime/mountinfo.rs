//! `/proc/self/mountinfo`, parsed: which filesystems are mounted where. The
//! rootfs code asks it whether an overlay is mounted, cleanup asks which
//! mounts are left under a directory, and cgroup detection reads the cgroup
//! hierarchies from it.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The path inside the filesystem that is mounted (`/` for a whole fs).
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// Filesystem-specific options, e.g. `rw,memory` for a cgroup v1
    /// hierarchy or `lowerdir=…` for overlay.
    pub super_options: String,
}

/// Reads this process's mount table.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (head, tail) = line.split_once(" - ")?;
    let mut head = head.split(' ');
    let root = unescape(head.nth(3)?);
    let mount_point = PathBuf::from(unescape(head.next()?));
    let mut tail = tail.split(' ');
    let fs_type = tail.next()?.to_string();
    let source = unescape(tail.next()?);
    let super_options = tail.next().unwrap_or("").to_string();
    Some(MountEntry {
        root,
        mount_point,
        fs_type,
        source,
        super_options,
    })
}

/// The kernel escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|digits| {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                u8::try_from(value).ok()
            });
        if let Some(value) = escaped {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether something is mounted exactly at `path`.
pub fn is_mount_point(mounts: &[MountEntry], path: &Path) -> bool {
    mounts.iter().any(|m| m.mount_point == path)
}

/// Whether `path` is the root of a mount, asked of the kernel directly
/// (`statx` `STATX_ATTR_MOUNT_ROOT`, Linux ≥ 5.8) instead of reading the
/// whole mount table, which costs milliseconds on a host with many mounts.
/// Falls back to the mount table on older kernels.
pub fn is_mounted_at(path: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};
    let flags = AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW;
    match rustix::fs::statx(CWD, path, flags, StatxFlags::empty()) {
        Ok(stat)
            if stat
                .stx_attributes_mask
                .contains(StatxAttributes::MOUNT_ROOT) =>
        {
            stat.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        Err(rustix::io::Errno::NOENT) => false,
        _ => read().is_ok_and(|mounts| is_mount_point(&mounts, path)),
    }
}

/// Mount points at or below `dir`, deepest first (the order to unmount them).
pub fn mounts_under(mounts: &[MountEntry], dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .map(|m| m.mount_point.clone())
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_roots_are_told_apart_without_the_mount_table() {
        assert!(is_mounted_at(Path::new("/proc")));
        assert!(!is_mounted_at(Path::new("/proc/self")));
        assert!(!is_mounted_at(Path::new("/no/such/path")));
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_mounted_at(dir.path()));
    }

    const SAMPLE: &str = "\
22 1 254:1 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
40 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 22 0:60 / /run/berth/bundles/c1/rootfs rw,relatime - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w
51 50 0:61 /data /run/berth/bundles/c1/rootfs/with\\040space rw - ext4 /dev/vdb rw
";

    #[test]
    fn parses_fields_and_unescapes_paths() {
        let mounts = parse(SAMPLE);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[2].fs_type, "cgroup");
        assert_eq!(mounts[2].super_options, "rw,memory");
        assert_eq!(mounts[4].fs_type, "overlay");
        assert_eq!(mounts[5].root, "/data");
        assert_eq!(
            mounts[5].mount_point,
            Path::new("/run/berth/bundles/c1/rootfs/with space")
        );
    }

    #[test]
    fn lists_mounts_under_a_directory_deepest_first() {
        let mounts = parse(SAMPLE);
        let under = mounts_under(&mounts, Path::new("/run/berth/bundles/c1"));
        assert_eq!(
            under,
            vec![
                PathBuf::from("/run/berth/bundles/c1/rootfs/with space"),
                PathBuf::from("/run/berth/bundles/c1/rootfs"),
            ]
        );
        assert!(is_mount_point(&mounts, Path::new("/sys/fs/cgroup/unified")));
        assert!(!is_mount_point(&mounts, Path::new("/sys/fs")));
    }
}
