//! `seccompProfile: {type: Localhost}`: a profile file from the agent's
//! seccomp directory, in Docker's format (what the kubelet and containerd
//! read: `names`, `archMap`, `includes`/`excludes` by capability,
//! architecture and kernel) or the OCI `linux.seccomp` format (a subset of
//! it). Conditional rules are resolved here, for the container's
//! capabilities, this machine's architecture and kernel, as containerd
//! does; the rest maps field for field.

use std::collections::BTreeSet;

use oci_spec::runtime::LinuxSeccomp;
use serde_json::{Map, Value};

/// What conditional rules are decided by.
pub struct Target<'a> {
    /// The container's capabilities (names without `CAP_`).
    pub capabilities: &'a BTreeSet<&'a str>,
    /// Go's name of this architecture (`amd64`, `arm64`), as profiles use.
    pub go_arch: &'a str,
    /// `(major, minor)` of the running kernel.
    pub kernel: (u32, u32),
}

impl Target<'_> {
    /// This machine's architecture in Go's naming.
    pub fn native_go_arch() -> &'static str {
        match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        }
    }

    /// The running kernel's `(major, minor)`, `(0, 0)` if unknown.
    pub fn running_kernel() -> (u32, u32) {
        nix::sys::utsname::uname()
            .ok()
            .and_then(|u| u.release().to_str().and_then(kernel_version))
            .unwrap_or((0, 0))
    }
}

fn kernel_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The OCI form of the profile in `bytes`.
pub fn convert(bytes: &[u8], target: &Target<'_>) -> Result<LinuxSeccomp, String> {
    let profile: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut profile) = profile else {
        return Err("not a JSON object".into());
    };
    if !profile.contains_key("defaultAction") {
        return Err("has no defaultAction".into());
    }
    // Docker's archMap: the entry of this architecture and its
    // sub-architectures, when `architectures` does not list them.
    if let Some(Value::Array(arch_map)) = profile.remove("archMap")
        && !profile.contains_key("architectures")
    {
        let native = oci_arch(target.go_arch);
        let mut arches = Vec::new();
        for entry in &arch_map {
            if entry.get("architecture").and_then(Value::as_str) == Some(native.as_str()) {
                arches.push(Value::String(native.clone()));
                if let Some(Value::Array(subs)) = entry.get("subArchitectures") {
                    arches.extend(subs.iter().cloned());
                }
            }
        }
        profile.insert("architectures".into(), Value::Array(arches));
    }
    if let Some(Value::Array(rules)) = profile.remove("syscalls") {
        let mut kept = Vec::new();
        for rule in rules {
            let Value::Object(mut rule) = rule else {
                return Err("a syscalls entry is not an object".into());
            };
            if !applies(&rule, target)? {
                continue;
            }
            rule.remove("includes");
            rule.remove("excludes");
            rule.remove("comment");
            if let Some(name) = rule.remove("name") {
                rule.insert("names".into(), Value::Array(vec![name]));
            }
            kept.push(Value::Object(rule));
        }
        profile.insert("syscalls".into(), Value::Array(kept));
    }
    profile.remove("comment");
    serde_json::from_value(Value::Object(profile))
        .map_err(|e| format!("not a seccomp profile: {e}"))
}

/// `SCMP_ARCH_X86_64` for `amd64`.
fn oci_arch(go_arch: &str) -> String {
    let name = match go_arch {
        "amd64" => "X86_64",
        "386" => "X86",
        "arm64" => "AARCH64",
        "arm" => "ARM",
        "ppc64le" => "PPC64LE",
        "s390x" => "S390X",
        "riscv64" => "RISCV64",
        other => return format!("SCMP_ARCH_{}", other.to_ascii_uppercase()),
    };
    format!("SCMP_ARCH_{name}")
}

/// Whether a rule's `includes` all hold and none of its `excludes` does.
fn applies(rule: &Map<String, Value>, target: &Target<'_>) -> Result<bool, String> {
    let strings = |filter: &Value, key: &str| -> Vec<String> {
        filter
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.trim_start_matches("CAP_").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(includes) = rule.get("includes") {
        let caps = strings(includes, "caps");
        if !caps
            .iter()
            .all(|c| target.capabilities.contains(c.as_str()))
        {
            return Ok(false);
        }
        let arches = strings(includes, "arches");
        if !arches.is_empty() && !arches.iter().any(|a| a == target.go_arch) {
            return Ok(false);
        }
        if let Some(min) = includes.get("minKernel").and_then(Value::as_str) {
            let min = kernel_version(min).ok_or_else(|| format!("minKernel {min:?} is not X.Y"))?;
            if target.kernel < min {
                return Ok(false);
            }
        }
    }
    if let Some(excludes) = rule.get("excludes") {
        let caps = strings(excludes, "caps");
        if caps
            .iter()
            .any(|c| target.capabilities.contains(c.as_str()))
        {
            return Ok(false);
        }
        if strings(excludes, "arches")
            .iter()
            .any(|a| a == target.go_arch)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(caps: &'a BTreeSet<&'a str>) -> Target<'a> {
        Target {
            capabilities: caps,
            go_arch: "amd64",
            kernel: (6, 1),
        }
    }

    fn names(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .clone()
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn docker_profiles_are_resolved_for_the_container() {
        let docker = br#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
            ],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "comment": "no dirs"},
                {"name": "ptrace", "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_PTRACE"]}},
                {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["s390_only"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["s390x"]}},
                {"names": ["future"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "9.0"}}
            ]
        }"#;
        let caps = BTreeSet::from(["CHOWN"]);
        let profile = convert(docker, &target(&caps)).expect("converts");
        assert_eq!(names(&profile), ["mkdir", "mkdirat", "ptrace"]);
        let arches: Vec<String> = profile
            .architectures()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                serde_json::to_value(a)
                    .expect("json")
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(
            arches,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        let caps = BTreeSet::from(["SYS_PTRACE", "SYS_ADMIN"]);
        let profile = convert(docker, &target(&caps)).expect("converts");
        assert_eq!(names(&profile), ["mkdir", "mkdirat", "bpf"]);
    }

    #[test]
    fn oci_profiles_pass_and_garbage_is_named() {
        let oci = br#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                       "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#;
        let caps = BTreeSet::new();
        let profile = convert(oci, &target(&caps)).expect("converts");
        assert_eq!(names(&profile), ["read"]);
        assert!(convert(b"[]", &target(&caps)).is_err());
        assert!(
            convert(b"{}", &target(&caps))
                .expect_err("no action")
                .contains("defaultAction")
        );
        assert!(convert(b"{\"defaultAction\": \"SCMP_ACT_NOPE\"}", &target(&caps)).is_err());
        assert_eq!(kernel_version("6.18.44-fc-v1300"), Some((6, 18)));
    }
}
