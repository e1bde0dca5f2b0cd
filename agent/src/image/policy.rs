//! Pod `imagePullPolicy`, decided as Kubernetes does, as a pure function
//! the pod reconciler calls before it creates a container.

use super::remote::reference::ImageReference;

/// `imagePullPolicy` of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Parses the manifest spelling (`Always`, `IfNotPresent`, `Never`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "Always" => Some(Self::Always),
            "IfNotPresent" => Some(Self::IfNotPresent),
            "Never" => Some(Self::Never),
            _ => None,
        }
    }

    /// The Kubernetes default when the field is omitted: `Always` for the
    /// `latest` tag (an image named without tag or digest is `latest`),
    /// `IfNotPresent` otherwise (another tag, or a digest only).
    pub fn default_for(image: &ImageReference) -> Self {
        if image.tag() == Some("latest") {
            Self::Always
        } else {
            Self::IfNotPresent
        }
    }
}

/// What to do about a container's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullDecision {
    /// The stored image is used as it is.
    UseLocal,
    /// Pull (even if a copy is stored: `Always` re-resolves the tag).
    Pull,
    /// The image is not stored and the policy forbids pulling.
    NotPresent { image: String },
}

impl PullDecision {
    /// The status message for [`PullDecision::NotPresent`].
    pub fn error_message(&self) -> Option<String> {
        match self {
            Self::NotPresent { image } => Some(format!(
                "image {image} is not present and imagePullPolicy is Never: import it with `berth import` or change the policy"
            )),
            _ => None,
        }
    }
}

/// Decides for `image` under `policy` (`None` = the Kubernetes default),
/// given whether a copy is stored locally.
pub fn decide(policy: Option<PullPolicy>, image: &ImageReference, present: bool) -> PullDecision {
    match policy.unwrap_or_else(|| PullPolicy::default_for(image)) {
        PullPolicy::Always => PullDecision::Pull,
        PullPolicy::IfNotPresent if present => PullDecision::UseLocal,
        PullPolicy::IfNotPresent => PullDecision::Pull,
        PullPolicy::Never if present => PullDecision::UseLocal,
        PullPolicy::Never => PullDecision::NotPresent {
            image: image.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageReference {
        s.parse().expect("reference")
    }

    #[test]
    fn kubernetes_defaults() {
        assert_eq!(
            PullPolicy::default_for(&image("busybox")),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::default_for(&image("busybox:latest")),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::default_for(&image("busybox:1.36")),
            PullPolicy::IfNotPresent
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            PullPolicy::default_for(&image(&format!("busybox@{digest}"))),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::default_for(&image(&format!("busybox:latest@{digest}"))),
            PullPolicy::Always
        );
    }

    #[test]
    fn decisions() {
        let tagged = image("registry.local:5000/app:1.0");
        let latest = image("registry.local:5000/app");
        use PullDecision::*;
        assert_eq!(decide(None, &tagged, true), UseLocal);
        assert_eq!(decide(None, &tagged, false), Pull);
        assert_eq!(decide(None, &latest, true), Pull);
        assert_eq!(decide(Some(PullPolicy::Always), &tagged, true), Pull);
        assert_eq!(
            decide(Some(PullPolicy::IfNotPresent), &latest, true),
            UseLocal
        );
        assert_eq!(decide(Some(PullPolicy::Never), &latest, true), UseLocal);
        let refused = decide(Some(PullPolicy::Never), &tagged, false);
        assert_eq!(
            refused,
            NotPresent {
                image: "registry.local:5000/app:1.0".into()
            }
        );
        let message = refused.error_message().expect("message");
        assert!(message.contains("imagePullPolicy is Never"), "{message}");
    }

    #[test]
    fn parses_manifest_spellings_only() {
        assert_eq!(
            PullPolicy::parse("IfNotPresent"),
            Some(PullPolicy::IfNotPresent)
        );
        assert_eq!(PullPolicy::parse("ifnotpresent"), None);
    }
}
