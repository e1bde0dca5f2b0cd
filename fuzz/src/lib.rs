//! What every fuzz target checks of a parse result, beyond "no panic":
//!
//! - every diagnostic points at a line and column inside the input, so a
//!   user can always find what is wrong;
//! - every object the manifests crate accepts (what `berth validate`
//!   passes) is accepted by the agent's own conversions too: the agent
//!   never refuses at apply time a value validate let through.

use std::path::Path;

use manifests::{Object, ParsedFile};

/// Checks `parsed`, the result of parsing `input`.
pub fn check_parsed(parsed: &ParsedFile, input: &[u8]) {
    let lines = line_count(input);
    for diagnostic in parsed.all_diagnostics() {
        assert!(
            (1..=lines).contains(&diagnostic.line) && diagnostic.column >= 1,
            "{diagnostic} is not a position in the {lines}-line input"
        );
    }
    let _ = manifests::find_conflicts(std::slice::from_ref(parsed));
    for object in parsed.objects() {
        let _ = object.content_hash();
        let _ = object.redacted().canonical_json();
        agent_accepts(object);
    }
}

/// Lines as YAML counts them: LF, CRLF and a lone CR each end one (TOML
/// and JSON count LF only, never more).
fn line_count(input: &[u8]) -> usize {
    let lone_crs = input
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\r' && input.get(i + 1) != Some(&b'\n'))
        .count();
    input.iter().filter(|b| **b == b'\n').count() + lone_crs + 1
}

/// Runs the agent's conversion of a valid object; any refusal is a value
/// validate and the agent disagree on.
pub fn agent_accepts(object: &Object) {
    match object {
        Object::Registry(registry) => {
            let hosts = berth::image::hosts::RegistryHosts::from_registry(registry, "fuzz")
                .unwrap_or_else(|err| panic!("validate accepted, the agent refused: {err}"));
            let host = registry.host();
            let host = if host == "_default" {
                "docker.io"
            } else {
                host
            };
            if let Err(err) = berth::image::hosts::endpoints_for(Some(&hosts), host) {
                panic!("validate accepted, the agent refused: {err}");
            }
        }
        Object::Image(image) => {
            if let Some(platform) = &image.spec.platform
                && let Err(err) = platform.parse::<berth::image::remote::Platform>()
            {
                panic!("validate accepted, the agent refused: {err}");
            }
        }
        Object::Pod(pod) => pod_accepted(pod),
        Object::ConfigMap(_) | Object::Secret(_) => {}
    }
}

fn pod_accepted(pod: &manifests::types::Pod) {
    use berth::runtime::{from_pod, security};
    let refused = |err: &dyn std::fmt::Display| -> ! {
        panic!("validate accepted, the agent refused: {err}")
    };
    if let Err(err) = from_pod::pod_security_context(pod.spec.security_context.as_deref()) {
        refused(&err);
    }
    for volume in &pod.spec.volumes {
        if let Err(err) = from_pod::volume(volume, Some(Path::new("/fuzz").to_owned())) {
            refused(&err);
        }
    }
    for container in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
        let spec = match from_pod::container_spec(container, from_pod::literal_env(container)) {
            Ok(spec) => spec,
            Err(err) => refused(&err),
        };
        if let Err(err) = security::capabilities(&spec.security_context, u64::MAX) {
            refused(&err);
        }
    }
}
