//! Image pins. The image service is wired in by the registry and store
//! work; until then an Image is accepted and reported `Pending`.

use manifests::ObjectKey;

use super::{Applied, Context, ObjectReconciler, ReconcileError};
use crate::desired::DesiredObject;
use crate::status::Phase;

pub struct ImageReconciler;

impl ObjectReconciler for ImageReconciler {
    async fn apply(
        &self,
        _ctx: &Context,
        _desired: &DesiredObject,
    ) -> Result<Applied, ReconcileError> {
        Ok(Applied::new(Phase::Pending, "image service not wired yet"))
    }

    async fn cleanup(&self, _ctx: &Context, _key: &ObjectKey) -> Result<(), ReconcileError> {
        Ok(())
    }
}
