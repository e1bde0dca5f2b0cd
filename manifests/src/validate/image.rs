//! `berth/v1 Image` validation.

use super::{Issues, validate_metadata};
use crate::reference::ImageReference;
use crate::types::Image;

pub(super) fn validate_image(image: &Image, issues: &mut Issues) {
    validate_metadata(&image.metadata, "Image", false, issues);
    let spec = &image.spec;
    if spec.image.is_empty() {
        issues.error_at_key("spec", "spec.image is required: the image reference to pin");
    } else if let Err(err) = ImageReference::parse(&spec.image) {
        issues.error("spec.image", err.to_string());
    }
    if let Some(platform) = &spec.platform
        && let Err(err) = crate::platform::parse(platform)
    {
        issues.error("spec.platform", err.to_string());
    }
    if let Some(source) = &spec.source {
        if source.is_empty() {
            issues.error(
                "spec.source",
                "source must be the path of an OCI archive or a `docker save` tarball",
            );
        }
        if spec.pull_policy == Some(crate::types::PullPolicy::Always) {
            issues.warning("spec.pullPolicy", "pullPolicy `Always` has no effect when `source` is set: the image is imported from the file");
        }
    }
}
