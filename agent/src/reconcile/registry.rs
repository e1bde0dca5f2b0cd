//! Registry configuration (a `Registry` object or a `certs.d/*/hosts.toml`
//! in the manifest directory). Any add, change or delete rebuilds the whole
//! configuration from every Registry object of the desired state over
//! `[images] hosts-dir` and applies it to the next pull, without a restart
//! (rules: `crate::image::registries`).
//!
//! Status: `Ready` with the endpoints in the order they are tried and their
//! capabilities; an object whose config cannot be used (missing or bad CA,
//! unusable client certificate) fails with a message naming its file and
//! host, while the previous configuration stays in effect — so its phase is
//! still `Ready` when an earlier version is in effect, `Pending` when none
//! ever was — and is retried with the controller's backoff (a fixed CA file
//! is picked up). A file that stops parsing keeps its last good object (the
//! source does that) and its error shows in the file's status.

use manifests::{Kind, Object, ObjectKey};

use super::{Applied, Context, ObjectReconciler, ReconcileError};
use crate::desired::DesiredObject;
use crate::image::registries::{RegistryGuard, RegistryObject, RegistryOutcome};
use crate::status::Phase;

pub struct RegistryReconciler;

/// Makes sure the registry configuration in effect was built from a desired
/// state at least as new as the one the caller acts on (an Image pulled
/// right after its file and a Registry change appeared together uses the
/// new Registry). Waits for a rebuild in progress.
pub(super) async fn ensure_current(ctx: &Context) {
    let revision = ctx.desired().revision;
    let guard = ctx.services.registries.lock().await;
    if ctx.services.registries.applied_revision() < revision {
        rebuild_locked(ctx, guard).await;
    }
}

/// Rebuilds and applies the registry configuration from the current
/// desired state (read under the rebuild lock, so the newest state wins).
async fn rebuild(ctx: &Context) -> RegistryOutcome {
    let guard = ctx.services.registries.lock().await;
    rebuild_locked(ctx, guard).await
}

async fn rebuild_locked(ctx: &Context, mut guard: RegistryGuard<'_>) -> RegistryOutcome {
    let desired = ctx.desired();
    let objects: Vec<RegistryObject<'_>> = desired
        .objects
        .values()
        .filter(|object| object.key.kind == Kind::Registry)
        .filter_map(|object| match object.object.as_ref() {
            Object::Registry(registry) => Some(RegistryObject {
                key: object.key.to_string(),
                source: object.source.to_string(),
                registry,
            }),
            _ => None,
        })
        .collect();
    guard
        .apply(&ctx.services.images, desired.revision, &objects)
        .await
}

impl ObjectReconciler for RegistryReconciler {
    async fn apply(
        &self,
        ctx: &Context,
        desired: &DesiredObject,
    ) -> Result<Applied, ReconcileError> {
        if !matches!(desired.object.as_ref(), Object::Registry(_)) {
            return Err(ReconcileError::wrong_kind(desired));
        }
        let key = desired.key.to_string();
        let mut outcome = rebuild(ctx).await;
        if let Some(refused) = outcome.refused.remove(&key) {
            return Err(ReconcileError::Subsystem(Box::new(refused)));
        }
        match outcome.ready.remove(&key) {
            Some(message) => Ok(Applied::new(Phase::Ready, message)),
            // The desired state changed while this ran: the object is gone
            // or replaced, and a new reconcile of it is queued.
            None => Ok(Applied::new(
                Phase::Pending,
                "the registry configuration changed meanwhile",
            )),
        }
    }

    async fn cleanup(&self, ctx: &Context, _key: &ObjectKey) -> Result<(), ReconcileError> {
        rebuild(ctx).await;
        Ok(())
    }
}
