//! A TLS registry with a self-signed CA trusted through hosts.toml `ca`
//! (and refused without it), and a registry with htpasswd basic auth used
//! with credentials from a docker-style config.json.

use berth_e2e::TestDirs;
use berth_e2e::images::busybox_image;
use berth_e2e::proxy::Proxy;
use berth_e2e::pull::{
    certs_d, field, pull_err, pull_ok, stored_blob, use_server, write_hosts_toml,
};
use berth_e2e::registry::{Registry, RegistryOptions, write_auth_file};

#[test]
fn a_tls_registry_is_trusted_through_the_hosts_toml_ca_and_refused_without_it() {
    let registry = Registry::start(RegistryOptions::tls());
    let image = busybox_image(&registry, "berth/tls");
    let ca = registry.ca_cert().expect("a TLS registry has a CA");

    let untrusted = TestDirs::new();
    let stderr = pull_err(&untrusted, &image.reference, &[]);
    assert!(
        stderr.contains(&format!("https://{}/v2", registry.host()))
            && stderr.to_lowercase().contains("certificate"),
        "the error names the host and the certificate problem:\n{stderr}"
    );
    assert!(stored_blob(&untrusted, &image.digest).is_none());

    let trusted = TestDirs::new();
    write_hosts_toml(
        &certs_d(&trusted),
        &registry.host(),
        &format!(
            "server = \"https://{}\"\nca = \"{}\"\n",
            registry.host(),
            ca.display()
        ),
    );
    let result = pull_ok(&trusted, &image.reference, &[]);
    assert_eq!(field(&result, "manifestDigest"), image.digest);

    // skip_verify is the (insecure) alternative containerd offers.
    let skipping = TestDirs::new();
    write_hosts_toml(
        &certs_d(&skipping),
        &registry.host(),
        &format!(
            "server = \"https://{}\"\nskip_verify = true\n",
            registry.host()
        ),
    );
    pull_ok(&skipping, &image.reference, &[]);
}

#[test]
fn htpasswd_basic_auth_with_credentials_from_config_json() {
    let registry = Registry::start(RegistryOptions::basic_auth("berth", "s3cret-pass"));
    let image = busybox_image(&registry, "berth/private");
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &registry.url());

    let stderr = pull_err(&dirs, &image.reference, &[]);
    assert!(
        stderr.contains("requires credentials") && stderr.contains(&registry.host()),
        "no credentials: the error says so and names the host:\n{stderr}"
    );

    let wrong = write_auth_file(dirs.temp.path(), &registry.host(), "berth", "wrong");
    let stderr = pull_err(&dirs, &image.reference, &["--auth-file", &wrong]);
    assert!(
        stderr.contains("refused the credentials") && stderr.contains("berth"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "a password never appears in output:\n{stderr}"
    );

    let right = write_auth_file(dirs.temp.path(), &registry.host(), "berth", "s3cret-pass");
    let result = pull_ok(&dirs, &image.reference, &["--auth-file", &right]);
    assert_eq!(field(&result, "manifestDigest"), image.digest);
    assert!(stored_blob(&dirs, &image.digest).is_some());
}

#[test]
fn anonymous_bearer_tokens_are_fetched_once_and_reused() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/token");
    let proxy = Proxy::start(&registry.host());
    proxy.require_bearer_token();
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &proxy.url());
    let result = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(field(&result, "manifestDigest"), image.digest);

    let requests = proxy.requests();
    let tokens: Vec<&str> = requests
        .iter()
        .filter(|r| r.target.starts_with("/token"))
        .map(|r| r.target.as_str())
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "one token for the whole pull: {requests:?}"
    );
    assert!(
        tokens[0].contains("scope=repository%3Aberth%2Ftoken%3Apull")
            && tokens[0].contains("service=berth-test"),
        "the token request carries the challenge's scope and service: {}",
        tokens[0]
    );
    let served: Vec<_> = requests
        .iter()
        .filter(|r| r.status == 200 && r.target.starts_with("/v2/"))
        .collect();
    assert_eq!(served.len(), 4, "manifest, config, 2 layers: {requests:?}");
    assert!(
        served.iter().all(|r| r.authorization),
        "every request carried the token"
    );
}
