//! Mirrors as containerd's hosts.toml configures them: tried in file order
//! before the server, skipped when down or when they serve bad content,
//! `override_path`, `ns=`, capabilities, and a failure report naming every
//! host tried.

use berth_e2e::TestDirs;
use berth_e2e::images::{busybox_image, sha256};
use berth_e2e::proxy::{Fault, Proxy};
use berth_e2e::pull::{
    certs_d, field, partial_file, pull_err, pull_ok, stored_blob, write_hosts_toml,
};
use berth_e2e::registry::{Registry, RegistryOptions, free_port};

fn down_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[test]
fn a_mirror_that_is_down_is_skipped_for_the_next_host() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/mirror-down");
    let dirs = TestDirs::new();
    let down = down_url();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!("server = \"{}\"\n[host.\"{down}\"]\n", registry.url()),
    );
    let output = berth_e2e::pull::pull(&dirs, &image.reference, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&down) && stderr.contains("trying the next host"),
        "the skipped mirror is reported:\n{stderr}"
    );
    assert!(stored_blob(&dirs, &image.digest).is_some());
}

#[test]
fn a_mirror_serving_a_corrupt_blob_is_rejected_and_the_next_host_used() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/corrupt");
    let layer = image.manifests[0].layers[0].clone();
    let proxy = Proxy::start(&registry.host());
    proxy.add_fault(
        &format!("/blobs/{}", layer.digest),
        Fault::Corrupt,
        usize::MAX,
    );

    // Only the corrupting mirror can serve: the pull fails, nothing is kept.
    let alone = TestDirs::new();
    write_hosts_toml(
        &certs_d(&alone),
        &registry.host(),
        &format!("server = \"{}\"\n[host.\"{}\"]\n", down_url(), proxy.url()),
    );
    let stderr = pull_err(&alone, &image.reference, &[]);
    assert!(
        stderr.contains(&layer.digest) && stderr.contains("failed verification"),
        "the error names the blob and the verification failure:\n{stderr}"
    );
    assert!(
        stored_blob(&alone, &layer.digest).is_none(),
        "nothing stored"
    );
    assert!(
        !partial_file(&alone, &layer.digest).exists(),
        "no partial file kept for a blob that failed verification"
    );

    // With the registry after it, the registry's copy is used.
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\n",
            registry.url(),
            proxy.url()
        ),
    );
    pull_ok(&dirs, &image.reference, &[]);
    let bytes = stored_blob(&dirs, &layer.digest).expect("layer stored");
    assert_eq!(sha256(&bytes), layer.digest);
    assert!(!partial_file(&dirs, &layer.digest).exists());
    let corrupted = proxy
        .requests()
        .iter()
        .filter(|r| r.fault == Some(Fault::Corrupt))
        .count();
    assert_eq!(corrupted, 2, "the mirror was asked once per pull");
    let direct = format!("/v2/berth/corrupt/blobs/{}", layer.digest);
    assert!(
        registry.requests("GET").contains(&direct),
        "the server served the layer directly"
    );
}

#[test]
fn override_path_uses_the_url_path_as_the_api_root() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/override");
    let proxy = Proxy::start(&registry.host());
    proxy.rewrite_prefix("/custom/api/", "/v2/");
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\n[host.\"{}/custom/api\"]\noverride_path = true\n",
            down_url(),
            proxy.url()
        ),
    );
    let result = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(field(&result, "manifestDigest"), image.digest);
    let targets: Vec<String> = proxy.requests().into_iter().map(|r| r.target).collect();
    assert!(!targets.is_empty());
    for target in &targets {
        assert!(
            target.starts_with("/custom/api/berth/override/"),
            "no /v2 appended with override_path: {target}"
        );
    }
}

#[test]
fn requests_to_a_mirror_carry_ns_of_the_upstream_registry() {
    let upstream = Registry::start(RegistryOptions::default());
    let mirror = Registry::start(RegistryOptions::default());
    let image = busybox_image(&upstream, "berth/ns");
    busybox_image(&mirror, "berth/ns");
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &upstream.host(),
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
            upstream.url(),
            mirror.url()
        ),
    );
    let result = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(field(&result, "manifestDigest"), image.digest);

    let ns = format!("?ns={}", upstream.host());
    let mirror_gets = mirror.requests("GET");
    let expected_manifest = format!("/v2/berth/ns/manifests/latest{ns}");
    assert!(
        mirror_gets.contains(&expected_manifest),
        "the mirror's access log has {expected_manifest}: {mirror_gets:?}"
    );
    let pulls: Vec<&String> = mirror_gets
        .iter()
        .filter(|t| t.contains("/berth/ns/"))
        .collect();
    assert!(pulls.len() >= 4, "manifest, config, 2 layers: {pulls:?}");
    assert!(pulls.iter().all(|t| t.ends_with(&ns)), "{pulls:?}");
    let upstream_pulls = upstream
        .requests("GET")
        .into_iter()
        .filter(|t| t.contains("/manifests/") || t.contains("/blobs/"))
        .count();
    assert_eq!(upstream_pulls, 0, "the mirror served everything");
}

#[test]
fn a_pull_only_mirror_is_not_asked_to_resolve_tags() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/pull-only");
    let proxy = Proxy::start(&registry.host());
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\n[host.\"{}\"]\ncapabilities = [\"pull\"]\n",
            registry.url(),
            proxy.url()
        ),
    );
    pull_ok(&dirs, &image.reference, &[]);
    let via_mirror: Vec<String> = proxy.requests().into_iter().map(|r| r.target).collect();
    assert!(
        via_mirror.iter().all(|t| !t.contains("/manifests/latest")),
        "the tag is resolved by the server only: {via_mirror:?}"
    );
    assert_eq!(
        via_mirror.iter().filter(|t| t.contains("/blobs/")).count(),
        3,
        "blobs come from the mirror: {via_mirror:?}"
    );
    assert!(
        registry
            .requests("GET")
            .contains(&"/v2/berth/pull-only/manifests/latest".to_owned())
    );
}

#[test]
fn a_failed_pull_lists_every_host_tried_with_its_error() {
    let registry = Registry::start(RegistryOptions::default());
    let proxy = Proxy::start(&registry.host());
    proxy.add_fault("/v2/", Fault::Status(503), usize::MAX);
    let down = down_url();
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\n[host.\"{down}\"]\n[host.\"{}\"]\n",
            registry.url(),
            proxy.url()
        ),
    );
    let missing = format!("{}/berth/missing:1.0", registry.host());
    let stderr = pull_err(&dirs, &missing, &[]);
    let report = stderr
        .split_once("every host failed:")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no per-host report:\n{stderr}"));
    let lines: Vec<&str> = report
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .collect();
    assert_eq!(lines.len(), 3, "one line per host:\n{report}");
    assert!(
        lines[0].contains(&down) && lines[0].to_lowercase().contains("connection refused"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(&proxy.url()) && lines[1].contains("503"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(&registry.url())
            && lines[2].contains("404")
            && lines[2].contains("MANIFEST_UNKNOWN"),
        "{}",
        lines[2]
    );
}
