//! Evicting a pod whose ephemeral storage went over a limit
//! ([`super::storage`] decides): every container is stopped and removed
//! with the rest of the incarnation (which frees the disk), the pod's
//! phase is `Failed` with reason `Evicted`, and it stays down until its
//! manifest changes — as an evicted pod stays evicted in Kubernetes.
//! The eviction is recorded before anything is torn down, so a crash in
//! between finishes it at the next sync.

use std::collections::BTreeMap;
use std::time::Duration;

use manifests::types as api;

use super::error::{Failures, PodError};
use super::executor::Executor;
use super::report::PodReport;
use super::sandbox;
use super::state::{Evicted, Incarnation, PodState};
use super::storage::{self, StorageQuery};
use super::teardown;
use crate::status::{EventType, Phase, time};

/// The report of a pod evicted at `generation`, finishing the teardown a
/// crash interrupted; `None` when it is not evicted (an eviction of an
/// earlier generation is forgotten: the edited pod runs again).
pub async fn still_evicted(
    ex: &Executor<'_>,
    state: &mut PodState,
    spec: &api::PodSpec,
    generation: u64,
) -> Result<Option<PodReport>, PodError> {
    let Some(evicted) = state.evicted.clone() else {
        return Ok(None);
    };
    if evicted.generation != generation {
        state.evicted = None;
        sandbox::save(ex.host, state).await?;
        return Ok(None);
    }
    tear_down(ex, state, spec).await?;
    Ok(Some(report(&evicted.message)))
}

/// Measures the pod's ephemeral storage if it has limits: evicts it when
/// one is exceeded, else asks to be synced again at the next check.
pub async fn check(
    ex: &Executor<'_>,
    state: &mut PodState,
    spec: &api::PodSpec,
    generation: u64,
    mut synced: PodReport,
) -> Result<PodReport, PodError> {
    if !storage::has_limits(spec) {
        return Ok(synced);
    }
    let query = StorageQuery {
        pod_uid: state.incarnation.uid.clone(),
        namespace: state.namespace.clone(),
        pod_name: state.name.clone(),
        empty_dirs: storage::disk_empty_dirs(spec)
            .map(|(name, _)| name.to_string())
            .collect(),
        containers: state
            .incarnation
            .containers
            .iter()
            .filter_map(|(name, slot)| Some((name.clone(), slot.current.as_ref()?.id.clone())))
            .collect(),
    };
    let next = ex.now_ms().saturating_add(
        u64::try_from(ex.host.config.storage_check_interval.as_millis()).unwrap_or(u64::MAX),
    );
    synced.wake_at_ms = Some(synced.wake_at_ms.map_or(next, |at| at.min(next)));
    let usage = match ex.host.sandboxes.storage_usage(&query).await {
        Ok(usage) => usage,
        Err(err) => {
            tracing::warn!(error = %crate::status::chain(&*err), "could not measure the pod's ephemeral storage");
            return Ok(synced);
        }
    };
    let Some(message) = storage::check(spec, &usage) else {
        return Ok(synced);
    };
    ex.event(EventType::Warning, "Evicted", message.clone());
    state.evicted = Some(Evicted {
        generation,
        message: message.clone(),
    });
    sandbox::save(ex.host, state).await?;
    tear_down(ex, state, spec).await?;
    Ok(report(&message))
}

/// Removes every incarnation and leaves a fresh one that has made
/// nothing (same pod hash: nothing to recreate when the eviction ends).
async fn tear_down(
    ex: &Executor<'_>,
    state: &mut PodState,
    spec: &api::PodSpec,
) -> Result<(), PodError> {
    let made_something = state.incarnations().any(|i| {
        i.network_request.is_some()
            || i.sandbox_ready
            || i.containers.values().any(|slot| slot.current.is_some())
    });
    if !made_something {
        return Ok(());
    }
    let no_override: BTreeMap<String, Duration> = BTreeMap::new();
    let mut failures = Failures::default();
    for incarnation in state.incarnations() {
        failures.extend(
            teardown::incarnation(ex, incarnation, &no_override, "the pod was evicted").await,
        );
    }
    failures.into_result(format!("evicting pod {}", ex.key))?;
    state.incarnation = Incarnation::new(spec, &state.incarnation.pod_hash, time::now());
    state.retired.clear();
    sandbox::save(ex.host, state).await
}

/// The kubelet's admission check for ephemeral storage, against the free
/// space of berth's file system: a pod not made yet whose containers
/// request more than is free waits (`OutOfephemeral-storage`), checked
/// again every `[pods] storage-check-interval`. A pod already made is not
/// checked again.
pub async fn admit(ex: &Executor<'_>, spec: &api::PodSpec) -> Option<PodReport> {
    let requested = storage::requested(spec);
    if requested == 0 {
        return None;
    }
    let free = match ex.host.sandboxes.free_space().await {
        Ok(free) => free,
        Err(err) => {
            tracing::warn!(error = %crate::status::chain(&*err), "could not measure the free space");
            return None;
        }
    };
    if requested <= free {
        return None;
    }
    let next = ex.now_ms().saturating_add(
        u64::try_from(ex.host.config.storage_check_interval.as_millis()).unwrap_or(u64::MAX),
    );
    Some(PodReport {
        phase: Phase::Pending,
        message: format!(
            "OutOfephemeral-storage: the pod requests {requested} bytes of ephemeral storage, {free} are free"
        ),
        details: None,
        wake_at_ms: Some(next),
        pull_failed: None,
    })
}

fn report(message: &str) -> PodReport {
    PodReport {
        phase: Phase::Failed,
        message: format!("Evicted: {message}"),
        details: Some(Default::default()),
        wake_at_ms: None,
        pull_failed: None,
    }
}
