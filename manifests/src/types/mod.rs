//! The object kinds a user writes, as plain serde types.
//!
//! Field names follow Kubernetes (camelCase) so the same v1 files apply to a
//! cluster. The types hold no positions: parsing keeps those in a separate
//! position index. Optional fields are skipped when serialising, so an absent
//! field and an empty one produce the same canonical JSON (the agent hashes it
//! to detect changes).
//!
//! The types do not reject unknown fields themselves: the parser checks every
//! field against the field tables first (unknown → error with a suggestion,
//! Kubernetes-only → warning), which serde's `deny_unknown_fields` could not
//! do with positions and warnings.

pub(crate) mod config;
mod image;
mod meta;
mod pod;
mod pod_security;
mod registry;
pub(crate) mod serde_helpers;

pub use config::{ConfigMap, Secret};
pub use image::{Image, ImageSpec, PullPolicy};
pub use meta::{
    ApiV1, BerthV1, ConfigMapKind, ImageKind, ObjectMeta, PodKind, RegistryKind, SecretKind,
};
pub use pod::*;
pub use pod_security::{
    AppArmorProfile, ProcMountType, ProfileType, SYSTEM_CLUSTER_CRITICAL, SYSTEM_NODE_CRITICAL,
    SeccompProfile, Sysctl,
};
pub use registry::{Capability, ClientCert, Registry, RegistryHost, RegistrySpec};
