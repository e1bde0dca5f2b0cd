//! Registry credentials and authentication challenges.
//!
//! Credentials come from a docker-style `config.json` (`auths`: `auth` as
//! base64 `user:password`, or `username`/`password`) and from
//! `kubernetes.io/dockerconfigjson` Secrets (`imagePullSecrets`), whose
//! `.dockerconfigjson` is the same format. They are looked up by the host a
//! request goes to (a mirror gets its own credentials, never the upstream
//! registry's). Secrets never reach a log: [`Credential`]'s `Debug` hides
//! the password.
//!
//! Challenges are the `WWW-Authenticate` header of a 401 (parsed with
//! `http-auth`): `Bearer realm=…,service=…,scope=…` (token auth, anonymous or
//! with credentials) or `Basic realm=…`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading credentials file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: not a docker config.json: {reason}")]
    Parse { source_name: String, reason: String },
    #[error("{source_name}: entry {host:?}: {reason}")]
    Entry {
        source_name: String,
        host: String,
        reason: String,
    },
    #[error(
        "Secret {secret}: type is {actual:?}; an image pull secret must be of type kubernetes.io/dockerconfigjson"
    )]
    SecretType { secret: String, actual: String },
    #[error("Secret {secret}: has no .dockerconfigjson key")]
    SecretKey { secret: String },
    #[error("registry sent an authentication challenge berth cannot answer: {header:?} ({reason})")]
    Challenge { header: String, reason: String },
}

/// A username and password (or identity token) for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// The value of a `Authorization: Basic …` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Credentials by registry host (`host` or `host:port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_host: HashMap<String, Credential>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl Credentials {
    pub fn none() -> Self {
        Self::default()
    }

    /// Reads a docker-style `config.json`.
    pub fn load_docker_config(path: &Path) -> Result<Self, AuthError> {
        let bytes = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_docker_config(&bytes, &path.display().to_string())
    }

    /// Parses the bytes of a docker-style `config.json`; `source_name` is
    /// named in errors (a path, or `Secret default/regcred`).
    /// The node's credentials: `auth_file` when given, else
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, else none.
    pub fn discover(auth_file: Option<&Path>) -> Result<Self, AuthError> {
        if let Some(path) = auth_file {
            return Self::load_docker_config(path);
        }
        let candidates = [
            std::env::var_os("DOCKER_CONFIG").map(|dir| PathBuf::from(dir).join("config.json")),
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json")),
        ];
        for path in candidates.into_iter().flatten() {
            if path.is_file() {
                return Self::load_docker_config(&path);
            }
        }
        Ok(Self::none())
    }

    pub fn from_docker_config(bytes: &[u8], source_name: &str) -> Result<Self, AuthError> {
        let config: DockerConfig =
            serde_json::from_slice(bytes).map_err(|err| AuthError::Parse {
                source_name: source_name.to_owned(),
                reason: json_error_position(&err),
            })?;
        let mut by_host = HashMap::new();
        for (key, entry) in config.auths {
            let bad = |reason: &str| AuthError::Entry {
                source_name: source_name.to_owned(),
                host: key.clone(),
                reason: reason.to_owned(),
            };
            let credential = if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad("\"auth\" is not valid base64"))?;
                let decoded =
                    String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8"))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad("\"auth\" does not decode to user:password"))?;
                Credential {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            } else if let Some(token) = entry.identity_token.filter(|t| !t.is_empty()) {
                // docker's convention for identity tokens.
                Credential {
                    username: "<token>".to_owned(),
                    password: token,
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                Credential { username, password }
            } else {
                return Err(bad("needs \"auth\", or \"username\" and \"password\""));
            };
            by_host.insert(normalize_host(&key), credential);
        }
        Ok(Self { by_host })
    }

    /// Credentials from an image pull secret: `secret` names it in errors
    /// (`namespace/name`), `data` is its decoded `data` map.
    pub fn from_pull_secret(
        secret: &str,
        secret_type: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, AuthError> {
        if secret_type != "kubernetes.io/dockerconfigjson" {
            return Err(AuthError::SecretType {
                secret: secret.to_owned(),
                actual: secret_type.to_owned(),
            });
        }
        let bytes = data
            .get(".dockerconfigjson")
            .ok_or_else(|| AuthError::SecretKey {
                secret: secret.to_owned(),
            })?;
        Self::from_docker_config(bytes, &format!("Secret {secret}"))
    }

    /// Credentials from a pod's `imagePullSecrets` entry: a
    /// `kubernetes.io/dockerconfigjson` Secret.
    pub fn from_secret(secret: &manifests::types::Secret) -> Result<Self, AuthError> {
        let name = match secret.metadata.namespace.as_deref() {
            Some(namespace) if !namespace.is_empty() => {
                format!("{namespace}/{}", secret.metadata.name)
            }
            _ => secret.metadata.name.clone(),
        };
        Self::from_pull_secret(
            &name,
            secret.type_.as_deref().unwrap_or("Opaque"),
            &secret.contents(),
        )
    }

    /// Adds `other`'s credentials; `other` wins for a host both have (pass
    /// pull secrets last: they are the more specific source).
    pub fn merge(&mut self, other: Credentials) {
        self.by_host.extend(other.by_host);
    }

    /// The credential for requests to `host` (`host` or `host:port`).
    pub fn for_host(&self, host: &str) -> Option<&Credential> {
        self.by_host.get(&normalize_host(host))
    }
}

/// What is wrong with a JSON document that holds secrets, and where, without
/// a word of its content: serde's own messages quote the offending value
/// (`invalid type: string "hunter2", expected …`).
pub fn json_error_position(err: &serde_json::Error) -> String {
    let what = match err.classify() {
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Eof => "JSON that ends early",
        serde_json::error::Category::Data => "a value of the wrong type",
        serde_json::error::Category::Io => "unreadable input",
    };
    format!("{what} at line {}, column {}", err.line(), err.column())
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://r:5000/x` → `r:5000`.
fn normalize_host(key: &str) -> String {
    let without_scheme = key
        .split_once("://")
        .map_or(key, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = without_scheme
        .split('/')
        .next()
        .unwrap_or(without_scheme)
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Picks the challenge to answer from a `WWW-Authenticate` value: Bearer if
/// offered, else Basic.
pub fn parse_challenge(header: &str) -> Result<Challenge, AuthError> {
    let bad = |reason: String| AuthError::Challenge {
        header: header.to_owned(),
        reason,
    };
    let challenges = http_auth::parse_challenges(header).map_err(|err| bad(err.to_string()))?;
    let param = |challenge: &http_auth::ChallengeRef<'_>, name: &str| {
        challenge
            .params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.to_unescaped())
    };
    if let Some(bearer) = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
    {
        let realm = param(bearer, "realm")
            .filter(|realm| !realm.is_empty())
            .ok_or_else(|| bad("a Bearer challenge without a realm".to_owned()))?;
        return Ok(Challenge::Bearer {
            realm,
            service: param(bearer, "service"),
            scope: param(bearer, "scope"),
        });
    }
    if challenges
        .iter()
        .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
    {
        return Ok(Challenge::Basic);
    }
    Err(bad("neither Bearer nor Basic is offered".to_owned()))
}

/// The body of a token endpoint's answer (docker token spec; OAuth2 servers
/// use `access_token`).
#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_with_auth_and_username_password() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
            "registry.local:5000": {"username": "bob", "password": "hunter2"},
            "http://127.0.0.1:6000/some/path": {"auth": "YTpi"}
        }}"#;
        let creds = Credentials::from_docker_config(json, "config.json").expect("parse");
        let hub = creds.for_host("docker.io").expect("hub");
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(creds.for_host("registry-1.docker.io"), Some(hub));
        let local = creds.for_host("registry.local:5000").expect("local");
        assert_eq!(local.username, "bob");
        assert_eq!(creds.for_host("127.0.0.1:6000").expect("ip").password, "b");
        assert_eq!(creds.for_host("registry.local"), None, "the port matters");
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let json = br#"{"auths": {"r": {"username": "bob", "password": "hunter2"}}}"#;
        let creds = Credentials::from_docker_config(json, "config.json").expect("parse");
        let shown = format!("{creds:?}");
        assert!(shown.contains("bob"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn bad_entries_name_the_source_and_host() {
        let json = br#"{"auths": {"r.example": {"auth": "!!!"}}}"#;
        let err = Credentials::from_docker_config(json, "/root/auth.json").expect_err("bad");
        let message = err.to_string();
        assert!(message.contains("/root/auth.json"), "{message}");
        assert!(message.contains("r.example"), "{message}");

        let json = br#"{"auths": {"r.example": {"username": "only"}}}"#;
        assert!(Credentials::from_docker_config(json, "x").is_err());
        assert!(Credentials::from_docker_config(b"not json", "x").is_err());
    }

    #[test]
    fn parse_errors_say_where_but_never_quote_the_content() {
        let secret = "PLANTED-hunter2";
        let cases = [
            format!(r#"{{"auths": {{"r": "{secret}"}}}}"#),
            format!(r#"{{"auths": {{"r": {{"password": ["{secret}"], "username": 7}}}}}}"#),
            format!(r#"{{"auths": "{secret}"}}"#),
            format!(r#"{{"auths": {{"r": {{"auth": "{secret}"#),
            format!(r#"{{"auths": {{"r": {{"auth": "{secret}!"}}}}}}"#),
            format!("{secret} is not json"),
        ];
        for case in &cases {
            let err = Credentials::from_docker_config(case.as_bytes(), "Secret default/regcred")
                .expect_err("malformed");
            let message = crate::status::chain(&err);
            assert!(!message.contains("PLANTED"), "{case}: {message}");
            assert!(
                message.contains("Secret default/regcred"),
                "{case}: {message}"
            );
        }
        let err = Credentials::from_docker_config(cases[0].as_bytes(), "x").expect_err("type");
        assert!(err.to_string().contains("line 1, column"), "{err}");
    }

    #[test]
    fn pull_secret_must_be_dockerconfigjson() {
        let mut data = BTreeMap::new();
        data.insert(
            ".dockerconfigjson".to_owned(),
            br#"{"auths": {"r:1": {"auth": "dTpw"}}}"#.to_vec(),
        );
        let creds = Credentials::from_pull_secret(
            "default/regcred",
            "kubernetes.io/dockerconfigjson",
            &data,
        )
        .expect("secret");
        assert_eq!(creds.for_host("r:1").expect("r:1").username, "u");
        let err =
            Credentials::from_pull_secret("default/regcred", "Opaque", &data).expect_err("type");
        assert!(err.to_string().contains("default/regcred"), "{err}");
        let err = Credentials::from_pull_secret(
            "default/empty",
            "kubernetes.io/dockerconfigjson",
            &BTreeMap::new(),
        )
        .expect_err("key");
        assert!(err.to_string().contains(".dockerconfigjson"), "{err}");
    }

    #[test]
    fn bearer_challenge_is_parsed_with_its_parameters() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_challenge(header).expect("bearer"),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".to_owned(),
                service: Some("registry.docker.io".to_owned()),
                scope: Some("repository:library/busybox:pull".to_owned()),
            }
        );
    }

    #[test]
    fn bearer_is_preferred_over_basic_and_basic_alone_works() {
        let both = r#"Basic realm="r", Bearer realm="https://t/token""#;
        assert!(matches!(
            parse_challenge(both).expect("both"),
            Challenge::Bearer { .. }
        ));
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#).expect("basic"),
            Challenge::Basic
        );
    }

    #[test]
    fn unanswerable_challenges_are_errors() {
        assert!(parse_challenge(r#"Digest realm="x", nonce="y""#).is_err());
        assert!(parse_challenge(r#"Bearer service="x""#).is_err());
        assert!(parse_challenge("Bearer realm=").is_err());
    }

    #[test]
    fn token_response_accepts_token_or_access_token() {
        let a: TokenResponse =
            serde_json::from_str(r#"{"token":"t1","expires_in":60}"#).expect("a");
        assert_eq!(a.expires_in, Some(60));
        assert_eq!(a.into_token().as_deref(), Some("t1"));
        let b: TokenResponse = serde_json::from_str(r#"{"access_token":"t2"}"#).expect("b");
        assert_eq!(b.into_token().as_deref(), Some("t2"));
        let c: TokenResponse = serde_json::from_str("{}").expect("c");
        assert_eq!(c.into_token(), None);
    }
}
