//! ConfigMaps and Secrets are data: they are `Ready` as soon as they are
//! valid, and pods read them from the desired state when they need them.
//! A Secret's message gives the number of keys only, never names or values.
//! When one changes or goes away, the pods that use it are queued, so env
//! and volume contents follow.

use manifests::{Object, ObjectKey};

use super::{Applied, Context, ObjectReconciler, ReconcileError};
use crate::desired::DesiredObject;
use crate::status::Phase;

pub struct ConfigMapReconciler;
pub struct SecretReconciler;

/// Lists at most this many key names in a ConfigMap's message.
const MAX_LISTED_KEYS: usize = 8;

fn keys_message(count: usize, names: Option<Vec<&str>>) -> String {
    let noun = if count == 1 { "key" } else { "keys" };
    match names {
        Some(names) if !names.is_empty() => {
            let mut listed = names[..names.len().min(MAX_LISTED_KEYS)].join(", ");
            if names.len() > MAX_LISTED_KEYS {
                listed.push_str(", …");
            }
            format!("{count} {noun}: {listed}")
        }
        _ => format!("{count} {noun}"),
    }
}

/// Queues every desired pod that uses `key` (a ConfigMap or Secret).
async fn notify_pods(ctx: &Context, key: &ObjectKey) {
    let desired = ctx.desired();
    for (pod_key, object) in &desired.objects {
        let Object::Pod(pod) = object.object.as_ref() else {
            continue;
        };
        if pod_key.namespace == key.namespace
            && crate::pod::inputs::uses(&pod.spec, key.kind, &key.name)
        {
            let _ = ctx
                .observed
                .send(crate::controller::ObservedEvent {
                    key: pod_key.clone(),
                    reason: format!("{key}, which the pod uses, changed"),
                })
                .await;
        }
    }
}

impl ObjectReconciler for ConfigMapReconciler {
    async fn apply(
        &self,
        ctx: &Context,
        desired: &DesiredObject,
    ) -> Result<Applied, ReconcileError> {
        let Object::ConfigMap(config_map) = desired.object.as_ref() else {
            return Err(ReconcileError::wrong_kind(desired));
        };
        notify_pods(ctx, &desired.key).await;
        let mut names: Vec<&str> = config_map
            .data
            .keys()
            .chain(config_map.binary_data.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        Ok(Applied::new(
            Phase::Ready,
            keys_message(names.len(), Some(names)),
        ))
    }

    async fn cleanup(&self, ctx: &Context, key: &ObjectKey) -> Result<(), ReconcileError> {
        notify_pods(ctx, key).await;
        Ok(())
    }
}

impl ObjectReconciler for SecretReconciler {
    async fn apply(
        &self,
        ctx: &Context,
        desired: &DesiredObject,
    ) -> Result<Applied, ReconcileError> {
        let Object::Secret(secret) = desired.object.as_ref() else {
            return Err(ReconcileError::wrong_kind(desired));
        };
        notify_pods(ctx, &desired.key).await;
        Ok(Applied::new(
            Phase::Ready,
            keys_message(secret.contents().len(), None),
        ))
    }

    async fn cleanup(&self, ctx: &Context, key: &ObjectKey) -> Result<(), ReconcileError> {
        notify_pods(ctx, key).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_count_and_list_a_bounded_number_of_keys() {
        assert_eq!(keys_message(1, Some(vec!["a"])), "1 key: a");
        assert_eq!(keys_message(2, None), "2 keys");
        let many: Vec<&str> = ["a", "b", "c", "d", "e", "f", "g", "h", "i"].to_vec();
        assert_eq!(
            keys_message(9, Some(many)),
            "9 keys: a, b, c, d, e, f, g, h, …"
        );
        assert_eq!(keys_message(0, Some(vec![])), "0 keys");
    }
}
