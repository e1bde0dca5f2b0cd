//! berth's own annotations (`berth.dev/…` on a Pod's metadata): one table
//! of names with the parser of each value, typed accessors the agent
//! reads, and validation (an unknown `berth.dev/` name gets a "did you
//! mean", a bad value an error) — one parser per value, as everywhere in
//! this crate.

use std::time::Duration;

use crate::types::ObjectMeta;

pub const PREFIX: &str = "berth.dev/";
pub const UPDATE_STRATEGY: &str = "berth.dev/update-strategy";
pub const UPDATE_LOCK_TIMEOUT: &str = "berth.dev/update-lock-timeout";

/// One annotation berth reads: its name and a check of its value.
pub struct Annotation {
    pub name: &'static str,
    pub parse: fn(&str) -> Result<(), String>,
}

/// Every `berth.dev/` annotation berth knows.
pub const TABLE: &[Annotation] = &[
    Annotation {
        name: UPDATE_STRATEGY,
        parse: |v| UpdateStrategy::parse(v).map(drop),
    },
    Annotation {
        name: UPDATE_LOCK_TIMEOUT,
        parse: |v| parse_duration(v).map(drop),
    },
];

/// How a container (or a pod, for a pod-level change) is replaced by a
/// new version: balena's update strategies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpdateStrategy {
    /// Pull the new image, then stop the old container (the default: the
    /// service is down only for the restart).
    #[default]
    DownloadThenKill,
    /// Stop the old container first, then pull (less disk in use at once).
    KillThenDownload,
    /// Stop the old container and delete its image before pulling (for
    /// very small disks; nothing of the old image is reused).
    DeleteThenDownload,
}

impl UpdateStrategy {
    pub const NAMES: [&'static str; 3] = [
        "download-then-kill",
        "kill-then-download",
        "delete-then-download",
    ];

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "download-then-kill" => Ok(Self::DownloadThenKill),
            "kill-then-download" => Ok(Self::KillThenDownload),
            "delete-then-download" => Ok(Self::DeleteThenDownload),
            other => Err(match crate::fields::did_you_mean(other, Self::NAMES) {
                Some(close) => format!(
                    "unknown update strategy `{other}` (did you mean `{close}`?); one of {}",
                    Self::NAMES.join(", ")
                ),
                None => format!(
                    "unknown update strategy `{other}`; one of {}",
                    Self::NAMES.join(", ")
                ),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DownloadThenKill => Self::NAMES[0],
            Self::KillThenDownload => Self::NAMES[1],
            Self::DeleteThenDownload => Self::NAMES[2],
        }
    }

    /// Whether the new image is pulled before the old container stops.
    pub fn downloads_first(self) -> bool {
        self == Self::DownloadThenKill
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse_go(text).map_err(|err| err.to_string())
}

/// `berth.dev/update-strategy`; the default when absent. A bad value is an
/// error `berth validate` reports.
pub fn update_strategy(meta: &ObjectMeta) -> Result<UpdateStrategy, String> {
    meta.annotations
        .get(UPDATE_STRATEGY)
        .map_or(Ok(UpdateStrategy::default()), |v| UpdateStrategy::parse(v))
}

/// `berth.dev/update-lock-timeout`: how long an update waits for a
/// container's update lock; `None` (absent) waits until it is released or
/// `berth update --force` overrides it.
pub fn update_lock_timeout(meta: &ObjectMeta) -> Result<Option<Duration>, String> {
    meta.annotations
        .get(UPDATE_LOCK_TIMEOUT)
        .map(|v| parse_duration(v))
        .transpose()
}

/// Problems of the `berth.dev/` annotations of `meta`: (annotation name,
/// message). Other annotations are not berth's business.
pub fn check(meta: &ObjectMeta) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (name, value) in &meta.annotations {
        if !name.starts_with(PREFIX) {
            continue;
        }
        match TABLE.iter().find(|a| a.name == name) {
            Some(annotation) => {
                if let Err(why) = (annotation.parse)(value) {
                    problems.push((name.clone(), format!("annotation {name}: {why}")));
                }
            }
            None => {
                let names = TABLE.iter().map(|a| a.name);
                let hint = crate::fields::did_you_mean(name, names)
                    .map(|close| format!(" (did you mean `{close}`?)"))
                    .unwrap_or_default();
                problems.push((
                    name.clone(),
                    format!("unknown berth annotation `{name}`{hint}"),
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> ObjectMeta {
        let mut meta = ObjectMeta::named("p");
        for (k, v) in pairs {
            meta.annotations.insert((*k).into(), (*v).into());
        }
        meta
    }

    #[test]
    fn accessors_read_their_annotation_or_the_default() {
        assert_eq!(
            update_strategy(&meta(&[])),
            Ok(UpdateStrategy::DownloadThenKill)
        );
        assert_eq!(
            update_strategy(&meta(&[(UPDATE_STRATEGY, "delete-then-download")])),
            Ok(UpdateStrategy::DeleteThenDownload)
        );
        assert_eq!(update_lock_timeout(&meta(&[])), Ok(None));
        assert_eq!(
            update_lock_timeout(&meta(&[(UPDATE_LOCK_TIMEOUT, "1m30s")])),
            Ok(Some(Duration::from_secs(90)))
        );
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let problems = check(&meta(&[
            ("berth.dev/update-stratgy", "x"),
            (UPDATE_STRATEGY, "kill-then-downlaod"),
            (UPDATE_LOCK_TIMEOUT, "ten minutes"),
            ("example.com/other", "anything"),
        ]));
        let text: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(problems.len(), 3, "{text:?}");
        assert!(
            text.iter()
                .any(|m| m.contains("did you mean `berth.dev/update-strategy`"))
        );
        assert!(
            text.iter()
                .any(|m| m.contains("did you mean `kill-then-download`"))
        );
        assert!(text.iter().any(|m| m.contains(UPDATE_LOCK_TIMEOUT)));
    }
}
