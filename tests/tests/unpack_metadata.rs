//! What a layer says about its files survives unpacking: owners, modes
//! (setuid, setgid, sticky), xattrs, mtimes, hardlinks, symlinks, device
//! nodes and fifos — for gzip, zstd and uncompressed layers. A layer whose
//! content does not match its diffID is rejected and stores nothing.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth::image::content::ContentStore;
use berth::image::remote::reference::ImageReference;
use berth::image::service::{ImageService, ServiceError};
use berth::image::snapshot::{LayerPlan, SnapshotError, Snapshotter};
use berth::paths::Paths;
use berth_e2e::layers::{
    GZIP, Layer, LayerBuilder, MTIME, PLAIN, ZSTD, oci_archive, write_oci_layout_claiming,
};
use berth_e2e::{TestDirs, require_root};

fn rich_layer() -> Layer {
    LayerBuilder::new()
        .dir("home", 0o755)
        .dir_owned("home/user", 0o2775, 1000, 1001)
        .file_owned("home/user/notes", b"private", 0o640, 1000, 1001)
        .dir("bin", 0o755)
        .file("bin/su", b"#!setuid", 0o4755)
        .file("bin/wall", b"#!setgid", 0o2755)
        .dir("tmp", 0o1777)
        .file_with_xattrs(
            "bin/ping",
            b"ping",
            &[
                ("user.berth.test", b"hello"),
                ("trusted.berth.test", b"secret"),
            ],
        )
        .file("bin/a", b"shared inode", 0o644)
        .hardlink("bin/b", "bin/a")
        .symlink("bin/sh", "busybox")
        .dir("dev", 0o755)
        .char_device("dev/null", 1, 3, 0o666)
        .block_device("dev/loop9", 7, 9, 0o660)
        .fifo("dev/initctl", 0o600)
        .build()
}

struct Store {
    _temp: tempfile::TempDir,
    content: ContentStore,
    snapshots: Snapshotter,
}

fn store() -> Store {
    require_root();
    let temp = tempfile::Builder::new()
        .prefix("bt-meta-")
        .tempdir()
        .expect("tempdir");
    Store {
        content: ContentStore::open(temp.path().join("content")).expect("content"),
        snapshots: Snapshotter::open(temp.path().join("snapshots")).expect("snapshots"),
        _temp: temp,
    }
}

fn unpack(
    store: &Store,
    layer: &Layer,
    media_type: &str,
    diff_id: &str,
) -> (Result<Option<u64>, SnapshotError>, PathBuf) {
    let blob = store
        .content
        .write_blob(&layer.compressed(media_type))
        .expect("blob");
    let plan = LayerPlan {
        blob,
        media_type: media_type.to_owned(),
        diff_id: diff_id.parse().expect("diff id"),
        chain_id: diff_id.parse().expect("chain id"),
    };
    let path = store.snapshots.path(&plan.chain_id).expect("path");
    (store.snapshots.unpack(&store.content, &plan), path)
}

fn xattr(path: &Path, name: &str) -> Vec<u8> {
    let mut value = vec![0u8; 64];
    let len = rustix::fs::lgetxattr(path, name, &mut value)
        .unwrap_or_else(|err| panic!("xattr {name} of {}: {err}", path.display()));
    value.truncate(len);
    value
}

fn check_rich_snapshot(root: &Path) {
    let stat = |rel: &str| {
        std::fs::symlink_metadata(root.join(rel)).unwrap_or_else(|err| panic!("{rel}: {err}"))
    };
    let notes = stat("home/user/notes");
    assert_eq!(
        (notes.uid(), notes.gid(), notes.mode() & 0o7777),
        (1000, 1001, 0o640)
    );
    assert_eq!(notes.mtime(), i64::try_from(MTIME).expect("mtime"));
    let home = stat("home/user");
    assert!(home.is_dir());
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1000, 1001, 0o2775)
    );
    assert_eq!(
        home.mtime(),
        i64::try_from(MTIME).expect("mtime"),
        "directory mtimes are set last"
    );
    assert_eq!(
        stat("bin/su").mode() & 0o7777,
        0o4755,
        "setuid survives chown"
    );
    assert_eq!(
        stat("bin/wall").mode() & 0o7777,
        0o2755,
        "setgid survives chown"
    );
    assert_eq!(stat("tmp").mode() & 0o7777, 0o1777, "sticky bit");
    assert_eq!(xattr(&root.join("bin/ping"), "user.berth.test"), b"hello");
    assert_eq!(
        xattr(&root.join("bin/ping"), "trusted.berth.test"),
        b"secret"
    );
    let (a, b) = (stat("bin/a"), stat("bin/b"));
    assert_eq!(a.ino(), b.ino(), "hardlinks share an inode");
    assert_eq!(a.nlink(), 2);
    let sh = stat("bin/sh");
    assert!(sh.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).expect("link"),
        Path::new("busybox")
    );
    assert_eq!(
        sh.mtime(),
        i64::try_from(MTIME).expect("mtime"),
        "symlink times are set without following"
    );
    let null = stat("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let block = stat("dev/loop9");
    assert!(block.file_type().is_block_device());
    assert_eq!(block.rdev(), rustix::fs::makedev(7, 9));
    assert_eq!(block.mode() & 0o7777, 0o660);
    let fifo = stat("dev/initctl");
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o600);
}

#[test]
fn ownership_modes_xattrs_devices_and_links_survive_gzip() {
    let store = store();
    let layer = rich_layer();
    let (result, root) = unpack(&store, &layer, GZIP, &layer.diff_id());
    let written = result.expect("unpack").expect("freshly unpacked");
    assert!(written > 0);
    check_rich_snapshot(&root);
}

#[test]
fn zstd_layers_unpack_the_same() {
    let store = store();
    let layer = rich_layer();
    let (result, root) = unpack(&store, &layer, ZSTD, &layer.diff_id());
    result.expect("unpack");
    check_rich_snapshot(&root);
}

#[test]
fn uncompressed_layers_unpack_the_same() {
    let store = store();
    let layer = rich_layer();
    let (result, root) = unpack(&store, &layer, PLAIN, &layer.diff_id());
    result.expect("unpack");
    check_rich_snapshot(&root);
}

#[test]
fn empty_layers_become_empty_snapshots() {
    let store = store();
    let layer = LayerBuilder::new().build();
    let (result, root) = unpack(&store, &layer, GZIP, &layer.diff_id());
    assert_eq!(result.expect("unpack"), Some(0));
    assert!(root.is_dir());
    assert_eq!(std::fs::read_dir(&root).expect("ls").count(), 0);
}

#[test]
fn diff_id_mismatch_stores_no_snapshot() {
    let store = store();
    let layer = rich_layer();
    let claimed = format!("sha256:{}", "0".repeat(64));
    let (result, root) = unpack(&store, &layer, GZIP, &claimed);
    match result {
        Err(SnapshotError::DiffIdMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, layer.diff_id());
        }
        other => panic!("expected a diffID mismatch, got {other:?}"),
    }
    assert!(
        !root.exists(),
        "no snapshot for a layer that failed verification"
    );
    assert_eq!(
        std::fs::read_dir(store.snapshots.staging_dir())
            .expect("staging")
            .count(),
        0,
        "no staging leftovers"
    );
}

#[test]
fn image_with_a_wrong_diff_id_is_not_recorded() {
    require_root();
    let dirs = TestDirs::new();
    let layer = rich_layer();
    let layout = dirs.temp.path().join("layout");
    let lie = format!("sha256:{}", "1".repeat(64));
    write_oci_layout_claiming(&layout, "1", &[(&layer, GZIP)], &[lie]);
    let archive = dirs.temp.path().join("lying.tar");
    oci_archive(&layout, &archive);

    let service = ImageService::open(&Paths::new(&dirs.root, &dirs.run_root)).expect("store");
    let name: ImageReference = "registry.local/bt/tampered:1".parse().expect("name");
    let err = service
        .import(&archive, Some(&name))
        .expect_err("must fail");
    assert!(
        matches!(
            err,
            ServiceError::Snapshot(SnapshotError::DiffIdMismatch { .. })
        ),
        "{err}"
    );
    assert!(service.list().expect("list").is_empty(), "nothing recorded");
    assert!(
        service.snapshots().list().expect("snapshots").is_empty(),
        "no snapshot"
    );
    // What the failed import stored is garbage now: GC removes all of it.
    let report = service.gc().expect("gc");
    assert!(!report.blobs.is_empty());
    assert!(service.content().list().expect("blobs").is_empty());
}
