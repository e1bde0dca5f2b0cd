//! Parse once: every value the agent reads from a manifest is accepted by
//! `berth validate` exactly when the agent's own conversion accepts it. For
//! each value type, one table of strings goes through the real `berth
//! validate` binary and through the agent's library call that applies it.

use std::collections::BTreeMap;

use berth::image::hosts::RegistryHosts;
use berth::image::remote::{ImageReference, Platform};
use berth::runtime::{from_pod, security};
use berth_e2e::TestDirs;
use serde_json::{Value, json};

/// The strings of one value type, a manifest holding each, and what the
/// agent does with that manifest.
struct ValueType {
    name: &'static str,
    values: &'static [&'static str],
    manifest: fn(&str) -> Value,
    agent_accepts: fn(&Value) -> Result<(), String>,
}

const DURATIONS: &[&str] = &[
    "500ms",
    "1.5s",
    "1m30s",
    ".5s",
    "1.s",
    "+1s",
    "0",
    "1µs",
    "1μs",
    "1.2.3s",
    "5",
    "fast",
    "",
    "1s ",
    " 1s",
    "-1s",
    "1d",
    "1e3s",
    "2562048h",
    "99999999999999999999999h",
];

const URLS: &[&str] = &[
    "https://registry.local:5000",
    "http://10.0.0.2:5000/v2/upstream",
    "https://[::1]:5000",
    "https://Registry.Example.com",
    "https://registry.loca7.0.0.1:1080",
    "https://registry.local:65536",
    "https://1.2.3.256",
    "ftp://registry.local",
    "https://",
    "https://reg istry.local",
];

const PLATFORMS: &[&str] = &[
    "linux/amd64",
    "linux/arm64/v8",
    "Linux/AArch64/8",
    "windows/amd64/10.0",
    "linux",
    "linux/",
    "linux//v8",
    "linux/amd64/v8/x",
    "linux/amd 64",
    "linux/amd64 ",
    "linux/amd64\n",
];

const CAPABILITIES: &[&str] = &[
    "NET_ADMIN",
    "CAP_NET_ADMIN",
    "net_admin",
    "ALL",
    "all",
    " NET_ADMIN",
    "NET_ADMIN ",
    "NET_ADMINN",
    "CAP_",
    "",
];

const QUANTITIES: &[&str] = &[
    "128Mi",
    "1Gi",
    "0.5",
    "1e3",
    "1E3",
    "500m",
    "+1Ki",
    "0",
    "-1",
    "-1Mi",
    "1.5.5",
    "Mi",
    "1Ki ",
    "",
    "1Qi",
    "99999999999999999999999999999999999999Ei",
];

const REFERENCES: &[&str] = &[
    "busybox",
    "busybox:1.36",
    "localhost:5000/team/app:v1",
    "docker.io/library/busybox@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Busybox",
    "a:b:c",
    "busybox@sha256:short",
    "busybox:",
    " busybox",
];

const IDS: &[&str] = &["0", "1000", "4294967295", "4294967296", "-1"];

fn registry(timeout: &str) -> Value {
    json!({
        "apiVersion": "berth/v1",
        "kind": "Registry",
        "metadata": {"name": "registry.local:5000"},
        "spec": {"server": {"url": "https://registry.local:5000", "dialTimeout": timeout}},
    })
}

fn registry_server(url: &str) -> Value {
    json!({
        "apiVersion": "berth/v1",
        "kind": "Registry",
        "metadata": {"name": "registry.local:5000"},
        "spec": {"server": {"url": url}},
    })
}

fn image(platform: &str) -> Value {
    json!({
        "apiVersion": "berth/v1",
        "kind": "Image",
        "metadata": {"name": "app"},
        "spec": {"image": "busybox:1.36", "platform": platform},
    })
}

fn pod(container: Value) -> Value {
    let mut base = json!({"name": "app", "image": "busybox:1.36"});
    let fields = container.as_object().expect("container fields");
    for (key, value) in fields {
        base[key] = value.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app"},
        "spec": {"containers": [base]},
    })
}

fn pod_with_capability(name: &str) -> Value {
    pod(json!({"securityContext": {"capabilities": {"add": [name]}}}))
}

fn pod_with_memory(quantity: &str) -> Value {
    pod(json!({"resources": {"limits": {"memory": quantity}}}))
}

fn pod_with_image(reference: &str) -> Value {
    pod(json!({"image": reference}))
}

fn pod_with_user(id: &str) -> Value {
    let id: i64 = id.parse().expect("ids in the table are integers");
    pod(json!({"securityContext": {"runAsUser": id}}))
}

fn typed<T: serde::de::DeserializeOwned>(manifest: &Value) -> T {
    serde_json::from_value(manifest.clone()).expect("the table's manifests have the right shape")
}

fn agent_reads_registry(manifest: &Value) -> Result<(), String> {
    let registry: manifests::types::Registry = typed(manifest);
    RegistryHosts::from_registry(&registry, "test")
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The registry config and the endpoints a pull would use.
fn agent_reads_registry_endpoints(manifest: &Value) -> Result<(), String> {
    let registry: manifests::types::Registry = typed(manifest);
    let hosts = RegistryHosts::from_registry(&registry, "test").map_err(|e| e.to_string())?;
    berth::image::hosts::endpoints_for(Some(&hosts), "registry.local:5000")
        .map(drop)
        .map_err(|e| e.to_string())
}

fn agent_reads_platform(manifest: &Value) -> Result<(), String> {
    let image: manifests::types::Image = typed(manifest);
    let platform = image.spec.platform.expect("the table sets a platform");
    platform
        .parse::<Platform>()
        .map(drop)
        .map_err(|e| e.to_string())
}

/// What the agent does with a pod's container before it runs it.
fn agent_reads_container(manifest: &Value) -> Result<(), String> {
    let pod: manifests::types::Pod = typed(manifest);
    let container = &pod.spec.containers[0];
    ImageReference::parse(&container.image).map_err(|e| e.to_string())?;
    let spec = from_pod::container_spec(container, from_pod::literal_env(container))
        .map_err(|e| e.to_string())?;
    security::capabilities(&spec.security_context, u64::MAX).map_err(|e| e.to_string())?;
    Ok(())
}

const VALUE_TYPES: &[ValueType] = &[
    ValueType {
        name: "duration (Registry dialTimeout)",
        values: DURATIONS,
        manifest: registry,
        agent_accepts: agent_reads_registry,
    },
    ValueType {
        name: "URL (Registry server url)",
        values: URLS,
        manifest: registry_server,
        agent_accepts: agent_reads_registry_endpoints,
    },
    ValueType {
        name: "platform (Image spec.platform)",
        values: PLATFORMS,
        manifest: image,
        agent_accepts: agent_reads_platform,
    },
    ValueType {
        name: "capability",
        values: CAPABILITIES,
        manifest: pod_with_capability,
        agent_accepts: agent_reads_container,
    },
    ValueType {
        name: "quantity (memory limit)",
        values: QUANTITIES,
        manifest: pod_with_memory,
        agent_accepts: agent_reads_container,
    },
    ValueType {
        name: "image reference",
        values: REFERENCES,
        manifest: pod_with_image,
        agent_accepts: agent_reads_container,
    },
    ValueType {
        name: "user ID (runAsUser)",
        values: IDS,
        manifest: pod_with_user,
        agent_accepts: agent_reads_container,
    },
];

/// Runs `berth validate -o json` once on a directory of files and returns,
/// per file name, whether validate found no error in it.
fn validate_verdicts(dirs: &TestDirs) -> BTreeMap<String, bool> {
    let manifests = dirs.manifests.to_str().expect("utf-8 path");
    let output = dirs.berth(&["validate", "-o", "json", manifests]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "berth validate printed no JSON report ({err}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    report["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|file| {
            let path = file["path"].as_str().expect("path");
            let name = path.rsplit('/').next().expect("file name").to_owned();
            (name, file["errors"].as_u64() == Some(0))
        })
        .collect()
}

#[test]
fn validate_and_the_agent_accept_exactly_the_same_values() {
    let dirs = TestDirs::new();
    let mut cases = Vec::new();
    for (t, value_type) in VALUE_TYPES.iter().enumerate() {
        for (v, value) in value_type.values.iter().enumerate() {
            let mut manifest = (value_type.manifest)(value);
            // One key per case (a Registry's name is a host), so that no
            // two cases conflict.
            manifest["metadata"]["name"] = json!(format!("c{t}-{v}.local"));
            let file = format!("case-{t}-{v}.json");
            std::fs::write(dirs.manifests.join(&file), manifest.to_string())
                .expect("writing a case");
            cases.push((file, value_type, *value, manifest));
        }
    }
    let verdicts = validate_verdicts(&dirs);
    let mut disagreements = Vec::new();
    let mut accepted = 0;
    for (file, value_type, value, manifest) in &cases {
        let validate = *verdicts
            .get(file)
            .unwrap_or_else(|| panic!("berth validate did not report {file}"));
        let agent = (value_type.agent_accepts)(manifest);
        accepted += usize::from(validate);
        if validate != agent.is_ok() {
            disagreements.push(format!(
                "{} {value:?}: validate {}, agent {}",
                value_type.name,
                if validate { "accepts" } else { "refuses" },
                match &agent {
                    Ok(()) => "accepts".to_owned(),
                    Err(why) => format!("refuses ({why})"),
                },
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "validate and the agent disagree:\n{}",
        disagreements.join("\n")
    );
    // The tables hold both kinds of value for every type.
    assert!(
        accepted > VALUE_TYPES.len() && accepted < cases.len(),
        "{accepted} of {} accepted",
        cases.len()
    );
}
