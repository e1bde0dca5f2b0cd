//! berth's own annotations (`berth.dev/…`): the one table of every key berth
//! reads, typed accessors the agent calls, and the checks `berth validate`
//! runs, so what validate accepts is what the agent applies.
//!
//! berth owns the `berth.dev/` prefix: a key under it that is not in
//! [`KNOWN`] is an error with a suggestion (a misspelt `berth.dev/probaton`
//! would otherwise silently turn the feature off). A key outside the prefix
//! that is one typo away from a known key (`berth.io/probation`) is a
//! warning. Every annotation here is read from a Pod's metadata; on another
//! kind it has no effect and validation says so.
//!
//! Durations use the agent config's grammar ([`crate::duration::parse_config`]:
//! `90s`, `5m`, `1h30m`, `1d`).

use std::fmt;
use std::time::Duration;

use crate::duration;
use crate::fields::did_you_mean;
use crate::types::ObjectMeta;

/// The prefix berth owns.
pub const PREFIX: &str = "berth.dev/";

/// Health-gated rollout: how long a replaced version is on probation.
pub const PROBATION: &str = "berth.dev/probation";
/// Re-resolve mutable tags and roll forward to a new digest.
pub const AUTO_UPDATE: &str = "berth.dev/auto-update";
/// Order of pull, stop and image removal during an update.
pub const UPDATE_STRATEGY: &str = "berth.dev/update-strategy";
/// How long a held update lock may defer an update.
pub const UPDATE_LOCK_TIMEOUT: &str = "berth.dev/update-lock-timeout";

/// What a value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A duration ([`duration::parse_config`]).
    Duration,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// One annotation berth knows.
#[derive(Debug, Clone, Copy)]
pub struct Annotation {
    pub key: &'static str,
    pub value: ValueKind,
    /// One line for people (`berth validate`, docs).
    pub doc: &'static str,
}

/// `berth.dev/auto-update` values (podman's word).
pub const AUTO_UPDATE_VALUES: &[&str] = &["registry"];
/// `berth.dev/update-strategy` values (balena's names); the first is the
/// default.
pub const UPDATE_STRATEGY_VALUES: &[&str] = &[
    "download-then-kill",
    "kill-then-download",
    "delete-then-download",
];

/// Every `berth.dev/` annotation berth reads.
pub const KNOWN: &[Annotation] = &[
    Annotation {
        key: PROBATION,
        value: ValueKind::Duration,
        doc: "after an update, the new version must become ready and stay up this long, \
              or it is rolled back",
    },
    Annotation {
        key: AUTO_UPDATE,
        value: ValueKind::OneOf(AUTO_UPDATE_VALUES),
        doc: "re-resolve image tags every [images] auto-update-interval and roll forward \
              to a new digest",
    },
    Annotation {
        key: UPDATE_STRATEGY,
        value: ValueKind::OneOf(UPDATE_STRATEGY_VALUES),
        doc: "order of pull and stop during an update",
    },
    Annotation {
        key: UPDATE_LOCK_TIMEOUT,
        value: ValueKind::Duration,
        doc: "how long a container's held update lock may defer an update",
    },
];

/// Why an annotation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationError {
    /// A `berth.dev/` key berth does not know.
    Unknown {
        key: String,
        suggestion: Option<&'static str>,
    },
    /// A known key with a value it cannot take.
    BadValue {
        key: &'static str,
        value: String,
        reason: String,
    },
}

impl fmt::Display for AnnotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnnotationError::Unknown { key, suggestion } => {
                write!(f, "unknown berth annotation `{key}`")?;
                match suggestion {
                    Some(known) => write!(f, "; did you mean `{known}`?"),
                    None => write!(f, " (berth knows {})", known_keys()),
                }
            }
            AnnotationError::BadValue { key, value, reason } => {
                write!(
                    f,
                    "annotation `{key}`: value {value:?} is not valid: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for AnnotationError {}

fn known_keys() -> String {
    KNOWN
        .iter()
        .map(|a| format!("`{}`", a.key))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How an update orders pulling the new image and stopping the old container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UpdateStrategy {
    /// Pull first, then stop the old container (the default).
    #[default]
    DownloadThenKill,
    /// Stop the old container first, then pull (low disk).
    KillThenDownload,
    /// Stop, remove the old image, then pull (very small disks).
    DeleteThenDownload,
}

impl UpdateStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStrategy::DownloadThenKill => UPDATE_STRATEGY_VALUES[0],
            UpdateStrategy::KillThenDownload => UPDATE_STRATEGY_VALUES[1],
            UpdateStrategy::DeleteThenDownload => UPDATE_STRATEGY_VALUES[2],
        }
    }

    /// Whether the new image is pulled before the old container stops.
    pub fn downloads_first(self) -> bool {
        self == Self::DownloadThenKill
    }
}

impl fmt::Display for UpdateStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `berth.dev/auto-update` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoUpdate {
    /// Re-resolve the tag through the configured registry mirrors.
    Registry,
}

/// `berth.dev/probation`: `None` when absent (the agent's default applies);
/// `Some(ZERO)` turns probation off for this pod.
pub fn probation(meta: &ObjectMeta) -> Result<Option<Duration>, AnnotationError> {
    duration_value(meta, PROBATION)
}

/// `berth.dev/update-lock-timeout`: `None` when absent.
pub fn update_lock_timeout(meta: &ObjectMeta) -> Result<Option<Duration>, AnnotationError> {
    duration_value(meta, UPDATE_LOCK_TIMEOUT)
}

/// `berth.dev/auto-update`: `None` when absent.
pub fn auto_update(meta: &ObjectMeta) -> Result<Option<AutoUpdate>, AnnotationError> {
    Ok(one_of(meta, AUTO_UPDATE, AUTO_UPDATE_VALUES)?.map(|_| AutoUpdate::Registry))
}

/// `berth.dev/update-strategy`, [`UpdateStrategy::DownloadThenKill`] when
/// absent.
pub fn update_strategy(meta: &ObjectMeta) -> Result<UpdateStrategy, AnnotationError> {
    Ok(
        match one_of(meta, UPDATE_STRATEGY, UPDATE_STRATEGY_VALUES)? {
            None | Some(0) => UpdateStrategy::DownloadThenKill,
            Some(1) => UpdateStrategy::KillThenDownload,
            Some(_) => UpdateStrategy::DeleteThenDownload,
        },
    )
}

fn duration_value(
    meta: &ObjectMeta,
    key: &'static str,
) -> Result<Option<Duration>, AnnotationError> {
    let Some(value) = meta.annotations.get(key) else {
        return Ok(None);
    };
    duration::parse_config(value)
        .map(Some)
        .map_err(|err| AnnotationError::BadValue {
            key,
            value: value.clone(),
            reason: err.to_string(),
        })
}

/// The index of the value in `values`, `None` when absent.
fn one_of(
    meta: &ObjectMeta,
    key: &'static str,
    values: &[&'static str],
) -> Result<Option<usize>, AnnotationError> {
    let Some(value) = meta.annotations.get(key) else {
        return Ok(None);
    };
    if let Some(index) = values.iter().position(|v| v == value) {
        return Ok(Some(index));
    }
    let expected = values
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let reason = match did_you_mean(value, values.iter().copied()) {
        Some(close) => format!("did you mean `{close}`? (one of {expected})"),
        None => format!("expected one of {expected}"),
    };
    Err(AnnotationError::BadValue {
        key,
        value: value.clone(),
        reason,
    })
}

/// What [`check`] found about one annotation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: String,
    /// An error makes the object invalid; otherwise a warning.
    pub is_error: bool,
    /// At the key (`berth.dev/probaton:`) rather than its value.
    pub at_key: bool,
    pub message: String,
}

/// Checks every annotation of an object of kind `kind` (`pod`, `ConfigMap`,
/// …, as messages name it): unknown `berth.dev/` keys, near misses of the
/// prefix, bad values, and berth annotations on kinds that ignore them.
pub fn check(meta: &ObjectMeta, kind: &str, is_pod: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    for key in meta.annotations.keys() {
        let known = KNOWN.iter().find(|a| a.key == key);
        match known {
            Some(annotation) if !is_pod => findings.push(Finding {
                key: key.clone(),
                is_error: false,
                at_key: true,
                message: format!(
                    "annotation `{}` only applies to pods; it has no effect on a {kind}",
                    annotation.key
                ),
            }),
            Some(annotation) => {
                if let Err(err) = check_value(meta, annotation) {
                    findings.push(Finding {
                        key: key.clone(),
                        is_error: true,
                        at_key: false,
                        message: err.to_string(),
                    });
                }
            }
            None if key.starts_with(PREFIX) => findings.push(Finding {
                key: key.clone(),
                is_error: true,
                at_key: true,
                message: AnnotationError::Unknown {
                    key: key.clone(),
                    suggestion: did_you_mean(key, KNOWN.iter().map(|a| a.key)),
                }
                .to_string(),
            }),
            None => {
                if let Some(close) = did_you_mean(key, KNOWN.iter().map(|a| a.key)) {
                    findings.push(Finding {
                        key: key.clone(),
                        is_error: false,
                        at_key: true,
                        message: format!(
                            "annotation `{key}` is not read by berth; did you mean `{close}`?"
                        ),
                    });
                }
            }
        }
    }
    findings
}

fn check_value(meta: &ObjectMeta, annotation: &Annotation) -> Result<(), AnnotationError> {
    match annotation.value {
        ValueKind::Duration => duration_value(meta, annotation.key).map(drop),
        ValueKind::OneOf(values) => one_of(meta, annotation.key, values).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..ObjectMeta::named("web")
        }
    }

    #[test]
    fn accessors_read_typed_values() {
        let m = meta(&[
            (PROBATION, "1m30s"),
            (AUTO_UPDATE, "registry"),
            (UPDATE_STRATEGY, "kill-then-download"),
            (UPDATE_LOCK_TIMEOUT, "1d"),
        ]);
        assert_eq!(probation(&m), Ok(Some(Duration::from_secs(90))));
        assert_eq!(auto_update(&m), Ok(Some(AutoUpdate::Registry)));
        assert_eq!(update_strategy(&m), Ok(UpdateStrategy::KillThenDownload));
        assert_eq!(
            update_lock_timeout(&m),
            Ok(Some(Duration::from_secs(86_400)))
        );
        let empty = meta(&[]);
        assert_eq!(probation(&empty), Ok(None));
        assert_eq!(auto_update(&empty), Ok(None));
        assert_eq!(
            update_strategy(&empty),
            Ok(UpdateStrategy::DownloadThenKill)
        );
        assert_eq!(update_lock_timeout(&empty), Ok(None));
        assert_eq!(
            update_strategy(&meta(&[(UPDATE_STRATEGY, "delete-then-download")])),
            Ok(UpdateStrategy::DeleteThenDownload)
        );
    }

    #[test]
    fn strategy_names_round_trip() {
        for strategy in [
            UpdateStrategy::DownloadThenKill,
            UpdateStrategy::KillThenDownload,
            UpdateStrategy::DeleteThenDownload,
        ] {
            let m = meta(&[(UPDATE_STRATEGY, strategy.as_str())]);
            assert_eq!(update_strategy(&m), Ok(strategy));
        }
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let err = probation(&meta(&[(PROBATION, "5 minutes")])).expect_err("bad duration");
        let text = err.to_string();
        assert!(
            text.contains(PROBATION) && text.contains("\"5 minutes\""),
            "{text}"
        );

        let err =
            update_strategy(&meta(&[(UPDATE_STRATEGY, "download-then-kil")])).expect_err("typo");
        assert!(
            err.to_string()
                .contains("did you mean `download-then-kill`"),
            "{err}"
        );
        let err = auto_update(&meta(&[(AUTO_UPDATE, "local")])).expect_err("unsupported");
        assert!(err.to_string().contains("`registry`"), "{err}");
    }

    #[test]
    fn unknown_berth_keys_are_errors_with_a_suggestion() {
        let findings = check(&meta(&[("berth.dev/probaton", "10s")]), "pod", true);
        assert_eq!(findings.len(), 1);
        assert!(findings[0].is_error && findings[0].at_key);
        assert!(
            findings[0]
                .message
                .contains("did you mean `berth.dev/probation`"),
            "{}",
            findings[0].message
        );
        let findings = check(&meta(&[("berth.dev/colour", "red")]), "pod", true);
        assert!(findings[0].is_error);
        assert!(
            findings[0].message.contains(PROBATION),
            "{}",
            findings[0].message
        );
    }

    #[test]
    fn a_near_miss_of_the_prefix_is_a_warning() {
        let findings = check(&meta(&[("berth.io/probation", "10s")]), "pod", true);
        assert_eq!(findings.len(), 1);
        assert!(!findings[0].is_error);
        assert!(findings[0].message.contains(PROBATION));
        // Unrelated annotations are left alone.
        assert!(check(&meta(&[("example.com/owner", "ops")]), "pod", true).is_empty());
    }

    #[test]
    fn validate_names_file_line_and_field() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    \
                    berth.dev/probation: 5 minutes\n    berth.dev/auto-updat: registry\n\
                    spec:\n  containers:\n  - name: c\n    image: busybox\n";
        let parsed = crate::parse_file(std::path::Path::new("web.yaml"), yaml.as_bytes());
        let diags = &parsed.documents[0].diagnostics;
        let bad = diags
            .iter()
            .find(|d| d.message.contains("5 minutes"))
            .expect("bad duration reported");
        assert!(bad.is_error());
        assert_eq!((bad.file.to_str(), bad.line), (Some("web.yaml"), 6));
        assert_eq!(
            bad.field.as_deref(),
            Some("metadata.annotations[\"berth.dev/probation\"]")
        );
        let typo = diags
            .iter()
            .find(|d| d.message.contains("auto-updat`"))
            .expect("typo reported");
        assert_eq!(typo.line, 7);
        assert!(
            typo.message
                .contains("did you mean `berth.dev/auto-update`")
        );
        assert!(parsed.documents[0].object.is_none());
    }

    #[test]
    fn values_are_checked_and_kinds_warned() {
        let findings = check(&meta(&[(PROBATION, "-1s")]), "pod", true);
        assert!(findings[0].is_error && !findings[0].at_key);
        assert!(check(&meta(&[(PROBATION, "10s")]), "pod", true).is_empty());
        let findings = check(&meta(&[(PROBATION, "10s")]), "ConfigMap", false);
        assert!(!findings[0].is_error);
        assert!(findings[0].message.contains("ConfigMap"));
    }
}
