//! OCI whiteouts and opaque directories, unpacked into snapshots and mounted
//! as real overlay lowerdirs, show exactly the files a Docker/containerd
//! rootfs of the same image shows.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use berth::image::remote::reference::ImageReference;
use berth::image::service::ImageService;
use berth::paths::Paths;
use berth_e2e::layers::{
    GZIP, LayerBuilder, OverlayMount, PLAIN, ZSTD, file_list, oci_archive, write_oci_layout,
};
use berth_e2e::{TestDirs, require_root};

#[test]
fn whiteouts_and_opaque_dirs_give_the_docker_rootfs() {
    require_root();
    let dirs = TestDirs::new();
    let base = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/keep.conf", b"keep", 0o644)
        .file("etc/remove.conf", b"remove", 0o644)
        .dir("var", 0o755)
        .dir("var/cache", 0o755)
        .file("var/cache/old1", b"1", 0o644)
        .file("var/cache/old2", b"2", 0o644)
        .dir("var/lib", 0o755)
        .dir("var/lib/dir", 0o755)
        .file("var/lib/dir/a", b"a", 0o644)
        .file("var/lib/dir/b", b"b", 0o644)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"tool", 0o755)
        .file("usr/bin/gone", b"gone", 0o755)
        .build();
    let middle = LayerBuilder::new()
        .dir("etc", 0o755)
        .whiteout("etc", "remove.conf")
        .dir("var", 0o755)
        .dir("var/cache", 0o755)
        .opaque("var/cache")
        .file("var/cache/new", b"new", 0o644)
        .dir("var/lib", 0o755)
        .whiteout("var/lib", "dir")
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool2", b"tool2", 0o755)
        .build();
    // Re-creates the whited-out directory with new content only, and hides
    // a base file from a layer two levels up.
    let top = LayerBuilder::new()
        .dir("var", 0o755)
        .dir("var/lib", 0o755)
        .dir("var/lib/dir", 0o755)
        .file("var/lib/dir/c", b"c", 0o644)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .whiteout("usr/bin", "gone")
        .build();
    let layout = dirs.temp.path().join("layout");
    write_oci_layout(
        &layout,
        "1",
        &[(&base, GZIP), (&middle, ZSTD), (&top, PLAIN)],
    );
    let archive = dirs.temp.path().join("whiteouts.tar");
    oci_archive(&layout, &archive);

    let service = ImageService::open(&Paths::new(&dirs.root, &dirs.run_root)).expect("store");
    let name: ImageReference = "registry.local/bt/whiteouts:1".parse().expect("name");
    service.import(&archive, Some(&name)).expect("import");
    let lowerdirs = service.ensure_unpacked(&name).expect("lowerdirs");
    assert_eq!(lowerdirs.len(), 3);

    // The middle snapshot holds overlayfs' forms of the OCI markers.
    let middle_dir = &lowerdirs[1];
    let whiteout = std::fs::symlink_metadata(middle_dir.join("etc/remove.conf")).expect("whiteout");
    assert!(
        whiteout.file_type().is_char_device(),
        "a whiteout is a char device"
    );
    assert_eq!(whiteout.rdev(), 0, "with device number 0/0");
    assert!(!middle_dir.join("etc/.wh.remove.conf").exists());
    assert!(!middle_dir.join("var/cache/.wh..wh..opq").exists());
    let mut value = [0u8; 8];
    let len = rustix::fs::lgetxattr(
        middle_dir.join("var/cache"),
        "trusted.overlay.opaque",
        &mut value,
    )
    .expect("opaque xattr");
    assert_eq!(&value[..len], b"y");

    let mount = OverlayMount::new(dirs.temp.path(), &lowerdirs);
    assert_eq!(
        file_list(&mount.mountpoint),
        [
            "etc",
            "etc/keep.conf",
            "usr",
            "usr/bin",
            "usr/bin/tool",
            "usr/bin/tool2",
            "var",
            "var/cache",
            "var/cache/new",
            "var/lib",
            "var/lib/dir",
            "var/lib/dir/c",
        ]
    );
    assert_eq!(
        std::fs::read(mount.mountpoint.join("var/cache/new")).expect("read"),
        b"new"
    );
}
