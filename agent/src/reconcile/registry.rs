//! Registry configuration (a `Registry` object or a `certs.d/*/hosts.toml`).
//! It is `Ready` once valid; the image service reads it from the desired
//! state when it resolves a pull.

use manifests::{Object, ObjectKey};

use super::{Applied, Context, ObjectReconciler, ReconcileError};
use crate::desired::DesiredObject;
use crate::status::Phase;

pub struct RegistryReconciler;

impl ObjectReconciler for RegistryReconciler {
    async fn apply(
        &self,
        _ctx: &Context,
        desired: &DesiredObject,
    ) -> Result<Applied, ReconcileError> {
        let Object::Registry(registry) = desired.object.as_ref() else {
            return Err(ReconcileError::wrong_kind(desired));
        };
        let hosts = registry.spec.hosts.len();
        let message = match (&registry.spec.server, hosts) {
            (Some(_), 0) => "server only, no mirrors".to_owned(),
            (_, 1) => "1 mirror host".to_owned(),
            (_, n) => format!("{n} mirror hosts"),
        };
        Ok(Applied::new(Phase::Ready, message))
    }

    async fn cleanup(&self, _ctx: &Context, _key: &ObjectKey) -> Result<(), ReconcileError> {
        Ok(())
    }
}
