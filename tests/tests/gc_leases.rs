//! Garbage collection against work in progress: blobs and snapshots a pull
//! or import has leased survive a GC in another process (here: another
//! connection to the same database, which SQLite locks the same way), and
//! a GC running in a loop never breaks imports running at the same time.
//! Stale leftovers are removed, live ones kept.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use berth::image::service::{ImageReference, ImageService};
use berth::image::snapshot::LayerPlan;
use berth::paths::Paths;
use berth_e2e::layers::{GZIP, LayerBuilder, ZSTD, busybox_layer, write_oci_layout};
use berth_e2e::{TestDirs, require_root};

fn service(dirs: &TestDirs) -> ImageService {
    ImageService::open(&Paths::new(&dirs.root, &dirs.run_root)).expect("opening the store")
}

#[test]
fn gc_spares_what_an_import_in_progress_has_leased() {
    require_root();
    let dirs = TestDirs::new();
    let importer = service(&dirs);
    let collector = service(&dirs);

    let garbage = collector
        .content()
        .write_blob(b"nobody wants me")
        .expect("garbage");

    let lease = importer.lease("import in progress").expect("lease");
    let config = b"{\"config\": \"being imported\"}";
    let config_digest = berth::image::content::sha256_digest_of(config);
    lease.add_blob(&config_digest).expect("lease blob");
    importer.content().write_blob(config).expect("write blob");
    let layer = LayerBuilder::new().file("hello", b"world", 0o644).build();
    let layer_blob = layer.gzip();
    let plan = LayerPlan {
        blob: berth::image::content::sha256_digest_of(&layer_blob),
        media_type: GZIP.to_owned(),
        diff_id: layer.diff_id().parse().expect("diff id"),
        chain_id: layer.diff_id().parse().expect("chain id"),
    };
    lease.add_blob(&plan.blob).expect("lease layer");
    lease.add_snapshot(&plan.chain_id).expect("lease snapshot");
    importer
        .content()
        .write_blob(&layer_blob)
        .expect("layer blob");
    importer
        .snapshots()
        .unpack(importer.content(), &plan)
        .expect("unpack");

    let report = collector.gc().expect("gc");
    let removed: Vec<&str> = report.blobs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        removed,
        [garbage.to_string().as_str()],
        "only the unleased blob goes"
    );
    assert!(report.snapshots.is_empty());
    assert!(
        importer
            .content()
            .contains(&config_digest)
            .expect("contains")
    );
    assert!(importer.content().contains(&plan.blob).expect("contains"));
    assert!(importer.snapshots().exists(&plan.chain_id).expect("exists"));

    // The import gave up without recording an image: all of it is garbage.
    drop(lease);
    let report = collector.gc().expect("gc");
    assert_eq!(report.blobs.len(), 2);
    assert_eq!(report.snapshots.len(), 1);
    assert!(!importer.snapshots().exists(&plan.chain_id).expect("exists"));
    assert!(importer.content().list().expect("list").is_empty());
}

#[test]
fn gc_in_a_loop_never_breaks_concurrent_imports() {
    require_root();
    let dirs = TestDirs::new();
    let dir = dirs.temp.path().join("layout");
    let top = LayerBuilder::new()
        .dir("srv", 0o755)
        .file("srv/data", &vec![7u8; 256 * 1024], 0o644)
        .build();
    let layout = write_oci_layout(&dir, "1", &[(&busybox_layer(), GZIP), (&top, ZSTD)]);
    let archive = dirs.temp.path().join("image.tar");
    layout.write_archive(&archive);

    let importer = service(&dirs);
    let collector = service(&dirs);
    let done = AtomicBool::new(false);
    let collections = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                collector.gc().expect("gc");
                collections.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Stops the collector even when an assertion below fails.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _done = Done(&done);
        for round in 0..8 {
            let name: ImageReference = format!("registry.local/bt/churn:{round}")
                .parse()
                .expect("name");
            let records = importer
                .import(&archive, Some(&name))
                .unwrap_or_else(|err| {
                    panic!("import round {round}: {}", berth::status::chain(&err))
                });
            assert_eq!(records.len(), 1);
            let lowerdirs = importer.ensure_unpacked(&name).expect("lowerdirs");
            assert!(lowerdirs[1].join("bin/busybox").is_file(), "round {round}");
            assert!(lowerdirs[0].join("srv/data").is_file(), "round {round}");
            let record = &records[0];
            for digest in [&record.manifest_digest, &record.config_digest] {
                assert!(
                    importer.content().contains(digest).expect("contains"),
                    "round {round}: {digest}"
                );
            }
            // Make everything garbage again, so the next round races GC.
            importer.remove(&name, false).expect("rmi");
        }
    });
    assert!(
        collections.load(Ordering::SeqCst) > 0,
        "GC ran while importing"
    );
}

#[test]
fn stale_leftovers_go_and_live_ones_stay() {
    require_root();
    let dirs = TestDirs::new();
    let store = service(&dirs);
    let ingest = store.content().root().join("ingest");
    let day_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    let make = |name: &str, old: bool| {
        let path = ingest.join(name);
        let file = std::fs::File::create(&path).expect("partial");
        if old {
            file.set_modified(day_ago).expect("backdate");
        }
        (path, file)
    };
    let (stale, _f1) = make("aaaa.partial", true);
    let (fresh, _f2) = make("bbbb.partial", false);
    let (locked, locked_file) = make("cccc.partial", true);
    rustix::fs::flock(&locked_file, rustix::fs::FlockOperation::LockExclusive).expect("lock");

    let staging = store.snapshots().staging_dir();
    // Owner gone (a pid above pid_max), owner alive (pid 1) but old, owner
    // alive and recent.
    let orphan = staging.join("abcd-5000000-0011223344556677");
    let old_live = staging.join("abcd-1-0011223344556677");
    let live = staging.join("abcd-1-8899aabbccddeeff");
    for dir in [&orphan, &old_live, &live] {
        std::fs::create_dir_all(dir.join("sub")).expect("staging dir");
    }
    std::fs::File::open(&old_live)
        .expect("open")
        .set_modified(day_ago)
        .expect("backdate");

    let report = store.gc().expect("gc");
    let mut removed: Vec<String> = report.leftovers.iter().map(|r| r.id.clone()).collect();
    removed.sort();
    let mut expected = vec![
        stale.display().to_string(),
        orphan.display().to_string(),
        old_live.display().to_string(),
    ];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(fresh.exists() && locked.exists() && live.exists());
    assert!(!stale.exists() && !orphan.exists() && !old_live.exists());
}
