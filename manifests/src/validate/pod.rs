//! `v1 Pod` validation.

use super::Issues;
use crate::names;
use crate::reference::ImageReference;
use crate::types::{Container, Pod};

pub(super) fn validate_pod(pod: &Pod, issues: &mut Issues) {
    issues.check(
        "metadata.name",
        "pod name",
        &pod.metadata.name,
        names::dns1123_subdomain,
    );
    let containers = pod
        .spec
        .init_containers
        .iter()
        .map(|c| ("initContainers", c));
    let containers = containers.chain(pod.spec.containers.iter().map(|c| ("containers", c)));
    let mut index_by_list = std::collections::HashMap::<&str, usize>::new();
    for (list, container) in containers {
        let index = index_by_list.entry(list).or_default();
        validate_container(&format!("spec.{list}[{index}]"), container, issues);
        *index += 1;
    }
}

fn validate_container(path: &str, container: &Container, issues: &mut Issues) {
    issues.check(
        &format!("{path}.name"),
        "container name",
        &container.name,
        names::dns1123_label,
    );
    if container.image.is_empty() {
        issues.error_at_key(
            format!("{path}.name"),
            format!("container `{}` has no image", container.name),
        );
    } else if let Err(err) = ImageReference::parse(&container.image) {
        issues.error(format!("{path}.image"), err.to_string());
    }
}
