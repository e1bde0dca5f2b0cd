//! Image references, parsed and normalised like docker and containerd
//! (distribution's `reference` grammar, `ParseNormalizedNamed`):
//!
//! - `nginx` → `docker.io/library/nginx:latest`
//! - `user/app:1.0` → `docker.io/user/app:1.0`
//! - `localhost:5000/a/b@sha256:…` keeps its domain; a tag and a digest may
//!   both be given (the digest wins when pulling)
//! - the first path component is a registry domain when it contains `.` or
//!   `:`, is `localhost`, or has uppercase letters; `index.docker.io` is
//!   `docker.io`
//! - repository paths are lowercase `[a-z0-9]` components joined by `.`,
//!   `_`, `__` or dashes; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
//!   names are at most 255 characters; digests are `sha256` (64 hex) or
//!   `sha512` (128 hex), lowercase.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A fully qualified image reference: domain, repository path, and a tag
/// and/or digest (`latest` when neither was given).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageReference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid image reference `{reference}`: {reason}")]
    Invalid { reference: String, reason: String },
    #[error("invalid image reference `{0}`: repository name must be lowercase")]
    Uppercase(String),
    #[error("invalid image reference `{0}`: repository name is longer than 255 characters")]
    NameTooLong(String),
}

impl ImageReference {
    /// Parses and normalises a reference as `docker pull` would.
    pub fn parse(reference: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::Invalid {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        if reference.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("contains whitespace"));
        }

        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|reason| invalid(&reason))?;
                (rest, Some(digest.to_owned()))
            }
            None => (reference, None),
        };

        // The tag follows the last ':' that comes after the last '/'
        // (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let split = last_slash + i;
                (&rest[..split], Some(&rest[split + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !is_valid_tag(tag)
        {
            return Err(invalid(&format!(
                "tag `{tag}` must be 1-128 characters of letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
            )));
        }
        if name.is_empty() {
            return Err(invalid("missing repository name"));
        }

        let (domain, path) = split_domain(name);
        validate_domain(&domain).map_err(|reason| invalid(&reason))?;
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(reference.to_owned()));
        }
        validate_path(&path).map_err(|reason| invalid(&reason))?;
        if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong(reference.to_owned()));
        }

        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(Self {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io`, `localhost:5000`): the namespace that
    /// selects the `Registry` configuration.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.path
    }

    /// `domain/repository` (`docker.io/library/nginx`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// `sha256:…` when the reference pins a digest.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The short form docker prints (`nginx:latest`, `user/app:1.0`), when
    /// it reads back as this reference: `docker.io/a.b/c` stays whole, as
    /// `a.b/c` would name the registry `a.b`.
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        let without_domain = match full.strip_prefix(&format!("{DEFAULT_DOMAIN}/")) {
            Some(rest) => rest,
            None => return full,
        };
        let short = without_domain
            .strip_prefix(OFFICIAL_REPO_PREFIX)
            .filter(|rest| !rest.split(['@', ':']).next().unwrap_or("").contains('/'))
            .unwrap_or(without_domain);
        if Self::parse(short).as_ref() == Ok(self) {
            short.to_owned()
        } else {
            full
        }
    }

    /// The same reference pinned to `digest`, keeping the tag for display.
    pub fn with_digest(&self, digest: impl Into<String>) -> Self {
        Self {
            digest: Some(digest.into()),
            ..self.clone()
        }
    }
}

fn split_domain(name: &str) -> (String, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN.to_owned()
    } else {
        domain
    };
    let remainder = if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        format!("{OFFICIAL_REPO_PREFIX}{remainder}")
    } else {
        remainder
    };
    (domain, remainder)
}

fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `host[:port]` where host is a DNS name, an IPv4 address or `[IPv6]`.
pub(crate) fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry `{domain}` has an unclosed `[`"))?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("registry `{domain}` is not a valid IPv6 address"));
        }
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("registry `{domain}` is malformed")),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return Err(format!("registry `{domain}` has an invalid port `{port}`"));
    }
    if let Some(host) = host {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if host.is_empty() || !host.split('.').all(component_ok) {
            return Err(format!(
                "registry host `{host}` must be a DNS name or IP address (letters, digits, `-`, `.`)"
            ));
        }
        // A URL host whose last part is a number is an IPv4 address (WHATWG
        // URL, which the registry client follows): `registry.10` or
        // `1.2.3.256` could never be connected to.
        if ends_in_a_number(host) && host.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(format!(
                "registry host `{host}` ends in a number but is not an IPv4 address"
            ));
        }
    }
    Ok(())
}

/// The WHATWG URL "ends in a number" test: the last label is decimal
/// digits or `0x` and hex digits.
fn ends_in_a_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()));
    hex || last.bytes().all(|b| b.is_ascii_digit())
}

/// Lowercase path components separated by `/`, each `[a-z0-9]+` joined by
/// `.`, `_`, `__` or runs of `-`.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("repository path has an empty component (`//` or a trailing `/`)".into());
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!(
                "repository path component `{component}` must start and end with a lowercase letter or digit"
            ));
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
            if !ok {
                return Err(format!(
                    "repository path component `{component}` has an invalid separator `{sep}` (use `.`, `_`, `__` or `-`)"
                ));
            }
        }
    }
    Ok(())
}

fn validate_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("digest `{digest}` must be `algorithm:hex`, e.g. `sha256:…`"))?;
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "digest algorithm `{algorithm}` is not supported (use sha256 or sha512)"
            ));
        }
    };
    if hex.len() != expected_len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "{algorithm} digest must be {expected_len} lowercase hex characters"
        ));
    }
    Ok(())
}

/// The canonical form: `docker.io/library/nginx:latest`,
/// `localhost:5000/a/b:1@sha256:…`.
impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ImageReference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageReference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn normalised(reference: &str) -> String {
        ImageReference::parse(reference)
            .unwrap_or_else(|e| panic!("{reference}: {e}"))
            .to_string()
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(normalised("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalised("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(normalised("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            normalised("docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            normalised("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(normalised("a/b/c"), "docker.io/a/b/c:latest");
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let r = ImageReference::parse(&format!("localhost:5000/a/b@{DIGEST}")).expect("valid");
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(r.object(), DIGEST);

        let r =
            ImageReference::parse(&format!("registry.local:5000/app:1.0@{DIGEST}")).expect("valid");
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.digest(), Some(DIGEST));
        assert_eq!(
            r.to_string(),
            format!("registry.local:5000/app:1.0@{DIGEST}")
        );

        assert_eq!(
            normalised("localhost/berth/busybox:1.35"),
            "localhost/berth/busybox:1.35"
        );
        assert_eq!(normalised("127.0.0.1:5000/x"), "127.0.0.1:5000/x:latest");
        assert_eq!(normalised("[::1]:5000/x:2"), "[::1]:5000/x:2");
        assert_eq!(
            normalised("Registry.Example.com/x"),
            "Registry.Example.com/x:latest"
        );
    }

    #[test]
    fn familiar_names_drop_the_defaults() {
        let familiar = |r: &str| ImageReference::parse(r).expect(r).familiar();
        assert_eq!(familiar("nginx"), "nginx:latest");
        assert_eq!(familiar("user/app:1"), "user/app:1");
        assert_eq!(familiar("localhost:5000/x:1"), "localhost:5000/x:1");
    }

    /// Found by fuzzing (`reference` target): the short form of
    /// `docker.io/a.b/c` is not `a.b/c`, which names the registry `a.b`.
    #[test]
    fn familiar_keeps_docker_io_when_the_path_starts_like_a_host() {
        for reference in [
            "docker.io/libra192.18lh2.186lry/busybox",
            "docker.io/localhost/x:1",
            "docker.io/index.docker.io/x",
        ] {
            let parsed = ImageReference::parse(reference).expect(reference);
            let familiar = parsed.familiar();
            assert_eq!(ImageReference::parse(&familiar), Ok(parsed), "{familiar}");
        }
    }

    /// Found by fuzzing (`hosts_toml` target): validate accepted a registry
    /// URL host the agent's URL parser refuses, as a host whose last part is
    /// a number is read as an IPv4 address, and a port past 65535.
    #[test]
    fn a_host_ending_in_a_number_must_be_an_ipv4_address_and_a_port_fit_16_bits() {
        for bad in [
            "registry.loca7.0.0.1:1080",
            "registry.10",
            "1.2.3.256",
            "1.2.3",
            "registry.0x1f",
            "registry.local:65536",
            "registry.local:99999",
        ] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
        for good in [
            "10.0.0.2:5000",
            "registry.local:65535",
            "r2d2.local",
            "registry.0xg",
        ] {
            assert!(validate_domain(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn invalid_references_say_why() {
        let err = |r: &str| ImageReference::parse(r).expect_err(r).to_string();
        assert!(
            err("Nginx").contains("must be lowercase"),
            "{}",
            err("Nginx")
        );
        assert!(err("docker.io/Library/nginx").contains("lowercase"));
        assert!(err("nginx:").contains("tag"));
        assert!(err("nginx:-x").contains("tag"));
        assert!(err(&format!("nginx:{}", "a".repeat(129))).contains("tag"));
        assert!(err("nginx@sha256:abc").contains("64 lowercase hex"));
        assert!(err("nginx@md5:abc").contains("not supported"));
        assert!(
            err(&format!(
                "nginx@{}",
                DIGEST.to_uppercase().replace("SHA", "sha")
            ))
            .contains("hex")
        );
        assert!(err("a//b").contains("empty component"));
        assert!(err("a/b/").contains("empty component"));
        assert!(err("-a").contains("start and end"));
        assert!(err("a..b").contains("separator"));
        assert!(err("a___b").contains("separator"));
        assert!(err("localhost:port/x").contains("port"));
        assert!(err("exa_mple.com/x").contains("DNS name"));
        assert!(err("nginx latest").contains("whitespace"));
        assert!(matches!(
            ImageReference::parse(""),
            Err(ReferenceError::Empty)
        ));
        assert!(matches!(
            ImageReference::parse(&format!("example.com/{}", "a".repeat(250))),
            Err(ReferenceError::NameTooLong(_))
        ));
    }

    #[test]
    fn separators_that_distribution_allows() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a/b.c_d__e-f", "0/1"] {
            ImageReference::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }
}
