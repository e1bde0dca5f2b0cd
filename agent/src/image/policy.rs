//! Pod `imagePullPolicy`: what to do about a container's image, as a pure
//! function the pod reconciler calls before it creates a container. The
//! policy itself, with the Kubernetes default for an omitted field (`Always`
//! for `:latest` or no tag, else `IfNotPresent`), comes from the manifests
//! crate: `Container::image_pull_policy_or_default()`.

use manifests::reference::ImageReference;
pub use manifests::types::ImagePullPolicy;

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

/// Decides for `image` under `policy`, given whether a copy is stored
/// locally (`ImageService::resolve` found it).
pub fn decide(policy: ImagePullPolicy, image: &ImageReference, present: bool) -> PullDecision {
    match policy {
        ImagePullPolicy::Always => PullDecision::Pull,
        ImagePullPolicy::IfNotPresent | ImagePullPolicy::Never if present => PullDecision::UseLocal,
        ImagePullPolicy::IfNotPresent => PullDecision::Pull,
        ImagePullPolicy::Never => PullDecision::NotPresent {
            image: image.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifests::types::Container;

    fn image(s: &str) -> ImageReference {
        ImageReference::parse(s).expect("reference")
    }

    /// The policy a container gets when the manifest omits it.
    fn defaulted(image: &str) -> ImagePullPolicy {
        let container: Container =
            serde_json::from_value(serde_json::json!({"name": "c", "image": image}))
                .expect("container");
        container.image_pull_policy_or_default()
    }

    #[test]
    fn omitted_policies_follow_kubernetes() {
        let tagged = image("registry.local:5000/app:1.0");
        let latest = image("registry.local:5000/app");
        use PullDecision::*;
        assert_eq!(
            decide(defaulted("registry.local:5000/app:1.0"), &tagged, true),
            UseLocal
        );
        assert_eq!(
            decide(defaulted("registry.local:5000/app:1.0"), &tagged, false),
            Pull
        );
        assert_eq!(
            decide(defaulted("registry.local:5000/app"), &latest, true),
            Pull
        );
        let digest = format!("registry.local:5000/app@sha256:{}", "a".repeat(64));
        assert_eq!(decide(defaulted(&digest), &image(&digest), true), UseLocal);
    }

    #[test]
    fn explicit_policies() {
        let tagged = image("registry.local:5000/app:1.0");
        let latest = image("registry.local:5000/app");
        use PullDecision::*;
        assert_eq!(decide(ImagePullPolicy::Always, &tagged, true), Pull);
        assert_eq!(
            decide(ImagePullPolicy::IfNotPresent, &latest, true),
            UseLocal
        );
        assert_eq!(decide(ImagePullPolicy::Never, &latest, true), UseLocal);
        let refused = decide(ImagePullPolicy::Never, &tagged, false);
        assert_eq!(
            refused,
            NotPresent {
                image: "registry.local:5000/app:1.0".into()
            }
        );
        let message = refused.error_message().expect("message");
        assert!(message.contains("imagePullPolicy is Never"), "{message}");
    }
}
