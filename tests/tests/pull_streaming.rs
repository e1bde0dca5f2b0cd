//! `berth pull` unpacks layers while they download. These tests hold the
//! streaming path to the rules of the two stores: a snapshot only from bytes
//! whose digest verified and whose diffID matches the config, no staging
//! leftovers after a failure, an interrupted stream falling back to an
//! unpack from the stored blob, and streamed layers identical to layers
//! unpacked from the content store (`berth import`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_e2e::images::{self, Entry, ImageSpec, PushFormat, busybox_entries, push_image, sha256};
use berth_e2e::layers::{
    GZIP, LayerBuilder, ZSTD, busybox_layer, tree_listing, write_oci_layout,
    write_oci_layout_claiming,
};
use berth_e2e::proxy::{Fault, Proxy};
use berth_e2e::pull::{pull_err, pull_ok, stored_blob, use_server};
use berth_e2e::registry::{Registry, RegistryOptions};
use berth_e2e::{TestDirs, require_root};

const MIB: u64 = 1 << 20;

fn snapshot(dirs: &TestDirs, chain_id: &str) -> PathBuf {
    let hex = chain_id.strip_prefix("sha256:").expect("a sha256 chain id");
    dirs.root.join("snapshots").join(hex)
}

/// Everything in the snapshot directory: committed layers and staging.
fn snapshot_entries(dirs: &TestDirs) -> (Vec<String>, Vec<String>) {
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .filter(|name| name != ".staging")
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let snapshots = dirs.root.join("snapshots");
    (names(&snapshots), names(&snapshots.join(".staging")))
}

/// OCI chain IDs from diffIDs.
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => sha256(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

#[test]
fn a_layer_whose_diff_id_does_not_match_leaves_no_snapshot_and_no_staging() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let layout_dir = tempfile::tempdir().expect("layout dir");
    let base = busybox_layer();
    let lying = LayerBuilder::new()
        .file("etc/berth-lie", b"the config lies about me", 0o644)
        .build();
    let claimed = vec![base.diff_id(), sha256(b"some other layer")];
    let layout = write_oci_layout_claiming(
        layout_dir.path(),
        "latest",
        &[(&base, GZIP), (&lying, GZIP)],
        &claimed,
    );
    images::push(&layout, "latest", &registry, "berth/lying", PushFormat::Oci);
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &registry.url());

    let reference = format!("{}/berth/lying:latest", registry.host());
    let stderr = pull_err(&dirs, &reference, &[]);
    assert!(
        stderr.contains("diffID") && stderr.contains(&lying.diff_id()),
        "the error names the layer's real diffID:\n{stderr}"
    );
    let chain = chain_ids(&claimed);
    assert!(
        !snapshot(&dirs, &chain[1]).exists(),
        "no snapshot from a layer that is not what the config says"
    );
    let (_, staging) = snapshot_entries(&dirs);
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");
    let images = dirs.berth(&["images", "-o", "json"]);
    assert_eq!(String::from_utf8_lossy(&images.stdout).trim(), "[]");
}

#[test]
fn a_corrupt_layer_from_the_only_host_leaves_no_snapshot_and_no_staging() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let image = images::busybox_image(&registry, "berth/stream-corrupt");
    let built = &image.manifests[0];
    let proxy = Proxy::start(&registry.host());
    let base = &built.layers[0].digest;
    proxy.add_fault(&format!("/blobs/{base}"), Fault::Corrupt, usize::MAX);
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &proxy.url());

    let stderr = pull_err(&dirs, &image.reference, &[]);
    assert!(stderr.contains("failed verification"), "{stderr}");
    // The other layer verified and may be kept (it is valid, and GC takes
    // it unless a retry uses it); the corrupt one left nothing.
    let chain = chain_ids(&built.diff_ids);
    assert!(
        !snapshot(&dirs, &chain[0]).exists(),
        "no snapshot from corrupt bytes"
    );
    let (_, staging) = snapshot_entries(&dirs);
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");
    assert!(
        stored_blob(&dirs, base).is_none(),
        "the corrupt blob is not stored"
    );
}

#[test]
fn a_download_cut_mid_layer_resumes_and_the_layer_is_unpacked_from_the_stored_blob() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let noise = images::noise(4 << 20, 11);
    let spec = ImageSpec::new(vec![
        busybox_entries(),
        vec![Entry::file("data/noise.bin", noise.clone())],
    ]);
    let image = push_image(&registry, "berth/stream-cut", &[spec], PushFormat::Oci);
    let built = &image.manifests[0];
    let layer = &built.layers[1].digest;
    let proxy = Proxy::start(&registry.host());
    proxy.add_fault(&format!("/blobs/{layer}"), Fault::CutAfter(MIB), 1);
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &proxy.url());

    let result = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(
        result["layersUnpackedWhileDownloading"], 1,
        "only the base layer streamed: {result}"
    );
    let ranges: Vec<_> = proxy
        .requests_for(&format!("/blobs/{layer}"))
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert_eq!(ranges, [format!("bytes={MIB}-")], "resumed, not restarted");
    let chain = chain_ids(&built.diff_ids);
    let unpacked = std::fs::read(snapshot(&dirs, &chain[1]).join("data/noise.bin"))
        .expect("the layer is unpacked");
    assert!(unpacked == noise, "the unpacked file has the layer's bytes");
    let (_, staging) = snapshot_entries(&dirs);
    assert!(staging.is_empty(), "staging leftovers: {staging:?}");
}

#[test]
fn streamed_layers_are_identical_to_layers_unpacked_from_the_store() {
    require_root();
    let registry = Registry::start(RegistryOptions::default());
    let base = busybox_layer();
    let top = LayerBuilder::new()
        .dir_owned("srv", 0o750, 1000, 1000)
        .file_owned("srv/data.txt", b"owned by 1000", 0o640, 1000, 1000)
        .file("usr/bin/setuid-tool", b"#!/bin/sh\n", 0o4755)
        .symlink("srv/link", "../etc/passwd")
        .hardlink("srv/hard", "srv/data.txt")
        .fifo("srv/pipe", 0o600)
        .char_device("dev/null-like", 1, 3, 0o666)
        .whiteout("etc", "group")
        .opaque("var")
        .file("var/new", b"only me", 0o644)
        // New files in a setgid directory take its group unless chowned.
        .dir_owned("shared", 0o2775, 0, 1001)
        .file("shared/root-file", b"group 0", 0o644)
        // A directory made setgid after files were written into it.
        .file("late/before", b"", 0o644)
        .dir_owned("late", 0o2775, 0, 1002)
        .file("late/after", b"group 0 too", 0o644)
        .build();
    let layout_dir = tempfile::tempdir().expect("layout dir");
    let layout = write_oci_layout(layout_dir.path(), "latest", &[(&base, GZIP), (&top, ZSTD)]);
    images::push(
        &layout,
        "latest",
        &registry,
        "berth/stream-same",
        PushFormat::Oci,
    );
    // Outside the layout: the archive is a tar of the layout directory.
    let archive_dir = tempfile::tempdir().expect("archive dir");
    let archive = archive_dir.path().join("image.tar");
    layout.write_archive(&archive);

    let pulled = TestDirs::new();
    use_server(&pulled, &registry.host(), &registry.url());
    let reference = format!("{}/berth/stream-same:latest", registry.host());
    let result = pull_ok(&pulled, &reference, &[]);
    assert_eq!(
        result["layersUnpackedWhileDownloading"], 2,
        "both layers streamed: {result}"
    );
    let imported = TestDirs::new();
    let output = imported.berth(&[
        "import",
        archive.to_str().expect("utf-8 path"),
        "--name",
        &reference,
    ]);
    assert!(
        output.status.success(),
        "import: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let chain = chain_ids(&[base.diff_id(), top.diff_id()]);
    for chain_id in &chain {
        let streamed = tree_listing(&snapshot(&pulled, chain_id));
        let from_store = tree_listing(&snapshot(&imported, chain_id));
        assert!(!streamed.is_empty());
        assert_eq!(streamed, from_store, "snapshot {chain_id}");
    }
    let opaque = rustix::fs::getxattr(
        snapshot(&pulled, &chain[1]).join("var"),
        "trusted.overlay.opaque",
        &mut [0u8; 8],
    )
    .expect("the opaque marker");
    assert_eq!(opaque, 1);
    for (file, mode) in [
        ("shared/root-file", 0o644),
        ("late/after", 0o644),
        ("late/before", 0o644),
    ] {
        let meta = std::fs::metadata(snapshot(&pulled, &chain[1]).join(file)).expect(file);
        assert_eq!(
            (meta.gid(), meta.mode() & 0o7777),
            (0, mode),
            "{file}: the group and mode the layer says"
        );
    }
    let images = pulled.berth(&["images", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&images.stdout).expect("json");
    assert!(
        listed[0]["unpackedSize"].as_u64().is_some_and(|s| s > 0),
        "the streamed layers' sizes are recorded: {listed}"
    );
}
