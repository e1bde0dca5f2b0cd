//! Container rlimits, clamped to what the agent itself may hand out.
//!
//! A process without CAP_SYS_RESOURCE cannot raise a hard limit above its
//! own, and the runtime runs as the agent's child: a spec asking for more
//! makes `runc create` fail with "setrlimit: operation not permitted". So
//! each requested limit is lowered to the agent's hard limit, and the
//! change is reported as a warning for the pod's status.

use std::collections::BTreeMap;

use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType};
use rustix::process::Resource;

use super::config::RlimitConfig;

#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("[runtime.rlimits] {name:?}: unknown rlimit (known: {known})")]
    Unknown { name: String, known: String },
}

const KNOWN: [(&str, PosixRlimitType, Resource); 15] = {
    use PosixRlimitType as T;
    use Resource as R;
    [
        ("as", T::RlimitAs, R::As),
        ("core", T::RlimitCore, R::Core),
        ("cpu", T::RlimitCpu, R::Cpu),
        ("data", T::RlimitData, R::Data),
        ("fsize", T::RlimitFsize, R::Fsize),
        ("locks", T::RlimitLocks, R::Locks),
        ("memlock", T::RlimitMemlock, R::Memlock),
        ("msgqueue", T::RlimitMsgqueue, R::Msgqueue),
        ("nice", T::RlimitNice, R::Nice),
        ("nofile", T::RlimitNofile, R::Nofile),
        ("nproc", T::RlimitNproc, R::Nproc),
        ("rss", T::RlimitRss, R::Rss),
        ("rtprio", T::RlimitRtprio, R::Rtprio),
        ("sigpending", T::RlimitSigpending, R::Sigpending),
        ("stack", T::RlimitStack, R::Stack),
    ]
};

/// What the agent may grant: its hard limit for a resource, or `None` when
/// it can raise limits (it holds CAP_SYS_RESOURCE).
pub trait HostLimits {
    fn hard_limit(&self, name: &str) -> Option<u64>;
}

/// The limits of the running agent.
pub struct AgentLimits {
    pub has_sys_resource: bool,
}

impl HostLimits for AgentLimits {
    fn hard_limit(&self, name: &str) -> Option<u64> {
        if self.has_sys_resource {
            return None;
        }
        let (_, _, resource) = KNOWN.iter().find(|(n, _, _)| *n == name)?;
        // None from rustix means RLIM_INFINITY: nothing to clamp to.
        rustix::process::getrlimit(*resource).maximum
    }
}

/// The OCI rlimits for `wanted`, clamped, plus one warning per change.
pub fn rlimits(
    wanted: &BTreeMap<String, RlimitConfig>,
    host: &dyn HostLimits,
) -> Result<(Vec<PosixRlimit>, Vec<String>), RlimitError> {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for (name, want) in wanted {
        let key = name.to_ascii_lowercase();
        let key = key.strip_prefix("rlimit_").unwrap_or(&key);
        let (_, typ, _) =
            KNOWN
                .iter()
                .find(|(n, _, _)| *n == key)
                .ok_or_else(|| RlimitError::Unknown {
                    name: name.clone(),
                    known: KNOWN
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let mut hard = want.hard;
        let mut soft = want.soft;
        if let Some(max) = host.hard_limit(key)
            && hard > max
        {
            warnings.push(format!(
                "rlimit {key}: hard limit {hard} lowered to {max}, the agent's own hard limit \
                 (it lacks CAP_SYS_RESOURCE; raise the agent's limit, e.g. LimitNOFILE= in its systemd unit)"
            ));
            hard = max;
        }
        if soft > hard {
            warnings.push(format!(
                "rlimit {key}: soft limit {soft} lowered to the hard limit {hard}"
            ));
            soft = hard;
        }
        out.push(
            PosixRlimitBuilder::default()
                .typ(*typ)
                .hard(hard)
                .soft(soft)
                .build()
                .expect("all fields set"),
        );
    }
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine: hard NOFILE 20000, no CAP_SYS_RESOURCE.
    struct ThisHost;
    impl HostLimits for ThisHost {
        fn hard_limit(&self, name: &str) -> Option<u64> {
            (name == "nofile").then_some(20_000)
        }
    }

    fn want(name: &str, soft: u64, hard: u64) -> BTreeMap<String, RlimitConfig> {
        [(name.to_string(), RlimitConfig { soft, hard })].into()
    }

    #[test]
    fn clamps_to_the_agents_hard_limit_and_says_so() {
        let (limits, warnings) = rlimits(&want("nofile", 1024, 1_048_576), &ThisHost).expect("ok");
        assert_eq!(limits[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((limits[0].soft(), limits[0].hard()), (1024, 20_000));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("1048576 lowered to 20000"),
            "{warnings:?}"
        );

        let (limits, warnings) =
            rlimits(&want("RLIMIT_NOFILE", 50_000, 60_000), &ThisHost).expect("ok");
        assert_eq!((limits[0].soft(), limits[0].hard()), (20_000, 20_000));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn limits_within_reach_are_untouched() {
        let (limits, warnings) = rlimits(&want("nofile", 1024, 4096), &ThisHost).expect("ok");
        assert_eq!((limits[0].soft(), limits[0].hard()), (1024, 4096));
        assert!(warnings.is_empty());
    }

    #[test]
    fn unknown_names_are_errors() {
        let err = rlimits(&want("files", 1, 1), &ThisHost).expect_err("unknown");
        assert!(
            err.to_string()
                .starts_with("[runtime.rlimits] \"files\": unknown rlimit"),
            "{err}"
        );
    }
}
