//! Creating a container: rootfs, bundle, shim.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::Config as ImageConfig;

use super::seccomp_bpf::Pending;
use super::{
    CleanupErrors, ContainerRecord, ContainerSpec, CreateContainer, CreatedContainer, Handler,
    PodInfo, PodSandbox, PreparedVolume, ResolvedMount, Runtime, RuntimeError, VolumeError, bundle,
    cgroups, make_dir, now_ns, rlimits, security, shim, user, validate_id, volumes,
};

/// [`CreateContainer`], owned, to go to the blocking pool.
struct Request {
    id: String,
    pod: PodInfo,
    sandbox: PodSandbox,
    container: ContainerSpec,
    image: Option<ImageConfig>,
    lowerdirs: Vec<PathBuf>,
    volumes: BTreeMap<String, PreparedVolume>,
    log_path: PathBuf,
    labels: BTreeMap<String, String>,
}

impl Request {
    fn new(req: &CreateContainer<'_>) -> Self {
        Self {
            id: req.id.to_string(),
            pod: req.pod.clone(),
            sandbox: req.sandbox.clone(),
            container: req.container.clone(),
            image: req.image.cloned(),
            lowerdirs: req.lowerdirs.to_vec(),
            volumes: req.volumes.clone(),
            log_path: req.log_path.clone(),
            labels: req.labels.clone(),
        }
    }
}

/// A bundle ready to start.
struct Prepared {
    launch: shim::ShimLaunch,
    warnings: Vec<String>,
    uncompiled: Option<Pending>,
}

impl Runtime {
    /// Mounts the rootfs, writes the bundle and starts the container
    /// through a new shim. On failure nothing is left behind (or the error
    /// says what could not be removed).
    pub async fn create_container(
        &self,
        req: CreateContainer<'_>,
    ) -> Result<CreatedContainer, RuntimeError> {
        validate_id(req.id)?;
        let handler = self.handler_for(req.runtime_class)?.clone();
        let limits = super::flavor::check(handler.kind, &handler.name, req.container)
            .map_err(|reason| RuntimeError::NotHonoured { reason })?;
        let id = req.id.to_string();
        self.blocking("checking for an existing container", move |rt| {
            let state_dir = rt.inner.paths.shim_dir(&id);
            if state_dir.exists() {
                return Err(RuntimeError::AlreadyExists { id, dir: state_dir });
            }
            Ok(())
        })
        .await??;
        match self.try_create(Request::new(&req), &handler).await {
            Ok(mut created) => {
                created.warnings.extend(limits);
                tracing::info!(
                    container = req.id,
                    pod = %format!("{}/{}", req.pod.namespace, req.pod.name),
                    name = %req.container.name,
                    pid = created.pid,
                    handler = %handler.name,
                    "container started"
                );
                Ok(created)
            }
            Err(err) => {
                tracing::warn!(container = req.id, error = %crate::status::chain(&err), "container could not start");
                let errors = self.cleanup(req.id, Some(&handler)).await;
                match CleanupErrors::into_result(format!("container {}", req.id), errors) {
                    Ok(()) => Err(err),
                    Err(cleanup) => Err(RuntimeError::CreateFailed {
                        error: Box::new(err),
                        cleanup,
                    }),
                }
            }
        }
    }

    async fn try_create(
        &self,
        req: Request,
        handler: &Handler,
    ) -> Result<CreatedContainer, RuntimeError> {
        let id = req.id.clone();
        let prepared = {
            let handler = handler.clone();
            self.blocking("preparing the bundle", move |rt| rt.prepare(&req, &handler))
                .await??
        };
        let started = shim::launch(&prepared.launch).await?;
        if let Some(pending) = prepared.uncompiled {
            let (handler, id) = (handler.clone(), id.clone());
            self.blocking("reading the compiled seccomp filter", move |rt| {
                rt.inner.seccomp_bpf.learn(pending, &handler, &id)
            })
            .await?;
        }
        Ok(CreatedContainer {
            id,
            pid: started.container_pid,
            handler: handler.name.clone(),
            warnings: prepared.warnings,
        })
    }

    /// Everything before the shim: directories, the record, the rootfs,
    /// volume mounts, the bundle. Blocking.
    fn prepare(&self, req: &Request, handler: &Handler) -> Result<Prepared, RuntimeError> {
        let id = req.id.as_str();
        let state_dir = self.inner.paths.shim_dir(id);
        let bundle_dir = self.inner.paths.bundle(id);
        make_dir(&state_dir, 0o711)?;
        make_dir(&bundle_dir, 0o700)?;
        make_dir(&handler.root, 0o700)?;
        if let Some(parent) = req.log_path.parent() {
            make_dir(parent, 0o750)?;
        }
        let rootfs_dir = bundle_dir.join("rootfs");
        let cgroups_path =
            cgroups::container_cgroup(&self.inner.config.cgroup_parent, &req.pod.uid, id);
        // The record first: whatever happens next, cleanup can find it all.
        let mut record = ContainerRecord {
            id: id.to_string(),
            pod_uid: req.pod.uid.clone(),
            pod_namespace: req.pod.namespace.clone(),
            pod_name: req.pod.name.clone(),
            container_name: req.container.name.clone(),
            handler: handler.name.clone(),
            bundle: bundle_dir.clone(),
            rootfs: rootfs_dir.clone(),
            cgroups_path: cgroups_path.clone(),
            log_path: req.log_path.clone(),
            stop_signal: "SIGTERM".into(),
            tty: req.container.tty,
            created_at_ns: now_ns(),
            labels: req.labels.clone(),
        };
        shim::write_record(&state_dir, &record)?;

        let id_mapping = match &req.sandbox.user_ns {
            None => None,
            Some(userns) => Some((
                userns.clone(),
                super::userns::UserNamespace::at(&req.sandbox.dir)
                    .mapping()
                    .ok_or_else(|| RuntimeError::Io {
                        action: "reading the ID mapping of the pod's user namespace in",
                        path: req.sandbox.dir.clone(),
                        source: std::io::ErrorKind::NotFound.into(),
                    })?,
            )),
        };
        let pod_root = id_mapping.as_ref().map(|(_, mapping)| mapping.host_id);
        let idmap = id_mapping
            .as_ref()
            .map(|(userns, mapping)| super::rootfs::Idmap {
                userns,
                host_id: mapping.host_id,
            });
        super::rootfs::create(&self.inner.paths, id, &req.lowerdirs, &rootfs_dir, idmap)?;
        tracing::debug!(container = id, "rootfs mounted");
        let mounts = self.resolve_mounts(req, &bundle_dir)?;
        let accounts = user::AccountFiles::read(&rootfs_dir, &req.container.name)?;
        let host_limits = rlimits::AgentLimits {
            has_sys_resource: security::host_has_sys_resource(),
        };
        let mut built = bundle::build(&bundle::BundleRequest {
            pod: &req.pod,
            sandbox: &req.sandbox,
            container: &req.container,
            image: req.image.as_ref(),
            accounts: &accounts,
            mounts: &mounts,
            cgroups_path: &cgroups_path,
            rlimits: &self.inner.config.rlimits,
            host: &self.inner.host,
            host_limits: &host_limits,
            id_mapping: id_mapping.map(|(_, mapping)| mapping),
        })?;
        if let Some(id) = pod_root {
            super::traverse::grant(&super::traverse::directories(&bundle_dir, &built.spec), id)?;
        }
        let uncompiled = self.inner.seccomp_bpf.apply(handler, &mut built.spec);
        bundle::write(&bundle_dir, &built.spec)?;
        tracing::debug!(
            container = id,
            seccomp_compiled = uncompiled.is_none(),
            "bundle written"
        );
        record.stop_signal = built.stop_signal.clone();
        shim::write_record(&state_dir, &record)?;
        Ok(Prepared {
            launch: shim::ShimLaunch {
                shim_binary: self.inner.shim_binary.clone(),
                id: id.to_string(),
                bundle: bundle_dir,
                state_dir,
                runtime: handler.binary.clone(),
                runtime_args: handler.args.clone(),
                runtime_root: handler.root.clone(),
                log_file: req.log_path.clone(),
                log_max_size: self.inner.config.log_max_size,
                log_max_files: self.inner.config.log_max_files,
                tty: req.container.tty,
                oom_file: self.inner.layout.oom_file(&cgroups_path),
                timeout: Duration::from_secs(self.inner.config.start_timeout_secs),
            },
            warnings: built.warnings,
            uncompiled,
        })
    }

    /// Volume mounts → host sources; subPaths are bind-mounted into the
    /// bundle first so they cannot be redirected.
    fn resolve_mounts(
        &self,
        req: &Request,
        bundle_dir: &Path,
    ) -> Result<Vec<ResolvedMount>, RuntimeError> {
        let mut mounts = Vec::new();
        for (n, mount) in req.container.volume_mounts.iter().enumerate() {
            let volume = req.volumes.get(&mount.name).ok_or_else(|| {
                RuntimeError::Volume(VolumeError::SubPath {
                    volume: mount.name.clone(),
                    sub_path: mount.sub_path.clone().unwrap_or_default(),
                    problem: format!(
                        "is mounted by container {:?} at {} but is not a volume of the pod",
                        req.container.name, mount.mount_path
                    ),
                })
            })?;
            let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                None => volume.host_path.clone(),
                Some(sub_path) => volumes::mount_sub_path(
                    &mount.name,
                    &volume.host_path,
                    sub_path,
                    &bundle_dir.join("subpaths").join(n.to_string()),
                )?,
            };
            mounts.push(ResolvedMount {
                source,
                destination: mount.mount_path.clone(),
                read_only: mount.read_only || volume.always_read_only,
            });
        }
        Ok(mounts)
    }
}
