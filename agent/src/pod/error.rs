//! The pod layer's errors: what failed, with the Kubernetes reason the
//! status shows for it (`ImagePullBackOff`, `CreateContainerError`, …).
//! The message says what the pod layer was doing; the cause is returned
//! from `source()` and never repeated in the message, so a chain printed
//! with `status::chain` reads each cause once.

use std::fmt;

/// A failure of the host (runtime, images, networks, records), with its
/// causes; the pod layer adds the Kubernetes reason and what it was doing.
pub type HostError = Box<dyn std::error::Error + Send + Sync>;

/// Kubernetes' reasons for a container or pod that is not running, plus
/// berth's own for failures of its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    ErrImageNeverPull,
    InvalidImageName,
    ImagePullBackOff,
    CreateContainerConfigError,
    CreateContainerError,
    CreatePodSandboxError,
    KillContainerError,
    /// Removing a pod's containers, network or sandbox failed.
    TeardownError,
    /// The pod's record could not be read or written.
    PodStateError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrImageNeverPull => "ErrImageNeverPull",
            Self::InvalidImageName => "InvalidImageName",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::CreateContainerError => "CreateContainerError",
            Self::CreatePodSandboxError => "CreatePodSandboxError",
            Self::KillContainerError => "KillContainerError",
            Self::TeardownError => "TeardownError",
            Self::PodStateError => "PodStateError",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of the pod layer.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct PodError {
    pub reason: Reason,
    context: String,
    #[source]
    source: Option<HostError>,
}

impl PodError {
    /// A failure described by its message alone.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            context: message.into(),
            source: None,
        }
    }

    /// `context` failed because of `source`.
    pub fn caused(
        reason: Reason,
        context: impl Into<String>,
        source: impl Into<HostError>,
    ) -> Self {
        Self {
            reason,
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The whole chain on one line, for a status message or an event.
    pub fn message(&self) -> String {
        crate::status::chain(self)
    }
}

/// Several failures of one teardown: it goes on past each.
#[derive(Debug, Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn push(&mut self, what: impl fmt::Display, error: &(dyn std::error::Error + 'static)) {
        self.0
            .push(format!("{what}: {}", crate::status::chain(error)));
    }

    pub fn push_message(&mut self, message: String) {
        self.0.push(message);
    }

    pub fn extend(&mut self, other: Failures) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing failed, else one error listing every failure.
    pub fn into_result(self, context: impl Into<String>) -> Result<(), PodError> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(PodError::caused(
            Reason::TeardownError,
            context,
            self.0.join("; "),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_each_cause_once() {
        let err = PodError::caused(
            Reason::CreateContainerError,
            "starting container web",
            std::io::Error::other("no space left on device"),
        );
        assert_eq!(err.to_string(), "starting container web");
        assert_eq!(
            err.message(),
            "starting container web: no space left on device"
        );
    }

    fn occurrences(text: &str, part: &str) -> usize {
        text.matches(part).count()
    }

    #[test]
    fn a_runtime_io_error_under_a_pod_error_says_its_path_and_cause_once() {
        use crate::runtime::RuntimeError;
        let err = PodError::caused(
            Reason::CreateContainerError,
            "creating container web",
            RuntimeError::Io {
                action: "writing",
                path: "/run/berth/bundles/c1/config.json".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            },
        );
        let message = err.message();
        assert_eq!(
            message,
            "creating container web: writing /run/berth/bundles/c1/config.json: \
             No space left on device (os error 28)"
        );
        assert_eq!(occurrences(&message, "config.json"), 1, "{message}");
        assert_eq!(occurrences(&message, "No space left"), 1, "{message}");
    }

    #[test]
    fn a_namespace_error_under_a_sandbox_error_says_each_cause_once() {
        use crate::runtime::{RuntimeError, SandboxError};
        use netplugins::ns::NsError;
        let sandbox = SandboxError::Namespace {
            pod: "p1".into(),
            source: NsError::CreateFile {
                path: "/run/berth/netns/p1".into(),
                source: std::io::Error::from_raw_os_error(libc::EACCES),
            },
        };
        let err = PodError::caused(
            Reason::CreatePodSandboxError,
            "creating the pod's sandbox",
            RuntimeError::from(sandbox),
        );
        let message = err.message();
        assert_eq!(
            message,
            "creating the pod's sandbox: pod p1: creating namespace file /run/berth/netns/p1: \
             Permission denied (os error 13)"
        );
        assert_eq!(occurrences(&message, "pod p1"), 1, "{message}");
        assert_eq!(occurrences(&message, "Permission denied"), 1, "{message}");
    }

    #[test]
    fn failures_are_collected_into_one_error() {
        let mut failures = Failures::default();
        assert!(std::mem::take(&mut failures).into_result("x").is_ok());
        failures.push("stopping web", &std::io::Error::other("boom"));
        failures.push_message("network: gone".into());
        let err = failures
            .into_result("removing pod default/p")
            .expect_err("failed");
        assert_eq!(err.reason, Reason::TeardownError);
        assert_eq!(
            err.message(),
            "removing pod default/p: stopping web: boom; network: gone"
        );
    }
}
