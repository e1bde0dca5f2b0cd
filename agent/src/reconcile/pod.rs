//! Pods: the reconciler contract over [`crate::pod`], where the lifecycle
//! lives. `apply` makes the pod run as its manifest says; `cleanup` stops
//! every container with the grace period and removes everything the pod
//! had (containers, image holds, network, sandbox, cgroups, logs, state).

use manifests::ObjectKey;

use super::{Applied, Context, ObjectReconciler, ReconcileError};
use crate::desired::DesiredObject;
use crate::pod::state::PodState;
use crate::pod::{lifecycle, teardown};

pub struct PodReconciler;

impl ObjectReconciler for PodReconciler {
    async fn apply(
        &self,
        ctx: &Context,
        desired: &DesiredObject,
    ) -> Result<Applied, ReconcileError> {
        lifecycle::apply(ctx, desired).await
    }

    async fn cleanup(&self, ctx: &Context, key: &ObjectKey) -> Result<(), ReconcileError> {
        remove(ctx, key).await
    }
}

/// Removes pod `key` and everything it had. Idempotent; every failure is
/// reported, none stops the rest.
pub async fn remove(ctx: &Context, key: &ObjectKey) -> Result<(), ReconcileError> {
    let paths = &ctx.services.paths;
    let Some(state) = PodState::load(paths, &key.namespace, &key.name)
        .map_err(|err| ReconcileError::Failed(err.to_string()))?
    else {
        return Ok(());
    };
    let runtime = ctx.services.runtime.as_ref().map_err(|reason| {
        ReconcileError::Failed(format!(
            "cannot remove the pod's containers: the container runtime is not available: {reason}"
        ))
    })?;
    let mut errors = Vec::new();
    for incarnation in state.incarnations() {
        errors.extend(
            teardown::incarnation(ctx, runtime, key, incarnation, "the pod was removed").await,
        );
    }
    if !errors.is_empty() {
        return Err(ReconcileError::Failed(format!(
            "removing pod {key}: {}",
            errors.join("; ")
        )));
    }
    let logs = paths.logs().join(format!("{}_{}", key.namespace, key.name));
    if let Err(err) = crate::fsutil::remove_dir_all_if_exists(&logs) {
        tracing::warn!(dir = %logs.display(), error = %err, "could not remove the pod's logs");
    }
    PodState::remove(paths, &key.namespace, &key.name)
        .map_err(|err| ReconcileError::Failed(err.to_string()))
}
