//! Shared by the `runtime_*` tests: a [`Harness`] per test with its own
//! directories, cgroup parent and network namespaces (all named uniquely and
//! removed on drop, even when the test fails), the real berth-shim binary,
//! and busybox layers.
//!
//! crun on a hybrid-cgroup host: crun 1.8 refuses to run while the cgroup2
//! hierarchy holds a controller (hugetlb on this machine). [`Harness::new`]
//! for crun therefore moves such controllers to cgroup v1 hierarchies under
//! `/sys/fs/cgroup/<name>` — the layout a plain v1 host has — serialised
//! across test processes with a lock file, and leaves them mounted: the
//! kernel can take minutes to hand a controller back to cgroup2 after an
//! unmount, so unmounting would break the next test (and other helpers'
//! tests running at the same time).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::paths::Paths;
use berth::runtime::config::{RlimitConfig, RuntimeConfig};
use berth::runtime::spec::{
    ContainerSpec, HostPathType, PodInfo, Volume, VolumeMount, VolumeSource,
};
use berth::runtime::{
    ContainerState, CreateContainer, CreatedContainer, EtcFiles, ExitStatus, PodSandbox,
    PreparedVolume, Runtime, RuntimeError,
};
use berth::status::chain;
use berth_e2e::{TestDirs, require_root, rootfs, shim_bin, unique_name};
use netplugins::ns::{self, NsKind};

pub const RUNTIMES: [&str; 2] = ["runc", "crun"];

/// One test's world: directories, a `Runtime` configured with the real
/// shim, a unique cgroup parent, and what it created (removed on drop).
pub struct Harness {
    pub handler: String,
    pub dirs: TestDirs,
    pub paths: Paths,
    pub runtime: Runtime,
    pub config: RuntimeConfig,
    pub layers: Vec<PathBuf>,
    pub cgroup_parent: String,
    pub tokio: tokio::runtime::Runtime,
    containers: Vec<String>,
    pods: Vec<String>,
    netns: Vec<PathBuf>,
}

impl Harness {
    pub fn new(handler: &str) -> Self {
        Self::with_config(handler, |_| {})
    }

    pub fn with_config(handler: &str, configure: impl FnOnce(&mut RuntimeConfig)) -> Self {
        require_root();
        if handler == "crun" {
            berth_e2e::crun::make_crun_work();
        }
        let dirs = TestDirs::new();
        let paths = Paths::new(&dirs.root, &dirs.run_root);
        let cgroup_parent = unique_name("cg");
        let mut config = RuntimeConfig {
            shim: Some(shim_bin()),
            cgroup_parent: cgroup_parent.clone(),
            default_handler: Some(handler.to_string()),
            ..Default::default()
        };
        // Within the agent's own hard limit unless a test asks otherwise.
        config.rlimits.insert(
            "nofile".into(),
            RlimitConfig {
                soft: 1024,
                hard: 4096,
            },
        );
        configure(&mut config);
        let runtime = Runtime::new(paths.clone(), config.clone()).expect("a runtime");
        let layers = rootfs::busybox_layers(&dirs.temp.path().join("layers"));
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        Self {
            handler: handler.to_string(),
            dirs,
            paths,
            runtime,
            config,
            layers,
            cgroup_parent,
            tokio,
            containers: Vec::new(),
            pods: Vec::new(),
            netns: Vec::new(),
        }
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.tokio.block_on(future)
    }

    /// A pod with its own (empty) network namespace and a sandbox.
    pub fn pod(&mut self, name: &str) -> (PodInfo, PodSandbox) {
        self.make_pod(name, false)
    }

    /// A `hostNetwork: true` pod: the host's network and UTS namespaces.
    pub fn host_network_pod(&mut self, name: &str) -> (PodInfo, PodSandbox) {
        self.make_pod(name, true)
    }

    fn make_pod(&mut self, name: &str, host_network: bool) -> (PodInfo, PodSandbox) {
        let uid = unique_name("pod");
        let pod = PodInfo {
            namespace: "default".into(),
            name: name.into(),
            uid: uid.clone(),
            hostname: name.into(),
            host_network,
            ..Default::default()
        };
        self.pods.push(uid.clone());
        let netns = (!host_network).then(|| {
            let netns = self.paths.netns().join(&uid);
            ns::create(NsKind::Net, &netns).expect("a network namespace");
            self.netns.push(netns.clone());
            netns
        });
        let sandbox = self
            .runtime
            .create_sandbox(&pod, netns, &EtcFiles::defaults(name, None))
            .expect("a sandbox");
        (pod, sandbox)
    }

    pub fn log_path(&self, pod: &PodInfo, container: &str) -> PathBuf {
        berth::runtime::logs::instance_log(
            &self
                .paths
                .container_logs(&pod.namespace, &pod.name, container),
            0,
        )
    }

    /// Starts `spec` in `pod` with no volumes.
    pub fn run(
        &mut self,
        pod: &(PodInfo, PodSandbox),
        spec: &ContainerSpec,
    ) -> (String, CreatedContainer) {
        self.run_with_volumes(pod, spec, &[])
            .unwrap_or_else(|err| panic!("starting {}: {}", spec.name, chain(&err)))
    }

    pub fn run_with_volumes(
        &mut self,
        pod: &(PodInfo, PodSandbox),
        spec: &ContainerSpec,
        volumes: &[Volume],
    ) -> Result<(String, CreatedContainer), RuntimeError> {
        let id = unique_name("c");
        self.containers.push(id.clone());
        let prepared: BTreeMap<String, PreparedVolume> =
            self.runtime.prepare_volumes(&pod.0.uid, volumes)?;
        let created = self.block_on(self.runtime.create_container(CreateContainer {
            id: &id,
            pod: &pod.0,
            sandbox: &pod.1,
            container: spec,
            image: None,
            lowerdirs: &self.layers,
            volumes: &prepared,
            runtime_class: Some(&self.handler),
            log_path: self.log_path(&pod.0, &spec.name),
            labels: BTreeMap::new(),
        }))?;
        Ok((id, created))
    }

    /// Waits for the container to exit (at most 30 s).
    pub fn wait_exit(&self, id: &str) -> ExitStatus {
        self.block_on(self.runtime.wait(id, Duration::from_secs(30)))
            .expect("waiting")
            .unwrap_or_else(|| panic!("container {id} did not exit within 30s"))
    }

    /// Runs `argv` inside the container; (exit code, stdout, stderr).
    pub fn exec(&self, id: &str, argv: &[&str]) -> (i32, String, String) {
        let (code, out, err) = self
            .block_on(self.runtime.exec_output(id, argv))
            .expect("exec");
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    }

    pub fn running_pid(&self, id: &str) -> i32 {
        match self.runtime.container(id).expect("container").state {
            ContainerState::Running { pid, .. } => pid,
            other => panic!("container {id} is not running: {other:?}"),
        }
    }

    /// A second `Runtime` on the same state, as a restarted agent has.
    pub fn restarted_runtime(&self) -> Runtime {
        Runtime::new(self.paths.clone(), self.config.clone()).expect("a runtime")
    }

    /// A hostPath volume `data` (a fresh directory) and its mount at /data.
    pub fn data_volume(&self) -> (PathBuf, Volume, VolumeMount) {
        let dir = self.dirs.temp.path().join("data");
        std::fs::create_dir_all(&dir).expect("data dir");
        let volume = Volume {
            name: "data".into(),
            source: VolumeSource::HostPath {
                path: dir.clone(),
                kind: HostPathType::Directory,
            },
        };
        let mount = VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..Default::default()
        };
        (dir, volume, mount)
    }

    /// Makes the drop cleanup remove container `id` (created elsewhere).
    pub fn track(&mut self, id: &str) {
        self.containers.push(id.to_string());
    }

    /// Removes a container now (and forgets it for the drop cleanup).
    pub fn remove(&mut self, id: &str) {
        self.block_on(self.runtime.remove_container(id))
            .unwrap_or_else(|err| panic!("removing {id}: {}", chain(&err)));
        self.containers.retain(|c| c != id);
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.containers) {
            if let Err(err) = self.tokio.block_on(self.runtime.remove_container(&id)) {
                eprintln!("cleanup: {}", chain(&err));
            }
        }
        for uid in std::mem::take(&mut self.pods) {
            if let Err(err) = self.runtime.remove_pod(&uid) {
                eprintln!("cleanup: {}", chain(&err));
            }
        }
        for netns in std::mem::take(&mut self.netns) {
            if let Err(err) = ns::remove(&netns) {
                eprintln!("cleanup: {}", chain(&err));
            }
        }
        let parent = format!("/{}", self.cgroup_parent);
        for err in self.runtime.layout().remove_tree(&parent) {
            eprintln!("cleanup: {}", chain(&err));
        }
    }
}

/// A busybox shell command as a container.
pub fn sh(name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// Reads a file that must exist.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
