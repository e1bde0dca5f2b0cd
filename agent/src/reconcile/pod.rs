//! Pods: the reconcile of a Pod hands the pod its newest desired state
//! (or its deletion) and returns; the pod's worker
//! ([`crate::pod::workers`]) pulls, starts, stops and removes, and reports
//! the pod's status. Before the hand-over, the registry configuration is
//! brought up to the desired state's revision, so a Pod and the
//! `certs.d/<host>/hosts.toml` it needs, added in one change, pull through
//! the new configuration.

use manifests::ObjectKey;

use super::Context;
use super::registry::ensure_current;
use crate::controller::Why;
use crate::desired::DesiredObject;
use crate::pod::workers::PodUpdate;

pub struct PodReconciler;

impl PodReconciler {
    pub async fn hand_over(
        &self,
        ctx: &Context,
        key: &ObjectKey,
        desired: Option<DesiredObject>,
        why: &Why,
    ) {
        if desired.is_some() {
            ensure_current(ctx).await;
        }
        ctx.pods.update(
            key,
            PodUpdate {
                object: desired,
                desired: ctx.desired(),
                reason: why.to_string(),
            },
        );
    }
}
