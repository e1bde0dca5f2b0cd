//! Small serde adapters shared by the types.

use serde::{Deserialize, Deserializer};

/// Treats an explicit `null` like an absent field, as Kubernetes does
/// (`volumes: null`, `args:` with nothing after it).
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

pub fn is_false(value: &bool) -> bool {
    !*value
}
