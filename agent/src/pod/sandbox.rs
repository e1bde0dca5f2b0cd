//! The pod's sandbox for one incarnation: its network through the driver,
//! the runtime's IPC/UTS namespaces with /dev/shm and /etc files, and its
//! volumes (configMap/secret files written first). Each step is recorded in
//! the pod's record before and after it runs, so it runs once per
//! incarnation and a crash in the middle is finished (or undone) later.

use std::collections::BTreeMap;

use manifests::types as api;

use super::error::{PodError, Reason};
use super::executor::Executor;
use super::host::{Host, Repaired};
use super::inputs::{self, FieldValues};
use super::network;
use super::projection::PodFacts;
use super::state::{Incarnation, PodState};
use crate::desired::DesiredState;
use crate::runtime::volumes::FileOptions;
use crate::runtime::{EtcFiles, PodInfo, PodSandbox, PreparedVolume, from_pod};
use crate::status::EventType;

/// A sandbox ready for containers.
pub struct Ready {
    pub pod: PodInfo,
    pub sandbox: PodSandbox,
    pub volumes: BTreeMap<String, PreparedVolume>,
    pub fields: FieldValues,
}

fn config_error(err: impl std::error::Error + Send + Sync + 'static) -> PodError {
    PodError::caused(
        Reason::CreateContainerConfigError,
        "the pod's spec cannot be used as it is",
        err,
    )
}

fn sandbox_error(context: &str, err: impl Into<super::host::HostError>) -> PodError {
    PodError::caused(Reason::CreatePodSandboxError, context, err)
}

/// The runtime's view of the pod (namespace, name, uid, hostname,
/// security context).
pub fn pod_info(
    namespace: &str,
    name: &str,
    uid: &str,
    spec: &api::PodSpec,
) -> Result<PodInfo, PodError> {
    Ok(PodInfo {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        hostname: name.to_string(),
        security_context: from_pod::pod_security_context(spec.security_context.as_deref())
            .map_err(config_error)?,
        host_network: spec.host_network,
        namespaces: from_pod::pod_namespaces(spec),
        oom: from_pod::oom_policy(spec),
    })
}

/// Where the sandbox of `incarnation` lives (touches nothing).
fn located(host: &Host, state: &PodState, incarnation: &Incarnation) -> PodSandbox {
    let info = PodInfo {
        namespace: state.namespace.clone(),
        name: state.name.clone(),
        uid: incarnation.uid.clone(),
        hostname: state.name.clone(),
        host_network: incarnation.host_network,
        ..Default::default()
    };
    let netns = incarnation.network.as_ref().and_then(|n| n.netns.clone());
    host.sandboxes.locate(&info, netns)
}

/// Whether the current incarnation's namespaces are still there (they are
/// not after a reboot, or if someone removed them): if not, the pod must
/// be made again. True while its sandbox has not been made.
pub async fn alive(host: &Host, state: &PodState) -> bool {
    if !state.incarnation.sandbox_ready {
        return true;
    }
    let sandbox = located(host, state, &state.incarnation);
    host.sandboxes.alive(&sandbox).await
}

/// Makes the sandbox of the current incarnation exist, recording each step
/// in `state`. Sets `unsaved` when `state` changed and the caller has yet
/// to save it (before acting on the sandbox, or when this fails, so that
/// the next sync or the pod's removal tears down what was made instead of
/// making another one).
pub async fn ensure(
    ex: &Executor<'_>,
    state: &mut PodState,
    metadata: &api::ObjectMeta,
    spec: &api::PodSpec,
    desired: &DesiredState,
    unsaved: &mut bool,
) -> Result<Ready, PodError> {
    let host = ex.host;
    let (namespace, name) = (state.namespace.clone(), state.name.clone());
    let pod = pod_info(&namespace, &name, &state.incarnation.uid, spec)?;

    // The network request (and so the incarnation's uid) is recorded before
    // anything is made: a sync cancelled during the setup (a newer version
    // of the pod arrived) or a failed one leaves a record whose next sync
    // sets up the same network again (setup is idempotent per pod) and
    // whose removal tears it down and removes the sandbox by its uid. A
    // crash before that write leaves what was made to recovery, which
    // removes the network state and sandboxes of pods it has no record of.
    // What was made is recorded with the first container's intent, in one
    // write (`unsaved`).
    if state.incarnation.network.is_none() {
        let request = network::request(&namespace, &name, &pod.uid, spec)
            .map_err(|err| sandbox_error("the pod's network request", err))?;
        if state.incarnation.network_request.as_ref() != Some(&request) {
            state.incarnation.network_request = Some(request.clone());
            save(host, state).await?;
        }
        if pod.namespaces.user {
            // The driver adopts the network namespace made with it.
            host.sandboxes
                .create_user_namespace(&pod)
                .await
                .map_err(|err| sandbox_error("creating the pod's user namespace", err))?;
        }
        // A failed setup undoes itself.
        let status = host
            .networks
            .setup(&request, spec.host_network)
            .await
            .map_err(|err| sandbox_error("setting up the pod's network", err))?;
        state.incarnation.network = Some(status);
        *unsaved = true;
    } else if let Some(request) = state.incarnation.network_request.clone()
        && repair_network(ex, state, spec.host_network, &request).await
    {
        save(host, state).await?;
        *unsaved = false;
    }
    let network = state
        .incarnation
        .network
        .clone()
        .expect("the network was just set up");

    let sandbox = if state.incarnation.sandbox_ready {
        host.sandboxes.locate(&pod, network.netns.clone())
    } else {
        let etc = EtcFiles {
            hosts: network.hosts.clone(),
            resolv_conf: network.resolv_conf.clone(),
        };
        let sandbox = host
            .sandboxes
            .create(&pod, network.netns.clone(), &etc)
            .await
            .map_err(|err| sandbox_error("creating the pod's sandbox", err))?;
        state.incarnation.sandbox_ready = true;
        *unsaved = true;
        sandbox
    };

    let fields = FieldValues {
        name: name.clone(),
        namespace: namespace.clone(),
        uid: pod.uid.clone(),
        node_name: host.node.name().to_string(),
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
        capacity: host.node.capacity(),
        ..FieldValues::default()
    };
    // downwardAPI files read the labels and annotations as they are now.
    let current = FieldValues {
        labels: metadata.labels.clone(),
        annotations: metadata.annotations.clone(),
        ..fields.clone()
    };
    let facts = PodFacts {
        fields: &current,
        spec,
    };
    let mut volumes = Vec::new();
    for volume in &spec.volumes {
        let files = inputs::volume_files(
            &namespace,
            volume,
            desired,
            pod.security_context.fs_group,
            &facts,
        )
        .map_err(config_error)?;
        let materialised = match files {
            None => None,
            Some(files) => Some(write_volume(host, state, &files).await?),
        };
        if materialised.is_some() {
            save(host, state).await?;
            *unsaved = false;
        }
        volumes.push(from_pod::volume(volume, materialised).map_err(config_error)?);
    }
    let volumes = host
        .sandboxes
        .prepare_volumes(&pod.uid, &volumes, pod.security_context.fs_group)
        .await
        .map_err(|err| {
            PodError::caused(
                Reason::CreateContainerConfigError,
                "preparing the pod's volumes",
                err,
            )
        })?;

    Ok(Ready {
        pod,
        sandbox,
        volumes,
        fields,
    })
}

pub async fn save(host: &Host, state: &PodState) -> Result<(), PodError> {
    host.records.save(state).await.map_err(|err| {
        PodError::caused(
            Reason::PodStateError,
            format!("recording pod {}/{}", state.namespace, state.name),
            err,
        )
    })
}

/// Verifies the pod's network (set up by an earlier sync) and repairs it
/// in place if it broke meanwhile; a repair, or a failure to repair, is an
/// event. Never stops the sync: the containers are looked after either way
/// (a repair that failed and rolled back leaves no netns, so the next sync
/// recreates the pod). Returns whether it repaired (the state then holds
/// the new network status).
async fn repair_network(
    ex: &Executor<'_>,
    state: &mut PodState,
    host_network: bool,
    request: &netplugins::driver::PodNetwork,
) -> bool {
    let Repaired { problem, status } = match ex.host.networks.verify(request, host_network).await {
        Ok(Some(repaired)) => repaired,
        Ok(None) => return false,
        Err(err) => {
            let why = crate::status::chain(&*err);
            ex.event(EventType::Warning, "NetworkRepairFailed", why);
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
    ex.event(EventType::Warning, "NetworkRepaired", message);
    state.incarnation.network = Some(status);
    true
}

/// Writes the files of a volume berth fills (configMap, secret,
/// downwardAPI, projected) when they changed since the last write: running
/// containers see the new files, swapped in through `..data` as with the
/// kubelet.
async fn write_volume(
    host: &Host,
    state: &mut PodState,
    files: &inputs::VolumeFiles,
) -> Result<std::path::PathBuf, PodError> {
    let dir = host
        .sandboxes
        .volume_dir(&state.incarnation.uid, &files.name);
    // Modes and the group are in the hash: editing them rewrites the files.
    let hash = super::hash::of(&(&files.files, files.gid));
    if state.incarnation.volume_hashes.get(&files.name) == Some(&hash)
        && host.sandboxes.exists(&dir).await
    {
        return Ok(dir);
    }
    host.sandboxes
        .write_files(
            &files.name,
            &dir,
            &files.files,
            FileOptions {
                tmpfs: files.secret,
                gid: files.gid,
            },
        )
        .await
        .map_err(|err| {
            PodError::caused(
                Reason::CreateContainerConfigError,
                format!("writing the files of volume {:?}", files.name),
                err,
            )
        })?;
    state
        .incarnation
        .volume_hashes
        .insert(files.name.clone(), hash);
    Ok(dir)
}
