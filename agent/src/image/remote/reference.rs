//! The image reference the puller works with. Parsing and normalisation
//! belong to `manifests::reference::ImageReference` (owned by the manifests
//! crate); until that lands this small adapter wraps oci-spec's parser, and
//! the puller only uses the accessors below.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: String,
}

/// `registry/repository[:tag][@digest]`, normalised (`busybox` →
/// `docker.io/library/busybox:latest`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageReference {
    /// The registry host, with its port if any (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to ask the registry's manifests endpoint for: the digest when
    /// there is one (it pins the content), else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let parsed: oci_spec::distribution::Reference =
            input
                .parse()
                .map_err(|err: oci_spec::distribution::ParseError| ReferenceError {
                    input: input.to_owned(),
                    reason: err.to_string(),
                })?;
        let digest = parsed.digest().map(str::to_owned);
        let tag = match parsed.tag() {
            Some(tag) => Some(tag.to_owned()),
            None if digest.is_none() => Some("latest".to_owned()),
            None => None,
        };
        Ok(Self {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_docker_hub_short_names() {
        let r: ImageReference = "busybox".parse().expect("parse");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.manifest_reference(), "latest");
    }

    #[test]
    fn keeps_port_and_prefers_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let r: ImageReference = format!("127.0.0.1:5000/a/b@{digest}")
            .parse()
            .expect("parse");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_reference(), digest);
    }

    #[test]
    fn rejects_garbage() {
        assert!(
            "docker.io/library/BusyBox"
                .parse::<ImageReference>()
                .is_err()
        );
        assert!("".parse::<ImageReference>().is_err());
    }
}
