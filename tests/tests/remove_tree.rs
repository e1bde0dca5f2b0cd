//! The one removal primitive every cleanup uses (`berth::fsutil`), on the
//! real filesystem with real mounts: trees of any depth are removed
//! without recursion, and nothing mounted inside a tree is ever entered —
//! a hostPath bind-mounted under a container's bundle keeps its files
//! whatever happens to the bundle.

use std::path::{Path, PathBuf};

use berth::fsutil::{RemoveError, Why, remove_tree};
use berth_e2e::layers::{deep_tree, tree_listing};
use berth_e2e::require_root;

/// A bind mount (or tmpfs) that is unmounted when dropped, even when the
/// test fails.
struct Mounted(PathBuf);

impl Mounted {
    fn bind(source: &Path, target: &Path) -> Self {
        nix::mount::mount(
            Some(source),
            target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap_or_else(|err| panic!("bind-mounting {}: {err}", source.display()));
        Self(target.to_path_buf())
    }

    fn tmpfs(target: &Path) -> Self {
        nix::mount::mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap_or_else(|err| panic!("mounting a tmpfs at {}: {err}", target.display()));
        Self(target.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(err) = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {err}", self.0.display());
        }
    }
}

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bt-remove-")
        .tempdir()
        .expect("tempdir")
}

#[test]
fn a_20000_deep_tree_is_removed() {
    require_root();
    // On tmpfs: this host's ext4 (no journal) makes directories slowly
    // after many were deleted, which would only slow the test down.
    let temp = tempfile::Builder::new()
        .prefix("bt-remove-")
        .tempdir_in("/dev/shm")
        .expect("tempdir");
    let tree = temp.path().join("tree");
    std::fs::create_dir(&tree).expect("root");
    deep_tree(&tree, 20_000);
    remove_tree(&tree).expect("removed");
    assert!(!tree.exists());
}

#[test]
fn a_bind_mounted_host_path_inside_a_tree_survives_its_removal() {
    require_root();
    let temp = temp();
    // A hostPath directory on the same filesystem (same st_dev: only the
    // mount ID tells the bind mount apart).
    let host_path = temp.path().join("host-path");
    std::fs::create_dir_all(host_path.join("data/deeper")).expect("host path");
    std::fs::write(host_path.join("data/deeper/precious"), b"precious").expect("file");
    let before = tree_listing(&host_path);
    // A bundle as the runtime lays it out: a subPath staging mount point,
    // a tmpfs volume and the container's own files.
    let bundle = temp.path().join("bundle");
    let sub_path = bundle.join("subpaths/0");
    let tmpfs = bundle.join("volumes/cache");
    for dir in [&sub_path, &tmpfs, &bundle.join("rootfs/etc")] {
        std::fs::create_dir_all(dir).expect("bundle dirs");
    }
    std::fs::write(bundle.join("config.json"), b"{}").expect("config");
    std::fs::write(bundle.join("rootfs/etc/hosts"), b"127.0.0.1").expect("file");
    let _bind = Mounted::bind(&host_path.join("data"), &sub_path);
    let _tmpfs = Mounted::tmpfs(&tmpfs);
    std::fs::write(tmpfs.join("in-tmpfs"), b"volume").expect("tmpfs file");

    let err = remove_tree(&bundle).expect_err("mount points are left in place");
    let RemoveError::LeftInPlace { left, more, .. } = &err else {
        panic!("expected LeftInPlace, got {err}");
    };
    let mut reported: Vec<&Path> = left.iter().map(|l| l.path.as_path()).collect();
    reported.sort();
    assert_eq!(reported, [sub_path.as_path(), tmpfs.as_path()], "{err}");
    assert!(
        left.iter().all(|l| matches!(l.why, Why::MountPoint)),
        "{err}"
    );
    assert_eq!(*more, 0);
    assert!(err.to_string().contains("is a mount point"), "{err}");
    // The mounted content is untouched, the rest of the bundle is gone.
    assert_eq!(tree_listing(&host_path), before);
    assert_eq!(
        std::fs::read(tmpfs.join("in-tmpfs")).expect("tmpfs file"),
        b"volume"
    );
    assert!(!bundle.join("config.json").exists());
    assert!(!bundle.join("rootfs").exists());
}

#[test]
fn a_tree_that_is_itself_a_mount_point_is_not_entered() {
    require_root();
    let temp = temp();
    let host_path = temp.path().join("host-path");
    std::fs::create_dir(&host_path).expect("host path");
    std::fs::write(host_path.join("precious"), b"precious").expect("file");
    let target = temp.path().join("target");
    std::fs::create_dir(&target).expect("target");
    let _bind = Mounted::bind(&host_path, &target);
    let err = remove_tree(&target).expect_err("a mount point");
    assert!(err.only_mount_points(), "{err}");
    assert_eq!(
        std::fs::read(host_path.join("precious")).expect("file"),
        b"precious"
    );
}
