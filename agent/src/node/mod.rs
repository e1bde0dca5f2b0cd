//! The node as pods see it: its name and labels (`[node]` in the agent
//! config, plus a labels file provisioning tools may rewrite at any time),
//! and which pods it runs ([`selection`]: `nodeName`, `nodeSelector`,
//! required node affinity).

pub mod capacity;
pub mod config;
pub mod labels;
pub mod selection;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

pub use capacity::Capacity;

pub use config::NodeConfig;
pub use labels::LabelsError;
pub use selection::{Selection, select};

/// The node's name and its current labels. Cheap to share; the labels
/// change when the labels file does ([`Node::reload`]).
#[derive(Debug)]
pub struct Node {
    name: String,
    /// Well-known labels and `[node] labels`, under the file's.
    base: BTreeMap<String, String>,
    labels_file: Option<PathBuf>,
    current: RwLock<Arc<BTreeMap<String, String>>>,
    capacity: Capacity,
}

impl Node {
    /// The node of `config`; a labels file that exists must parse (a
    /// missing one adds no labels until it appears).
    pub fn new(config: &NodeConfig, root: &std::path::Path) -> Result<Self, LabelsError> {
        let name = config.name.clone().unwrap_or_else(hostname);
        let mut base = labels::well_known(&name);
        for (key, value) in &config.labels {
            labels::check(key, value).map_err(|problem| LabelsError::Config {
                key: key.clone(),
                problem,
            })?;
            base.insert(key.clone(), value.clone());
        }
        let node = Self {
            name,
            base,
            labels_file: config.labels_file.clone(),
            current: RwLock::new(Arc::default()),
            capacity: capacity::measure(root),
        };
        node.reload()?;
        Ok(node)
    }

    /// A node with exactly these labels (tests).
    pub fn fixed(name: &str, labels: BTreeMap<String, String>) -> Self {
        Self {
            name: name.to_string(),
            base: labels.clone(),
            labels_file: None,
            current: RwLock::new(Arc::new(labels)),
            capacity: Capacity {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                ephemeral_storage_bytes: 10 << 30,
            },
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn labels(&self) -> Arc<BTreeMap<String, String>> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    pub fn labels_file(&self) -> Option<&std::path::Path> {
        self.labels_file.as_deref()
    }

    /// Reads the labels file again; returns whether the labels changed.
    /// A file that does not parse changes nothing (the error names it).
    pub fn reload(&self) -> Result<bool, LabelsError> {
        let mut labels = self.base.clone();
        if let Some(file) = &self.labels_file {
            labels.extend(labels::read_file(file)?);
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if **current == labels {
            return Ok(false);
        }
        *current = Arc::new(labels);
        Ok(true)
    }

    /// Whether this node runs a pod with `spec`.
    pub fn select(&self, spec: &manifests::types::PodSpec) -> Selection {
        select(&self.name, &self.labels(), spec)
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}
