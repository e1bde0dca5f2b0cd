//! `berth images`, `rmi` and `prune` against images a container uses or an
//! Image object pins. Each CLI call is its own process reopening the store,
//! so these also show that metadata survives reopening.

use berth::image::service::{ImageReference, ImageService};
use berth::paths::Paths;
use berth_e2e::layers::{GZIP, LayerBuilder, busybox_layer, write_oci_layout};
use berth_e2e::{TestDirs, require_root};

/// Imports a one-layer image (busybox plus a marker file making it
/// distinct) under `name` through the CLI.
fn import(dirs: &TestDirs, name: &str, marker: &str) {
    let dir = dirs.temp.path().join(format!("layout-{marker}"));
    let base = busybox_layer();
    let top = LayerBuilder::new()
        .file(marker, marker.as_bytes(), 0o644)
        .build();
    let layout = write_oci_layout(&dir, "1", &[(&base, GZIP), (&top, GZIP)]);
    let archive = dirs.temp.path().join(format!("{marker}.tar"));
    layout.write_archive(&archive);
    let output = dirs.berth(&["import", archive.to_str().expect("utf-8"), "--name", name]);
    assert!(
        output.status.success(),
        "import {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn listed(dirs: &TestDirs) -> Vec<String> {
    dirs.berth_json(&["images"])
        .as_array()
        .expect("array")
        .iter()
        .map(|image| image["name"].as_str().expect("name").to_owned())
        .collect()
}

fn service(dirs: &TestDirs) -> ImageService {
    ImageService::open(&Paths::new(&dirs.root, &dirs.run_root)).expect("store")
}

fn reference(name: &str) -> ImageReference {
    name.parse().expect("reference")
}

#[test]
fn rmi_refuses_images_in_use_and_names_who_uses_them() {
    require_root();
    let dirs = TestDirs::new();
    let name = "registry.local/bt/app:1";
    import(&dirs, name, "app");
    let store = service(&dirs);
    store
        .hold_for_container("web-1", &reference(name))
        .expect("container hold");

    let output = dirs.berth(&["rmi", name]);
    assert!(!output.status.success(), "rmi of an image in use must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(name)
            && stderr.contains("used by container web-1")
            && stderr.contains("--force"),
        "{stderr}"
    );

    store.release_container("web-1").expect("release");
    store.pin("Image/app", &reference(name)).expect("pin");
    let output = dirs.berth(&["rmi", name]);
    assert!(!output.status.success(), "rmi of a pinned image must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pinned by Image/app"), "{stderr}");
    assert_eq!(listed(&dirs), [name]);

    store.unpin("Image/app").expect("unpin");
    let output = dirs.berth(&["rmi", name]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&format!("untagged {name}")), "{stdout}");
    assert!(
        stdout.contains("deleted"),
        "rmi frees the content: {stdout}"
    );
    assert!(listed(&dirs).is_empty());
    assert!(store.content().list().expect("blobs").is_empty());
    assert!(store.snapshots().list().expect("snapshots").is_empty());
}

#[test]
fn forced_rmi_keeps_a_running_containers_layers() {
    require_root();
    let dirs = TestDirs::new();
    let name = "registry.local/bt/app:2";
    import(&dirs, name, "forced");
    let store = service(&dirs);
    let lowerdirs = store
        .hold_for_container("web-2", &reference(name))
        .expect("hold");

    let output = dirs.berth(&["rmi", "--force", name]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(listed(&dirs).is_empty());
    for dir in &lowerdirs {
        assert!(
            dir.is_dir(),
            "{} went while web-2 runs on it",
            dir.display()
        );
    }

    store.release_container("web-2").expect("release");
    let output = dirs.berth(&["prune"]);
    assert!(output.status.success());
    for dir in &lowerdirs {
        assert!(!dir.exists(), "{} outlived its last user", dir.display());
    }
}

#[test]
fn prune_removes_unused_images_and_reports_the_space() {
    require_root();
    let dirs = TestDirs::new();
    let used = "registry.local/bt/used:1";
    let pinned = "registry.local/bt/pinned:1";
    let unused = "registry.local/bt/unused:1";
    import(&dirs, used, "used");
    import(&dirs, pinned, "pinned");
    import(&dirs, unused, "unused");
    let store = service(&dirs);
    store
        .hold_for_container("c-1", &reference(used))
        .expect("hold");
    store.pin("Image/pinned", &reference(pinned)).expect("pin");

    let report = dirs.berth_json(&["prune"]);
    assert_eq!(report["images"], serde_json::json!([unused]));
    let blobs = report["gc"]["blobs"].as_array().expect("blobs");
    // The unused image's manifest, config and own top layer; busybox is shared.
    assert_eq!(blobs.len(), 3, "{report}");
    assert_eq!(
        report["gc"]["snapshots"]
            .as_array()
            .expect("snapshots")
            .len(),
        1
    );
    let freed: u64 = blobs
        .iter()
        .map(|b| b["bytes"].as_u64().expect("bytes"))
        .sum();
    assert!(freed > 0);

    let mut remaining = listed(&dirs);
    remaining.sort();
    assert_eq!(remaining, [pinned, used]);
    for name in [used, pinned] {
        store
            .ensure_unpacked(&reference(name))
            .expect("still complete");
    }

    let output = dirs.berth(&["prune"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("0 images, 0 blobs, 0 snapshots removed"),
        "{stdout}"
    );
}
