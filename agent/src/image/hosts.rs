//! The registry host resolver, with containerd's `hosts.toml` semantics
//! (containerd `docs/hosts.md`): for an image on registry host H, which
//! endpoints to try, in which order, for which operations, and with which
//! HTTP client (TLS roots, client certificates, proxy, dial timeout). A
//! host's `header` table is not part of its client: the puller adds it to
//! each request to that host's origin, every value of a name in order.
//!
//! The input is an explicit [`HostsConfig`] (one [`RegistryHosts`] per
//! configured registry host, or `_default`), built from `certs.d/*/hosts.toml`
//! files or `berth/v1 Registry` objects. A [`Resolver`] holds the config in
//! effect and can be handed a new one at any time: the next pull uses it, and a
//! config whose clients cannot be built (unreadable CA, bad key pair) is
//! refused as a whole so the last valid config stays in effect.
//!
//! Rules, as containerd applies them:
//! - the config for H is the one for `H` (the key includes the port, if any),
//!   else `_default`, else none;
//! - the `[host."…"]` entries are tried in file order, then `server`; without
//!   a `server` the default is `https://H` (`docker.io` →
//!   `https://registry-1.docker.io`);
//! - a host URL without a scheme is `https://`; plain HTTP only where a config
//!   says `http://`;
//! - the API root is the URL path plus `/v2` (unless it already ends in
//!   `/v2`), or the URL path as is with `override_path`;
//! - `capabilities` default to pull + resolve + push: only `resolve` hosts turn
//!   tags into digests, `pull` hosts serve content by digest;
//! - requests to a host other than H carry `?ns=H`, so a mirror serving
//!   several registries knows which one is meant.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// The key under which a config applies to every registry without its own.
pub const DEFAULT_HOST_KEY: &str = "_default";

const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_SERVER: &str = "https://registry-1.docker.io";
/// A registry that does not answer the TCP handshake in this long is skipped
/// for the next host, unless the config sets its own `dial_timeout`.
/// (Waiting for an answer is the puller's business: its stall timeout
/// bounds every response head and body read.)
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("{source_name}: host {url:?} is not a valid URL: {reason}")]
    BadUrl {
        source_name: String,
        url: String,
        reason: String,
    },
    #[error("{source_name}: host {url}: unsupported scheme {scheme:?} (use https:// or http://)")]
    BadScheme {
        source_name: String,
        url: String,
        scheme: String,
    },
    #[error("{source_name}: host {url}: reading {what} {path}")]
    ReadFile {
        source_name: String,
        url: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: host {url}: {what} {path} is not usable: {reason}")]
    BadPem {
        source_name: String,
        url: String,
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{source_name}: host {url}: header {name:?}: {reason}")]
    BadHeader {
        source_name: String,
        url: String,
        name: String,
        reason: String,
    },
    #[error("{source_name}: host {url}: dial_timeout: {reason}")]
    BadDuration {
        source_name: String,
        url: String,
        reason: String,
    },
    #[error("{source_name}: host {url}: proxy {proxy:?}: {reason}")]
    BadProxy {
        source_name: String,
        url: String,
        proxy: String,
        reason: String,
    },
    #[error("{source_name}: host {url}: building the HTTP client: {reason}")]
    Client {
        source_name: String,
        url: String,
        reason: String,
    },
}

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::ALL
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.pull, "pull"),
            (self.resolve, "resolve"),
            (self.push, "push"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        write!(f, "[{}]", names.join(", "))
    }
}

/// A client certificate: one PEM file with both parts, or separate files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: Option<PathBuf>,
}

/// Everything that shapes the HTTP client for a host. Hosts with equal
/// settings share one client (and its connection pool).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    /// Extra trusted roots (PEM files), added to the system's.
    pub ca: Vec<PathBuf>,
    pub client_certs: Vec<ClientCert>,
    pub skip_verify: bool,
    /// Sent with every request to the host; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub dial_timeout: Option<Duration>,
    /// Proxy URL for this host's requests (`http://`, `https://`).
    pub proxy: Option<String>,
}

/// One `[host."…"]` table, or the top level of a hosts.toml (for `server`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostEntry {
    /// As written: `https://mirror:5000`, `mirror.local/prefix`, `http://…`.
    pub url: String,
    pub capabilities: Capabilities,
    pub override_path: bool,
    pub client: ClientSettings,
}

/// The config of one registry host: one hosts.toml, or one Registry object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryHosts {
    /// Where the config came from, named in every error about it
    /// (`/etc/agent.d/certs.d/docker.io/hosts.toml`, `Registry/docker.io`).
    pub source: String,
    /// Mirrors, tried in this order before the server.
    pub hosts: Vec<HostEntry>,
    /// `server`, with the top-level settings of the file. An empty `url`
    /// means the default server for the registry host.
    pub server: HostEntry,
}

impl RegistryHosts {
    /// The resolver's form of a `berth/v1 Registry` object (or a hosts.toml
    /// the manifests crate read into one); `source` names it in errors.
    pub fn from_registry(
        registry: &manifests::types::Registry,
        source: &str,
    ) -> Result<Self, HostsError> {
        let entry = |host: &manifests::types::RegistryHost| -> Result<HostEntry, HostsError> {
            let dial_timeout = host
                .dial_timeout
                .as_deref()
                .map(parse_go_duration)
                .transpose()
                .map_err(|reason| HostsError::BadDuration {
                    source_name: source.to_owned(),
                    url: host.url.clone(),
                    reason,
                })?;
            let capabilities = match &host.capabilities {
                None => Capabilities::ALL,
                Some(list) => Capabilities {
                    pull: list.contains(&manifests::types::Capability::Pull),
                    resolve: list.contains(&manifests::types::Capability::Resolve),
                    push: list.contains(&manifests::types::Capability::Push),
                },
            };
            Ok(HostEntry {
                url: host.url.clone(),
                capabilities,
                override_path: host.override_path,
                client: ClientSettings {
                    ca: host.ca.iter().map(PathBuf::from).collect(),
                    client_certs: host
                        .client
                        .iter()
                        .map(|c| ClientCert {
                            cert: PathBuf::from(&c.cert),
                            key: c.key.as_ref().map(PathBuf::from),
                        })
                        .collect(),
                    skip_verify: host.skip_verify,
                    headers: host
                        .header
                        .iter()
                        .flat_map(|(name, values)| {
                            values
                                .iter()
                                .map(move |value| (name.clone(), value.clone()))
                        })
                        .collect(),
                    dial_timeout,
                    proxy: host.proxy.clone(),
                },
            })
        };
        Ok(Self {
            source: source.to_owned(),
            hosts: registry
                .spec
                .hosts
                .iter()
                .map(entry)
                .collect::<Result<_, _>>()?,
            server: match &registry.spec.server {
                Some(server) => entry(server)?,
                None => HostEntry::default(),
            },
        })
    }
}

/// Go's `time.ParseDuration`, the manifests crate's, so that what
/// `berth validate` accepts is what the agent applies.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    manifests::duration::parse_go(text).map_err(|err| err.to_string())
}

/// Every registry config in effect, keyed by registry host (`docker.io`,
/// `registry.local:5000`) or [`DEFAULT_HOST_KEY`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsConfig {
    registries: BTreeMap<String, RegistryHosts>,
}

impl HostsConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the config for `host` (`_default` for all others).
    pub fn insert(&mut self, host: impl Into<String>, config: RegistryHosts) {
        self.registries.insert(host.into(), config);
    }

    /// Adds every config of `other`, replacing this one's for the same host.
    pub fn overlay(&mut self, other: HostsConfig) {
        self.registries.extend(other.registries);
    }

    pub fn get(&self, host: &str) -> Option<&RegistryHosts> {
        self.registries.get(host)
    }

    /// The config that applies to images on `registry`: its own, else
    /// `_default`, else none.
    pub fn lookup(&self, registry: &str) -> Option<&RegistryHosts> {
        self.registries
            .get(registry)
            .or_else(|| self.registries.get(DEFAULT_HOST_KEY))
    }

    /// The endpoints to try for images on `registry`, in order.
    pub fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>, HostsError> {
        endpoints_for(self.lookup(registry), registry)
    }

    /// Builds the HTTP client of every host, so that a config whose CA or
    /// key files cannot be used is refused before it takes effect.
    fn build_clients(&self) -> Result<HashMap<ClientSettings, reqwest::Client>, HostsError> {
        let mut clients = HashMap::new();
        for (key, config) in &self.registries {
            config.build_clients_into(key, &mut clients)?;
        }
        Ok(clients)
    }
}

impl RegistryHosts {
    /// Checks that this config can be used for `host` (its key: a registry
    /// host or `_default`): every URL parses and every host's client can be
    /// built (CA and client certificate files readable and valid, headers
    /// and proxy well-formed). The registry reconciler reports the error in
    /// the object's status and leaves the config out of the resolver.
    pub fn check(&self, host: &str) -> Result<(), HostsError> {
        self.build_clients_into(host, &mut HashMap::new())
    }

    fn build_clients_into(
        &self,
        host: &str,
        clients: &mut HashMap<ClientSettings, reqwest::Client>,
    ) -> Result<(), HostsError> {
        // `_default` has no registry host of its own; a placeholder is
        // enough to check that its clients can be built.
        let registry = if host == DEFAULT_HOST_KEY {
            "default.invalid"
        } else {
            host
        };
        for endpoint in endpoints_for(Some(self), registry)? {
            if !clients.contains_key(&endpoint.client) {
                let client = build_client(&endpoint)?;
                clients.insert(endpoint.client.clone(), client);
            }
        }
        Ok(())
    }
}

/// One place to send registry requests, with what it may be used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://authority`, e.g. `https://mirror.local:5000`.
    pub origin: String,
    /// The API root path: `/v2`, `/prefix/v2`, or an override as written.
    pub api_root: String,
    pub capabilities: Capabilities,
    /// The `ns` query parameter for requests to a mirror: the registry host
    /// the image belongs to. `None` when this is the registry itself.
    pub namespace: Option<String>,
    pub is_server: bool,
    pub client: ClientSettings,
    /// Which config this endpoint came from (`default` when none).
    pub source: String,
}

impl Endpoint {
    /// The URL of `/v2/<repository>/<kind>/<reference>` on this endpoint,
    /// e.g. kind `manifests` and a tag, or kind `blobs` and a digest.
    pub fn url(&self, repository: &str, kind: &str, reference: &str) -> String {
        let mut url = format!(
            "{}{}/{repository}/{kind}/{reference}",
            self.origin, self.api_root
        );
        if let Some(ns) = &self.namespace {
            url.push_str("?ns=");
            url.push_str(&encode_query_value(ns));
        }
        url
    }

    /// The configured `header` table as request headers, every value of a
    /// name kept in order (containerd sends them all). They belong to this
    /// endpoint's origin only: the puller adds them per request, never to a
    /// token realm or a redirect target elsewhere.
    pub fn headers(&self) -> Result<HeaderMap, HostsError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.client.headers {
            let bad = |reason: String| HostsError::BadHeader {
                source_name: self.source.clone(),
                url: self.display_name(),
                name: name.clone(),
                reason,
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            // Mirrors are often given a token this way: keep it out of
            // debug output.
            value.set_sensitive(true);
            headers.append(name, value);
        }
        Ok(headers)
    }

    /// The name used in messages: the origin and API root.
    pub fn display_name(&self) -> String {
        format!("{}{}", self.origin, self.api_root)
    }

    /// The host (and port) requests go to, for credential lookup.
    pub fn authority(&self) -> &str {
        self.origin
            .split_once("://")
            .map_or(self.origin.as_str(), |(_, rest)| rest)
    }
}

fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether requests for images on `registry` sent to `authority` go to a
/// mirror (and so carry `ns=`). Docker Hub's API host is not a mirror of it.
fn is_mirror(authority: &str, registry: &str) -> bool {
    authority != registry && !(registry == DOCKER_HUB && authority == "registry-1.docker.io")
}

fn default_server(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_SERVER.to_owned()
    } else {
        format!("https://{registry}")
    }
}

/// The ordered endpoints for `registry` under `config` (pure: no I/O).
pub fn endpoints_for(
    config: Option<&RegistryHosts>,
    registry: &str,
) -> Result<Vec<Endpoint>, HostsError> {
    let Some(config) = config else {
        let server = HostEntry {
            url: default_server(registry),
            ..HostEntry::default()
        };
        return Ok(vec![endpoint(&server, registry, "default", true)?]);
    };
    let mut endpoints = Vec::with_capacity(config.hosts.len() + 1);
    for host in &config.hosts {
        endpoints.push(endpoint(host, registry, &config.source, false)?);
    }
    let mut server = config.server.clone();
    if server.url.is_empty() {
        // As containerd: the default server keeps the file's top-level TLS
        // settings but always has every capability and the standard root.
        server.url = default_server(registry);
        server.capabilities = Capabilities::ALL;
        server.override_path = false;
    }
    endpoints.push(endpoint(&server, registry, &config.source, true)?);
    Ok(endpoints)
}

fn endpoint(
    host: &HostEntry,
    registry: &str,
    source: &str,
    is_server: bool,
) -> Result<Endpoint, HostsError> {
    let written = host.url.trim();
    let with_scheme = if written.starts_with("http://") || written.starts_with("https://") {
        written.to_owned()
    } else if written.contains("://") {
        let scheme = written.split("://").next().unwrap_or_default().to_owned();
        return Err(HostsError::BadScheme {
            source_name: source.to_owned(),
            url: host.url.clone(),
            scheme,
        });
    } else {
        format!("https://{written}")
    };
    let url = Url::parse(&with_scheme).map_err(|err| HostsError::BadUrl {
        source_name: source.to_owned(),
        url: host.url.clone(),
        reason: err.to_string(),
    })?;
    let Some(hostname) = url.host_str() else {
        return Err(HostsError::BadUrl {
            source_name: source.to_owned(),
            url: host.url.clone(),
            reason: "it names no host".to_owned(),
        });
    };
    let authority = match url.port() {
        Some(port) => format!("{hostname}:{port}"),
        None => hostname.to_owned(),
    };
    let path = clean_path(url.path());
    let api_root = if host.override_path || path.ends_with("/v2") {
        path
    } else {
        format!("{path}/v2")
    };
    Ok(Endpoint {
        origin: format!("{}://{authority}", url.scheme()),
        api_root,
        capabilities: host.capabilities,
        namespace: is_mirror(&authority, registry).then(|| registry.to_owned()),
        is_server,
        client: host.client.clone(),
        source: source.to_owned(),
    })
}

/// `/a//b/../c/` → `/a/c`; the root → `` (so `/v2` can be appended).
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.iter().map(|part| format!("/{part}")).collect()
}

/// Holds the hosts config in effect and the HTTP clients built for it.
/// Cheap to share (`Arc<Resolver>`); a new config applies to the next pull.
pub struct Resolver {
    config: RwLock<Arc<HostsConfig>>,
    clients: Mutex<HashMap<ClientSettings, reqwest::Client>>,
}

impl Resolver {
    /// A resolver with `config` in effect, after checking that a client can
    /// be built for every host in it.
    pub fn new(config: HostsConfig) -> Result<Self, HostsError> {
        let resolver = Self {
            config: RwLock::new(Arc::new(HostsConfig::default())),
            clients: Mutex::new(HashMap::new()),
        };
        resolver.set_config(config)?;
        Ok(resolver)
    }

    /// Puts `config` in effect for the next pull. When a client for one of
    /// its hosts cannot be built (unreadable CA or key, bad header), the
    /// error names the file and host, and the previous config stays in effect.
    pub fn set_config(&self, config: HostsConfig) -> Result<(), HostsError> {
        let clients = config.build_clients()?;
        // Clients are rebuilt rather than reused: a CA file may have new
        // content under the same path.
        *self.clients.lock().unwrap_or_else(|p| p.into_inner()) = clients;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// The config in effect.
    pub fn config(&self) -> Arc<HostsConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The endpoints to try for images on `registry`, in order.
    pub fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>, HostsError> {
        self.config().endpoints(registry)
    }

    /// The (shared, cached) HTTP client for `endpoint`.
    pub fn client(&self, endpoint: &Endpoint) -> Result<reqwest::Client, HostsError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&endpoint.client) {
            return Ok(client.clone());
        }
        let client = build_client(endpoint)?;
        clients.insert(endpoint.client.clone(), client.clone());
        Ok(client)
    }
}

/// reqwest with rustls needs a process-wide crypto provider; berth uses ring.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: also fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn build_client(endpoint: &Endpoint) -> Result<reqwest::Client, HostsError> {
    install_crypto_provider();
    let settings = &endpoint.client;
    let source_name = endpoint.source.clone();
    let url = endpoint.display_name();
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| HostsError::ReadFile {
            source_name: source_name.clone(),
            url: url.clone(),
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let bad_pem = |what: &'static str, path: &Path, reason: String| HostsError::BadPem {
        source_name: source_name.clone(),
        url: url.clone(),
        what,
        path: path.to_path_buf(),
        reason,
    };

    // Headers are checked here, so a config with a bad one is refused as a
    // whole, but sent per request (see `Endpoint::headers`): reqwest's
    // default headers would keep only one value of a name and would follow
    // a redirect to any host.
    endpoint.headers()?;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(settings.dial_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
        // The puller follows redirects itself, deciding per hop which
        // headers and credentials may go along.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
    let mut roots = Vec::new();
    for path in &settings.ca {
        let pem = read("CA certificate", path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| bad_pem("CA certificate", path, crate::status::chain(&err)))?;
        if certs.is_empty() {
            return Err(bad_pem(
                "CA certificate",
                path,
                "it holds no PEM certificate".to_owned(),
            ));
        }
        roots.extend(certs);
    }
    if !roots.is_empty() {
        builder = builder.tls_certs_merge(roots);
    }
    for pair in &settings.client_certs {
        let mut pem = read("client certificate", &pair.cert)?;
        if let Some(key) = &pair.key {
            pem.push(b'\n');
            pem.extend(read("client key", key)?);
        }
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|err| bad_pem("client certificate", &pair.cert, crate::status::chain(&err)))?;
        // rustls presents one identity; containerd also uses the first that
        // the server accepts, and configs list one in practice.
        builder = builder.identity(identity);
    }
    if let Some(proxy) = &settings.proxy {
        let proxy = reqwest::Proxy::all(proxy).map_err(|err| HostsError::BadProxy {
            source_name: endpoint.source.clone(),
            url: endpoint.display_name(),
            proxy: proxy.clone(),
            reason: crate::status::chain(&err),
        })?;
        builder = builder.proxy(proxy);
    }
    if settings.skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|err| HostsError::Client {
        source_name: endpoint.source.clone(),
        url: endpoint.display_name(),
        reason: crate::status::chain(&err),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(url: &str) -> HostEntry {
        HostEntry {
            url: url.to_owned(),
            ..HostEntry::default()
        }
    }

    fn config(hosts: Vec<HostEntry>, server: &str) -> RegistryHosts {
        RegistryHosts {
            source: "test/hosts.toml".to_owned(),
            hosts,
            server: host(server),
        }
    }

    fn urls(endpoints: &[Endpoint]) -> Vec<String> {
        endpoints
            .iter()
            .map(|e| e.url("library/busybox", "manifests", "latest"))
            .collect()
    }

    #[test]
    fn no_config_means_https_to_the_registry_itself() {
        let endpoints = endpoints_for(None, "registry.local:5000").expect("endpoints");
        assert_eq!(
            urls(&endpoints),
            ["https://registry.local:5000/v2/library/busybox/manifests/latest"]
        );
        assert!(endpoints[0].is_server);
        assert_eq!(endpoints[0].capabilities, Capabilities::ALL);
    }

    #[test]
    fn docker_hub_defaults_to_its_api_host_without_ns() {
        let endpoints = endpoints_for(None, "docker.io").expect("endpoints");
        assert_eq!(
            urls(&endpoints),
            ["https://registry-1.docker.io/v2/library/busybox/manifests/latest"]
        );
        assert_eq!(endpoints[0].namespace, None);
    }

    #[test]
    fn mirrors_come_first_in_file_order_then_the_server_with_ns_on_mirrors() {
        let cfg = config(
            vec![host("http://mirror-b:5000"), host("mirror-a.local")],
            "",
        );
        let endpoints = endpoints_for(Some(&cfg), "docker.io").expect("endpoints");
        assert_eq!(
            urls(&endpoints),
            [
                "http://mirror-b:5000/v2/library/busybox/manifests/latest?ns=docker.io",
                "https://mirror-a.local/v2/library/busybox/manifests/latest?ns=docker.io",
                "https://registry-1.docker.io/v2/library/busybox/manifests/latest",
            ]
        );
        assert_eq!(
            endpoints.iter().map(|e| e.is_server).collect::<Vec<_>>(),
            [false, false, true]
        );
    }

    #[test]
    fn ns_carries_the_port_of_the_registry() {
        let cfg = config(vec![host("http://127.0.0.1:6000")], "http://127.0.0.1:5000");
        let endpoints = endpoints_for(Some(&cfg), "127.0.0.1:5000").expect("endpoints");
        assert_eq!(
            urls(&endpoints),
            [
                "http://127.0.0.1:6000/v2/library/busybox/manifests/latest?ns=127.0.0.1:5000",
                "http://127.0.0.1:5000/v2/library/busybox/manifests/latest",
            ]
        );
    }

    #[test]
    fn path_gets_v2_appended_unless_present_or_overridden() {
        let mut overridden = host("https://mirror/api/registry/");
        overridden.override_path = true;
        let cfg = config(
            vec![
                host("https://mirror/prefix"),
                host("https://mirror/prefix/v2"),
                overridden,
                host("https://mirror/a/../b//"),
            ],
            "https://origin",
        );
        let endpoints = endpoints_for(Some(&cfg), "origin").expect("endpoints");
        let roots: Vec<&str> = endpoints.iter().map(|e| e.api_root.as_str()).collect();
        assert_eq!(
            roots,
            ["/prefix/v2", "/prefix/v2", "/api/registry", "/b/v2", "/v2"]
        );
        assert_eq!(
            endpoints[2].url("x/y", "blobs", "sha256:00"),
            "https://mirror/api/registry/x/y/blobs/sha256:00?ns=origin"
        );
    }

    #[test]
    fn default_server_keeps_top_level_tls_settings_and_all_capabilities() {
        let mut cfg = config(vec![], "");
        cfg.server.client.skip_verify = true;
        cfg.server.capabilities = Capabilities {
            pull: true,
            resolve: false,
            push: false,
        };
        let endpoints = endpoints_for(Some(&cfg), "registry.local").expect("endpoints");
        assert_eq!(endpoints.len(), 1);
        assert!(endpoints[0].client.skip_verify);
        assert_eq!(endpoints[0].capabilities, Capabilities::ALL);
        assert_eq!(endpoints[0].origin, "https://registry.local");
    }

    #[test]
    fn lookup_prefers_the_host_then_default() {
        let mut set = HostsConfig::new();
        set.insert("_default", config(vec![host("http://everything")], ""));
        set.insert("quay.io", config(vec![host("http://quay-mirror")], ""));
        let quay = set.endpoints("quay.io").expect("quay");
        assert_eq!(quay[0].origin, "http://quay-mirror");
        let other = set.endpoints("ghcr.io").expect("ghcr");
        assert_eq!(other[0].origin, "http://everything");
        assert_eq!(other[0].namespace.as_deref(), Some("ghcr.io"));
        assert_eq!(other[1].origin, "https://ghcr.io");
    }

    #[test]
    fn other_schemes_are_rejected_with_the_source_named() {
        let cfg = config(vec![host("ftp://mirror")], "");
        let err = endpoints_for(Some(&cfg), "docker.io").expect_err("ftp");
        let message = err.to_string();
        assert!(message.contains("test/hosts.toml"), "{message}");
        assert!(message.contains("ftp"), "{message}");
    }

    #[test]
    fn a_config_with_an_unreadable_ca_is_refused_and_the_old_one_stays() {
        let mut good = HostsConfig::new();
        good.insert("a.local", config(vec![host("http://mirror-a")], ""));
        let resolver = Resolver::new(good.clone()).expect("good config");

        let mut bad_host = host("https://mirror-b");
        bad_host.client.ca = vec![PathBuf::from("/nonexistent/berth-ca.pem")];
        let mut bad = HostsConfig::new();
        bad.insert("a.local", config(vec![bad_host], ""));
        let err = resolver.set_config(bad).expect_err("unreadable CA");
        assert!(
            err.to_string().contains("/nonexistent/berth-ca.pem"),
            "{err}"
        );
        assert_eq!(*resolver.config(), good);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("fast").is_err());
        assert!(parse_go_duration("").is_err());
    }

    #[test]
    fn check_refuses_a_registry_whose_client_cannot_be_built() {
        let mut bad_header = host("http://mirror");
        bad_header.client.headers = vec![("X-Bad\nName".to_owned(), "v".to_owned())];
        let err = config(vec![bad_header], "")
            .check("_default")
            .expect_err("invalid header name");
        assert!(err.to_string().contains("test/hosts.toml"), "{err}");
        assert!(
            config(vec![host("http://mirror")], "")
                .check("docker.io")
                .is_ok()
        );
    }

    #[test]
    fn capabilities_display_lists_what_is_on() {
        let caps = Capabilities {
            pull: true,
            resolve: false,
            push: true,
        };
        assert_eq!(caps.to_string(), "[pull, push]");
    }
}
