//! Health-gated rollout and automatic rollback (`berth.dev/probation`,
//! `[pods] probation`), and the bookkeeping auto-update shares with it
//! (`berth.dev/auto-update`).
//!
//! The pod's record keeps a [`Rollout`]: the *stable* version (the last
//! one known good: its Pod as the manifest gave it, its generation and the
//! image digest each container ran), an update on *probation*, and a
//! *refused* version. A sync first [`prepare`]s: which version runs — the
//! desired one, or, while the desired one is refused, the stable one with
//! every image pinned to its digest ([`pinned`]). A refusal lasts until the
//! manifest changes again (or, for an auto-update, until the tag moves on).
//!
//! A version that differs from the stable one, on a pod with a probation,
//! is a candidate. Once every container it replaces runs its new instance
//! (for a pod-level change: every app container of the new incarnation),
//! the clock starts; [`judge`] then fails it when a replaced container
//! exits, is to be killed by a probe (a startup or liveness probe failed),
//! cannot be made, or is not running and ready when the clock ends; it
//! passes otherwise and becomes the stable version. Everything is in the
//! record, written before it matters, so an agent killed during probation
//! judges the same version when it comes back.
//!
//! The stable Pod is kept as the manifest gave it (the record is 0600);
//! values from ConfigMaps and Secrets are read again when it runs, as for
//! any start. Pure functions here; [`super::sync`] acts.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use manifests::annotations;
use manifests::reference::ImageReference;
use manifests::types as api;

use super::plan::{ContainerView, Observed, Wanted};
use super::state::Incarnation;
pub use super::versions::{Probation, Refused, Rollout, Version};
use crate::image::policy::ImagePullPolicy;
use crate::status::RolloutDetails;

/// The owner of a pod's kept images in the store.
pub fn keeper(namespace: &str, name: &str) -> String {
    format!("Pod/{namespace}/{name} rollback")
}

/// Whether the stable version's images must stay stored: an update is on
/// probation, or the stable version runs because one was refused.
pub fn keeps_target(rollout: &Rollout) -> bool {
    rollout.probation.is_some() || rollout.refused.is_some()
}

/// The images to keep for the rollback target: the stable version's, by
/// digest.
pub fn target_images(rollout: &Rollout) -> Vec<String> {
    let Some(pod) = rollout.stable.as_ref().and_then(pinned) else {
        return Vec::new();
    };
    pod.spec
        .init_containers
        .iter()
        .chain(&pod.spec.containers)
        .map(|c| c.image.clone())
        .filter(|image| image.contains('@'))
        .collect()
}

/// The desired version as the sync has it.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub generation: u64,
    pub content: &'a str,
    pub pod: &'a api::Pod,
}

impl Desired<'_> {
    fn version(&self) -> Version {
        Version {
            generation: self.generation,
            content: self.content.to_owned(),
            pod: serde_json::to_value(self.pod).expect("a Pod always serialises to JSON"),
            digests: BTreeMap::new(),
        }
    }
}

/// Which version a sync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Desired,
    /// The desired version is refused: the stable one runs, pinned.
    Stable,
}

/// The probation a pod asks for: its annotation, else the node's default.
/// A bad annotation cannot get here (validation refuses the manifest).
pub fn probation_of(meta: &api::ObjectMeta, default: Duration) -> Duration {
    annotations::probation(meta)
        .ok()
        .flatten()
        .unwrap_or(default)
}

/// Whether the pod re-resolves its tags (`berth.dev/auto-update`).
pub fn auto_update_of(meta: &api::ObjectMeta) -> bool {
    matches!(annotations::auto_update(meta), Ok(Some(_)))
}

/// Decides which version runs and keeps the record's versions current (see
/// the module docs). `probation` is the desired version's; `incarnation`
/// is what runs now (its digests become the stable version's when a new
/// probation begins). Returns the choice and whether the record changed.
pub fn prepare(
    rollout: &mut Rollout,
    desired: &Desired<'_>,
    probation: Duration,
    incarnation: Option<&Incarnation>,
) -> (Choice, bool) {
    let before = rollout.clone();
    let choice = choose(rollout, desired, probation, incarnation);
    let changed = *rollout != before;
    (choice, changed)
}

fn choose(
    rollout: &mut Rollout,
    desired: &Desired<'_>,
    probation: Duration,
    incarnation: Option<&Incarnation>,
) -> Choice {
    if let Some(refused) = &rollout.refused {
        if refused.content == desired.content && rollout.stable.is_some() {
            return Choice::Stable;
        }
        // The manifest changed since: the refusal is over.
        rollout.refused = None;
    }
    let Some(stable) = &mut rollout.stable else {
        // Nothing known before (a new pod): nothing to roll back to.
        rollout.stable = Some(desired.version());
        rollout.probation = None;
        return Choice::Desired;
    };
    if stable.content == desired.content {
        // Unchanged, or edited back to the stable version; an auto-update
        // of this very version stays on probation.
        stable.generation = desired.generation;
        if rollout
            .probation
            .as_ref()
            .is_some_and(|p| p.content != desired.content)
        {
            rollout.probation = None;
        }
        return Choice::Desired;
    }
    if probation.is_zero() {
        rollout.stable = Some(desired.version());
        rollout.probation = None;
        return Choice::Desired;
    }
    if rollout
        .probation
        .as_ref()
        .is_some_and(|p| p.content == desired.content)
    {
        return Choice::Desired;
    }
    if rollout.probation.is_none() {
        // What runs now is the stable version: its exact images.
        stable.digests = incarnation.map(running_digests).unwrap_or_default();
    }
    rollout.probation = Some(Probation {
        generation: desired.generation,
        content: desired.content.to_owned(),
        duration_ms: super::plan::millis(probation),
        containers: None,
        digests: BTreeMap::new(),
        until_ms: None,
        auto_update: false,
    });
    Choice::Desired
}

/// Begins the probation of an auto-update: container `name`'s tag moved to
/// `digest`. The stable version is what runs now. Returns false when the
/// pod has no stable version to come back to.
pub fn begin_auto_update(
    rollout: &mut Rollout,
    incarnation: &Incarnation,
    name: &str,
    digest: &str,
    probation: Duration,
) -> bool {
    let Some(stable) = &mut rollout.stable else {
        return false;
    };
    match &mut rollout.probation {
        Some(p) if p.auto_update && p.content == stable.content => {
            p.digests.insert(name.to_owned(), digest.to_owned());
            let names = p.containers.get_or_insert_with(Vec::new);
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
            p.until_ms = None;
        }
        // An edit on probation: the auto-update rides along with it.
        Some(_) => {}
        None => {
            stable.digests = running_digests(incarnation);
            rollout.refused = None;
            rollout.probation = Some(Probation {
                generation: stable.generation,
                content: stable.content.clone(),
                duration_ms: super::plan::millis(probation),
                containers: Some(vec![name.to_owned()]),
                digests: BTreeMap::from([(name.to_owned(), digest.to_owned())]),
                until_ms: None,
                auto_update: true,
            });
        }
    }
    true
}

/// When a pod with `berth.dev/auto-update` checks its tags next: after
/// `interval`, give or take 20% (a fleet started together spreads out).
pub fn next_check_ms(now_ms: u64, interval: Duration) -> u64 {
    now_ms + super::plan::millis(interval.mul_f64(0.8 + 0.4 * fastrand::f64()))
}

/// The image digest of every container instance of `incarnation`.
pub fn running_digests(incarnation: &Incarnation) -> BTreeMap<String, String> {
    incarnation
        .containers
        .iter()
        .filter_map(|(name, slot)| {
            let digest = slot.current.as_ref()?.image_digest.clone()?;
            Some((name.clone(), digest))
        })
        .collect()
}

/// The app containers a candidate replaces: those whose instance runs
/// another spec (or image digest, for an auto-update), every one when the
/// pod itself is made anew.
pub fn replaced(
    incarnation: &Incarnation,
    pod_hash: &str,
    wanted: &[Wanted],
    digests: &BTreeMap<String, String>,
) -> Vec<String> {
    let recreate = incarnation.pod_hash != pod_hash;
    wanted
        .iter()
        .filter(|w| !w.init)
        .filter(|w| {
            recreate
                || incarnation
                    .containers
                    .get(&w.name)
                    .and_then(|slot| slot.current.as_ref())
                    .is_none_or(|i| {
                        i.spec_hash != w.hash
                            || digests
                                .get(&w.name)
                                .is_some_and(|d| i.image_digest.as_deref() != Some(d))
                    })
        })
        .map(|w| w.name.clone())
        .collect()
}

/// The stable Pod with each container's image pinned to the digest it ran
/// (pulled only if not stored: `IfNotPresent`); `None` when the record's
/// copy does not read back (written by another berth version).
pub fn pinned(stable: &Version) -> Option<api::Pod> {
    let mut pod: api::Pod = serde_json::from_value(stable.pod.clone()).ok()?;
    let spec = &mut pod.spec;
    for container in spec
        .init_containers
        .iter_mut()
        .chain(spec.containers.iter_mut())
    {
        let Some(digest) = stable.digests.get(&container.name) else {
            continue;
        };
        if let Ok(reference) = ImageReference::parse(&container.image) {
            container.image = reference.with_digest(digest.clone()).to_string();
            container.image_pull_policy = Some(ImagePullPolicy::IfNotPresent);
        }
    }
    Some(pod)
}

/// How a candidate stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its containers are not all switched over yet.
    Switching,
    /// They are: the clock starts now and ends then.
    Start {
        until_ms: u64,
    },
    /// On probation until then.
    Watching {
        until_ms: u64,
    },
    Passed,
    Failed(String),
}

/// Judges the candidate `probation` of a pod whose containers (as the
/// candidate wants them) are `wanted`, recorded as `incarnation` and
/// observed as `views` (see the module docs).
pub fn judge(
    probation: &Probation,
    incarnation: &Incarnation,
    views: &BTreeMap<String, ContainerView>,
    wanted: &[Wanted],
    now_ms: u64,
) -> Verdict {
    let Some(names) = &probation.containers else {
        return Verdict::Switching;
    };
    if names.is_empty() {
        // Only pod-wide settings changed (a restart policy, an annotation).
        return Verdict::Passed;
    }
    let mut switching = false;
    for name in names {
        let Some(hash) = wanted.iter().find(|w| &w.name == name).map(|w| &w.hash) else {
            continue;
        };
        let slot = incarnation.containers.get(name);
        let current = slot.and_then(|s| s.current.as_ref());
        let digest = probation.digests.get(name);
        match current {
            Some(instance)
                if &instance.spec_hash == hash
                    && digest.is_none_or(|d| instance.image_digest.as_ref() == Some(d)) =>
            {
                let view = views.get(name);
                let exit = instance.exit.as_ref().or(match view.map(|v| &v.observed) {
                    Some(Observed::Exited(exit)) => Some(exit),
                    _ => None,
                });
                if let Some(exit) = exit {
                    return Verdict::Failed(format!(
                        "container {name} exited with code {} ({}) during probation",
                        exit.exit_code,
                        exit.reason()
                    ));
                }
                if let Some(kill) = view.and_then(|v| v.kill.as_ref()) {
                    return Verdict::Failed(format!("container {name}: {}", kill.why));
                }
            }
            // The old instance still runs: the switch has not happened.
            Some(_) => switching = true,
            None => match slot.and_then(|s| s.waiting.as_ref()) {
                Some((reason, message)) if slot.is_some_and(|s| s.failures > 0) => {
                    return Verdict::Failed(format!(
                        "container {name} could not start: {reason}: {message}"
                    ));
                }
                _ => switching = true,
            },
        }
    }
    if switching {
        return Verdict::Switching;
    }
    let Some(until_ms) = probation.until_ms else {
        return Verdict::Start {
            until_ms: now_ms + probation.duration_ms,
        };
    };
    if now_ms < until_ms {
        return Verdict::Watching { until_ms };
    }
    for name in names {
        let up = views
            .get(name)
            .is_some_and(|v| v.observed == Observed::Running && v.ready);
        if !up {
            return Verdict::Failed(format!(
                "container {name} was not ready after {}",
                manifests::duration::format(Duration::from_millis(probation.duration_ms))
            ));
        }
    }
    Verdict::Passed
}

/// The stable version after `probation` passed: the desired Pod with the
/// digests its containers run.
pub fn passed(desired: &Desired<'_>, incarnation: &Incarnation) -> Version {
    Version {
        digests: running_digests(incarnation),
        ..desired.version()
    }
}

/// The refusal of a candidate that failed for `reason`.
pub fn refuse(probation: &Probation, reason: String, at: String) -> Refused {
    Refused {
        generation: probation.generation,
        content: probation.content.clone(),
        digests: probation.digests.clone(),
        reason,
        at,
        auto_update: probation.auto_update,
    }
}

/// The one-line status of a pod running its stable version because the
/// desired one was refused.
pub fn rolled_back_message(rollout: &Rollout) -> Option<String> {
    let refused = rollout.refused.as_ref()?;
    let stable = rollout.stable.as_ref()?;
    let what = if refused.auto_update {
        let images: Vec<&str> = refused.digests.values().map(String::as_str).collect();
        format!(" (auto-update to {})", images.join(", "))
    } else {
        String::new()
    };
    Some(format!(
        "rolled back from generation {}{what}: {}; runs generation {}",
        refused.generation, refused.reason, stable.generation
    ))
}

/// The event of a rollback: `RolledBack`, or `AutoUpdateRolledBack` for an
/// auto-update, with a message naming what failed, why, and the target.
pub fn rolled_back_event(rollout: &Rollout, refused: &Refused) -> (&'static str, String) {
    let stable = rollout.stable.as_ref();
    if refused.auto_update {
        let list = |digests: &BTreeMap<String, String>| {
            digests
                .iter()
                .map(|(name, digest)| format!("{name} {digest}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let back = stable.map(|s| list(&s.digests)).unwrap_or_default();
        (
            "AutoUpdateRolledBack",
            format!(
                "the auto-update to {} failed its probation: {}; rolling back to {back}",
                list(&refused.digests),
                refused.reason
            ),
        )
    } else {
        (
            "RolledBack",
            format!(
                "generation {} failed its probation: {}; rolling back to generation {}",
                refused.generation,
                refused.reason,
                stable.map_or(0, |s| s.generation)
            ),
        )
    }
}

/// What `berth status` and `berth inspect` show; `None` for a pod with
/// nothing on probation and nothing refused.
pub fn details(rollout: &Rollout) -> Option<RolloutDetails> {
    let stable = rollout.stable.as_ref()?;
    if rollout.probation.is_none() && rollout.refused.is_none() {
        return None;
    }
    let probation = rollout.probation.as_ref();
    let refused = rollout.refused.as_ref();
    Some(RolloutDetails {
        stable_generation: stable.generation,
        running_generation: match (probation, refused) {
            (Some(p), _) => p.generation,
            _ => stable.generation,
        },
        probation_generation: probation.map(|p| p.generation),
        probation_until: probation
            .and_then(|p| p.until_ms)
            .map(|ms| crate::status::time::rfc3339(UNIX_EPOCH + Duration::from_millis(ms))),
        refused_generation: refused.map(|r| r.generation),
        refused_reason: refused.map(|r| r.reason.clone()),
        refused_digests: refused.map(|r| r.digests.clone()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
