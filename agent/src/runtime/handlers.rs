//! Which OCI runtime handler runs a container: the configured one for a
//! `runtimeClassName`, else the best usable one on this host; and where
//! berth-shim is.

use std::path::PathBuf;

use serde::Serialize;

use super::config::RuntimeConfig;
use super::flavor::Support;
use super::probe::{self, ProbeOutcome};
use super::{ContainerRecord, Handler, Runtime, RuntimeError, RuntimeKind};

/// One runtime handler as `berth runtimes` (and `berth info`) show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandlerReport {
    /// The name `runtimeClassName` uses.
    pub name: String,
    pub binary: PathBuf,
    /// `runc`, `crun`, `runsc` or `other` (any OCI runtime CLI).
    pub kind: &'static str,
    /// First line of `--version`; empty if the binary could not be run.
    pub version: String,
    /// Every global flag berth passes: `derivedArgs`, then the config's.
    pub args: Vec<String>,
    /// The flags berth derived for this kind of runtime.
    pub derived_args: Vec<String>,
    /// Pods without `runtimeClassName` run with this handler.
    pub default: bool,
    /// Why the handler cannot run containers here (berth refuses pods
    /// that name it, with this reason), if it cannot.
    pub problem: Option<String>,
    /// A probe container's result (`None`: not probed, or the handler is
    /// already known not to work).
    pub probe: Option<ProbeOutcome>,
    pub supports: Option<Support>,
}

/// The handler pods without `runtimeClassName` get, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultChoice {
    /// `None`: no handler can run containers here.
    pub name: Option<String>,
    pub reason: String,
}

impl Runtime {
    pub fn handlers(&self) -> impl Iterator<Item = &Handler> {
        self.inner.handlers.values()
    }

    /// Why `handler` cannot run containers on this host, if it cannot.
    pub fn unsupported_reason(&self, handler: &Handler) -> Option<String> {
        match handler.kind {
            RuntimeKind::Crun => self.inner.layout.crun_blocker(),
            RuntimeKind::Runc | RuntimeKind::Runsc | RuntimeKind::Other => None,
        }
    }

    /// Every configured or found handler, including those whose binary
    /// does not run, with what it supports; `probe` also runs (or takes
    /// from its cache) a probe container per usable handler.
    pub async fn handler_reports(&self, probe: bool) -> Vec<HandlerReport> {
        let default = self.handler_for(None).ok().map(|h| h.name.clone());
        let mut reports = Vec::new();
        for handler in self.inner.handlers.values() {
            let problem = self.unsupported_reason(handler);
            let probe = match (probe, &problem) {
                (true, None) => Some(probe::probe(&self.inner.paths, handler).await),
                _ => None,
            };
            reports.push(HandlerReport {
                name: handler.name.clone(),
                binary: handler.binary.clone(),
                kind: handler.kind.as_str(),
                version: handler.version.clone(),
                args: handler.args.clone(),
                derived_args: handler.derived.clone(),
                default: default.as_deref() == Some(handler.name.as_str()),
                problem,
                probe,
                supports: Some(Support::of(handler.kind)),
            });
        }
        for (name, reason) in &self.inner.broken {
            let binary = self
                .inner
                .config
                .handlers
                .get(name)
                .map(|h| h.path.clone())
                .unwrap_or_default();
            reports.push(HandlerReport {
                name: name.clone(),
                binary,
                kind: "other",
                version: String::new(),
                args: Vec::new(),
                derived_args: Vec::new(),
                default: false,
                problem: Some(reason.clone()),
                probe: None,
                supports: None,
            });
        }
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        reports
    }

    /// The handler for `runtime_class`, or the default one: the configured
    /// `default-handler`, else crun where it can work (it starts faster),
    /// else runc, else any usable handler.
    pub fn handler_for(&self, runtime_class: Option<&str>) -> Result<&Handler, RuntimeError> {
        let name = match runtime_class.or(self.inner.config.default_handler.as_deref()) {
            Some(name) => name.to_string(),
            None => return self.auto_handler(),
        };
        let handler =
            self.inner
                .handlers
                .get(&name)
                .ok_or_else(|| match self.inner.broken.get(&name) {
                    Some(reason) => RuntimeError::Unsupported {
                        handler: name.clone(),
                        version: "unknown".into(),
                        reason: reason.clone(),
                    },
                    None => self.unknown_handler(&name),
                })?;
        match self.unsupported_reason(handler) {
            Some(reason) => Err(RuntimeError::Unsupported {
                handler: handler.name.clone(),
                version: handler.version.clone(),
                reason,
            }),
            None => Ok(handler),
        }
    }

    /// [`Runtime::handler_for`]`(None)`, explained: `berth info` and
    /// `berth runtimes` say which handler pods get and why.
    pub fn default_choice(&self) -> DefaultChoice {
        if let Some(name) = &self.inner.config.default_handler {
            let reason = match self.handler_for(None) {
                Ok(_) => "set by [runtime] default-handler".to_owned(),
                Err(err) => format!(
                    "set by [runtime] default-handler, but {}",
                    crate::status::chain(&err)
                ),
            };
            return DefaultChoice {
                name: Some(name.clone()),
                reason,
            };
        }
        let handler = match self.auto_handler() {
            Ok(handler) => handler,
            Err(err) => {
                return DefaultChoice {
                    name: None,
                    reason: crate::status::chain(&err),
                };
            }
        };
        let reason = if handler.name == "crun" {
            "crun is preferred where it can run: it starts containers faster".to_owned()
        } else {
            let crun = match self.inner.handlers.get("crun") {
                Some(crun) => format!(
                    "crun cannot run containers here: {}",
                    self.unsupported_reason(crun).unwrap_or_default()
                ),
                None => match self.inner.broken.get("crun") {
                    Some(reason) => format!("crun cannot run: {reason}"),
                    None => "crun is not installed".to_owned(),
                },
            };
            if handler.name == "runc" {
                format!("{crun}; runc is the next choice")
            } else {
                format!(
                    "{crun}, nor can runc; {} is the first usable handler",
                    handler.name
                )
            }
        };
        DefaultChoice {
            name: Some(handler.name.clone()),
            reason,
        }
    }

    fn auto_handler(&self) -> Result<&Handler, RuntimeError> {
        let preferred = ["crun", "runc"]
            .into_iter()
            .filter_map(|n| self.inner.handlers.get(n))
            .chain(self.inner.handlers.values());
        let mut reasons = Vec::new();
        for handler in preferred {
            match self.unsupported_reason(handler) {
                None => return Ok(handler),
                Some(reason) => reasons.push(format!("{}: {reason}", handler.name)),
            }
        }
        reasons.extend(self.inner.broken.iter().map(|(n, r)| format!("{n}: {r}")));
        if reasons.is_empty() {
            reasons.push("neither runc nor crun is installed (apt-get install runc)".into());
        }
        Err(RuntimeError::NoHandler {
            reasons: reasons.join("; "),
        })
    }

    fn unknown_handler(&self, name: &str) -> RuntimeError {
        RuntimeError::UnknownHandler {
            name: name.to_string(),
            known: self
                .inner
                .handlers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// The handler that created the container `record` describes.
    pub(super) fn handler_of(&self, record: &ContainerRecord) -> Result<&Handler, RuntimeError> {
        self.inner
            .handlers
            .get(&record.handler)
            .ok_or_else(|| self.unknown_handler(&record.handler))
    }
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub(super) fn find_shim(config: &RuntimeConfig) -> Result<PathBuf, RuntimeError> {
    let mut looked = Vec::new();
    let candidates = config.shim.clone().into_iter().chain(
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("berth-shim"))),
    );
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate.display().to_string());
        if config.shim.is_some() {
            // An explicit setting is not second-guessed.
            break;
        }
    }
    if config.shim.is_none()
        && let Some(path) = find_in_path("berth-shim")
    {
        return Ok(path);
    }
    looked.push("$PATH".into());
    Err(RuntimeError::NoShim {
        looked: looked.join(", "),
    })
}
