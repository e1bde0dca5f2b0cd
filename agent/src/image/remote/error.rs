//! Why a pull failed, with every host tried and its own error.

use std::time::Duration;

use oci_spec::image::Digest;

use super::progress::Progress;
use super::session::Session;
use crate::image::content::ContentError;
use crate::image::hosts::HostsError;
use manifests::duration;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url}: status {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: not authorized: {reason}")]
    Unauthorized { url: String, reason: String },
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("{url}: the {what} is larger than the limit of {} (refused while reading it)", bytes(*.limit))]
    TooLarge {
        url: String,
        what: &'static str,
        limit: u64,
    },
    #[error("{url}: no {awaited} for {} (the stall timeout); giving up on this host", duration::format(*.after))]
    Stalled {
        url: String,
        /// `response` (nothing after sending the request) or `data` (the
        /// body stopped).
        awaited: &'static str,
        after: Duration,
    },
    #[error("{url}: the {what} did not arrive within {}", duration::format(*.after))]
    TooSlow {
        url: String,
        what: &'static str,
        after: Duration,
    },
    #[error("{url}: redirect not followed: {reason}")]
    Redirect { url: String, reason: String },
    #[error("blob {digest}")]
    Content {
        digest: String,
        #[source]
        source: ContentError,
    },
    #[error(
        "image {reference}: no manifest for platform {platform} (the index offers: {available})"
    )]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("image {reference}: no configured host for {registry} has the {capability} capability")]
    NoHost {
        reference: String,
        registry: String,
        capability: &'static str,
    },
    #[error("{what}: every host failed:{}", list_attempts(.attempts))]
    AllHostsFailed {
        what: String,
        attempts: Vec<Attempt>,
    },
    #[error("blob {digest}: cannot protect it from garbage collection: {reason}")]
    Guard { digest: String, reason: String },
    #[error("internal error: {reason}")]
    Internal { reason: String },
    /// The pull's pre-flight refused it before anything was downloaded.
    #[error("image {reference}: {reason}")]
    Refused { reference: String, reason: String },
}

/// One host tried and why it failed.
#[derive(Debug)]
pub struct Attempt {
    pub host: String,
    pub error: RemoteError,
}

/// `4194304` → `4 MiB`; other sizes in bytes.
fn bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

fn list_attempts(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("\n  - {}: {}", a.host, crate::status::chain(&a.error)))
        .collect()
}

impl RemoteError {
    pub(super) fn http(url: &str, err: reqwest::Error) -> Self {
        // The URL is in this error already; reqwest would repeat it. Its
        // `Display` hides the cause ("error sending request"); the chain
        // says what happened ("Connection refused", "invalid peer
        // certificate").
        let mut reason = crate::status::chain(&err.without_url());
        if url.starts_with("https://") && reason.contains("InvalidContentType") {
            reason.push_str(
                " (the host does not speak TLS: if it is a plain-HTTP registry, \
                 configure it as http:// in its hosts.toml)",
            );
        }
        Self::Http {
            url: url.to_owned(),
            reason,
        }
    }

    pub(super) fn content(digest: &Digest, source: ContentError) -> Self {
        Self::Content {
            digest: digest.to_string(),
            source,
        }
    }

    /// A response with an unexpected status; `body` is what was read of
    /// it (the caller bounds and scrubs it). The registry's error body says
    /// why (MANIFEST_UNKNOWN, …): keep a short, single-line excerpt.
    pub(super) fn status(url: &str, status: reqwest::StatusCode, body: &str) -> Self {
        let excerpt: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let excerpt: String = excerpt.chars().take(200).collect();
        Self::Status {
            url: url.to_owned(),
            status: status.as_u16(),
            detail: if excerpt.is_empty() {
                String::new()
            } else {
                format!(": {excerpt}")
            },
        }
    }

    /// Whether no host answered at all: every one failed at the transport
    /// (refused, unreachable, timed out, silent), none said no (a status,
    /// an authorization failure, a bad manifest). A registry out of reach,
    /// as after a power cut with the uplink still down.
    pub fn unreachable(&self) -> bool {
        match self {
            Self::Http { .. } | Self::Stalled { .. } | Self::TooSlow { .. } => true,
            Self::AllHostsFailed { attempts, .. } => {
                !attempts.is_empty() && attempts.iter().all(|a| a.error.unreachable())
            }
            _ => false,
        }
    }

    /// Whether the host stopped sending (as opposed to failing outright).
    pub(super) fn is_stall(&self) -> bool {
        matches!(self, Self::Stalled { .. } | Self::TooSlow { .. })
    }
}

/// Collects each host's error while trying hosts in order.
pub(super) struct Attempts {
    what: String,
    attempts: Vec<Attempt>,
}

impl Attempts {
    pub(super) fn new(what: String) -> Self {
        Self {
            what,
            attempts: Vec::new(),
        }
    }

    /// Records `session`'s failure; `more` says whether another host follows.
    pub(super) fn failed(
        &mut self,
        session: &Session<'_>,
        error: RemoteError,
        more: bool,
        progress: &dyn Progress,
    ) {
        let host = session.name();
        if more {
            tracing::warn!(%host, error = %crate::status::chain(&error), what = %self.what, "registry host failed; trying the next one");
            progress.host_failed(&host, &error);
        }
        self.attempts.push(Attempt { host, error });
    }

    pub(super) fn into_error(self) -> RemoteError {
        RemoteError::AllHostsFailed {
            what: self.what,
            attempts: self.attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_hosts_failed_lists_every_host() {
        let err = RemoteError::AllHostsFailed {
            what: "manifest of r/x:1".to_owned(),
            attempts: vec![
                Attempt {
                    host: "http://m1/v2 (mirror)".to_owned(),
                    error: RemoteError::Http {
                        url: "http://m1/v2/x/manifests/1".to_owned(),
                        reason: "Connection refused".to_owned(),
                    },
                },
                Attempt {
                    host: "https://r/v2 (server)".to_owned(),
                    error: RemoteError::Status {
                        url: "https://r/v2/x/manifests/1".to_owned(),
                        status: 404,
                        detail: String::new(),
                    },
                },
            ],
        };
        let message = err.to_string();
        assert!(message.contains("http://m1/v2 (mirror)"), "{message}");
        assert!(message.contains("Connection refused"), "{message}");
        assert!(message.contains("https://r/v2 (server)"), "{message}");
        assert!(message.contains("404"), "{message}");
    }
}
