//! Filesystem operations on trees berth does not fully control: unpacked
//! layers, containers' writable layers, pod volume directories. Their
//! shape (depth, symlinks, mounts inside) may be hostile, so nothing here
//! recurses, follows a symlink or crosses into another mount.

pub mod remove;

pub use remove::{Left, RemoveError, Why, remove_tree, remove_tree_at};

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
