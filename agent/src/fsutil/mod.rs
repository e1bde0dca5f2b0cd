//! File system helpers shared by every subsystem, for trees berth does not
//! fully control: unpacked layers, containers' writable layers, pod volume
//! directories, image root filesystems. Their shape (depth, symlinks,
//! mounts inside, FIFOs where files belong) may be hostile, so nothing
//! here recurses, follows a symlink out, crosses into another mount, or
//! opens what is not a regular file.

pub mod atomic;
pub mod crash;
pub mod remove;
pub mod untrusted;

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

pub use atomic::{remove_stale_temps, write_atomic};
pub use crash::crash_point;
pub use remove::{Left, RemoveError, Why, remove_tree, remove_tree_at};
pub use untrusted::{UntrustedFileError, read_untrusted};

/// `create_dir_all`, with `mode` (before the umask) for what it creates.
pub fn create_dir_all_with_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// Removes the tree at `path` (a missing one is success) without
/// recursion, symlinks or crossing into a mount ([`remove_tree`]).
pub fn remove_dir_all_if_exists(path: &Path) -> std::io::Result<()> {
    remove_tree(path).map_err(std::io::Error::other)
}

/// Removes the file at `path`; one that is not there is fine.
pub fn remove_file_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Whether a process `pid` exists: leftovers whose name carries their
/// writer's pid (atomic-write temps, unpack staging directories) belong to
/// nobody once it is gone.
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// A path from such a tree, for a message: lossy UTF-8, and beyond `max`
/// bytes only its start and end (a hostile path can be megabytes long).
pub fn abbreviate(path: &[u8], max: usize) -> String {
    if path.len() <= max {
        return String::from_utf8_lossy(path).into_owned();
    }
    let half = max / 2;
    format!(
        "{}…({} bytes)…{}",
        String::from_utf8_lossy(&path[..half]),
        path.len(),
        String::from_utf8_lossy(&path[path.len() - half..])
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn our_own_process_is_alive_and_a_free_pid_is_not() {
        assert!(super::process_alive(std::process::id()));
        // Above the kernel's pid_max ceiling (4M): never a live process.
        assert!(!super::process_alive(5_000_000));
    }
}
