//! The runtime part of `berth info`: every runtime handler the agent would
//! consider — each `[runtime.handlers.NAME]` of the config, and `runc` and
//! `crun` from PATH unless configured — with its binary, its `--version`
//! output, and whether it can run containers here; then which one is the
//! default and why. Generic over handlers: a new kind of runtime needs
//! only its own [`HandlerInfo::problem`] rule.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::runtime::CgroupLayout;
use crate::runtime::config::RuntimeConfig;

/// One runtime handler.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerInfo {
    /// What `runtimeClassName` names.
    pub name: String,
    /// `config` (`[runtime.handlers.NAME]`) or `path` (found on PATH).
    pub source: &'static str,
    /// The binary; `None` when it is not on PATH.
    pub path: Option<PathBuf>,
    pub found: bool,
    /// First line of `--version`, e.g. `runc version 1.1.5+ds1`.
    pub version: Option<String>,
    /// All of `--version`'s output (commit, spec version, features).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_output: Option<String>,
    /// Global flags placed before every subcommand.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Why it cannot run containers on this host, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl HandlerInfo {
    pub fn usable(&self) -> bool {
        self.found && self.problem.is_none()
    }

    fn is(&self, kind: &str) -> bool {
        self.version.as_deref().is_some_and(|v| v.starts_with(kind))
    }
}

/// The handler pods without `runtimeClassName` get.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultHandler {
    /// `None`: no handler can run containers here.
    pub name: Option<String>,
    pub reason: String,
}

/// Every handler, configured ones first in name order, then the ones
/// found on PATH.
pub fn list_handlers(config: &RuntimeConfig, layout: Option<&CgroupLayout>) -> Vec<HandlerInfo> {
    let mut handlers: Vec<HandlerInfo> = config
        .handlers
        .iter()
        .map(|(name, h)| probe(name, "config", Some(h.path.clone()), h.args.clone(), layout))
        .collect();
    for name in ["runc", "crun"] {
        if !config.handlers.contains_key(name) {
            let path = crate::runtime::find_in_path(name);
            handlers.push(probe(name, "path", path, Vec::new(), layout));
        }
    }
    handlers
}

fn probe(
    name: &str,
    source: &'static str,
    path: Option<PathBuf>,
    args: Vec<String>,
    layout: Option<&CgroupLayout>,
) -> HandlerInfo {
    let mut info = HandlerInfo {
        name: name.to_owned(),
        source,
        found: path.as_ref().is_some_and(|p| p.is_file()),
        path,
        version: None,
        version_output: None,
        args,
        problem: None,
    };
    let Some(path) = info.path.clone().filter(|_| info.found) else {
        info.problem = Some(match &info.path {
            Some(path) => format!("{} does not exist", path.display()),
            None => format!("{name} is not installed (not on PATH)"),
        });
        return info;
    };
    match Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            info.version = text.lines().next().map(str::to_owned);
            info.version_output = Some(text);
        }
        Ok(out) => {
            info.problem = Some(format!(
                "`{} --version` failed ({})",
                path.display(),
                out.status
            ));
        }
        Err(err) => {
            info.problem = Some(format!("running {}: {err}", path.display()));
        }
    }
    if info.problem.is_none() && info.is("crun") {
        info.problem = layout.and_then(CgroupLayout::crun_blocker);
    }
    info
}

/// The default handler as the agent picks it (see
/// `Runtime::handler_for`): `[runtime] default-handler` if set, else crun
/// where it can run, else runc, else any usable handler.
pub fn default_handler(config: &RuntimeConfig, handlers: &[HandlerInfo]) -> DefaultHandler {
    let named = |name: &str| handlers.iter().find(|h| h.name == name);
    if let Some(name) = &config.default_handler {
        let reason = match named(name) {
            Some(h) if h.usable() => "set by [runtime] default-handler".to_owned(),
            Some(h) => format!(
                "set by [runtime] default-handler, but it cannot run containers here: {}",
                h.problem.as_deref().unwrap_or("unknown")
            ),
            None => "set by [runtime] default-handler, but no such handler is configured".into(),
        };
        return DefaultHandler {
            name: Some(name.clone()),
            reason,
        };
    }
    let crun = named("crun");
    let crun_why = match crun {
        Some(h) if h.usable() => {
            return DefaultHandler {
                name: Some("crun".into()),
                reason: "crun is preferred where it can run: it starts containers faster".into(),
            };
        }
        Some(h) => format!(
            "crun cannot run containers here: {}",
            h.problem.as_deref().unwrap_or("unknown")
        ),
        None => "crun is not installed".to_owned(),
    };
    if named("runc").is_some_and(HandlerInfo::usable) {
        return DefaultHandler {
            name: Some("runc".into()),
            reason: format!("{crun_why}; runc is the next choice"),
        };
    }
    match handlers.iter().find(|h| h.usable()) {
        Some(h) => DefaultHandler {
            name: Some(h.name.clone()),
            reason: format!(
                "{crun_why}, nor can runc; {} is the first usable handler",
                h.name
            ),
        },
        None => DefaultHandler {
            name: None,
            reason: format!(
                "no handler can run containers here ({crun_why}; apt-get install runc)"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler(name: &str, problem: Option<&str>) -> HandlerInfo {
        HandlerInfo {
            name: name.into(),
            source: "path",
            path: Some(PathBuf::from(format!("/usr/bin/{name}"))),
            found: true,
            version: Some(format!("{name} version 1.0")),
            version_output: None,
            args: Vec::new(),
            problem: problem.map(str::to_owned),
        }
    }

    #[test]
    fn the_default_is_chosen_as_the_agent_chooses_it() {
        let config = RuntimeConfig::default();
        let both = [handler("runc", None), handler("crun", None)];
        assert_eq!(
            default_handler(&config, &both).name.as_deref(),
            Some("crun")
        );

        let blocked = [
            handler("runc", None),
            handler("crun", Some("hybrid cgroups")),
        ];
        let chosen = default_handler(&config, &blocked);
        assert_eq!(chosen.name.as_deref(), Some("runc"));
        assert!(
            chosen.reason.contains("hybrid cgroups"),
            "{}",
            chosen.reason
        );

        let configured = RuntimeConfig {
            default_handler: Some("kata".into()),
            ..RuntimeConfig::default()
        };
        let chosen = default_handler(&configured, &both);
        assert_eq!(chosen.name.as_deref(), Some("kata"));
        assert!(
            chosen.reason.contains("no such handler"),
            "{}",
            chosen.reason
        );

        let none = default_handler(&config, &[]);
        assert_eq!(none.name, None);
        assert!(
            none.reason.contains("apt-get install runc"),
            "{}",
            none.reason
        );
    }

    #[test]
    fn a_configured_handler_that_is_missing_says_so() {
        let mut config = RuntimeConfig::default();
        config.handlers.insert(
            "kata".into(),
            crate::runtime::config::RuntimeHandlerConfig {
                path: "/nonexistent/kata-runtime".into(),
                args: Vec::new(),
            },
        );
        let handlers = list_handlers(&config, None);
        let kata = handlers.iter().find(|h| h.name == "kata").expect("listed");
        assert!(!kata.found);
        assert_eq!(kata.source, "config");
        assert!(
            kata.problem
                .as_deref()
                .is_some_and(|p| p.contains("/nonexistent/kata-runtime")),
            "{kata:?}"
        );
        assert!(handlers.iter().any(|h| h.name == "runc"));
    }
}
