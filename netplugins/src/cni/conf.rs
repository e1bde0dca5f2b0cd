//! The cni driver's settings and the network configuration list
//! (`*.conflist`, CNI spec 1.0) it runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::CniError;

/// CNI versions whose results berth reads (1.0.0, and 0.4.0/0.3.x whose
/// result layout is the same for the fields berth uses).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["1.0.0", "0.4.0", "0.3.1", "0.3.0"];

/// `[network.cni]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CniConfig {
    /// The network configuration list to run for every pod.
    pub conflist: PathBuf,
    /// Where plugin binaries are looked up, in order (CNI_PATH). Debian
    /// installs them in `/usr/lib/cni`, upstream tarballs in `/opt/cni/bin`.
    pub plugin_dirs: Vec<PathBuf>,
    /// The pod's interface name (CNI_IFNAME).
    pub ifname: String,
    /// How long one plugin may run before it is killed.
    pub plugin_timeout_secs: u64,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conflist: PathBuf::from("/etc/cni/net.d/berth.conflist"),
            plugin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            ifname: "eth0".to_string(),
            plugin_timeout_secs: 60,
        }
    }
}

/// A parsed configuration list. The plugin objects are kept as JSON so
/// that plugin-specific keys reach the plugins untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub cni_version: String,
    pub name: String,
    pub disable_check: bool,
    pub plugins: Vec<Map<String, Value>>,
    /// The file's bytes, kept in the result cache so DEL runs the
    /// configuration ADD ran even if the file changed since.
    pub raw: Value,
}

impl ConfList {
    pub fn load(path: &Path) -> Result<Self, CniError> {
        let text = std::fs::read_to_string(path).map_err(|source| CniError::ReadConf {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: Value = serde_json::from_str(&text).map_err(|err| CniError::BadConf {
            path: path.to_path_buf(),
            problem: format!("not JSON: {err}"),
        })?;
        Self::from_value(raw, path)
    }

    /// Validates a conflist document; `origin` names it in errors.
    pub fn from_value(raw: Value, origin: &Path) -> Result<Self, CniError> {
        let bad = |problem: String| CniError::BadConf {
            path: origin.to_path_buf(),
            problem,
        };
        let obj = raw
            .as_object()
            .ok_or_else(|| bad("must be a JSON object".into()))?;
        let text_field = |key: &str| -> Result<String, CniError> {
            match obj.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad(format!("field {key:?} must be a non-empty string"))),
            }
        };
        let cni_version = text_field("cniVersion")?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(bad(format!(
                "cniVersion {cni_version:?} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        let name = text_field("name")?;
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bad(format!(
                "network name {name:?} may contain only letters, digits, '-', '_' and '.'"
            )));
        }
        let disable_check = obj
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let plugins = match obj.get("plugins") {
            Some(Value::Array(list)) if !list.is_empty() => list,
            _ => return Err(bad("field \"plugins\" must be a non-empty list".into())),
        };
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, plugin)| match plugin.as_object() {
                Some(p) if matches!(p.get("type"), Some(Value::String(t)) if is_plugin_name(t)) => {
                    Ok(p.clone())
                }
                _ => Err(bad(format!(
                    "plugins[{i}] must be an object with a \"type\" naming a plugin binary"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConfList {
            cni_version,
            name,
            disable_check,
            plugins,
            raw,
        })
    }

    /// CHECK exists from CNI 0.4.0 on.
    pub fn supports_check(&self) -> bool {
        !self.disable_check && !self.cni_version.starts_with("0.3")
    }
}

/// A plugin type names a file in the plugin dirs: no path separators.
fn is_plugin_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

/// The plugin type of a plugin object (validated by [`ConfList::from_value`]).
pub fn plugin_type(plugin: &Map<String, Value>) -> &str {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether the plugin asked for the `portMappings` capability.
pub fn wants_port_mappings(plugin: &Map<String, Value>) -> bool {
    plugin
        .get("capabilities")
        .and_then(|caps| caps.get("portMappings"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<ConfList, CniError> {
        ConfList::from_value(value, Path::new("/etc/cni/net.d/test.conflist"))
    }

    #[test]
    fn a_debian_style_chain_parses() {
        let list = parse(json!({
            "cniVersion": "1.0.0", "name": "berth-cni",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        }))
        .expect("parse");
        assert_eq!(list.name, "berth-cni");
        assert_eq!(list.plugins.len(), 2);
        assert_eq!(plugin_type(&list.plugins[0]), "bridge");
        assert!(!wants_port_mappings(&list.plugins[0]));
        assert!(wants_port_mappings(&list.plugins[1]));
        assert!(list.supports_check());
    }

    #[test]
    fn bad_lists_name_the_file_and_field() {
        let cases = [
            (json!([]), "JSON object"),
            (
                json!({"name": "x", "plugins": [{"type": "bridge"}]}),
                "cniVersion",
            ),
            (
                json!({"cniVersion": "9.9.9", "name": "x", "plugins": [{"type": "b"}]}),
                "9.9.9",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "x", "plugins": []}),
                "plugins",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "../sh"}]}),
                "plugins[0]",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "a b", "plugins": [{"type": "b"}]}),
                "a b",
            ),
        ];
        for (value, needle) in cases {
            let err = parse(value).expect_err(needle);
            let text = err.to_string();
            assert!(
                text.contains("test.conflist") && text.contains(needle),
                "{text}"
            );
        }
    }

    #[test]
    fn check_is_skipped_for_old_versions_or_when_disabled() {
        let old = parse(json!({"cniVersion": "0.3.1", "name": "x", "plugins": [{"type": "b"}]}))
            .expect("parse");
        assert!(!old.supports_check());
        let off = parse(json!({"cniVersion": "1.0.0", "name": "x", "disableCheck": true, "plugins": [{"type": "b"}]}))
            .expect("parse");
        assert!(!off.supports_check());
    }
}
