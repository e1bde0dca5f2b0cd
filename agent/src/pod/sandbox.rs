//! The pod's sandbox for one incarnation: its network through the driver,
//! the runtime's IPC/UTS namespaces with /dev/shm and /etc files, and its
//! volumes (configMap/secret files written first). Each step is recorded in
//! the pod's state before and after it runs, so it runs once per
//! incarnation and a crash in the middle is finished (or undone) later.

use std::collections::BTreeMap;
use std::path::PathBuf;

use manifests::types as api;
use netplugins::ns;

use super::inputs::{self, FieldValues};
use super::network;
use super::state::{Incarnation, PodState};
use crate::desired::DesiredState;
use crate::paths::Paths;
use crate::reconcile::Context;
use crate::runtime::volumes::{FileOptions, give_empty_dirs_to_group, write_files};
use crate::runtime::{EtcFiles, PodInfo, PodSandbox, PreparedVolume, Runtime, from_pod};
use crate::status::{Event, EventType};
use manifests::{Kind, ObjectKey};

/// A sandbox ready for containers.
pub struct Ready {
    pub pod: PodInfo,
    pub sandbox: PodSandbox,
    pub volumes: BTreeMap<String, PreparedVolume>,
    pub fields: FieldValues,
}

/// Why the sandbox is not ready: a Kubernetes-style reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub reason: &'static str,
    pub message: String,
}

fn not_ready(reason: &'static str) -> impl Fn(String) -> NotReady {
    move |message| NotReady { reason, message }
}

/// The runtime's view of the pod (namespace, name, uid, hostname,
/// security context).
pub fn pod_info(
    namespace: &str,
    name: &str,
    uid: &str,
    spec: &api::PodSpec,
) -> Result<PodInfo, NotReady> {
    Ok(PodInfo {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        hostname: name.to_string(),
        security_context: from_pod::pod_security_context(spec.security_context.as_ref())
            .map_err(|err| not_ready("CreateContainerConfigError")(err.to_string()))?,
        host_network: spec.host_network,
    })
}

/// Where the sandbox of `incarnation` lives (touches nothing).
fn located(paths: &Paths, state: &PodState, incarnation: &Incarnation) -> PodSandbox {
    let info = PodInfo {
        namespace: state.namespace.clone(),
        name: state.name.clone(),
        uid: incarnation.uid.clone(),
        hostname: state.name.clone(),
        host_network: incarnation.host_network,
        ..Default::default()
    };
    let netns = incarnation.network.as_ref().and_then(|n| n.netns.clone());
    PodSandbox::at(paths, &info, netns)
}

/// Whether the incarnation's namespaces are still there (they are not
/// after a reboot, or if someone removed them): if not, the pod must be
/// made again.
pub fn alive(paths: &Paths, state: &PodState) -> bool {
    let incarnation = &state.incarnation;
    if !incarnation.sandbox_ready {
        return true;
    }
    let sandbox = located(paths, state, incarnation);
    let namespaces: Vec<&PathBuf> = std::iter::once(&sandbox.ipc_ns)
        .chain(sandbox.uts_ns.as_ref())
        .chain(sandbox.net_ns.as_ref())
        .collect();
    namespaces.into_iter().all(|path| ns::is_namespace(path))
}

/// Makes the sandbox of the current incarnation exist, recording each
/// step in `state`. Sets `unsaved` when `state` changed and the caller has
/// yet to save it: before acting on the sandbox, or when this fails (so the
/// next reconcile or the pod's removal tears down what was made instead of
/// making another one).
pub async fn ensure(
    ctx: &Context,
    runtime: &Runtime,
    state: &mut PodState,
    spec: &api::PodSpec,
    desired: &DesiredState,
    unsaved: &mut bool,
) -> Result<Ready, NotReady> {
    let paths = &ctx.services.paths;
    let (namespace, name) = (state.namespace.clone(), state.name.clone());
    let save = |state: &PodState| {
        state
            .save(paths)
            .map_err(|err| not_ready("CreatePodSandboxError")(err.to_string()))
    };
    let pod = pod_info(&namespace, &name, &state.incarnation.uid, spec)?;

    // Neither the network nor the sandbox is recorded before it is made: a
    // crash in between leaves them to recovery, which removes the network
    // state and sandboxes of pods it has no record of (by enumerating
    // them). Both are recorded together with the first container's
    // intent, in one write (`unsaved`).
    if state.incarnation.network.is_none() {
        let request = network::request(&namespace, &name, &pod.uid, spec)
            .map_err(|err| not_ready("CreatePodSandboxError")(err.to_string()))?;
        let driver = ctx
            .services
            .network
            .for_pod(spec.host_network)
            .map_err(|err| not_ready("CreatePodSandboxError")(err.to_string()))?;
        // A failed setup undoes itself.
        let status = driver
            .setup(&request)
            .await
            .map_err(|err| not_ready("CreatePodSandboxError")(network::explain(&err, paths)))?;
        state.incarnation.network_request = Some(request);
        state.incarnation.network = Some(status);
        *unsaved = true;
    } else if let Some(request) = state.incarnation.network_request.clone()
        && repair_network(ctx, state, spec.host_network, &request).await
    {
        save(state)?;
        *unsaved = false;
    }
    let network = state
        .incarnation
        .network
        .clone()
        .expect("the network was just set up");

    let sandbox = if state.incarnation.sandbox_ready {
        PodSandbox::at(paths, &pod, network.netns.clone())
    } else {
        let etc = EtcFiles {
            hosts: network.hosts.clone(),
            resolv_conf: network.resolv_conf.clone(),
        };
        let sandbox = runtime
            .create_sandbox(&pod, network.netns.clone(), &etc)
            .map_err(|err| not_ready("CreatePodSandboxError")(crate::status::chain(&err)))?;
        state.incarnation.sandbox_ready = true;
        *unsaved = true;
        sandbox
    };

    let mut volumes = Vec::new();
    for volume in &spec.volumes {
        let files =
            inputs::volume_files(&namespace, volume, desired, pod.security_context.fs_group)
                .map_err(|err| not_ready("CreateContainerConfigError")(err.to_string()))?;
        let materialised = match files {
            None => None,
            Some(files) => Some(write_volume(paths, state, &files)?),
        };
        if materialised.is_some() {
            save(state)?;
            *unsaved = false;
        }
        volumes.push(
            from_pod::volume(volume, materialised)
                .map_err(|err| not_ready("CreateContainerConfigError")(err.to_string()))?,
        );
    }
    let prepared = runtime
        .prepare_volumes(&pod.uid, &volumes)
        .map_err(|err| not_ready("CreateContainerConfigError")(crate::status::chain(&err)))?;
    if let Some(gid) = pod.security_context.fs_group {
        give_empty_dirs_to_group(&volumes, &prepared, gid)
            .map_err(|err| not_ready("CreateContainerConfigError")(err.to_string()))?;
    }
    let volumes = prepared;

    let fields = FieldValues {
        name: name.clone(),
        namespace: namespace.clone(),
        uid: pod.uid.clone(),
        node_name: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        pod_ips: network.pod_ips().iter().map(ToString::to_string).collect(),
        host_ip: if spec.host_network {
            network
                .pod_ips()
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        } else {
            String::new()
        },
    };
    Ok(Ready {
        pod,
        sandbox,
        volumes,
        fields,
    })
}

/// Verifies the pod's network (set up by an earlier reconcile) and repairs
/// it in place if it broke meanwhile; a repair, or a failure to repair, is
/// an event. Never stops the reconcile: the containers are looked after
/// either way (a repair that failed and rolled back leaves no netns, so
/// the next reconcile recreates the pod). Returns whether it repaired (the
/// state then holds the new network status).
async fn repair_network(
    ctx: &Context,
    state: &mut PodState,
    host_network: bool,
    request: &netplugins::driver::PodNetwork,
) -> bool {
    // A driver that cannot be built now cannot check either; the pods it
    // set up keep running.
    let Ok(driver) = ctx.services.network.for_pod(host_network) else {
        return false;
    };
    let event = |event_type, reason: &str, message: String| {
        ctx.events.record(Event::new(
            event_type,
            ObjectKey::new(Kind::Pod, state.namespace.clone(), state.name.clone()).to_string(),
            reason,
            message,
        ));
    };
    let network::Repaired { problem, status } = match network::verify(driver, request).await {
        Ok(Some(repaired)) => repaired,
        Ok(None) => return false,
        Err(err) => {
            let why = network::explain(&err, &ctx.services.paths);
            event(EventType::Warning, "NetworkRepairFailed", why);
            return false;
        }
    };
    let before = state
        .incarnation
        .network
        .as_ref()
        .map(|n| n.pod_ips())
        .unwrap_or_default();
    let mut message = format!("{problem}; set up again in place");
    if status.pod_ips() != before {
        message.push_str(&format!(
            " (its addresses changed from {before:?} to {:?})",
            status.pod_ips()
        ));
    }
    event(EventType::Warning, "NetworkRepaired", message);
    state.incarnation.network = Some(status);
    true
}

/// Writes a configMap/secret volume's files when they changed since the
/// last write (running containers see the new files, as with kubelet).
fn write_volume(
    paths: &Paths,
    state: &mut PodState,
    files: &inputs::VolumeFiles,
) -> Result<PathBuf, NotReady> {
    let dir = paths
        .pod_run_dir(&state.incarnation.uid)
        .join("volumes")
        .join(&files.name);
    // Modes and the group are in the hash: editing them rewrites the files.
    let hash = super::hash::of(&(&files.files, files.gid));
    if state.incarnation.volume_hashes.get(&files.name) == Some(&hash) && dir.is_dir() {
        return Ok(dir);
    }
    write_files(
        &files.name,
        &dir,
        &files.files,
        FileOptions {
            tmpfs: files.secret,
            gid: files.gid,
        },
    )
    .map_err(|err| not_ready("CreateContainerConfigError")(err.to_string()))?;
    state
        .incarnation
        .volume_hashes
        .insert(files.name.clone(), hash);
    Ok(dir)
}
