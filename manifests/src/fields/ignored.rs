//! What berth says about a Kubernetes field it does not implement: nothing
//! for output-only fields (what `kubectl` writes back: `status`,
//! `creationTimestamp`, …) and for fields whose request berth meets anyway
//! (`tolerations` on a node without taints), else why the field cannot
//! apply on one node without an API server.

use crate::parse::tree::{Node, Scalar, Value};

/// How a Kubernetes-only field is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Treatment {
    /// Accepted without a word.
    Silent,
    /// A warning, with the reason when one is known.
    Warn(Option<&'static str>),
}

const NO_SERVICE_ACCOUNT: &str =
    "no API server: no service account token is projected into the pod";
const NO_SELINUX: &str = "berth does not label containers for SELinux";
const WINDOWS: &str = "it applies to Windows containers; berth runs Linux containers";
const NO_DRA: &str =
    "no API server: dynamic resource allocation needs ResourceClaim objects and a driver";

/// The treatment of the Kubernetes-only field at generic path `path`
/// (`spec.containers[].stdinOnce`) holding `node`.
pub(crate) fn treatment(path: &str, node: &Node) -> Treatment {
    use Treatment::{Silent, Warn};
    // Init and ephemeral containers share the container's fields.
    let container_field = ["spec.containers[].", "spec.initContainers[]."]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix));
    if let Some(field) = container_field {
        return Warn(match field {
            "terminationMessagePath" | "terminationMessagePolicy" => {
                Some("not implemented: the termination message is not read back into the status")
            }
            "resizePolicy" => {
                Some("no API server to resize through: editing resources replaces the container")
            }
            "restartPolicy" => Some("not implemented: sidecar init containers"),
            "stdinOnce" => Some("berth attaches no stdin to a container"),
            "volumeDevices" => {
                Some("no API server: raw block devices come from PersistentVolumeClaims")
            }
            "resources.claims" => Some(NO_DRA),
            "securityContext.seLinuxOptions" => Some(NO_SELINUX),
            "securityContext.windowsOptions" => Some(WINDOWS),
            _ => None,
        });
    }
    match path {
        // Output-only: the API server fills them in, kubectl writes them back.
        "status"
        | "metadata.creationTimestamp"
        | "metadata.uid"
        | "metadata.resourceVersion"
        | "metadata.managedFields"
        | "metadata.generation"
        | "metadata.selfLink"
        | "metadata.deletionTimestamp"
        | "metadata.deletionGracePeriodSeconds" => Silent,
        // Met anyway: a berth node has no taints to tolerate, no other
        // pods to preempt and no Services to link.
        "spec.tolerations" | "spec.preemptionPolicy" | "spec.enableServiceLinks" => Silent,
        "spec.schedulerName" if is_str(node, "default-scheduler") => Silent,
        "spec.os" if node.get_str("name") == Some("linux") => Silent,
        "spec.automountServiceAccountToken" if is_bool(node, false) => Silent,

        "metadata.generateName" => Warn(Some("no API server: a name is not generated")),
        "metadata.finalizers" => Warn(Some("no API server: finalizers are not run")),
        "metadata.ownerReferences" => Warn(Some(
            "no API server: owners are not collected; the pod lives as long as its file",
        )),
        "spec.serviceAccountName" | "spec.serviceAccount" | "spec.automountServiceAccountToken" => {
            Warn(Some(NO_SERVICE_ACCOUNT))
        }
        "spec.schedulerName" => Warn(Some(
            "no scheduler: the pod runs on the node whose manifest directory holds it",
        )),
        "spec.schedulingGates" => Warn(Some(
            "no scheduler: the pod runs at once, without waiting for its gates",
        )),
        "spec.topologySpreadConstraints" => {
            Warn(Some("no scheduler: spreading across nodes needs one"))
        }
        "spec.affinity" | "spec.affinity.podAffinity" | "spec.affinity.podAntiAffinity" => Warn(
            Some("no scheduler: affinity between pods and nodes is not evaluated on one node"),
        ),
        "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution" => {
            Warn(Some("no scheduler: preferences pick among nodes"))
        }
        "spec.os" => Warn(Some("berth runs Linux containers only")),
        "spec.ephemeralContainers" => Warn(Some(
            "no API server: ephemeral containers are added through it; use `berth exec`",
        )),
        "spec.activeDeadlineSeconds" => Warn(Some(
            "not implemented: the pod is not stopped when its deadline passes",
        )),
        "spec.hostname" | "spec.subdomain" | "spec.setHostnameAsFQDN" => Warn(Some(
            "not implemented: the pod's hostname is its name, and there is no cluster DNS",
        )),
        "spec.overhead" => Warn(Some(
            "no API server: overhead comes from a RuntimeClass object",
        )),
        "spec.readinessGates" => Warn(Some(
            "no API server: no controller sets the conditions; readiness comes from the probes",
        )),
        "spec.resourceClaims" => Warn(Some(NO_DRA)),
        "spec.securityContext.seLinuxOptions" => Warn(Some(NO_SELINUX)),
        "spec.securityContext.windowsOptions" => Warn(Some(WINDOWS)),
        "spec.securityContext.fsGroupChangePolicy" => Warn(Some(
            "berth never changes the ownership of a volume's existing files, so there is nothing to skip",
        )),
        "spec.securityContext.supplementalGroupsPolicy" => Warn(Some(
            "not implemented: the image's /etc/group memberships are always merged",
        )),
        _ => Warn(None),
    }
}

fn is_str(node: &Node, expected: &str) -> bool {
    matches!(&node.value, Value::Scalar(Scalar::Str(s)) if s == expected)
}

fn is_bool(node: &Node, expected: bool) -> bool {
    matches!(&node.value, Value::Scalar(Scalar::Bool(b)) if *b == expected)
}
