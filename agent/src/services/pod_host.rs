//! The real host of the pod layer: its traits ([`crate::pod::host`])
//! implemented by the container runtime, the image manager, the network
//! drivers, the pod records on disk, the event log and the status store.
//! Every file system or mount operation runs on a blocking thread
//! (`spawn_blocking`), never on the async runtime's workers, so one hung
//! syscall (a FIFO, a stuck mount) stalls one pod, not the agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use manifests::ObjectKey;
use oci_spec::image::ImageConfiguration;
use tokio::sync::mpsc;

use super::Services;
use crate::controller::ObservedEvent;
use crate::image::auth::Credentials;
use crate::image::manager::{EnsureError, EnsuredImage};
use crate::image::meta::ImageRecord;
use crate::image::policy::ImagePullPolicy;
use crate::image::remote::ImageReference;
use crate::paths::Paths;
use crate::pod::error::{PodError, Reason};
use crate::pod::exits::ExitWatcher;
use crate::pod::handlers::RuntimeHandlers;
use crate::pod::host::{
    Clock, ContainerRuntime, Events, ExecOutput, Host, HostError, HostResult, Images, Origin,
    PodRecords, Sandboxes, StatusSink,
};
use crate::pod::probes::ProbeManager;
use crate::pod::state::PodState;
use crate::pod::update::HostUpdateLocks;
use crate::runtime::volumes::{FileOptions, VolumeFile};
use crate::runtime::{
    ContainerState, CreateContainer, CreatedContainer, EtcFiles, ExecRequest, PodInfo, PodSandbox,
    PreparedVolume, Runtime, StopOutcome, Volume, logs,
};
use crate::status::{Details, Event, EventLog, Phase, Reporter, StatusStore};

/// Builds the host the pod workers act through.
pub fn build(
    services: &Arc<Services>,
    status: StatusStore,
    events: EventLog,
    observed: mpsc::Sender<ObservedEvent>,
    node: Arc<crate::node::Node>,
) -> Host {
    let runtime = Arc::new(RuntimeHost {
        runtime: services.runtime.clone(),
        paths: services.paths.clone(),
    });
    let event_log: Arc<dyn Events> = Arc::new(events.clone());
    let handlers = Arc::new(RuntimeHandlers(runtime.clone()));
    Host {
        runtime: runtime.clone(),
        sandboxes: runtime,
        images: Arc::new(ImagesHost(Arc::clone(services))),
        networks: services.network.clone(),
        records: Arc::new(RecordsOnDisk(services.paths.clone())),
        probes: Arc::new(ProbeManager::new(
            handlers.clone(),
            event_log.clone(),
            observed.clone(),
        )),
        exits: Arc::new(ExitWatcher::new(services.paths.shims(), observed)),
        handlers,
        events: event_log,
        status: Arc::new(Reporter::new(status, events)),
        clock: Arc::new(SystemClock),
        locks: Arc::new(HostUpdateLocks(services.paths.clone())),
        config: services.pods,
        node,
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> HostResult<T> + Send + 'static,
) -> HostResult<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|err| HostError::from(format!("a blocking task stopped: {err}")))?
}

/// The container runtime, or why there is none.
struct RuntimeHost {
    runtime: Result<Arc<Runtime>, String>,
    paths: Paths,
}

impl RuntimeHost {
    fn runtime(&self) -> HostResult<Arc<Runtime>> {
        self.runtime.clone().map_err(|reason| {
            HostError::from(format!("the container runtime is not available: {reason}"))
        })
    }
}

impl ContainerRuntime for RuntimeHost {
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, HostResult<ContainerState>> {
        Box::pin(async move {
            let runtime = self.runtime()?;
            let id = id.to_string();
            blocking(move || Ok(runtime.container(&id)?.state)).await
        })
    }

    fn list(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let Ok(runtime) = self.runtime() else {
                return Vec::new();
            };
            blocking(move || Ok(runtime.list().into_iter().map(|c| c.id).collect()))
                .await
                .unwrap_or_default()
        })
    }

    fn create<'a>(
        &'a self,
        request: CreateContainer<'a>,
    ) -> BoxFuture<'a, HostResult<CreatedContainer>> {
        Box::pin(async move { Ok(self.runtime()?.create_container(request).await?) })
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, HostResult<StopOutcome>> {
        Box::pin(async move { Ok(self.runtime()?.stop(id, grace).await?) })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, HostResult<()>> {
        Box::pin(async move { Ok(self.runtime()?.remove_container(id).await?) })
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        argv: &'a [String],
        limit: usize,
    ) -> BoxFuture<'a, HostResult<ExecOutput>> {
        Box::pin(async move {
            let request = ExecRequest {
                argv: argv.to_vec(),
                ..Default::default()
            };
            let out = self.runtime()?.exec_capped(id, &request, limit).await?;
            Ok(ExecOutput {
                exit_code: crate::runtime::exit_code(out.status),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        })
    }

    fn log_dir(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.paths.container_logs(namespace, pod, container)
    }

    fn prune_logs(&self, dir: PathBuf, keep: usize) -> BoxFuture<'_, HostResult<()>> {
        Box::pin(blocking(move || Ok(logs::prune_instances(&dir, keep)?)))
    }

    fn remove_pod_logs<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, HostResult<()>> {
        let dir = self.paths.logs().join(format!("{namespace}_{name}"));
        Box::pin(blocking(move || {
            Ok(crate::fsutil::remove_dir_all_if_exists(&dir)?)
        }))
    }
}

impl Sandboxes for RuntimeHost {
    fn locate(&self, pod: &PodInfo, netns: Option<PathBuf>) -> PodSandbox {
        PodSandbox::at(&self.paths, pod, netns)
    }

    fn alive<'a>(&'a self, sandbox: &'a PodSandbox) -> BoxFuture<'a, bool> {
        let namespaces: Vec<PathBuf> = std::iter::once(sandbox.ipc_ns.clone())
            .chain(sandbox.uts_ns.clone())
            .chain(sandbox.net_ns.clone())
            .collect();
        let sandbox = sandbox.clone();
        Box::pin(async move {
            blocking(move || {
                Ok(namespaces
                    .iter()
                    .all(|path| netplugins::ns::is_namespace(path))
                    && sandbox.shared_pid_alive())
            })
            .await
            .unwrap_or(false)
        })
    }

    fn create<'a>(
        &'a self,
        pod: &'a PodInfo,
        netns: Option<PathBuf>,
        etc: &'a EtcFiles,
    ) -> BoxFuture<'a, HostResult<PodSandbox>> {
        Box::pin(async move {
            let runtime = self.runtime()?;
            let (pod, etc) = (pod.clone(), etc.clone());
            blocking(move || Ok(runtime.create_sandbox(&pod, netns, &etc)?)).await
        })
    }

    fn create_user_namespace<'a>(&'a self, pod: &'a PodInfo) -> BoxFuture<'a, HostResult<()>> {
        Box::pin(async move {
            let runtime = self.runtime()?;
            let pod = pod.clone();
            blocking(move || Ok(runtime.create_user_namespace(&pod)?)).await
        })
    }

    fn volume_dir(&self, pod_uid: &str, volume: &str) -> PathBuf {
        self.paths.pod_run_dir(pod_uid).join("volumes").join(volume)
    }

    fn exists<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, bool> {
        let dir = dir.to_path_buf();
        Box::pin(async move { blocking(move || Ok(dir.is_dir())).await.unwrap_or(false) })
    }

    fn write_files<'a>(
        &'a self,
        volume: &'a str,
        dir: &'a Path,
        files: &'a [VolumeFile],
        options: FileOptions,
    ) -> BoxFuture<'a, HostResult<()>> {
        let (volume, dir, files) = (volume.to_string(), dir.to_path_buf(), files.to_vec());
        Box::pin(blocking(move || {
            Ok(crate::runtime::volumes::write_files(
                &volume, &dir, &files, options,
            )?)
        }))
    }

    fn prepare_volumes<'a>(
        &'a self,
        pod_uid: &'a str,
        volumes: &'a [Volume],
        fs_group: Option<u32>,
    ) -> BoxFuture<'a, HostResult<BTreeMap<String, PreparedVolume>>> {
        Box::pin(async move {
            let runtime = self.runtime()?;
            let (pod_uid, volumes) = (pod_uid.to_string(), volumes.to_vec());
            blocking(move || {
                let prepared = runtime.prepare_volumes(&pod_uid, &volumes)?;
                if let Some(gid) = fs_group {
                    crate::runtime::volumes::give_empty_dirs_to_group(&volumes, &prepared, gid)?;
                }
                Ok(prepared)
            })
            .await
        })
    }

    fn remove<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, HostResult<()>> {
        Box::pin(async move {
            let runtime = self.runtime()?;
            let pod_uid = pod_uid.to_string();
            blocking(move || Ok(runtime.remove_pod(&pod_uid)?)).await
        })
    }

    fn list(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let Ok(runtime) = self.runtime() else {
                return Vec::new();
            };
            blocking(move || Ok(runtime.pods_on_host()))
                .await
                .unwrap_or_default()
        })
    }

    fn storage_usage<'a>(
        &'a self,
        query: &'a crate::pod::storage::StorageQuery,
    ) -> BoxFuture<'a, HostResult<crate::pod::storage::Usage>> {
        let paths = self.paths.clone();
        let query = query.clone();
        Box::pin(blocking(move || {
            let du = |path: PathBuf| {
                crate::runtime::disk_usage::of(&path)
                    .map_err(|err| HostError::from(format!("measuring {}: {err}", path.display())))
            };
            let mut usage = crate::pod::storage::Usage::default();
            let volumes = paths.pod_state_dir(&query.pod_uid).join("volumes");
            for name in &query.empty_dirs {
                usage
                    .empty_dirs
                    .insert(name.clone(), du(volumes.join(name))?);
            }
            for (name, id) in &query.containers {
                let layer = du(paths.container_layer(id))?;
                let logs = du(paths.container_logs(&query.namespace, &query.pod_name, name))?;
                usage
                    .containers
                    .insert(name.clone(), layer.saturating_add(logs));
            }
            Ok(usage)
        }))
    }

    fn free_space(&self) -> BoxFuture<'_, HostResult<u64>> {
        let root = self.paths.root.clone();
        Box::pin(blocking(move || {
            let fs = rustix::fs::statvfs(&root).map_err(|errno| {
                HostError::from(format!(
                    "measuring the free space of {}: {errno}",
                    root.display()
                ))
            })?;
            Ok(fs.f_bavail.saturating_mul(fs.f_frsize))
        }))
    }
}

/// Images through the image manager.
struct ImagesHost(Arc<Services>);

fn parse_image(image: &str) -> Result<ImageReference, PodError> {
    ImageReference::parse(image)
        .map_err(|err| PodError::caused(Reason::InvalidImageName, format!("image {image:?}"), err))
}

fn pull_error(image: &str, err: EnsureError) -> PodError {
    match err {
        EnsureError::NeverPull(message) => PodError::new(Reason::ErrImageNeverPull, message),
        // Its chain carries every host's failure.
        other => PodError::caused(Reason::ImagePullBackOff, format!("image {image}"), other),
    }
}

impl Images for ImagesHost {
    fn ensure<'a>(
        &'a self,
        image: &'a str,
        policy: ImagePullPolicy,
        secrets: Option<Credentials>,
    ) -> BoxFuture<'a, Result<EnsuredImage, PodError>> {
        Box::pin(async move {
            let reference = parse_image(image)?;
            let ensured = self.0.images.ensure(&reference, policy, secrets).await;
            ensured.map_err(|err| pull_error(image, err))
        })
    }

    fn refresh<'a>(
        &'a self,
        image: &'a str,
        secrets: Option<Credentials>,
    ) -> BoxFuture<'a, Result<EnsuredImage, PodError>> {
        Box::pin(async move {
            let reference = parse_image(image)?;
            let refreshed = self.0.images.refresh(&reference, secrets).await;
            refreshed.map_err(|err| pull_error(image, err))
        })
    }

    fn would_pull<'a>(&'a self, image: &'a str, policy: ImagePullPolicy) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match ImageReference::parse(image) {
                Ok(reference) => self.0.images.would_pull(&reference, policy).await,
                Err(_) => false,
            }
        })
    }

    fn hold<'a>(&'a self, id: &'a str, image: &'a str) -> BoxFuture<'a, HostResult<Vec<PathBuf>>> {
        let images = self.0.images.service().clone();
        let (id, image) = (id.to_string(), image.to_string());
        Box::pin(blocking(move || {
            let reference = ImageReference::parse(&image)?;
            match images.hold_for_container(&id, &reference) {
                Ok(layers) => Ok(layers),
                Err(err) => {
                    // Nothing stays held on failure.
                    let _ = images.release_container(&id);
                    Err(err.into())
                }
            }
        }))
    }

    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        let images = self.0.images.service().clone();
        let id = id.to_string();
        Box::pin(async move {
            if let Err(err) = blocking(move || Ok(images.release_container(&id)?)).await {
                tracing::warn!(error = %crate::status::chain(&*err), "could not release a container's image hold");
            }
        })
    }

    fn keep<'a>(&'a self, owner: &'a str, image: &'a str) -> BoxFuture<'a, HostResult<bool>> {
        let images = self.0.images.service().clone();
        let (owner, image) = (owner.to_string(), image.to_string());
        Box::pin(blocking(move || {
            let reference = ImageReference::parse(&image)?;
            Ok(images.keep(&owner, &reference)?)
        }))
    }

    fn unkeep<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, ()> {
        let images = self.0.images.service().clone();
        let owner = owner.to_string();
        Box::pin(async move {
            if let Err(err) = blocking(move || Ok(images.unkeep(&owner)?)).await {
                tracing::warn!(error = %crate::status::chain(&*err), "could not drop a kept rollback image");
            }
        })
    }

    fn config<'a>(
        &'a self,
        record: &'a ImageRecord,
    ) -> BoxFuture<'a, HostResult<ImageConfiguration>> {
        Box::pin(async move { Ok(self.0.images.config(record).await?) })
    }

    fn held(&self) -> BoxFuture<'_, HostResult<Vec<String>>> {
        let images = self.0.images.service().clone();
        Box::pin(blocking(move || Ok(images.held_containers()?)))
    }

    fn delete_unused<'a>(&'a self, image: &'a str) -> BoxFuture<'a, HostResult<bool>> {
        let images = self.0.images.service().clone();
        let image = image.to_string();
        Box::pin(blocking(move || {
            use crate::image::service::ServiceError;
            let reference: ImageReference = image.parse()?;
            match images.remove(&reference, false) {
                Ok(_) => {}
                Err(ServiceError::InUse { .. } | ServiceError::NotFound { .. }) => {
                    return Ok(false);
                }
                Err(err) => return Err(err.into()),
            }
            images.gc()?;
            Ok(true)
        }))
    }
}

/// Pod records under `--root` (`Paths::pod_state_file`).
struct RecordsOnDisk(Paths);

impl PodRecords for RecordsOnDisk {
    fn load<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, HostResult<Option<PodState>>> {
        let (paths, namespace, name) = (self.0.clone(), namespace.to_string(), name.to_string());
        Box::pin(blocking(move || {
            Ok(PodState::load(&paths, &namespace, &name)?)
        }))
    }

    fn save<'a>(&'a self, state: &'a PodState) -> BoxFuture<'a, HostResult<()>> {
        let (paths, state) = (self.0.clone(), state.clone());
        Box::pin(blocking(move || Ok(state.save(&paths)?)))
    }

    fn remove<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, HostResult<()>> {
        let (paths, namespace, name) = (self.0.clone(), namespace.to_string(), name.to_string());
        Box::pin(blocking(move || {
            Ok(PodState::remove(&paths, &namespace, &name)?)
        }))
    }

    fn list(&self) -> BoxFuture<'_, (Vec<PodState>, Vec<String>)> {
        let paths = self.0.clone();
        Box::pin(async move {
            blocking(move || {
                let (states, errors) = PodState::list(&paths);
                Ok((states, errors.iter().map(set_aside).collect()))
            })
            .await
            .unwrap_or_else(|err| (Vec::new(), vec![crate::status::chain(&*err)]))
        })
    }
}

/// A record that does not parse is renamed to `<name>.corrupt` (kept for a
/// person to look at): the pod's containers are then found by recovery as
/// belonging to no record and removed, and the pod starts afresh, instead
/// of failing at every sync.
fn set_aside(error: &crate::pod::state::StateError) -> String {
    let crate::pod::state::StateError::Parse { path, .. } = error else {
        return crate::status::chain(error);
    };
    let mut aside = path.clone().into_os_string();
    aside.push(".corrupt");
    match std::fs::rename(path, &aside) {
        Ok(()) => format!(
            "{}; moved aside to {}",
            crate::status::chain(error),
            std::path::Path::new(&aside).display()
        ),
        Err(err) => format!(
            "{}; moving it aside failed too: {err}",
            crate::status::chain(error)
        ),
    }
}

impl Events for EventLog {
    fn record(&self, event: Event) {
        EventLog::record(self, event);
    }
}

impl StatusSink for Reporter {
    fn report(
        &self,
        key: &ObjectKey,
        origin: &Origin,
        phase: Phase,
        message: String,
        details: Option<Details>,
    ) {
        self.applied(
            key,
            &origin.source,
            origin.generation,
            phase,
            message,
            details,
        );
    }

    fn report_error(&self, key: &ObjectKey, origin: Option<&Origin>, error: &str) {
        self.failed(key, origin.map(|o| (&o.source, o.generation)), error);
    }

    fn terminating(&self, key: &ObjectKey, message: &str) {
        Reporter::terminating(self, key, message);
    }

    fn remove(&self, key: &ObjectKey) {
        self.removed(key);
    }
}

struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::status::time::unix_ms()
    }
}
