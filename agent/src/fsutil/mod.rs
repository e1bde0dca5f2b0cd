//! Filesystem operations on trees berth does not fully control: unpacked
//! layers, containers' writable layers, pod volume directories. Their
//! shape (depth, symlinks, mounts inside) may be hostile, so nothing here
//! recurses, follows a symlink or crosses into another mount.

pub mod remove;

pub use remove::{Left, RemoveError, Why, remove_tree, remove_tree_at};
