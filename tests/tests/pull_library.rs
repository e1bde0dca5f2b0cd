//! The pull API as the agent uses it (no CLI): credentials from an image
//! pull secret, a hosts config swapped between pulls, progress callbacks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use berth::image::auth::Credentials;
use berth::image::content::ContentStore;
use berth::image::hosts::{HostEntry, HostsConfig, RegistryHosts, Resolver};
use berth::image::remote::{
    BlobGuard, FetchOptions, FetchedImage, ImageReference, NoProgress, Platform, Progress, Puller,
    RemoteError,
};
use berth_e2e::images::{PushedImage, busybox_image};
use berth_e2e::registry::{Registry, RegistryOptions, free_port};
use oci_spec::image::Digest;

fn server_only(registry_host: &str, server: &str) -> HostsConfig {
    let mut config = HostsConfig::new();
    config.insert(
        registry_host,
        RegistryHosts {
            source: "test".to_owned(),
            hosts: Vec::new(),
            server: HostEntry {
                url: server.to_owned(),
                ..HostEntry::default()
            },
        },
    );
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A registry with a busybox image, an empty content store, a resolver
/// sending the registry's images to it, and a runtime to pull with.
struct Fixture {
    registry: Registry,
    image: PushedImage,
    _store_dir: tempfile::TempDir,
    store: ContentStore,
    resolver: Arc<Resolver>,
    reference: ImageReference,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn new(options: RegistryOptions, name: &str) -> Self {
        let registry = Registry::start(options);
        let image = busybox_image(&registry, name);
        let store_dir = tempfile::tempdir().expect("tempdir");
        let store = ContentStore::open(store_dir.path()).expect("content store");
        let resolver = Arc::new(
            Resolver::new(server_only(&registry.host(), &registry.url())).expect("resolver"),
        );
        let reference = image.reference.parse().expect("reference");
        Self {
            registry,
            image,
            _store_dir: store_dir,
            store,
            resolver,
            reference,
            rt: runtime(),
        }
    }

    fn puller(&self) -> Puller {
        Puller::new(
            self.resolver.clone(),
            Credentials::none(),
            self.store.clone(),
        )
    }

    fn fetch(
        &self,
        puller: &Puller,
        options: FetchOptions<'_>,
    ) -> Result<FetchedImage, RemoteError> {
        self.rt
            .block_on(puller.fetch_with(&self.reference, &Platform::host(), options))
    }
}

/// A `kubernetes.io/dockerconfigjson` Secret manifest as a user writes it.
fn pull_secret_yaml(host: &str, user: &str, password: &str) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let auth = engine.encode(format!("{user}:{password}"));
    let config = format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#);
    format!(
        "apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: regcred\n  namespace: default\n\
         type: kubernetes.io/dockerconfigjson\n\
         data:\n  .dockerconfigjson: {}\n",
        engine.encode(config)
    )
}

/// The Secret object, parsed by the manifest API as the agent does.
fn parse_secret(yaml: &str) -> manifests::types::Secret {
    let parsed = manifests::parse_file(Path::new("/manifests/regcred.yaml"), yaml.as_bytes());
    assert!(
        !parsed.has_errors(),
        "{:?}",
        parsed.all_diagnostics().collect::<Vec<_>>()
    );
    match parsed.objects().next() {
        Some(manifests::Object::Secret(secret)) => secret.clone(),
        other => panic!("expected a Secret, got {other:?}"),
    }
}

#[test]
fn an_image_pull_secret_authenticates_the_pull() {
    let f = Fixture::new(
        RegistryOptions::basic_auth("puller", "from-a-secret"),
        "berth/secret",
    );
    let puller = f.puller();
    let err = f
        .fetch(&puller, FetchOptions::new(&NoProgress))
        .expect_err("the registry needs credentials");
    assert!(err.to_string().contains("requires credentials"), "{err}");

    let secret = parse_secret(&pull_secret_yaml(
        &f.registry.host(),
        "puller",
        "from-a-secret",
    ));
    let credentials = Credentials::from_secret(&secret).expect("a dockerconfigjson secret");
    // The same puller, with the pod's pull secret for this pull only.
    let options = FetchOptions {
        credentials: Some(&credentials),
        ..FetchOptions::new(&NoProgress)
    };
    let fetched = f.fetch(&puller, options).expect("pull with the secret");
    assert_eq!(fetched.manifest_digest.to_string(), f.image.digest);
    assert_eq!(fetched.layers.len(), 2);
    for layer in &fetched.layers {
        assert!(f.store.contains(layer.digest()).expect("contains"));
    }
}

#[test]
fn a_new_hosts_config_applies_to_the_next_pull_and_a_broken_one_is_refused() {
    let f = Fixture::new(RegistryOptions::default(), "berth/swap");
    let down = format!("http://127.0.0.1:{}", free_port());
    f.resolver
        .set_config(server_only(&f.registry.host(), &down))
        .expect("a config whose server is down");
    let puller = f.puller();
    let err = f
        .fetch(&puller, FetchOptions::new(&NoProgress))
        .expect_err("the configured server is down");
    assert!(matches!(err, RemoteError::AllHostsFailed { .. }), "{err}");
    assert!(err.to_string().contains(&down), "{err}");

    let mut mirror = HostEntry {
        url: f.registry.url(),
        ..HostEntry::default()
    };
    mirror.client.ca = vec!["/nonexistent/berth/ca.pem".into()];
    let mut broken = HostsConfig::new();
    broken.insert(
        f.registry.host(),
        RegistryHosts {
            source: "certs.d/broken/hosts.toml".to_owned(),
            hosts: vec![mirror],
            server: HostEntry::default(),
        },
    );
    let refused = f.resolver.set_config(broken).expect_err("unreadable CA");
    assert!(
        refused.to_string().contains("certs.d/broken/hosts.toml"),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("/nonexistent/berth/ca.pem"),
        "{refused}"
    );
    let err = f
        .fetch(&puller, FetchOptions::new(&NoProgress))
        .expect_err("the refused config is not in effect: still the down server");
    assert!(err.to_string().contains(&down), "{err}");

    f.resolver
        .set_config(server_only(&f.registry.host(), &f.registry.url()))
        .expect("a good config");
    let fetched = f
        .fetch(&puller, FetchOptions::new(&NoProgress))
        .expect("the same puller uses the new config");
    assert_eq!(fetched.manifest_digest.to_string(), f.image.digest);
}

#[derive(Default)]
struct Recorder {
    progress: Mutex<BTreeMap<String, Vec<(u64, u64)>>>,
    done: Mutex<Vec<(String, bool)>>,
}

impl Progress for Recorder {
    fn blob_progress(&self, digest: &Digest, done: u64, total: u64) {
        let mut progress = self.progress.lock().expect("lock");
        progress
            .entry(digest.to_string())
            .or_default()
            .push((done, total));
    }

    fn blob_done(&self, digest: &Digest, downloaded: bool) {
        self.done
            .lock()
            .expect("lock")
            .push((digest.to_string(), downloaded));
    }
}

#[test]
fn progress_reports_every_blob_up_to_its_size() {
    let f = Fixture::new(RegistryOptions::default(), "berth/progress");
    let puller = f.puller().with_concurrency(1);
    let recorder = Recorder::default();
    f.fetch(&puller, FetchOptions::new(&recorder))
        .expect("pull");
    let built = &f.image.manifests[0];
    let progress = recorder.progress.lock().expect("lock");
    for blob in std::iter::once(&built.config).chain(&built.layers) {
        let reports = progress
            .get(&blob.digest)
            .unwrap_or_else(|| panic!("no progress for {}", blob.digest));
        assert!(reports.iter().all(|&(_, total)| total == blob.size));
        assert!(reports.windows(2).all(|w| w[0].0 <= w[1].0), "monotonic");
        assert_eq!(reports.last().map(|r| r.0), Some(blob.size));
    }
    assert_eq!(recorder.done.lock().expect("lock").len(), 3);

    let again = Recorder::default();
    f.fetch(&puller, FetchOptions::new(&again))
        .expect("pull again");
    let done = again.done.lock().expect("lock");
    assert_eq!(done.len(), 3);
    assert!(
        done.iter().all(|(_, downloaded)| !downloaded),
        "all already present"
    );
}

/// Records what it protected and whether the blob was already stored then.
struct Guard {
    store: ContentStore,
    refuse: bool,
    protected: Mutex<Vec<(String, bool)>>,
}

impl Guard {
    fn new(store: &ContentStore, refuse: bool) -> Self {
        Self {
            store: store.clone(),
            refuse,
            protected: Mutex::new(Vec::new()),
        }
    }
}

impl BlobGuard for Guard {
    fn protect(&self, digest: &Digest) -> Result<(), String> {
        if self.refuse {
            return Err("lease expired".to_owned());
        }
        let stored = self.store.contains(digest).map_err(|e| e.to_string())?;
        self.protected
            .lock()
            .expect("lock")
            .push((digest.to_string(), stored));
        Ok(())
    }
}

#[test]
fn every_blob_is_protected_before_it_is_written() {
    let f = Fixture::new(RegistryOptions::default(), "berth/guarded");
    let puller = f.puller();

    let refusing = Guard::new(&f.store, true);
    let options = FetchOptions {
        guard: Some(&refusing),
        ..FetchOptions::new(&NoProgress)
    };
    let err = f
        .fetch(&puller, options)
        .expect_err("a guard that refuses stops the pull");
    assert!(err.to_string().contains("lease expired"), "{err}");
    assert!(
        f.store.list().expect("list").is_empty(),
        "nothing was written"
    );

    let guard = Guard::new(&f.store, false);
    let options = FetchOptions {
        guard: Some(&guard),
        ..FetchOptions::new(&NoProgress)
    };
    f.fetch(&puller, options).expect("pull");
    let protected = guard.protected.lock().expect("lock");
    let built = &f.image.manifests[0];
    let mut expected: Vec<String> = std::iter::once(&built.manifest)
        .chain(std::iter::once(&built.config))
        .chain(&built.layers)
        .map(|b| b.digest.clone())
        .collect();
    expected.sort();
    let mut seen: Vec<String> = protected.iter().map(|(d, _)| d.clone()).collect();
    seen.sort();
    assert_eq!(seen, expected, "manifest, config and layers");
    assert!(
        protected.iter().all(|(_, stored)| !stored),
        "each was protected before it was stored: {protected:?}"
    );
}
