//! Pod-level operations: the sandbox, volumes, and what is left of pods
//! on this host.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::status::chain;

use super::{
    CleanupErrors, EtcFiles, PodInfo, PodSandbox, PreparedVolume, Runtime, RuntimeError,
    SandboxError, Volume, cgroups, validate_id, volumes,
};

impl Runtime {
    /// The pod's sandbox: IPC/UTS namespaces (hostname set), /dev/shm and
    /// /etc files. `net_ns` is the namespace file from netplugins, `None`
    /// for hostNetwork. Idempotent.
    pub fn create_sandbox(
        &self,
        pod: &PodInfo,
        net_ns: Option<PathBuf>,
        etc: &EtcFiles,
    ) -> Result<PodSandbox, RuntimeError> {
        // The UID names directories and cgroups.
        validate_id(&pod.uid)?;
        super::sysctls::check(
            &pod.security_context.sysctls,
            &self.inner.config.allowed_unsafe_sysctls,
        )
        .map_err(|problem| SandboxError::Refused {
            pod: format!("{}/{}", pod.namespace, pod.name),
            problem,
        })?;
        Ok(PodSandbox::create(
            &self.inner.paths,
            pod,
            net_ns,
            &self.sandbox_options(),
            etc,
        )?)
    }

    /// `hostUsers: false`: the pod's user namespace, with its IPC, UTS
    /// and network namespaces (the last at the path network drivers use,
    /// so the driver adopts it). Idempotent.
    pub fn create_user_namespace(&self, pod: &PodInfo) -> Result<(), RuntimeError> {
        validate_id(&pod.uid)?;
        let paths = &self.inner.paths;
        let netns = netplugins::driver::netns_path(&paths.netns(), &pod.uid);
        let sandbox = PodSandbox::at(paths, pod, Some(netns));
        sandbox
            .ensure_user_namespace(paths, pod, &self.sandbox_options())
            .map_err(RuntimeError::from)
    }

    fn sandbox_options(&self) -> super::sandbox::SandboxOptions<'_> {
        let config = &self.inner.config;
        super::sandbox::SandboxOptions {
            shm_size: config.shm_size,
            shim: &self.inner.shim_binary,
            userns_range: super::userns::IdRange {
                first: config.userns_first_id,
                count: config.userns_id_count,
            },
        }
    }

    /// Makes the pod's volumes exist (hostPath checks, emptyDirs). Idempotent.
    pub fn prepare_volumes(
        &self,
        pod_uid: &str,
        volumes: &[Volume],
    ) -> Result<BTreeMap<String, PreparedVolume>, RuntimeError> {
        validate_id(pod_uid)?;
        volumes
            .iter()
            .map(|v| {
                Ok((
                    v.name.clone(),
                    volumes::prepare(&self.inner.paths, pod_uid, v)?,
                ))
            })
            .collect()
    }

    /// Removes the pod's sandbox, volumes and cgroup (after its containers).
    pub fn remove_pod(&self, pod_uid: &str) -> Result<(), CleanupErrors> {
        validate_id(pod_uid).map_err(|e| CleanupErrors {
            what: format!("pod {pod_uid}"),
            errors: vec![chain(&e)],
        })?;
        let paths = &self.inner.paths;
        let pod_root = super::userns::UserNamespace::at(&paths.pod_run_dir(pod_uid)).mapping();
        let mut errors: Vec<String> = PodSandbox::remove(&self.inner.paths, pod_uid)
            .iter()
            .map(|err| chain(err))
            .collect();
        if let Some(mapping) = pod_root {
            // The directories it shared with other pods (its own are gone).
            super::traverse::revoke(
                &[paths.run_root.clone(), paths.bundles(), paths.pods()],
                mapping.host_id,
            );
        }
        let pod_cgroup = cgroups::pod_cgroup(&self.inner.config.cgroup_parent, pod_uid);
        errors.extend(
            self.inner
                .layout
                .remove_tree(&pod_cgroup)
                .iter()
                .map(|err| chain(err)),
        );
        CleanupErrors::into_result(format!("pod {pod_uid}"), errors)
    }

    /// UIDs of the pods that have anything on this host: a sandbox
    /// directory or a cgroup under the configured parent. After a restart
    /// the agent removes those no manifest wants ([`Runtime::remove_pod`]).
    pub fn pods_on_host(&self) -> Vec<String> {
        let parent = format!("/{}", self.inner.config.cgroup_parent.trim_matches('/'));
        let from_cgroups = self
            .inner
            .layout
            .hierarchy_dirs(&parent)
            .into_iter()
            .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("pod-")
                    .map(str::to_string)
            });
        let from_sandboxes = std::fs::read_dir(self.inner.paths.pods())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string));
        let mut uids: Vec<String> = from_cgroups.chain(from_sandboxes).collect();
        uids.sort();
        uids.dedup();
        uids
    }
}
