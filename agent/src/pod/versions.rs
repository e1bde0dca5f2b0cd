//! The versions of a pod its record keeps for health-gated rollout
//! (`pod::rollout` decides with them): the stable version, an update on
//! probation, a refused one. Plain data, so the record (`pod::state`) and
//! the decisions depend on it and not on each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the record knows about the pod's versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The last version known good: the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation: Option<Probation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
    /// `berth.dev/auto-update`: the tag each container's checks resolve
    /// (`berth auto-update` reads them here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auto_update: BTreeMap<String, String>,
    /// The last `berth auto-update` request (Unix ms) this pod's checks
    /// served (`pod::autoupdate`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checked_request_ms: u64,
    /// The stable version's images kept by digest in the store while it is
    /// the rollback target (`Images::keep`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One version of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub generation: u64,
    /// The manifest object's content hash.
    pub content: String,
    /// The Pod object (JSON; `Pod` itself has no `Eq`).
    pub pod: serde_json::Value,
    /// The image digest each container ran, by container name (known once
    /// its containers ran).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
}

/// An update on probation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probation {
    pub generation: u64,
    pub content: String,
    /// How long it must stay up, in ms.
    pub duration_ms: u64,
    /// The app containers it replaces; `None` until the sync has worked
    /// them out (right after [`prepare`] began the probation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
    /// For an auto-update: the new digest of each container it moves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
    /// Unix ms at which it passes; set when its containers all run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    #[serde(default)]
    pub auto_update: bool,
}

/// A version that failed its probation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    pub generation: u64,
    pub content: String,
    /// For an auto-update: the digests refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
    pub reason: String,
    /// RFC 3339.
    pub at: String,
    #[serde(default)]
    pub auto_update: bool,
}

impl Rollout {
    pub fn is_empty(&self) -> bool {
        self == &Rollout::default()
    }
}
