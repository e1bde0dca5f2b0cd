//! Overlay root filesystems with long layer lists: 150 lowerdirs whose
//! absolute paths together are far longer than the one page `mount(2)`
//! accepts for options, through both the new mount API (`lowerdir+`) and the
//! short-name fallback for kernels before 6.8.

use std::path::{Path, PathBuf};

use berth::runtime::rootfs::{self, MountMethod};
use berth_e2e::{TestDirs, require_root, rootfs as layers};

const LAYERS: usize = 150;

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Err(err) = rootfs::unmount(&self.0) {
            eprintln!("cleanup: {}", berth::status::chain(&err));
        }
    }
}

fn is_mounted(target: &Path) -> bool {
    berth::runtime::mountinfo::read()
        .expect("mountinfo")
        .iter()
        .any(|m| m.mount_point == target && m.fs_type == "overlay")
}

fn check(method: MountMethod) {
    require_root();
    let dirs = TestDirs::new();
    let lowerdirs = layers::many_layers(&dirs.temp.path().join("layers"), LAYERS);
    let total: usize = lowerdirs.iter().map(|d| d.as_os_str().len() + 1).sum();
    assert!(
        total > 4096 * 2,
        "the list ({total} bytes) must overflow a page"
    );
    let base = dirs.root.join("containers/c");
    let (upper, work, target) = (base.join("upper"), base.join("work"), base.join("rootfs"));
    for dir in [&upper, &work, &target] {
        std::fs::create_dir_all(dir).expect("dirs");
    }
    let _guard = Unmount(target.clone());
    match method {
        MountMethod::LowerdirPlus => {
            rootfs::mount_lowerdir_plus(&lowerdirs, &upper, &work, &target)
        }
        MountMethod::ShortNames => rootfs::mount_short_names(&lowerdirs, &upper, &work, &target),
    }
    .unwrap_or_else(|err| panic!("{method:?}: {}", berth::status::chain(&err)));
    assert!(is_mounted(&target));
    for n in [1, 75, LAYERS - 1] {
        let file = target.join("layers").join(n.to_string());
        assert_eq!(
            std::fs::read_to_string(&file).expect("a layer's file"),
            format!("{n}\n")
        );
    }
    assert!(
        target.join("bin/busybox").is_file(),
        "the bottom layer is visible"
    );
    std::fs::write(target.join("new"), "x").expect("writes go to the upper dir");
    assert!(upper.join("new").is_file());
    rootfs::unmount(&target).expect("unmount");
    assert!(!is_mounted(&target));
}

#[test]
fn long_lowerdir_list_mounts_with_the_new_mount_api() {
    check(MountMethod::LowerdirPlus);
}

#[test]
fn long_lowerdir_list_mounts_with_short_names() {
    check(MountMethod::ShortNames);
}

#[test]
fn create_picks_the_new_api_and_remove_cleans_up() {
    require_root();
    let dirs = TestDirs::new();
    let paths = berth::paths::Paths::new(&dirs.root, &dirs.run_root);
    let lowerdirs = layers::many_layers(&dirs.temp.path().join("layers"), LAYERS);
    let target = dirs.run_root.join("bundles/c/rootfs");
    let _guard = Unmount(target.clone());
    let made = rootfs::create(&paths, "c", &lowerdirs, &target, None).expect("create");
    assert_eq!(
        made.method,
        MountMethod::LowerdirPlus,
        "this kernel is 6.8+"
    );
    assert!(is_mounted(&target));
    assert!(rootfs::remove(&paths, "c", &target).is_empty());
    assert!(!is_mounted(&target));
    assert!(!paths.container_layer("c").exists());
    let err = rootfs::create(
        &paths,
        "d",
        &[dirs.temp.path().join("missing")],
        &target,
        None,
    )
    .expect_err("a missing layer");
    assert!(err.to_string().contains("missing"), "{err}");
}
