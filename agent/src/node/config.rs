//! `[node]` in the agent config.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// The node's name (`spec.nodeName`, `kubernetes.io/hostname`);
    /// default the host name.
    pub name: Option<String>,
    /// Labels pods select with `nodeSelector` and node affinity.
    pub labels: BTreeMap<String, String>,
    /// More labels, `key=value` per line (`#` comments): provisioning
    /// tools write it; its labels win over `labels`, and a change is
    /// applied without a restart.
    pub labels_file: Option<PathBuf>,
    /// How often the labels file is read again.
    #[serde(with = "manifests::duration::config")]
    pub labels_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: None,
            labels: BTreeMap::new(),
            labels_file: None,
            labels_interval: Duration::from_secs(5),
        }
    }
}
