//! Small file system helpers shared by every subsystem.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// `create_dir_all`, with `mode` (before the umask) for what it creates.
pub fn create_dir_all_with_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

/// `remove_dir_all`, where a missing directory is success.
pub fn remove_dir_all_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
