//! Running one CNI plugin binary: the CNI_* environment, the network
//! configuration on stdin, the result or error object on stdout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;

use super::CniError;
use super::conf::{self, ConfList};
use super::result::PluginError;
use crate::ports::PortMapping;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// Everything about one pod that every plugin of the chain gets.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS`: `IgnoreUnknown=1;K8S_POD_NAMESPACE=…;K8S_POD_NAME=…;…`.
    pub args: String,
    /// `runtimeConfig.portMappings`, for plugins with that capability.
    pub port_mappings: Vec<Value>,
    pub plugin_dirs: Vec<PathBuf>,
    pub timeout: Duration,
}

/// `CNI_ARGS` as the kubelet sets them.
pub fn cni_args(namespace: &str, name: &str, pod_id: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={pod_id}"
    )
}

/// The CNI convention for `runtimeConfig.portMappings` entries.
pub fn port_mappings(ports: &[PortMapping]) -> Vec<Value> {
    ports
        .iter()
        .map(|m| {
            let mut entry = serde_json::json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": m.protocol.as_str(),
            });
            if let Some(ip) = m.bound_ip() {
                entry["hostIP"] = Value::String(ip.to_string());
            }
            entry
        })
        .collect()
}

/// The stdin of one plugin: its own object plus the list's name and
/// version, the previous result and the runtime config it asked for.
pub fn plugin_config(
    list: &ConfList,
    plugin: &Map<String, Value>,
    prev_result: Option<&Value>,
    inv: &Invocation,
) -> Value {
    let mut config = plugin.clone();
    config.insert("name".into(), Value::String(list.name.clone()));
    config.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev_result {
        config.insert("prevResult".into(), prev.clone());
    }
    if conf::wants_port_mappings(plugin) && !inv.port_mappings.is_empty() {
        config.insert(
            "runtimeConfig".into(),
            serde_json::json!({ "portMappings": inv.port_mappings }),
        );
    }
    Value::Object(config)
}

fn find_plugin(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: name.to_string(),
            dirs: dirs.to_vec(),
        })
}

/// Runs `plugin` for `command`; returns its result for ADD.
pub async fn run(
    command: CniCommand,
    plugin: &str,
    stdin: &Value,
    inv: &Invocation,
) -> Result<Option<Value>, CniError> {
    let binary = find_plugin(plugin, &inv.plugin_dirs)?;
    let cni_path = std::env::join_paths(&inv.plugin_dirs).unwrap_or_default();
    let mut child = tokio::process::Command::new(&binary)
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", &inv.netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_ARGS", &inv.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CniError::Spawn {
            plugin: binary.clone(),
            source,
        })?;
    let payload = serde_json::to_vec(stdin).expect("a JSON value always serialises");
    if let Some(mut pipe) = child.stdin.take() {
        // A plugin that exits without reading stdin is judged by its exit.
        let _ = pipe.write_all(&payload).await;
    }
    let failed = |detail: String| CniError::Plugin {
        plugin: plugin.to_string(),
        command: command.as_str(),
        container_id: inv.container_id.clone(),
        detail,
    };
    let output = tokio::time::timeout(inv.timeout, child.wait_with_output())
        .await
        .map_err(|_| failed(format!("no answer within {:?}; killed", inv.timeout)))?
        .map_err(|source| CniError::Spawn {
            plugin: binary.clone(),
            source,
        })?;
    if !output.status.success() {
        let detail = match serde_json::from_slice::<PluginError>(&output.stdout) {
            Ok(err) => err.to_string(),
            Err(_) => format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        };
        return Err(failed(detail));
    }
    if command != CniCommand::Add {
        return Ok(None);
    }
    serde_json::from_slice(&output.stdout)
        .map(Some)
        .map_err(|err| failed(format!("printed no JSON result: {err}")))
}

/// Checks the plugin dirs hold every plugin of `list` (before any pod runs).
pub fn check_plugins(list: &ConfList, dirs: &[PathBuf]) -> Result<(), CniError> {
    for plugin in &list.plugins {
        find_plugin(conf::plugin_type(plugin), dirs)?;
    }
    Ok(())
}

/// Where to find `name`, for messages.
pub fn describe_dirs(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Protocol;
    use serde_json::json;
    use std::path::Path;

    fn list() -> ConfList {
        ConfList::from_value(
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
                {"type": "bridge", "bridge": "cni0"},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
            ]}),
            Path::new("x.conflist"),
        )
        .expect("list")
    }

    fn invocation(ports: &[PortMapping]) -> Invocation {
        Invocation {
            container_id: "pod".into(),
            netns: "/run/berth/netns/pod".into(),
            ifname: "eth0".into(),
            args: cni_args("default", "web", "pod"),
            port_mappings: port_mappings(ports),
            plugin_dirs: vec!["/usr/lib/cni".into()],
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn each_plugin_gets_name_version_prev_result_and_its_capabilities() {
        let list = list();
        let ports = [PortMapping {
            container_port: 80,
            host_port: 8080,
            host_ip: Some("127.0.0.1".parse().expect("ip")),
            protocol: Protocol::Tcp,
        }];
        let inv = invocation(&ports);
        let first = plugin_config(&list, &list.plugins[0], None, &inv);
        assert_eq!(first["name"], "n");
        assert_eq!(first["cniVersion"], "1.0.0");
        assert_eq!(first["bridge"], "cni0");
        assert!(first.get("prevResult").is_none());
        assert!(
            first.get("runtimeConfig").is_none(),
            "bridge did not ask for ports"
        );

        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let second = plugin_config(&list, &list.plugins[1], Some(&prev), &inv);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["snat"], true);
        assert_eq!(
            second["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
        );
    }

    #[test]
    fn cni_args_carry_the_kubernetes_identity() {
        assert_eq!(
            cni_args("default", "web", "p1"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=p1"
        );
    }

    #[test]
    fn a_missing_plugin_names_the_dirs_searched() {
        let err =
            check_plugins(&list(), &[PathBuf::from("/nonexistent-cni")]).expect_err("missing");
        let text = err.to_string();
        assert!(
            text.contains("bridge") && text.contains("/nonexistent-cni"),
            "{text}"
        );
    }
}
