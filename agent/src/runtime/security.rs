//! Secure defaults for every container: Docker's default capability set,
//! masked and read-only `/proc` and `/sys` paths, a device allowlist — and
//! what `securityContext` (privileged, capabilities add/drop) changes.

use std::collections::BTreeSet;
use std::path::Path;

use oci_spec::runtime::{
    Capabilities as OciCapabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder,
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::spec::SecurityContext;

/// Every capability Linux knows, with its bit number.
pub const ALL_CAPABILITIES: [(&str, u32); 41] = [
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

/// Docker's (and containerd's) default set for an unprivileged container.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Host files no container needs that leak kernel state or control the host.
pub const MASKED_PATHS: [&str; 13] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/kernel/security",
];

/// Kernel knobs a container may read but not write.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("securityContext.capabilities.{list}: unknown capability {name:?}")]
    UnknownCapability { list: &'static str, name: String },
}

/// The capability names (without `CAP_`) the container gets, and warnings
/// for requested ones the agent itself lacks (a runtime cannot grant what
/// its caller does not hold; asking makes it fail).
pub fn capabilities(
    security: &SecurityContext,
    host_bounding: u64,
) -> Result<(BTreeSet<&'static str>, Vec<String>), SecurityError> {
    let on_host = |bit: u32| host_bounding & (1u64 << bit) != 0;
    let mut warnings = Vec::new();
    if security.privileged {
        let caps = ALL_CAPABILITIES
            .iter()
            .filter(|(_, bit)| on_host(*bit))
            .map(|(name, _)| *name)
            .collect();
        return Ok((caps, warnings));
    }
    let mut caps: BTreeSet<&'static str> = DEFAULT_CAPABILITIES.into_iter().collect();
    let caps_drop = names(&security.capabilities.drop, "drop")?;
    if caps_drop.is_all {
        caps.clear();
    }
    for name in caps_drop.names {
        caps.remove(name);
    }
    let caps_add = names(&security.capabilities.add, "add")?;
    if caps_add.is_all {
        caps.extend(ALL_CAPABILITIES.iter().map(|(name, _)| *name));
    }
    caps.extend(caps_add.names);
    caps.retain(|name| {
        let bit = bit_of(name);
        let keep = on_host(bit);
        if !keep && caps_add.explicit.contains(name) {
            warnings.push(format!(
                "capability {name} was requested but the agent does not hold it, so the container cannot get it"
            ));
        }
        keep
    });
    Ok((caps, warnings))
}

struct CapabilityNames {
    is_all: bool,
    names: Vec<&'static str>,
    /// Named explicitly (not through ALL).
    explicit: BTreeSet<&'static str>,
}

fn names(list: &[String], which: &'static str) -> Result<CapabilityNames, SecurityError> {
    let mut out = CapabilityNames {
        is_all: false,
        names: Vec::new(),
        explicit: BTreeSet::new(),
    };
    for raw in list {
        let unknown = || SecurityError::UnknownCapability {
            list: which,
            name: raw.clone(),
        };
        // The manifests crate's reading, so validate and the agent agree.
        let oci = manifests::names::capability(raw).map_err(|_| unknown())?;
        let name = oci.strip_prefix("CAP_").unwrap_or(&oci);
        if name == "ALL" {
            out.is_all = true;
            continue;
        }
        let known = ALL_CAPABILITIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, _)| *n)
            .ok_or_else(unknown)?;
        out.names.push(known);
        out.explicit.insert(known);
    }
    Ok(out)
}

fn bit_of(name: &str) -> u32 {
    ALL_CAPABILITIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bit)| *bit)
        .unwrap_or(u32::MAX)
}

/// The bitmask of a capability set, as `/proc/<pid>/status` prints it.
pub fn mask(caps: &BTreeSet<&str>) -> u64 {
    caps.iter()
        .map(|name| bit_of(name))
        .filter(|bit| *bit < 64)
        .fold(0, |acc, bit| acc | (1u64 << bit))
}

/// All five sets, explicitly: bounding = effective = permitted = `caps`,
/// inheritable and ambient empty (oci-spec's builder would otherwise fill
/// the sets we leave out with its own defaults).
pub fn linux_capabilities(caps: &BTreeSet<&str>) -> LinuxCapabilities {
    let set: OciCapabilities = caps
        .iter()
        .filter_map(|name| name.parse::<Capability>().ok())
        .collect();
    LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(OciCapabilities::new())
        .ambient(OciCapabilities::new())
        .build()
        .expect("every capability set is given, so the builder cannot fail")
}

/// The agent's own bounding set (what it can hand to a container).
pub fn host_bounding_set() -> u64 {
    status_mask("CapBnd:").unwrap_or(u64::MAX)
}

/// Whether the agent holds `CAP_SYS_RESOURCE` in its effective set.
pub fn host_has_sys_resource() -> bool {
    status_mask("CapEff:").is_some_and(|eff| eff & (1 << 24) != 0)
}

fn status_mask(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix(field))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The devices cgroup rules: nothing but the standard pseudo-devices and
/// ptys, plus `mknod` of anything (creating a node grants no access).
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    let rule = |allow: bool,
                typ: Option<LinuxDeviceType>,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access);
        if let Some(typ) = typ {
            b = b.typ(typ);
        }
        if let Some(major) = major {
            b = b.major(major);
        }
        if let Some(minor) = minor {
            b = b.minor(minor);
        }
        b.build().expect("device rule fields are all set")
    };
    let c = Some(LinuxDeviceType::C);
    vec![
        rule(false, None, None, None, "rwm"),
        rule(true, c, None, None, "m"),
        rule(true, Some(LinuxDeviceType::B), None, None, "m"),
        rule(true, c, Some(1), Some(3), "rwm"), // null
        rule(true, c, Some(1), Some(5), "rwm"), // zero
        rule(true, c, Some(1), Some(7), "rwm"), // full
        rule(true, c, Some(1), Some(8), "rwm"), // random
        rule(true, c, Some(1), Some(9), "rwm"), // urandom
        rule(true, c, Some(5), Some(0), "rwm"), // tty
        rule(true, c, Some(5), Some(2), "rwm"), // ptmx
        rule(true, c, Some(136), None, "rwm"),  // pts/*
    ]
}

/// A privileged container may use every device.
pub fn allow_all_devices() -> Vec<LinuxDeviceCgroup> {
    vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .expect("device rule fields are all set"),
    ]
}

/// The host's device nodes under `/dev`, for a privileged container (as
/// Docker and containerd give it). Pseudo-filesystems mounted under /dev
/// (pts, shm, mqueue, hugepages) are the container's own.
pub fn host_devices() -> Vec<LinuxDevice> {
    let mut devices = Vec::new();
    collect_devices(Path::new("/dev"), &mut devices);
    devices
}

fn collect_devices(dir: &Path, out: &mut Vec<LinuxDevice>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("pts" | "shm" | "mqueue" | "hugepages")
            ) {
                collect_devices(&path, out);
            }
            continue;
        }
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        // /dev/console and /dev/ptmx are the container's own.
        if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
            continue;
        }
        let rdev = meta.rdev();
        let device = LinuxDeviceBuilder::default()
            .path(path)
            .typ(typ)
            .major(i64::try_from(nix::sys::stat::major(rdev)).unwrap_or(i64::MAX))
            .minor(i64::try_from(nix::sys::stat::minor(rdev)).unwrap_or(i64::MAX))
            .file_mode(meta.mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build();
        if let Ok(device) = device {
            out.push(device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::Capabilities;

    /// This machine: every capability but SYS_RESOURCE (bit 24).
    const HOST: u64 = 0x1ff_feff_ffff;

    fn with_caps(add: &[&str], drop: &[&str]) -> SecurityContext {
        SecurityContext {
            capabilities: Capabilities {
                add: add.iter().map(|s| s.to_string()).collect(),
                drop: drop.iter().map(|s| s.to_string()).collect(),
            },
            ..Default::default()
        }
    }

    #[test]
    fn default_set_is_dockers() {
        let (caps, warnings) = capabilities(&SecurityContext::default(), HOST).expect("ok");
        assert_eq!(mask(&caps), 0xa80425fb, "Docker's well-known CapEff");
        assert!(warnings.is_empty());
    }

    #[test]
    fn add_and_drop_with_all() {
        let (caps, _) =
            capabilities(&with_caps(&["NET_ADMIN", "cap_sys_time"], &["KILL"]), HOST).expect("ok");
        assert!(caps.contains("NET_ADMIN") && caps.contains("SYS_TIME"));
        assert!(!caps.contains("KILL"));
        let (caps, _) =
            capabilities(&with_caps(&["NET_BIND_SERVICE"], &["ALL"]), HOST).expect("ok");
        assert_eq!(caps.into_iter().collect::<Vec<_>>(), ["NET_BIND_SERVICE"]);
        let (caps, warnings) = capabilities(&with_caps(&["ALL"], &[]), HOST).expect("ok");
        assert_eq!(caps.len(), 40, "everything the host has");
        assert!(
            warnings.is_empty(),
            "ALL does not warn about what the host lacks"
        );
    }

    #[test]
    fn capabilities_the_agent_lacks_are_dropped_with_a_warning() {
        let (caps, warnings) = capabilities(&with_caps(&["SYS_RESOURCE"], &[]), HOST).expect("ok");
        assert!(!caps.contains("SYS_RESOURCE"));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("SYS_RESOURCE"), "{warnings:?}");
    }

    #[test]
    fn privileged_gets_everything_the_host_has() {
        let security = SecurityContext {
            privileged: true,
            ..Default::default()
        };
        let (caps, _) = capabilities(&security, HOST).expect("ok");
        assert_eq!(mask(&caps), HOST);
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = capabilities(&with_caps(&["FLY"], &[]), HOST).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "securityContext.capabilities.add: unknown capability \"FLY\""
        );
    }

    #[test]
    fn all_five_sets_are_explicit() {
        let (caps, _) = capabilities(&SecurityContext::default(), HOST).expect("ok");
        let oci = linux_capabilities(&caps);
        assert_eq!(oci.bounding().as_ref().map(|s| s.len()), Some(14));
        assert_eq!(oci.effective().as_ref().map(|s| s.len()), Some(14));
        assert_eq!(oci.permitted().as_ref().map(|s| s.len()), Some(14));
        assert_eq!(oci.inheritable().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(oci.ambient().as_ref().map(|s| s.len()), Some(0));
        // Every known name maps onto oci-spec's enum.
        for (name, _) in ALL_CAPABILITIES {
            assert!(name.parse::<Capability>().is_ok(), "{name}");
        }
    }
}
