//! `berth pull` against a real docker-registry on 127.0.0.1: by tag, by
//! digest, re-pull skips stored blobs, plain HTTP only where configured.

use berth_e2e::TestDirs;
use berth_e2e::images::{busybox_image, sha256};
use berth_e2e::pull::{field, partial_files, pull_err, pull_ok, stored_blob, use_server};
use berth_e2e::registry::{Registry, RegistryOptions};

fn assert_stored(dirs: &TestDirs, digest: &str, size: u64) {
    let bytes = stored_blob(dirs, digest).unwrap_or_else(|| panic!("{digest} is not stored"));
    assert_eq!(sha256(&bytes), digest, "stored content matches its digest");
    assert_eq!(bytes.len() as u64, size, "{digest} has its size");
}

#[test]
fn pull_by_tag_stores_every_blob_verified_and_a_second_pull_downloads_nothing() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/busybox");
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &registry.url());

    let result = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(field(&result, "digest"), image.digest);
    assert_eq!(field(&result, "manifestDigest"), image.digest);
    assert!(result["indexDigest"].is_null());
    let built = &image.manifests[0];
    assert_eq!(field(&result, "configDigest"), built.config.digest);
    let layers: Vec<&str> = result["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest"))
        .collect();
    let expected: Vec<&str> = built.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layers, expected);
    assert_stored(&dirs, &image.digest, built.manifest.size);
    assert_stored(&dirs, &built.config.digest, built.config.size);
    for layer in &built.layers {
        assert_stored(&dirs, &layer.digest, layer.size);
    }
    assert_eq!(result["blobsDownloaded"], 3, "config + 2 layers: {result}");
    assert!(partial_files(&dirs).is_empty(), "no partial files left");

    // Recorded and unpacked by the image service.
    let images = dirs.berth(&["images", "-o", "json"]);
    assert!(
        images.status.success(),
        "{}",
        String::from_utf8_lossy(&images.stderr)
    );
    let images: serde_json::Value = serde_json::from_slice(&images.stdout).expect("images JSON");
    let listed = images
        .as_array()
        .expect("a list of images")
        .iter()
        .find(|i| i["name"] == image.reference.as_str())
        .unwrap_or_else(|| panic!("{} is not listed: {images}", image.reference));
    assert_eq!(listed["manifestDigest"], image.digest.as_str(), "{listed}");
    let snapshots = dirs.root.join("snapshots");
    let busybox_unpacked = std::fs::read_dir(&snapshots)
        .expect("snapshots dir")
        .filter_map(|e| e.ok())
        .any(|e| e.path().join("bin/busybox").is_file());
    assert!(
        busybox_unpacked,
        "a snapshot under {} holds bin/busybox",
        snapshots.display()
    );

    let again = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(again["blobsDownloaded"], 0, "{again}");
    assert_eq!(again["blobsAlreadyPresent"], 3, "{again}");
    let blob_gets = registry
        .requests("GET")
        .iter()
        .filter(|target| target.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 3, "each blob is fetched once over both pulls");
}

#[test]
fn pull_by_digest_gets_exactly_that_manifest() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/by-digest");
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &registry.url());

    let result = pull_ok(&dirs, &image.by_digest(), &[]);
    assert_eq!(field(&result, "manifestDigest"), image.digest);
    let manifest_gets: Vec<String> = registry
        .requests("GET")
        .into_iter()
        .filter(|target| target.contains("/manifests/"))
        .collect();
    assert_eq!(
        manifest_gets,
        [format!("/v2/berth/by-digest/manifests/{}", image.digest)]
    );
}

#[test]
fn a_plain_http_registry_is_not_used_without_a_config_saying_http() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/https-only");
    let dirs = TestDirs::new();

    let stderr = pull_err(&dirs, &image.reference, &[]);
    assert!(
        stderr.contains(&format!("https://{}/v2", registry.host())),
        "the error names the https endpoint tried:\n{stderr}"
    );
    assert!(stored_blob(&dirs, &image.digest).is_none());
}

#[test]
fn registry_objects_in_the_manifest_directory_configure_the_pull() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/from-manifests");
    let dirs = TestDirs::new();
    std::fs::write(
        dirs.manifests.join("registry.yaml"),
        format!(
            "apiVersion: berth/v1\nkind: Registry\nmetadata:\n  name: \"{}\"\nspec:\n  server: {}\n",
            registry.host(),
            registry.url()
        ),
    )
    .expect("writing the Registry object");
    let output = dirs.berth(&["pull", "-o", "json", &image.reference]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(field(&result, "manifestDigest"), image.digest);
}
