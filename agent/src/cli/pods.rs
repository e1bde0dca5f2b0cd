//! What `berth logs`, `exec` and `inspect` point at, looked up in the
//! agent's status file: a pod as `NAME` (namespace `default`) or
//! `NAMESPACE/NAME`, and one of its containers as `POD/CONTAINER`. Like
//! kubectl, the container may be left out when the pod has exactly one
//! (init containers aside); otherwise the error lists the choices.
//!
//! `a/b` can mean container `b` of pod `default/a` or pod `a/b`; whichever
//! exists wins, and when both do the error asks for the unambiguous
//! three-part form `NAMESPACE/NAME/CONTAINER`.

use anyhow::{Context, bail};
use manifests::Kind;

use super::GlobalArgs;
use crate::agent::lock;
use crate::status::{ContainerDetails, Details, ObjectStatus, PodDetails, StatusDocument};

const DEFAULT_NAMESPACE: &str = "default";

/// The status file, and whether an agent keeps it current right now.
pub struct LoadedStatus {
    pub doc: StatusDocument,
    pub agent_running: bool,
}

impl LoadedStatus {
    pub fn load(global: &GlobalArgs) -> anyhow::Result<Self> {
        let paths = global.paths();
        let doc = super::status::load(&paths.status_file(), &global.run_root)?;
        let agent_running = lock::is_held(&paths.agent_lock())
            .with_context(|| format!("checking agent lock {}", paths.agent_lock().display()))?;
        Ok(Self { doc, agent_running })
    }

    /// Says, when no agent runs, that the status is what the last one saw.
    pub fn stale_warning(&self) -> Option<String> {
        (!self.agent_running).then(|| {
            format!(
                "warning: no berth agent is running; this is the status it last wrote at {}",
                self.doc.agent.updated_at
            )
        })
    }
}

/// One container of a pod, as the status file describes it.
#[derive(Debug, Clone, Copy)]
pub struct ContainerTarget<'a> {
    pub pod: &'a ObjectStatus,
    pub container: &'a ContainerDetails,
    pub init: bool,
}

impl ContainerTarget<'_> {
    /// `container httpd of pod default/web`, for messages.
    pub fn describe(&self) -> String {
        let kind = if self.init {
            "init container"
        } else {
            "container"
        };
        format!(
            "{kind} {} of pod {}",
            self.container.name,
            pod_name(self.pod)
        )
    }
}

/// `namespace/name` of a pod's status.
pub fn pod_name(pod: &ObjectStatus) -> String {
    format!("{}/{}", pod.namespace, pod.name)
}

/// How a pod is written where users copy it from (`berth ps`): the bare
/// name in the default namespace, `namespace/name` elsewhere.
pub fn short_pod_name(pod: &ObjectStatus) -> String {
    if pod.namespace == DEFAULT_NAMESPACE {
        pod.name.clone()
    } else {
        pod_name(pod)
    }
}

/// The pod's published details, if the pod reconciler has set any.
pub fn pod_details(pod: &ObjectStatus) -> Option<&PodDetails> {
    match &pod.details {
        Some(Details::Pod(details)) => Some(details),
        None => None,
    }
}

/// Every pod in the status file, in key order.
pub fn pods(doc: &StatusDocument) -> impl Iterator<Item = &ObjectStatus> {
    doc.objects.iter().filter(|o| o.kind == Kind::Pod)
}

/// Finds a pod by `NAME` or `NAMESPACE/NAME`.
pub fn find_pod<'a>(doc: &'a StatusDocument, address: &str) -> anyhow::Result<&'a ObjectStatus> {
    let parts = split(address, 2, "NAME or NAMESPACE/NAME")?;
    let (namespace, name) = match parts.as_slice() {
        [name] => (DEFAULT_NAMESPACE, *name),
        [namespace, name] => (*namespace, *name),
        _ => unreachable!("split returns one or two parts"),
    };
    lookup(doc, namespace, name).ok_or_else(|| {
        let error = no_such_pod(doc, &[(namespace, name)]);
        match parts.as_slice() {
            // `web/app` reads like POD/CONTAINER: point at the pod.
            [pod, _] if lookup(doc, DEFAULT_NAMESPACE, pod).is_some() => anyhow::anyhow!(
                "{error}; for pod {DEFAULT_NAMESPACE}/{pod} write {pod:?} (this command takes a pod, not a container)"
            ),
            _ => error,
        }
    })
}

/// Finds a container by `POD[/CONTAINER]` (see the module doc).
pub fn find_container<'a>(
    doc: &'a StatusDocument,
    address: &str,
) -> anyhow::Result<ContainerTarget<'a>> {
    let parts = split(
        address,
        3,
        "NAME, NAMESPACE/NAME, NAME/CONTAINER or NAMESPACE/NAME/CONTAINER",
    )?;
    match parts.as_slice() {
        [name] => pick(doc, address, DEFAULT_NAMESPACE, name, None),
        [namespace, name, container] => pick(doc, address, namespace, name, Some(container)),
        [first, second] => {
            let as_container = lookup(doc, DEFAULT_NAMESPACE, first)
                .filter(|pod| find_named(pod, second).is_some());
            let as_pod = lookup(doc, first, second);
            match (as_container, as_pod) {
                (Some(_), Some(_)) => bail!(
                    "{address:?} names both container {second} of pod {DEFAULT_NAMESPACE}/{first} and pod {first}/{second}; write {DEFAULT_NAMESPACE}/{first}/{second} for the container or {first}/{second}/CONTAINER for the pod"
                ),
                (Some(_), None) => pick(doc, address, DEFAULT_NAMESPACE, first, Some(second)),
                (None, Some(_)) => pick(doc, address, first, second, None),
                (None, None) => match lookup(doc, DEFAULT_NAMESPACE, first) {
                    // The pod exists, so the user most likely meant a
                    // container of it: say which containers it has.
                    Some(_) => pick(doc, address, DEFAULT_NAMESPACE, first, Some(second)),
                    None => Err(no_such_pod(
                        doc,
                        &[(first, second), (DEFAULT_NAMESPACE, first)],
                    )),
                },
            }
        }
        _ => unreachable!("split returns one to three parts"),
    }
}

fn split<'t>(address: &'t str, max: usize, forms: &str) -> anyhow::Result<Vec<&'t str>> {
    let parts: Vec<&str> = address.split('/').collect();
    if parts.len() > max || parts.iter().any(|p| p.is_empty()) {
        bail!("{address:?} is not a valid address: use {forms}");
    }
    Ok(parts)
}

fn lookup<'a>(doc: &'a StatusDocument, namespace: &str, name: &str) -> Option<&'a ObjectStatus> {
    pods(doc).find(|p| p.namespace == namespace && p.name == name)
}

fn no_such_pod(doc: &StatusDocument, tried: &[(&str, &str)]) -> anyhow::Error {
    let tried: Vec<String> = tried.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
    let known: Vec<String> = pods(doc).map(pod_name).collect();
    let known = if known.is_empty() {
        "there are no pods".to_owned()
    } else {
        format!("pods: {}", known.join(", "))
    };
    anyhow::anyhow!(
        "no pod {} in the agent's status ({known})",
        tried.join(" or ")
    )
}

fn find_named<'a>(pod: &'a ObjectStatus, container: &str) -> Option<(&'a ContainerDetails, bool)> {
    let details = pod_details(pod)?;
    let app = details.containers.iter().map(|c| (c, false));
    let init = details.init_containers.iter().map(|c| (c, true));
    app.chain(init).find(|(c, _)| c.name == container)
}

/// The container `container` (or the only one) of pod `namespace/name`.
fn pick<'a>(
    doc: &'a StatusDocument,
    address: &str,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> anyhow::Result<ContainerTarget<'a>> {
    let pod = lookup(doc, namespace, name).ok_or_else(|| no_such_pod(doc, &[(namespace, name)]))?;
    let Some(details) =
        pod_details(pod).filter(|d| !d.containers.is_empty() || !d.init_containers.is_empty())
    else {
        bail!(
            "pod {} has no containers yet ({}{})",
            pod_name(pod),
            pod.phase,
            pod.last_error
                .as_deref()
                .or(Some(pod.message.as_str()))
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    };
    let target = |container, init| ContainerTarget {
        pod,
        container,
        init,
    };
    if let Some(wanted) = container {
        return match find_named(pod, wanted) {
            Some((found, init)) => Ok(target(found, init)),
            None => bail!(
                "pod {} has no container {wanted:?}; {}",
                pod_name(pod),
                choices(details, address, container.is_some())
            ),
        };
    }
    match details.containers.as_slice() {
        [only] => Ok(target(only, false)),
        _ => bail!(
            "pod {} has {} containers: {}",
            pod_name(pod),
            details.containers.len(),
            choices(details, address, false)
        ),
    }
}

/// `name one as web/a or web/b (init containers: web/setup)`, in the
/// address form the user typed.
fn choices(details: &PodDetails, address: &str, address_has_container: bool) -> String {
    let pod_part = if address_has_container {
        address.rsplit_once('/').map_or(address, |(pod, _)| pod)
    } else {
        address
    };
    let list = |containers: &[ContainerDetails]| {
        containers
            .iter()
            .map(|c| format!("{pod_part}/{}", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = if details.containers.is_empty() {
        "it has no app containers".to_owned()
    } else {
        format!("name one: {}", list(&details.containers))
    };
    if !details.init_containers.is_empty() {
        text.push_str(&format!(
            " (init containers: {})",
            list(&details.init_containers)
        ));
    }
    text
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::status::{AgentInfo, AgentState, ContainerState, Phase, SourceRef};

    pub fn container(name: &str, state: ContainerState) -> ContainerDetails {
        ContainerDetails {
            name: name.into(),
            image: "localhost/berth/busybox:1.35".into(),
            image_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            container_id: Some(format!("id-{name}")),
            runtime: Some("runc".into()),
            state,
            last_state: None,
            restart_count: 0,
            ready: true,
        }
    }

    pub fn running(name: &str) -> ContainerDetails {
        container(
            name,
            ContainerState::Running {
                started_at: "2026-01-01T00:00:00.000Z".into(),
                pid: 4242,
            },
        )
    }

    pub fn pod(namespace: &str, name: &str, details: Option<PodDetails>) -> ObjectStatus {
        ObjectStatus {
            kind: Kind::Pod,
            namespace: namespace.into(),
            name: name.into(),
            phase: Phase::Running,
            message: "running".into(),
            last_error: None,
            source: SourceRef {
                file: PathBuf::from(format!("/m/{name}.yaml")),
                line: 1,
                column: 1,
            },
            generation: 1,
            observed_generation: Some(1),
            last_transition_time: "2026-01-01T00:00:00.000Z".into(),
            details: details.map(Details::Pod),
        }
    }

    pub fn details(containers: Vec<ContainerDetails>, init: Vec<ContainerDetails>) -> PodDetails {
        PodDetails {
            uid: "uid1".into(),
            pod_ips: vec!["10.88.0.5".into()],
            containers,
            init_containers: init,
            ..Default::default()
        }
    }

    /// A status file with `objects` in key order, as the agent writes it.
    pub fn document(mut objects: Vec<ObjectStatus>) -> StatusDocument {
        objects.sort_by_key(ObjectStatus::key);
        StatusDocument {
            format_version: crate::status::STATUS_FORMAT_VERSION,
            agent: AgentInfo {
                pid: 1,
                version: "test".into(),
                state: AgentState::Ready,
                started_at: "2026-01-01T00:00:00.000Z".into(),
                updated_at: "2026-01-01T00:00:00.000Z".into(),
                manifests: PathBuf::from("/m"),
                resolved_manifests: None,
                desired_revision: 1,
                source_error: None,
            },
            objects,
            files: Vec::new(),
        }
    }

    fn sample() -> StatusDocument {
        document(vec![
            pod(
                "default",
                "web",
                Some(details(
                    vec![running("httpd"), running("sidecar")],
                    vec![running("setup")],
                )),
            ),
            pod(
                "default",
                "hello",
                Some(details(vec![running("hello")], vec![])),
            ),
            pod(
                "kube-system",
                "etcd",
                Some(details(vec![running("etcd")], vec![])),
            ),
            pod("default", "pending", None),
            // `default/hello/hello` vs `hello/hello`: ambiguous on purpose.
            pod("hello", "hello", Some(details(vec![running("x")], vec![]))),
        ])
    }

    fn found(doc: &StatusDocument, address: &str) -> (String, String, bool) {
        let t = find_container(doc, address).unwrap_or_else(|e| panic!("{address}: {e:#}"));
        (pod_name(t.pod), t.container.name.clone(), t.init)
    }

    fn error(doc: &StatusDocument, address: &str) -> String {
        format!(
            "{:#}",
            find_container(doc, address).expect_err("an addressing error")
        )
    }

    #[test]
    fn addresses_resolve_like_kubectl() {
        let doc = sample();
        let expect = |pod: &str, c: &str, init| (pod.to_owned(), c.to_owned(), init);
        assert_eq!(
            found(&doc, "web/httpd"),
            expect("default/web", "httpd", false)
        );
        assert_eq!(
            found(&doc, "web/setup"),
            expect("default/web", "setup", true)
        );
        assert_eq!(
            found(&doc, "default/web/sidecar"),
            expect("default/web", "sidecar", false)
        );
        assert_eq!(
            found(&doc, "kube-system/etcd"),
            expect("kube-system/etcd", "etcd", false)
        );
        assert_eq!(
            found(&doc, "kube-system/etcd/etcd"),
            expect("kube-system/etcd", "etcd", false)
        );
        assert_eq!(
            found(&doc, "hello/hello/x"),
            expect("hello/hello", "x", false)
        );
        assert_eq!(find_pod(&doc, "web").expect("pod").name, "web");
        assert_eq!(
            find_pod(&doc, "kube-system/etcd").expect("pod").namespace,
            "kube-system"
        );
    }

    #[test]
    fn addressing_errors_name_the_choices() {
        let doc = sample();
        let text = error(&doc, "web");
        assert!(
            text.contains("pod default/web has 2 containers")
                && text.contains("web/httpd, web/sidecar")
                && text.contains("init containers: web/setup"),
            "{text}"
        );
        let text = error(&doc, "default/web");
        assert!(text.contains("default/web/httpd"), "{text}");
        let text = error(&doc, "web/nope");
        assert!(
            text.contains("pod default/web has no container \"nope\"")
                && text.contains("web/httpd"),
            "{text}"
        );
        let text = error(&doc, "nope");
        assert!(
            text.contains("no pod default/nope")
                && text.contains(
                    "pods: default/hello, default/pending, default/web, hello/hello, kube-system/etcd"
                ),
            "{text}"
        );
        let text = error(&doc, "ns/nope");
        assert!(text.contains("no pod ns/nope or default/ns"), "{text}");
        let text = error(&doc, "pending");
        assert!(
            text.contains("pod default/pending has no containers yet (Running: running)"),
            "{text}"
        );
        let text = error(&doc, "hello/hello");
        assert!(
            text.contains("default/hello/hello") && text.contains("hello/hello/CONTAINER"),
            "{text}"
        );
        for bad in ["", "a//b", "a/b/c/d", "/a"] {
            assert!(error(&doc, bad).contains("is not a valid address"), "{bad}");
        }
        let text = format!(
            "{:#}",
            find_pod(&doc, "a/b/c").expect_err("pods have two parts")
        );
        assert!(text.contains("NAMESPACE/NAME"), "{text}");
    }
}
