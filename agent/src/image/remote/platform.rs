//! Platforms (`os/arch[/variant]`) and choosing one from an image index,
//! with the normalisation containerd applies (`aarch64` = `arm64`, `arm64`
//! without a variant = `arm64/v8`, `arm` without a variant = `arm/v7`).

use std::fmt;
use std::str::FromStr;

use oci_spec::image::Descriptor;

/// The manifests crate owns the grammar, so `berth validate` accepts
/// exactly the platforms the agent pulls.
pub use manifests::platform::PlatformError;

/// A normalised platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Builds a platform, normalising the architecture and variant.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let os = os.to_ascii_lowercase();
        let (architecture, implied_variant) = normalize_arch(&architecture.to_ascii_lowercase());
        let variant = variant
            .map(str::to_ascii_lowercase)
            .filter(|v| !v.is_empty())
            .map(|v| normalize_variant(&architecture, v))
            .or(implied_variant.map(str::to_owned));
        Self {
            os,
            architecture,
            variant,
        }
    }

    /// The platform of this machine (what the kernel runs natively).
    pub fn host() -> Self {
        Self::new("linux", std::env::consts::ARCH, None)
    }

    /// Whether an index entry with this platform can run here.
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant == other.variant || other.variant.is_none() || self.variant.is_none())
    }

    /// The platform of an index entry, when it has one.
    pub fn of_descriptor(descriptor: &Descriptor) -> Option<Self> {
        let platform = descriptor.platform().as_ref()?;
        Some(Self::new(
            &platform.os().to_string(),
            &platform.architecture().to_string(),
            platform.variant().as_deref(),
        ))
    }

    /// The index entry to use on this platform: exact variant matches win
    /// over entries without a variant; otherwise the first match in index
    /// order, as containerd's platform matcher does.
    pub fn select<'a>(&self, entries: &'a [Descriptor]) -> Option<&'a Descriptor> {
        let candidates: Vec<(&Descriptor, Platform)> = entries
            .iter()
            .filter_map(|entry| Some((entry, Self::of_descriptor(entry)?)))
            .filter(|(_, platform)| self.matches(platform))
            .collect();
        candidates
            .iter()
            .find(|(_, platform)| platform.variant == self.variant)
            .or(candidates.first())
            .map(|(entry, _)| *entry)
    }
}

fn normalize_arch(arch: &str) -> (String, Option<&'static str>) {
    match arch {
        "x86_64" | "x86-64" | "amd64" => ("amd64".to_owned(), None),
        "aarch64" | "arm64" => ("arm64".to_owned(), Some("v8")),
        "armhf" => ("arm".to_owned(), Some("v7")),
        "armel" => ("arm".to_owned(), Some("v6")),
        "arm" => ("arm".to_owned(), Some("v7")),
        "i386" | "i486" | "i586" | "i686" | "386" => ("386".to_owned(), None),
        other => (other.to_owned(), None),
    }
}

fn normalize_variant(arch: &str, variant: String) -> String {
    match (arch, variant.as_str()) {
        ("arm64", "8") => "v8".to_owned(),
        ("arm", "5" | "6" | "7" | "8") => format!("v{variant}"),
        _ => variant,
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let parts = manifests::platform::parse(input)?;
        Ok(Self::new(parts.os, parts.architecture, parts.variant))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str, digest_byte: char) -> Descriptor {
        let mut parts = platform.split('/');
        let os = parts.next().expect("os");
        let arch = parts.next().expect("arch");
        let variant = parts
            .next()
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        let json = format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,
               "digest":"sha256:{}","platform":{{"os":"{os}","architecture":"{arch}"{variant}}}}}"#,
            digest_byte.to_string().repeat(64)
        );
        serde_json::from_str(&json).expect("descriptor")
    }

    /// The digest of the entry `platform` selects from `entries`.
    fn pick(entries: &[Descriptor], platform: &str) -> Option<String> {
        platform
            .parse::<Platform>()
            .expect("platform")
            .select(entries)
            .map(|d| d.digest().to_string())
    }

    #[test]
    fn parses_and_normalises() {
        let p: Platform = "linux/arm64".parse().expect("parse");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        let p: Platform = "Linux/aarch64/8".parse().expect("parse");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        let p: Platform = "linux/x86_64".parse().expect("parse");
        assert_eq!(p.to_string(), "linux/amd64");
        let p: Platform = "linux/arm".parse().expect("parse");
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//v8".parse::<Platform>().is_err());
        assert!("a/b/c/d".parse::<Platform>().is_err());
    }

    #[test]
    fn host_platform_is_linux_and_normalised() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_ne!(host.architecture, "x86_64");
        assert_ne!(host.architecture, "aarch64");
    }

    #[test]
    fn selects_the_matching_entry_from_an_index() {
        let entries = [
            entry("linux/amd64", 'a'),
            entry("linux/arm/v7", 'b'),
            entry("linux/arm64/v8", 'c'),
            entry("windows/amd64", 'd'),
        ];
        assert_eq!(
            pick(&entries, "linux/amd64"),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
        assert_eq!(
            pick(&entries, "linux/arm64"),
            Some(format!("sha256:{}", "c".repeat(64)))
        );
        assert_eq!(
            pick(&entries, "linux/arm/v7"),
            Some(format!("sha256:{}", "b".repeat(64)))
        );
        assert_eq!(pick(&entries, "linux/arm/v6"), None);
        assert_eq!(pick(&entries, "linux/s390x"), None);
    }

    #[test]
    fn missing_variants_are_implied_on_both_sides() {
        // An index entry "linux/arm64" is arm64/v8, as containerd reads it.
        let entries = [entry("linux/arm", 'a'), entry("linux/arm64", 'b')];
        assert_eq!(
            pick(&entries, "linux/arm64/v8"),
            Some(format!("sha256:{}", "b".repeat(64)))
        );
        assert_eq!(
            pick(&entries, "linux/arm/v7"),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
        assert_eq!(pick(&entries, "linux/arm/v6"), None);
    }
}
