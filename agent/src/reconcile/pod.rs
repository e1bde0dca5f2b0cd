//! Pods. The container runtime is not built yet: a pod is accepted and
//! reported `Pending`. The container issue replaces the bodies of `apply`
//! and `cleanup`; the deletion and status plumbing around them is final.

use manifests::ObjectKey;

use super::{Applied, Context, ObjectReconciler, ReconcileError};
use crate::desired::DesiredObject;
use crate::status::Phase;

pub struct PodReconciler;

impl ObjectReconciler for PodReconciler {
    async fn apply(
        &self,
        _ctx: &Context,
        _desired: &DesiredObject,
    ) -> Result<Applied, ReconcileError> {
        Ok(Applied::new(Phase::Pending, "runtime not built yet"))
    }

    async fn cleanup(&self, _ctx: &Context, _key: &ObjectKey) -> Result<(), ReconcileError> {
        // Nothing is created for a pod yet, so there is nothing to remove.
        Ok(())
    }
}
