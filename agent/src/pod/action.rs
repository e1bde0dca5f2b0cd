//! The actions probes and lifecycle hooks run (exec, httpGet, tcpSocket,
//! sleep), as data: taken from a probe or hook with named ports resolved
//! when the container starts, so an [`Action`] stands alone and can be kept
//! in the pod's record for a preStop hook after the manifest is gone.
//! Running them is [`super::handlers`]' job.

use manifests::types as api;
use serde::{Deserialize, Serialize};

/// A probe's or hook's action, its port resolved to a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Action {
    Exec {
        command: Vec<String>,
    },
    HttpGet {
        https: bool,
        /// `None`: the pod's address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        port: u16,
        path: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<(String, String)>,
    },
    TcpSocket {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        port: u16,
    },
    Sleep {
        seconds: u64,
    },
    /// `grpc.health.v1.Health/Check` on the pod's address.
    Grpc {
        port: u16,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        service: String,
    },
}

/// How an action went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Ok` with what it said on success, `Err` with why it failed.
    pub result: Result<String, String>,
    /// Something to tell the user although the action succeeded (kubelet's
    /// `probe.Warning`): an httpGet redirected to another host, which is
    /// not followed.
    pub warning: Option<String>,
}

impl From<Result<String, String>> for Outcome {
    fn from(result: Result<String, String>) -> Self {
        Self {
            result,
            warning: None,
        }
    }
}

fn port_number(port: &api::IntOrString, container: &api::Container) -> Option<u16> {
    match port {
        api::IntOrString::Int(number) => u16::try_from(*number).ok(),
        api::IntOrString::String(name) => container
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

fn http_get(http: &api::HttpGetAction, container: &api::Container) -> Option<Action> {
    let path = http.path.clone().unwrap_or_default();
    Some(Action::HttpGet {
        https: http.scheme.as_deref() == Some("HTTPS"),
        host: http.host.clone().filter(|h| !h.is_empty()),
        port: port_number(&http.port, container)?,
        path: if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        },
        headers: http
            .http_headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
    })
}

fn tcp_socket(tcp: &api::TcpSocketAction, container: &api::Container) -> Option<Action> {
    Some(Action::TcpSocket {
        host: tcp.host.clone().filter(|h| !h.is_empty()),
        port: port_number(&tcp.port, container)?,
    })
}
impl Action {
    /// The action of a probe; `None` for an unresolvable port (an error
    /// validation reports).
    pub fn of_probe(probe: &api::Probe, container: &api::Container) -> Option<Self> {
        if let Some(exec) = &probe.exec {
            return Some(Self::Exec {
                command: exec.command.clone(),
            });
        }
        if let Some(http) = &probe.http_get {
            return http_get(http, container);
        }
        if let Some(grpc) = &probe.grpc {
            return Some(Self::Grpc {
                port: u16::try_from(grpc.port).ok()?,
                service: grpc.service.clone().unwrap_or_default(),
            });
        }
        probe
            .tcp_socket
            .as_ref()
            .and_then(|tcp| tcp_socket(tcp, container))
    }

    /// The action of a lifecycle hook. kubelet does not run `tcpSocket`
    /// hooks (deprecated; validation warns), and neither does berth.
    pub fn of_hook(handler: &api::LifecycleHandler, container: &api::Container) -> Option<Self> {
        if let Some(exec) = &handler.exec {
            return Some(Self::Exec {
                command: exec.command.clone(),
            });
        }
        if let Some(http) = &handler.http_get {
            return http_get(http, container);
        }
        handler.sleep.as_ref().map(|sleep| Self::Sleep {
            seconds: u64::try_from(sleep.seconds).unwrap_or(0),
        })
    }
    /// A short description for events (`exec [cat /tmp/healthy]`,
    /// `http-get http://:8080/healthz`); header values are left out.
    pub fn describe(&self) -> String {
        match self {
            Self::Exec { command } => format!("exec {command:?}"),
            Self::HttpGet {
                https,
                host,
                port,
                path,
                ..
            } => format!(
                "http-get {}://{}:{port}{path}",
                if *https { "https" } else { "http" },
                host.as_deref().unwrap_or("")
            ),
            Self::TcpSocket { host, port } => {
                format!("tcp-socket {}:{port}", host.as_deref().unwrap_or(""))
            }
            Self::Sleep { seconds } => format!("sleep {seconds}s"),
            Self::Grpc { port, service } => format!("grpc :{port} service {service:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> api::Container {
        api::Container {
            name: "web".into(),
            ports: vec![api::ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn ports_by_name_resolve_to_the_container_port() {
        let probe = api::Probe {
            http_get: Some(api::HttpGetAction {
                path: Some("healthz".into()),
                port: api::IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let action = Action::of_probe(&probe, &container()).expect("an action");
        assert_eq!(
            action,
            Action::HttpGet {
                https: false,
                host: None,
                port: 8080,
                path: "/healthz".into(),
                headers: vec![],
            }
        );
        let unknown = api::Probe {
            tcp_socket: Some(api::TcpSocketAction {
                port: api::IntOrString::String("nope".into()),
                host: None,
            }),
            ..Default::default()
        };
        assert_eq!(Action::of_probe(&unknown, &container()), None);
    }
}
