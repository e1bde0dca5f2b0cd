//! The agent's effective registry configuration: the node's `[images]
//! hosts-dir` overlaid with the manifest directory's `Registry` objects
//! (which include its `certs.d/<host>/hosts.toml` files), applied to the
//! [`ImageManager`] as one [`HostsConfig`].
//!
//! Rules:
//! - **Per registry host, the manifest directory wins** over hosts-dir. The
//!   manifest directory is the declarative, reported state (every object has
//!   a status; a GitOps change must take effect); hosts-dir is the node's
//!   baseline, as `/etc/containerd/certs.d` is for containerd. Hosts only
//!   hosts-dir configures keep its config. (`berth pull --hosts-dir` is the
//!   other way round: an explicit flag for one command beats the files.)
//! - **Last valid config per object.** An object whose config cannot be used
//!   (a CA file that is missing or not PEM, an unusable client key, a bad
//!   header) is refused on its own: its last valid version stays in effect
//!   (or, if it never had one, whatever hosts-dir or the defaults say), and
//!   the other objects apply normally.
//! - Deleting an object drops its config: its host falls back to hosts-dir,
//!   else to the defaults (`https://<host>`).
//! - hosts-dir is read again on every change and by [`RegistrySet::reload_hosts_dir`];
//!   a hosts-dir that no longer reads keeps its last valid content.
//!
//! One rebuild at a time: callers hold [`RegistrySet::lock`] while they read
//! the desired state and apply it, so an older desired state can never
//! overwrite a newer one. The set remembers which desired-state revision it
//! last applied, so a pull can first make sure the configuration is at least
//! as new as the object that asks for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::hosts::{
    Capabilities, DEFAULT_HOST_KEY, HostsConfig, HostsError, RegistryHosts, endpoints_for,
};
use super::hosts_dir::load_certs_d;
use super::manager::ImageManager;
use crate::status::chain;

/// One `Registry` object of the desired state.
#[derive(Debug, Clone)]
pub struct RegistryObject<'a> {
    /// Its object key (`Registry/docker.io`): identifies its last valid config.
    pub key: String,
    /// Where it is defined (`/etc/agent.d/certs.d/docker.io/hosts.toml:1`).
    pub source: String,
    pub registry: &'a manifests::types::Registry,
}

/// Why an object's config is not in effect.
#[derive(Debug, thiserror::Error)]
#[error(
    "{key} ({source_file}) for registry host {host}: {reason}; the previous configuration stays in effect ({fallback})"
)]
pub struct RegistryRefused {
    pub key: String,
    pub source_file: String,
    pub host: String,
    pub reason: String,
    /// What is in effect instead.
    pub fallback: String,
}

/// The outcome of one rebuild, per object key.
#[derive(Debug, Default)]
pub struct RegistryOutcome {
    /// Objects whose config is in effect, with the status message: the
    /// endpoints in the order they are tried, with capabilities.
    pub ready: BTreeMap<String, String>,
    pub refused: BTreeMap<String, RegistryRefused>,
}

#[derive(Debug, Clone)]
struct InEffect {
    host: String,
    hosts: RegistryHosts,
}

#[derive(Debug, Default)]
struct State {
    /// The last hosts-dir content that read without errors.
    hosts_dir: HostsConfig,
    /// Each object's last valid config.
    objects: BTreeMap<String, InEffect>,
}

/// See the module docs.
pub struct RegistrySet {
    hosts_dir: Option<PathBuf>,
    state: tokio::sync::Mutex<State>,
    /// The desired-state revision of the last rebuild (0: none yet).
    applied_revision: AtomicU64,
}

impl RegistrySet {
    /// `initial` is the hosts-dir content [`ImageManager`] was built with.
    pub fn new(hosts_dir: Option<PathBuf>, initial: HostsConfig) -> Self {
        Self {
            hosts_dir,
            state: tokio::sync::Mutex::new(State {
                hosts_dir: initial,
                objects: BTreeMap::new(),
            }),
            applied_revision: AtomicU64::new(0),
        }
    }

    /// The desired-state revision the configuration in effect was built from.
    pub fn applied_revision(&self) -> u64 {
        self.applied_revision.load(Ordering::SeqCst)
    }

    /// Exclusive access for one rebuild.
    pub async fn lock(&self) -> RegistryGuard<'_> {
        RegistryGuard {
            set: self,
            state: self.state.lock().await,
        }
    }

    /// Reads hosts-dir again and, when it changed, applies the result.
    /// Returns whether anything changed.
    pub async fn reload_hosts_dir(&self, manager: &ImageManager) -> bool {
        let mut guard = self.lock().await;
        if !guard.refresh_hosts_dir().await {
            return false;
        }
        let config = compose(&guard.state.hosts_dir, &guard.state.objects);
        match manager.set_hosts(config) {
            Ok(()) => {
                tracing::info!(dir = ?self.hosts_dir, "applied the changed [images] hosts-dir");
                true
            }
            Err(err) => {
                tracing::warn!(error = %chain(&err), "the changed [images] hosts-dir cannot be used; the previous configuration stays in effect");
                false
            }
        }
    }
}

pub struct RegistryGuard<'a> {
    set: &'a RegistrySet,
    state: tokio::sync::MutexGuard<'a, State>,
}

impl RegistryGuard<'_> {
    /// Re-reads hosts-dir; true when its content changed.
    async fn refresh_hosts_dir(&mut self) -> bool {
        let Some(dir) = self.set.hosts_dir.clone() else {
            return false;
        };
        let loaded = tokio::task::spawn_blocking(move || load_certs_d(&dir)).await;
        match loaded {
            Ok(Ok(config)) if config != self.state.hosts_dir => {
                self.state.hosts_dir = config;
                true
            }
            Ok(Ok(_)) => false,
            Ok(Err(err)) => {
                tracing::warn!(dir = ?self.set.hosts_dir, error = %chain(&err), "[images] hosts-dir does not read; its last valid content stays in effect");
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading [images] hosts-dir stopped unexpectedly");
                false
            }
        }
    }

    /// Makes `objects` (every Registry object of the desired state at
    /// `revision`) the manifest directory's part of the configuration and
    /// applies the whole configuration to `manager`.
    pub async fn apply(
        &mut self,
        manager: &ImageManager,
        revision: u64,
        objects: &[RegistryObject<'_>],
    ) -> RegistryOutcome {
        self.set
            .applied_revision
            .fetch_max(revision, Ordering::SeqCst);
        self.refresh_hosts_dir().await;
        let mut applied = RegistryOutcome::default();
        let mut candidates = self.state.objects.clone();
        candidates.retain(|key, _| objects.iter().any(|o| &o.key == key));
        for object in objects {
            let host = object.registry.host().to_owned();
            let label = format!("{} ({})", object.key, object.source);
            let checked = check_on_thread(object.registry.clone(), label, host.clone()).await;
            match checked {
                Ok(hosts) => {
                    candidates.insert(object.key.clone(), InEffect { host, hosts });
                }
                Err(reason) => {
                    let refused = self.refusal(object, &host, reason);
                    applied.refused.insert(object.key.clone(), refused);
                }
            }
        }
        let config = compose(&self.state.hosts_dir, &candidates);
        if let Err(err) = manager.set_hosts(config) {
            // Checked one by one above, so a file changed in between: refuse
            // every newly checked object and keep what was in effect.
            let reason = chain(&err);
            for object in objects {
                if !applied.refused.contains_key(&object.key) {
                    let refused = self.refusal(object, object.registry.host(), reason.clone());
                    applied.refused.insert(object.key.clone(), refused);
                }
            }
            return applied;
        }
        self.state.objects = candidates;
        for object in objects {
            if applied.refused.contains_key(&object.key) {
                continue;
            }
            let message = match self.state.objects.get(&object.key) {
                Some(in_effect) => {
                    describe(&in_effect.host, &in_effect.hosts, &self.state.hosts_dir)
                }
                None => String::new(),
            };
            applied.ready.insert(object.key.clone(), message);
        }
        applied
    }

    fn refusal(&self, object: &RegistryObject<'_>, host: &str, reason: String) -> RegistryRefused {
        let fallback = if self.state.objects.contains_key(&object.key) {
            "its last valid version".to_owned()
        } else if let Some(from_dir) = self.state.hosts_dir.get(host) {
            format!("[images] hosts-dir {}", from_dir.source)
        } else if host == DEFAULT_HOST_KEY {
            "no default mirrors".to_owned()
        } else {
            "the defaults for the host".to_owned()
        };
        RegistryRefused {
            key: object.key.clone(),
            source_file: object.source.clone(),
            host: host.to_owned(),
            reason,
            fallback,
        }
    }
}

async fn check_on_thread(
    registry: manifests::types::Registry,
    label: String,
    host: String,
) -> Result<RegistryHosts, String> {
    // Building a client reads CA and key files: blocking I/O.
    tokio::task::spawn_blocking(move || check(&registry, &label, &host))
        .await
        .unwrap_or_else(|err| Err(format!("checking stopped unexpectedly: {err}")))
}

/// The resolver's form of `registry`, if every host's client can be built.
fn check(
    registry: &manifests::types::Registry,
    label: &str,
    host: &str,
) -> Result<RegistryHosts, String> {
    let hosts = RegistryHosts::from_registry(registry, label).map_err(|err| strip(&err, label))?;
    hosts.check(host).map_err(|err| strip(&err, label))?;
    Ok(hosts)
}

/// Resolver errors start with the source name, which the refusal names
/// already.
fn strip(err: &HostsError, label: &str) -> String {
    let text = chain(err);
    text.strip_prefix(label)
        .and_then(|rest| rest.strip_prefix(": "))
        .map_or(text.clone(), str::to_owned)
}

/// hosts-dir, then every object's config (replacing hosts-dir's for its host).
fn compose(hosts_dir: &HostsConfig, objects: &BTreeMap<String, InEffect>) -> HostsConfig {
    let mut config = hosts_dir.clone();
    for in_effect in objects.values() {
        config.insert(in_effect.host.clone(), in_effect.hosts.clone());
    }
    config
}

/// `http://mirror:5000/v2 [pull], then https://registry.local/v2 (server)`.
fn describe(host: &str, hosts: &RegistryHosts, hosts_dir: &HostsConfig) -> String {
    let for_default = host == DEFAULT_HOST_KEY;
    // `_default` has no host of its own: describe it for a placeholder and
    // name its default server in words.
    let registry = if for_default {
        "registry.invalid"
    } else {
        host
    };
    let mut parts: Vec<String> = match endpoints_for(Some(hosts), registry) {
        Ok(endpoints) => endpoints
            .iter()
            .map(|endpoint| {
                if endpoint.is_server && for_default && hosts.server.url.is_empty() {
                    return "each image's own registry (server)".to_owned();
                }
                let role = if endpoint.is_server { " (server)" } else { "" };
                let capabilities = if endpoint.capabilities == Capabilities::ALL {
                    String::new()
                } else {
                    format!(" {}", endpoint.capabilities)
                };
                format!("{}{capabilities}{role}", endpoint.display_name())
            })
            .collect(),
        Err(err) => vec![chain(&err)],
    };
    if parts.len() == 1 {
        parts[0].insert_str(0, "only ");
    }
    let mut message = parts.join(", then ");
    if let Some(shadowed) = hosts_dir.get(host) {
        message.push_str(&format!(
            "; overrides [images] hosts-dir {}",
            shadowed.source
        ));
    }
    message
}

/// The certs.d tree of `dir`, or an empty config when `dir` is `None`.
pub fn load_hosts_dir(dir: Option<&Path>) -> Result<HostsConfig, super::hosts_dir::HostsDirError> {
    match dir {
        Some(dir) => load_certs_d(dir),
        None => Ok(HostsConfig::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::hosts::HostEntry;

    fn registry(yaml: &str) -> manifests::types::Registry {
        let parsed = manifests::parse_file(Path::new("/m/r.yaml"), yaml.as_bytes());
        assert!(!parsed.has_errors(), "{yaml}");
        match parsed.objects().next() {
            Some(manifests::Object::Registry(registry)) => registry.clone(),
            _ => panic!("a Registry"),
        }
    }

    fn mirror_of(host: &str, mirror: &str) -> manifests::types::Registry {
        registry(&format!(
            "apiVersion: berth/v1\nkind: Registry\nmetadata:\n  name: \"{host}\"\nspec:\n  hosts:\n    - url: {mirror}\n      capabilities: [pull]\n"
        ))
    }

    fn object<'a>(key: &str, registry: &'a manifests::types::Registry) -> RegistryObject<'a> {
        RegistryObject {
            key: key.to_owned(),
            source: "/m/r.yaml:1".to_owned(),
            registry,
        }
    }

    fn manager(dir: &Path) -> ImageManager {
        let paths = crate::paths::Paths::new(&dir.join("root"), &dir.join("run"));
        let service = crate::image::service::ImageService::open(&paths).expect("store");
        ImageManager::new(
            service,
            HostsConfig::new(),
            crate::image::auth::Credentials::none(),
            1,
        )
        .expect("manager")
    }

    fn first_origin(manager: &ImageManager, host: &str) -> String {
        manager.hosts().endpoints(host).expect("endpoints")[0]
            .origin
            .clone()
    }

    #[tokio::test]
    async fn objects_override_hosts_dir_per_host_and_fall_back_when_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = manager(dir.path());
        let mut from_dir = HostsConfig::new();
        from_dir.insert(
            "docker.io",
            RegistryHosts {
                source: "/etc/certs.d/docker.io/hosts.toml".into(),
                hosts: vec![HostEntry {
                    url: "http://dir-mirror".into(),
                    ..HostEntry::default()
                }],
                server: HostEntry::default(),
            },
        );
        let set = RegistrySet::new(None, from_dir);
        let hub = mirror_of("docker.io", "http://object-mirror:5000");
        let quay = mirror_of("quay.io", "http://quay-mirror");
        let applied = set
            .lock()
            .await
            .apply(
                &manager,
                1,
                &[
                    object("Registry/docker.io", &hub),
                    object("Registry/quay.io", &quay),
                ],
            )
            .await;
        assert!(applied.refused.is_empty(), "{:?}", applied.refused);
        assert_eq!(
            applied.ready["Registry/docker.io"],
            "http://object-mirror:5000/v2 [pull], then https://registry-1.docker.io/v2 (server); overrides [images] hosts-dir /etc/certs.d/docker.io/hosts.toml"
        );
        assert_eq!(
            first_origin(&manager, "docker.io"),
            "http://object-mirror:5000"
        );
        assert_eq!(first_origin(&manager, "quay.io"), "http://quay-mirror");

        let applied = set
            .lock()
            .await
            .apply(&manager, 2, &[object("Registry/quay.io", &quay)])
            .await;
        assert_eq!(applied.ready.len(), 1);
        assert_eq!(
            first_origin(&manager, "docker.io"),
            "http://dir-mirror",
            "back to hosts-dir"
        );
        set.lock().await.apply(&manager, 3, &[]).await;
        assert_eq!(set.applied_revision(), 3);
        assert_eq!(
            first_origin(&manager, "quay.io"),
            "https://quay.io",
            "back to the defaults"
        );
    }

    #[tokio::test]
    async fn an_unusable_object_keeps_its_last_valid_version_and_the_others_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = manager(dir.path());
        let set = RegistrySet::new(None, HostsConfig::new());
        let good = mirror_of("registry.local:5000", "http://good-mirror");
        set.lock()
            .await
            .apply(
                &manager,
                1,
                &[object("Registry/registry.local:5000", &good)],
            )
            .await;

        let broken = registry(
            "apiVersion: berth/v1\nkind: Registry\nmetadata:\n  name: registry.local:5000\nspec:\n  hosts:\n    - url: https://new-mirror\n      ca: [/nonexistent/berth-test-ca.pem]\n",
        );
        let never_good = registry(
            "apiVersion: berth/v1\nkind: Registry\nmetadata:\n  name: ghcr.io\nspec:\n  hosts:\n    - url: https://m\n      ca: [/nonexistent/other-ca.pem]\n",
        );
        let other = mirror_of("quay.io", "http://quay-mirror");
        let applied = set
            .lock()
            .await
            .apply(
                &manager,
                1,
                &[
                    object("Registry/registry.local:5000", &broken),
                    object("Registry/ghcr.io", &never_good),
                    object("Registry/quay.io", &other),
                ],
            )
            .await;
        let refused = applied.refused["Registry/registry.local:5000"].to_string();
        for part in [
            "Registry/registry.local:5000 (/m/r.yaml:1)",
            "registry host registry.local:5000",
            "/nonexistent/berth-test-ca.pem",
            "the previous configuration stays in effect (its last valid version)",
        ] {
            assert!(refused.contains(part), "{part:?} missing from: {refused}");
        }
        let refused = applied.refused["Registry/ghcr.io"].to_string();
        assert!(refused.contains("(the defaults for the host)"), "{refused}");
        assert!(applied.ready.contains_key("Registry/quay.io"));
        assert_eq!(
            first_origin(&manager, "registry.local:5000"),
            "http://good-mirror"
        );
        assert_eq!(first_origin(&manager, "ghcr.io"), "https://ghcr.io");
        assert_eq!(first_origin(&manager, "quay.io"), "http://quay-mirror");
    }

    #[tokio::test]
    async fn hosts_dir_changes_apply_on_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manager = manager(dir.path());
        let certs = dir.path().join("certs.d");
        let write = |server: &str| {
            std::fs::create_dir_all(certs.join("quay.io")).expect("mkdir");
            std::fs::write(
                certs.join("quay.io/hosts.toml"),
                format!("server = \"{server}\"\n"),
            )
            .expect("write");
        };
        write("http://first");
        let initial = load_hosts_dir(Some(&certs)).expect("load");
        manager.set_hosts(initial.clone()).expect("apply");
        let set = RegistrySet::new(Some(certs.clone()), initial);
        assert!(!set.reload_hosts_dir(&manager).await, "nothing changed");
        write("http://second");
        assert!(set.reload_hosts_dir(&manager).await);
        assert_eq!(first_origin(&manager, "quay.io"), "http://second");
        std::fs::write(certs.join("quay.io/hosts.toml"), "server = [").expect("break it");
        assert!(!set.reload_hosts_dir(&manager).await);
        assert_eq!(
            first_origin(&manager, "quay.io"),
            "http://second",
            "last valid kept"
        );
    }
}
