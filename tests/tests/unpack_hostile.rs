//! Hostile layers: every attempt to create or modify something outside the
//! snapshot root is rejected or confined. Each test unpacks with the real
//! unpacker onto the real filesystem, next to a sentinel tree, and proves
//! by a full listing with hashes that nothing outside the root changed,
//! that the host's /etc/passwd is untouched, and that a rejected layer
//! leaves no snapshot and no staging directory behind.

use std::path::{Path, PathBuf};

use berth::image::content::ContentStore;
use berth::image::snapshot::{LayerPlan, SnapshotError, Snapshotter};
use berth::image::unpack::UnpackError;
use berth_e2e::layers::{GZIP, Layer, LayerBuilder, sha256_digest, tree_listing};
use berth_e2e::require_root;
use tar::EntryType;

struct Fixture {
    _temp: tempfile::TempDir,
    /// Parent of both the store and the sentinel tree.
    base: PathBuf,
    sentinel: PathBuf,
    content: ContentStore,
    snapshots: Snapshotter,
}

impl Fixture {
    fn new() -> Self {
        require_root();
        let temp = tempfile::Builder::new()
            .prefix("bt-unpack-")
            .tempdir()
            .expect("tempdir");
        let base = temp.path().to_path_buf();
        let sentinel = base.join("sentinel");
        std::fs::create_dir_all(sentinel.join("dir")).expect("sentinel dirs");
        std::fs::write(sentinel.join("victim.txt"), b"original").expect("sentinel file");
        std::fs::write(sentinel.join("dir/secret"), b"secret").expect("sentinel file");
        std::os::unix::fs::symlink("victim.txt", sentinel.join("link")).expect("sentinel link");
        let content = ContentStore::open(base.join("root/content")).expect("content store");
        let snapshots = Snapshotter::open(base.join("root/snapshots")).expect("snapshots");
        Self {
            _temp: temp,
            base,
            sentinel,
            content,
            snapshots,
        }
    }

    /// The snapshot root is `<base>/root/snapshots/.staging/<x>` while the
    /// layer is unpacked: this many `..` reach `<base>`.
    const UP_TO_BASE: &'static str = "../../../..";

    fn plan(&self, layer: &Layer) -> LayerPlan {
        let blob = self
            .content
            .write_blob(&layer.gzip())
            .expect("storing the layer");
        LayerPlan {
            blob,
            media_type: GZIP.to_owned(),
            chain_id: layer.diff_id().parse().expect("chain id"),
            diff_id: layer.diff_id().parse().expect("diff id"),
        }
    }

    /// Unpacks `layer` and checks the world outside the snapshot is as it
    /// was. Returns the unpack result and the snapshot path.
    fn unpack(&self, layer: &Layer) -> (Result<u64, SnapshotError>, PathBuf) {
        let outside_before = self.outside();
        let plan = self.plan(layer);
        // (merge fix: `unpack` now returns `Option<u64>`, None = already there)
        let result = self
            .snapshots
            .unpack(&self.content, &plan)
            .map(|size| size.unwrap_or(0));
        assert_eq!(
            self.outside(),
            outside_before,
            "something outside the snapshot root changed"
        );
        let staging: Vec<_> = std::fs::read_dir(self.snapshots.staging_dir())
            .expect("staging dir")
            .collect();
        assert!(staging.is_empty(), "staging leftovers: {staging:?}");
        (result, self.snapshots.path(&plan.chain_id).expect("path"))
    }

    /// Everything an escape could touch: the sentinel tree, the base
    /// directory's own entries, and the host's /etc/passwd.
    fn outside(&self) -> (Vec<(PathBuf, String)>, Vec<String>, String) {
        let sentinel = tree_listing(&self.sentinel).into_iter().collect();
        let mut top: Vec<String> = std::fs::read_dir(&self.base)
            .expect("base")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        let passwd = std::fs::read("/etc/passwd").expect("reading /etc/passwd");
        let passwd_meta = std::fs::metadata("/etc/passwd").expect("stat /etc/passwd");
        let passwd_state = format!(
            "{} nlink={}",
            sha256_digest(&passwd),
            std::os::unix::fs::MetadataExt::nlink(&passwd_meta)
        );
        (sentinel, top, passwd_state)
    }

    fn assert_rejected(&self, result: Result<u64, SnapshotError>, snapshot: &Path) -> UnpackError {
        assert!(!snapshot.exists(), "a rejected layer left a snapshot");
        match result {
            Err(SnapshotError::Unpack { source, .. }) => source,
            other => panic!("expected the layer to be rejected, got {other:?}"),
        }
    }

    /// `<base>` as a path relative to `/`, i.e. where an absolute path to
    /// the sentinel lands inside a confining root.
    fn base_inside(&self, snapshot: &Path) -> PathBuf {
        snapshot.join(self.base.strip_prefix("/").expect("absolute base"))
    }
}

#[test]
fn dot_dot_escape_is_rejected() {
    let fx = Fixture::new();
    let escape = format!("{}/sentinel/victim.txt", Fixture::UP_TO_BASE);
    let layer = LayerBuilder::new()
        .file("ok.txt", b"fine", 0o644)
        .raw(EntryType::Regular, escape.as_bytes(), b"", b"pwned")
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    let err = fx.assert_rejected(result, &snapshot);
    assert!(matches!(err, UnpackError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("sentinel/victim.txt"), "{err}");

    let layer = LayerBuilder::new()
        .raw(EntryType::Regular, b"../../escape", b"", b"pwned")
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    fx.assert_rejected(result, &snapshot);
    assert!(!fx.base.join("root/escape").exists());
}

#[test]
fn absolute_path_is_confined() {
    let fx = Fixture::new();
    let absolute = fx.sentinel.join("victim.txt");
    let layer = LayerBuilder::new()
        .raw(
            EntryType::Regular,
            absolute.to_str().expect("utf-8").as_bytes(),
            b"",
            b"pwned",
        )
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    result.expect("an absolute path is confined, not rejected");
    let confined = fx.base_inside(&snapshot).join("sentinel/victim.txt");
    assert_eq!(std::fs::read(&confined).expect("confined file"), b"pwned");
}

#[test]
fn file_written_through_a_symlink_to_root_is_confined() {
    let fx = Fixture::new();
    let through = format!("evil{}", fx.sentinel.join("victim.txt").display());
    let layer = LayerBuilder::new()
        .symlink("evil", "/")
        .raw(EntryType::Regular, through.as_bytes(), b"", b"pwned")
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    result.expect("writes through an in-layer symlink are confined");
    assert_eq!(
        std::fs::read(fx.base_inside(&snapshot).join("sentinel/victim.txt")).expect("confined"),
        b"pwned"
    );
    assert_eq!(
        std::fs::read_link(snapshot.join("evil")).expect("symlink kept verbatim"),
        Path::new("/")
    );
}

#[test]
fn symlink_to_an_outside_directory_is_followed_only_inside() {
    let fx = Fixture::new();
    let outside_dir = fx.sentinel.join("dir");
    let outside_dir = outside_dir.to_str().expect("utf-8");
    // The same absolute path exists inside the layer: writes land there.
    let mut builder = LayerBuilder::new();
    let mut so_far = String::new();
    for part in outside_dir.trim_start_matches('/').split('/') {
        so_far = if so_far.is_empty() {
            part.to_owned()
        } else {
            format!("{so_far}/{part}")
        };
        builder = builder.dir(&so_far, 0o755);
    }
    let layer = builder
        .symlink("d", outside_dir)
        .file("d/secret", b"pwned", 0o644)
        .file("d/new", b"pwned", 0o644)
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    result.expect("confined");
    let inside = fx.base_inside(&snapshot).join("sentinel/dir");
    assert_eq!(
        std::fs::read(inside.join("secret")).expect("confined"),
        b"pwned"
    );
    assert_eq!(
        std::fs::read(inside.join("new")).expect("confined"),
        b"pwned"
    );

    // Dangling inside the layer: the write is refused, never sent outside.
    let layer = LayerBuilder::new()
        .symlink("d", outside_dir)
        .file("d/secret", b"pwned", 0o644)
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    let err = fx.assert_rejected(result, &snapshot);
    assert!(matches!(err, UnpackError::Confined { .. }), "{err}");
}

#[test]
fn relative_symlink_chain_that_climbs_out_is_confined() {
    let fx = Fixture::new();
    let layer = LayerBuilder::new()
        .symlink("up", Fixture::UP_TO_BASE)
        .file("up/sentinel/victim.txt", b"pwned", 0o644)
        .dir("a", 0o755)
        .symlink("a/c1", "..")
        .symlink("c2", "a/c1/../..")
        .symlink("c3", "c2/a/c1/../../..")
        .file("c3/sentinel/dir/secret", b"pwned", 0o644)
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    result.expect("confined");
    // `..` at the root stays at the root, so both land at the top.
    assert_eq!(
        std::fs::read(snapshot.join("sentinel/victim.txt")).expect("confined"),
        b"pwned"
    );
    assert_eq!(
        std::fs::read(snapshot.join("sentinel/dir/secret")).expect("confined"),
        b"pwned"
    );
}

#[test]
fn hardlink_to_host_etc_passwd_is_rejected() {
    let fx = Fixture::new();
    let layer = LayerBuilder::new()
        .hardlink("passwd", "/etc/passwd")
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    let err = fx.assert_rejected(result, &snapshot);
    assert!(err.to_string().contains("etc/passwd"), "{err}");

    // Through a symlink to /etc: still resolved inside the layer root.
    let layer = LayerBuilder::new()
        .symlink("etcl", "/etc")
        .hardlink("passwd", "etcl/passwd")
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    fx.assert_rejected(result, &snapshot);

    let escape = format!("{}/sentinel/victim.txt", Fixture::UP_TO_BASE);
    let layer = LayerBuilder::new()
        .raw(EntryType::Link, b"victim", escape.as_bytes(), b"")
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    let err = fx.assert_rejected(result, &snapshot);
    assert!(matches!(err, UnpackError::UnsafeLinkTarget { .. }), "{err}");
}

#[test]
fn hardlink_to_the_layers_own_etc_passwd_links_inside() {
    let fx = Fixture::new();
    let layer = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o644)
        .hardlink("passwd", "/etc/passwd")
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    result.expect("a link inside the layer is fine");
    let a = std::fs::metadata(snapshot.join("passwd")).expect("link");
    let b = std::fs::metadata(snapshot.join("etc/passwd")).expect("target");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn whiteout_of_dot_dot_is_rejected() {
    let fx = Fixture::new();
    for path in [&b".wh.."[..], b"sub/.wh...", b".wh..."] {
        let layer = LayerBuilder::new()
            .dir("sub", 0o755)
            .raw(EntryType::Regular, path, b"", b"")
            .build();
        let (result, snapshot) = fx.unpack(&layer);
        let err = fx.assert_rejected(result, &snapshot);
        assert!(matches!(err, UnpackError::UnsafePath { .. }), "{err}");
    }
}

#[test]
fn entry_replacing_a_planted_symlink_does_not_write_through_it() {
    let fx = Fixture::new();
    let victim = fx.sentinel.join("victim.txt");
    let dir = fx.sentinel.join("dir");
    let layer = LayerBuilder::new()
        .symlink("victim", victim.to_str().expect("utf-8"))
        .file("victim", b"pwned", 0o4755)
        .symlink("d", dir.to_str().expect("utf-8"))
        .dir("d", 0o777)
        .build();
    let (result, snapshot) = fx.unpack(&layer);
    result.expect("replacing entries is legitimate");
    let meta = std::fs::symlink_metadata(snapshot.join("victim")).expect("file");
    assert!(meta.is_file(), "the symlink was replaced by the file");
    assert!(
        std::fs::symlink_metadata(snapshot.join("d"))
            .expect("dir")
            .is_dir()
    );
}
