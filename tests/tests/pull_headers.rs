//! What a pull sends where: a hosts.toml (or Registry object) `header`
//! with a list value sends every value, as containerd does; a host's
//! headers and credentials go to that host only — not to a token realm on
//! another host, not across a redirect to another host — and a redirect
//! from https down to plain http is refused.

use berth_e2e::TestDirs;
use berth_e2e::images::busybox_image;
use berth_e2e::proxy::{Fault, ProxiedRequest, Proxy};
use berth_e2e::pull::{certs_d, field, pull_err, pull_ok, stored_blob, write_hosts_toml};
use berth_e2e::registry::{Registry, RegistryOptions, make_tls_files, write_auth_file};

/// Requests of `proxy` to the registry API (not its token endpoint).
fn api_requests(proxy: &Proxy) -> Vec<ProxiedRequest> {
    proxy.requests_for("/v2/")
}

fn assert_every_request_has(requests: &[ProxiedRequest], name: &str, values: &[&str]) {
    assert!(!requests.is_empty());
    for request in requests {
        assert_eq!(
            request.header_values(name),
            values,
            "{name} on {}: {:?}",
            request.target,
            request.headers
        );
    }
}

#[test]
fn hosts_toml_header_list_sends_every_value_not_only_the_last() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/header-list");
    let proxy = Proxy::start(&registry.host());
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\n[header]\nx-list = [\"first\", \"second\", \"third\"]\nx-one = \"only\"\n",
            proxy.url()
        ),
    );
    let result = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(field(&result, "manifestDigest"), image.digest);
    let requests = api_requests(&proxy);
    assert_every_request_has(&requests, "x-list", &["first", "second", "third"]);
    assert_every_request_has(&requests, "x-one", &["only"]);
}

#[test]
fn a_registry_objects_header_list_sends_every_value_too() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/header-yaml");
    let proxy = Proxy::start(&registry.host());
    let dirs = TestDirs::new();
    dirs.write_manifest(
        "registry.yaml",
        &format!(
            "apiVersion: berth/v1\nkind: Registry\nmetadata:\n  name: \"{}\"\nspec:\n  server:\n    url: {}\n    header:\n      x-list: [a, b]\n      x-one: c\n",
            registry.host(),
            proxy.url()
        ),
    );
    pull_ok(&dirs, &image.reference, &[]);
    let requests = api_requests(&proxy);
    assert_every_request_has(&requests, "x-list", &["a", "b"]);
    assert_every_request_has(&requests, "x-one", &["c"]);
}

#[test]
fn a_token_realm_on_another_host_does_not_get_the_hosts_headers() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/realm");
    let token_server = Proxy::start(&registry.host());
    token_server.serve_tokens();
    let proxy = Proxy::start(&registry.host());
    proxy.require_bearer_token_from(&token_server.url());
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\n[header]\nx-mirror-secret = [\"s1\", \"s2\"]\n",
            proxy.url()
        ),
    );
    pull_ok(&dirs, &image.reference, &[]);
    let tokens = token_server.requests_for("/token");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(
        tokens[0].header_values("x-mirror-secret").is_empty(),
        "the realm is another host: {:?}",
        tokens[0].headers
    );
    assert_every_request_has(&api_requests(&proxy), "x-mirror-secret", &["s1", "s2"]);
}

#[test]
fn a_redirect_to_another_host_carries_neither_the_hosts_headers_nor_its_credentials() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/redirect");
    // Blobs live elsewhere, as with a registry on S3 or a CDN.
    let storage = Proxy::start(&registry.host());
    let front = Proxy::start(&registry.host());
    front.require_basic_auth();
    front.add_fault("/blobs/", Fault::RedirectTo(storage.url()), usize::MAX);
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\n[header]\nx-front-secret = \"f\"\n",
            front.url()
        ),
    );
    let auth = write_auth_file(dirs.temp.path(), &front.host(), "berth", "front-password");
    let result = pull_ok(&dirs, &image.reference, &["--auth-file", &auth]);
    assert_eq!(field(&result, "manifestDigest"), image.digest);
    assert!(stored_blob(&dirs, &image.digest).is_some());

    let redirected = front.requests_for("/blobs/");
    assert_eq!(redirected.len(), 3, "config and 2 layers: {redirected:?}");
    assert!(
        redirected
            .iter()
            .all(|r| r.status == 307 && r.authorization)
    );
    assert_every_request_has(&redirected, "x-front-secret", &["f"]);
    let followed = storage.requests_for("/blobs/");
    assert_eq!(followed.len(), 3, "{followed:?}");
    for request in &followed {
        assert!(
            !request.authorization && request.header_values("x-front-secret").is_empty(),
            "nothing of the front host's crossed to {}: {:?}",
            request.target,
            request.headers
        );
    }
}

#[test]
fn a_redirect_from_https_down_to_plain_http_is_refused() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/downgrade");
    let layer = image.manifests[0].layers[0].digest.clone();
    let plain = Proxy::start(&registry.host());
    let tls_dir = tempfile::tempdir().expect("tls dir");
    make_tls_files(tls_dir.path());
    let secure = Proxy::start_tls(&registry.host(), tls_dir.path());
    secure.add_fault("/blobs/", Fault::RedirectTo(plain.url()), usize::MAX);
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\nca = \"{}\"\n[header]\nx-secure = \"s\"\n",
            secure.url(),
            tls_dir.path().join("ca.pem").display()
        ),
    );
    let stderr = pull_err(&dirs, &image.reference, &[]);
    assert!(
        stderr.contains("redirect not followed")
            && stderr.contains("from https to plain http")
            && stderr.contains(&format!("{}/v2/berth/downgrade/blobs/", secure.url())),
        "the refusal names the https URL and the reason:\n{stderr}"
    );
    assert!(
        plain.requests().is_empty(),
        "nothing was sent in clear: {:?}",
        plain.requests()
    );
    assert!(
        stored_blob(&dirs, &layer).is_none(),
        "nothing stored from a refused redirect"
    );
    // The manifest came over TLS with the host's header: the refusal is
    // about the redirect only.
    assert_every_request_has(&secure.requests_for("/manifests/"), "x-secure", &["s"]);
}

#[test]
fn an_https_registry_naming_a_plain_http_token_realm_is_refused() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/plain-realm");
    let token_server = Proxy::start(&registry.host());
    token_server.serve_tokens();
    let tls_dir = tempfile::tempdir().expect("tls dir");
    make_tls_files(tls_dir.path());
    let secure = Proxy::start_tls(&registry.host(), tls_dir.path());
    secure.require_bearer_token_from(&token_server.url());
    let dirs = TestDirs::new();
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!(
            "server = \"{}\"\nca = \"{}\"\n",
            secure.url(),
            tls_dir.path().join("ca.pem").display()
        ),
    );
    let stderr = pull_err(&dirs, &image.reference, &[]);
    assert!(
        stderr.contains(&format!("{}/token", token_server.url()))
            && stderr.contains("plain-http token realm"),
        "the refusal names the realm:\n{stderr}"
    );
    assert!(
        token_server.requests().is_empty(),
        "nothing was sent to the plain-http realm: {:?}",
        token_server.requests()
    );
}
