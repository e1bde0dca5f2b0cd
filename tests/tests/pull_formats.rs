//! Image formats: a multi-arch OCI index resolved to this machine's platform
//! or to `--platform`, and a Docker schema2 image.

use berth_e2e::TestDirs;
use berth_e2e::images::{Entry, ImageSpec, PushFormat, busybox_entries, push_image, sha256};
use berth_e2e::pull::{field, pull_err, pull_ok, stored_blob, use_server};
use berth_e2e::registry::{Registry, RegistryOptions};

fn setup(registry: &Registry) -> TestDirs {
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &registry.url());
    dirs
}

fn layer_digests(result: &serde_json::Value) -> Vec<String> {
    result["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

#[test]
fn a_multi_arch_index_resolves_to_the_host_platform_or_the_requested_one() {
    let registry = Registry::start(RegistryOptions::default());
    let amd64 = ImageSpec::new(vec![
        busybox_entries(),
        vec![Entry::file("arch", "amd64\n")],
    ])
    .platform("linux", "amd64", None);
    let arm64 = ImageSpec::new(vec![vec![Entry::file("arch", "arm64\n")]]).platform(
        "linux",
        "arm64",
        Some("v8"),
    );
    let image = push_image(&registry, "berth/multi", &[amd64, arm64], PushFormat::Oci);
    let [amd64_built, arm64_built] = image.manifests.as_slice() else {
        panic!("two manifests were built");
    };

    let host = setup(&registry);
    let result = pull_ok(&host, &image.reference, &[]);
    assert_eq!(field(&result, "indexDigest"), image.digest);
    let (expected, other) = if std::env::consts::ARCH == "aarch64" {
        (arm64_built, amd64_built)
    } else {
        (amd64_built, arm64_built)
    };
    assert_eq!(field(&result, "manifestDigest"), expected.manifest.digest);
    assert_eq!(field(&result, "platform"), expected.platform);
    assert!(
        stored_blob(&host, &other.manifest.digest).is_none(),
        "the other platform's manifest is not fetched"
    );
    for layer in &other.layers {
        assert!(stored_blob(&host, &layer.digest).is_none());
    }

    let arm = setup(&registry);
    let result = pull_ok(&arm, &image.reference, &["--platform", "linux/arm64"]);
    assert_eq!(
        field(&result, "manifestDigest"),
        arm64_built.manifest.digest
    );
    assert_eq!(field(&result, "platform"), "linux/arm64/v8");
    let layers = layer_digests(&result);
    assert_eq!(layers, [arm64_built.layers[0].digest.clone()]);
    let bytes = stored_blob(&arm, &layers[0]).expect("arm64 layer stored");
    assert_eq!(sha256(&bytes), layers[0]);

    let stderr = pull_err(&arm, &image.reference, &["--platform", "linux/s390x"]);
    assert!(
        stderr.contains("linux/s390x")
            && stderr.contains("linux/amd64")
            && stderr.contains("linux/arm64/v8"),
        "the error names the wanted and the offered platforms:\n{stderr}"
    );
}

#[test]
fn a_docker_schema2_image_is_pulled_with_oci_layer_types() {
    let registry = Registry::start(RegistryOptions::default());
    let spec = ImageSpec::new(vec![busybox_entries()]);
    let image = push_image(
        &registry,
        "berth/schema2",
        &[spec],
        PushFormat::DockerSchema2,
    );
    let dirs = setup(&registry);

    let result = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(
        field(&result, "manifestMediaType"),
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(field(&result, "manifestDigest"), image.digest);
    let manifest = stored_blob(&dirs, &image.digest).expect("manifest stored");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    assert_eq!(
        manifest["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "the registry really served schema2"
    );
    assert_eq!(
        result["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = field(&result["layers"][0], "digest");
    let bytes = stored_blob(&dirs, layer).expect("layer stored");
    assert_eq!(sha256(&bytes), layer);
    let config = stored_blob(&dirs, field(&result, "configDigest")).expect("config stored");
    let config: serde_json::Value = serde_json::from_slice(&config).expect("config JSON");
    assert_eq!(config["os"], "linux");
}
