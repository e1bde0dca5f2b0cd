//! A host made of memory, for unit tests of the pod layer: every trait of
//! [`super::host`] over one [`World`] that a test scripts (images that
//! fail to pull, creates that fail, containers that exit, probes that ask
//! for a kill, pulls that hang until released) and reads back (what was
//! done, in order; events; reported status).
//!
//! Time is tokio's: tests run with a paused clock, so grace periods and
//! back-offs pass instantly and exactly.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use manifests::ObjectKey;
use manifests::types as api;
use netplugins::driver::{NetworkStatus, PodNetwork};
use oci_spec::image::ImageConfiguration;

use super::action::{Action, Outcome};
use super::config::PodsConfig;
use super::error::{PodError, Reason};
use super::host::KillRequest;
use super::host::{
    Clock, ContainerRuntime, Events, ExecOutput, Exits, Handlers, Host, HostError, HostResult,
    Images, Networks, Origin, PodRecords, Probes, Repaired, Sandboxes, StatusSink,
};
use super::state::PodState;
use super::update::{Lock, UpdateLocks};
use crate::image::auth::Credentials;
use crate::image::manager::EnsuredImage;
use crate::image::meta::ImageRecord;
use crate::image::policy::ImagePullPolicy;
use crate::runtime::volumes::{FileOptions, VolumeFile};
use crate::runtime::{
    ContainerState, CreateContainer, CreatedContainer, EtcFiles, ExitStatus, PodInfo, PodSandbox,
    PreparedVolume, StopOutcome, Volume,
};
use crate::status::{Details, Event, Phase};

/// Unix ms at which the fake clock starts.
pub const EPOCH_MS: u64 = 1_800_000_000_000;

/// A container as the fake runtime has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContainer {
    pub state: ContainerState,
    /// Ignores the stop signal: only SIGKILL at the end of the grace
    /// period ends it.
    pub ignores_sigterm: bool,
}

/// A status report, as `berth status` would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub phase: Phase,
    pub message: String,
    pub error: Option<String>,
}

/// Everything the fake host knows and was asked to do.
#[derive(Debug, Default)]
pub struct World {
    /// What was done, in order: `pull IMAGE`, `create ID`, `stop ID 30s`,
    /// `remove ID`, `network setup UID`, `sandbox create UID`, …
    pub log: Vec<String>,
    pub containers: BTreeMap<String, FakeContainer>,
    pub sandboxes: BTreeSet<String>,
    /// Sandboxes whose namespaces are gone (a reboot).
    pub dead_sandboxes: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub records: BTreeMap<(String, String), PodState>,
    /// Images that are stored.
    pub images: BTreeSet<String>,
    /// Images whose pull fails, with the message.
    pub pull_failures: BTreeMap<String, String>,
    /// Images whose registry does not answer: a stored copy is used.
    pub offline: BTreeSet<String>,
    /// Images whose tag points to a new digest at the next pull.
    pub moved: BTreeSet<String>,
    /// Images whose pull never ends (until the sync is cancelled).
    pub slow_pulls: BTreeSet<String>,
    /// Container names whose create fails, with the message.
    pub create_failures: BTreeMap<String, String>,
    /// Container names whose postStart hook fails.
    pub hook_failures: BTreeSet<String>,
    /// Container names whose instances ignore SIGTERM.
    pub stubborn: BTreeSet<String>,
    pub held: BTreeSet<String>,
    pub kill_requests: BTreeMap<String, KillRequest>,
    pub not_ready: BTreeSet<String>,
    pub probed: BTreeSet<String>,
    pub watched_exits: BTreeSet<String>,
    pub events: Vec<Event>,
    pub status: BTreeMap<ObjectKey, Reported>,
    /// What every pod's ephemeral storage measures.
    pub storage: crate::pod::storage::Usage,
    /// Free bytes for pods (`None`: plenty).
    pub free_space: Option<u64>,
    /// PIDs of containers that hold their update lock.
    pub update_locks: BTreeSet<i32>,
    /// A `berth update --force` waits to be consumed.
    pub forced: bool,
    /// Sandbox creation never finishes (a sync to be cancelled there).
    pub sandbox_create_stalls: bool,
    next_pid: i32,
}

impl World {
    /// The log lines that start with `prefix`.
    pub fn done(&self, prefix: &str) -> Vec<String> {
        self.log
            .iter()
            .filter(|line| line.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The position of the first log line starting with `prefix`.
    pub fn first(&self, prefix: &str) -> Option<usize> {
        self.log.iter().position(|line| line.starts_with(prefix))
    }

    pub fn reasons(&self) -> Vec<String> {
        self.events.iter().map(|e| e.reason.clone()).collect()
    }

    /// Ids of the containers that run.
    pub fn running(&self) -> Vec<String> {
        self.containers
            .iter()
            .filter(|(_, c)| matches!(c.state, ContainerState::Running { .. }))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Makes container `id` exit with `code` now.
    pub fn exit(&mut self, id: &str, code: i32, now_ms: u64) {
        if let Some(container) = self.containers.get_mut(id) {
            container.state = ContainerState::Exited(exit_status(code, now_ms));
        }
    }
}

fn exit_status(code: i32, now_ms: u64) -> ExitStatus {
    ExitStatus {
        pid: Some(1),
        exit_code: code,
        signal: None,
        oom_killed: false,
        started_at: None,
        started_at_ns: Some(now_ms.saturating_sub(1_000) * 1_000_000),
        finished_at: crate::status::time::rfc3339(
            std::time::UNIX_EPOCH + Duration::from_millis(now_ms),
        ),
        finished_at_ns: now_ms * 1_000_000,
        start_error: None,
    }
}

/// The fake host: one [`World`] behind every trait. Cheap to clone.
#[derive(Clone, Default)]
pub struct FakeHost {
    world: Arc<Mutex<World>>,
    clock: FakeClock,
}

impl FakeHost {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The host for the pod layer, with `config`.
    pub fn host(&self, config: PodsConfig) -> Host {
        let me = Arc::new(self.clone());
        Host {
            runtime: me.clone(),
            sandboxes: me.clone(),
            images: me.clone(),
            networks: me.clone(),
            records: me.clone(),
            probes: me.clone(),
            exits: me.clone(),
            handlers: me.clone(),
            events: me.clone(),
            status: me.clone(),
            clock: Arc::new(self.clock.clone()),
            locks: me.clone(),
            config,
            node: Arc::new(crate::node::Node::fixed("node1", Default::default())),
        }
    }

    fn log(&self, line: String) {
        self.world().log.push(line);
    }
}

/// Unix ms following tokio's (paused) clock.
#[derive(Clone)]
struct FakeClock {
    start: tokio::time::Instant,
}

impl Default for FakeClock {
    fn default() -> Self {
        Self {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        EPOCH_MS + crate::pod::plan::millis(self.start.elapsed())
    }
}

fn boxed<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(async move { value })
}

fn container_name(id: &str) -> String {
    // `<uid>-<name>-<n>`
    let rest = id.split_once('-').map_or(id, |(_, rest)| rest);
    rest.rsplit_once('-')
        .map_or(rest, |(name, _)| name)
        .to_string()
}

impl ContainerRuntime for FakeHost {
    fn inspect<'a>(&'a self, id: &'a str) -> BoxFuture<'a, HostResult<ContainerState>> {
        let state = self.world().containers.get(id).map(|c| c.state.clone());
        boxed(state.ok_or_else(|| HostError::from(format!("container {id} does not exist"))))
    }

    fn list(&self) -> BoxFuture<'_, Vec<String>> {
        boxed(self.world().containers.keys().cloned().collect())
    }

    fn create<'a>(
        &'a self,
        request: CreateContainer<'a>,
    ) -> BoxFuture<'a, HostResult<CreatedContainer>> {
        let id = request.id.to_string();
        let mut world = self.world();
        world.log.push(format!("create {id}"));
        let name = request.container.name.clone();
        if let Some(message) = world.create_failures.get(&name) {
            return boxed(Err(message.clone().into()));
        }
        world.next_pid += 1;
        let pid = 1000 + world.next_pid;
        let ignores_sigterm = world.stubborn.contains(&name);
        world.containers.insert(
            id.clone(),
            FakeContainer {
                state: ContainerState::Running {
                    pid,
                    shim_pid: Some(pid - 1),
                    shim_alive: true,
                },
                ignores_sigterm,
            },
        );
        boxed(Ok(CreatedContainer {
            id,
            pid,
            handler: "fake".into(),
            warnings: Vec::new(),
        }))
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, HostResult<StopOutcome>> {
        Box::pin(async move {
            let stubborn = {
                let mut world = self.world();
                world.log.push(format!("stop {id} {grace:?}"));
                match world.containers.get(id) {
                    None => return Err(format!("container {id} does not exist").into()),
                    Some(c) => c.ignores_sigterm,
                }
            };
            if stubborn {
                tokio::time::sleep(grace).await;
            }
            let now = self.now_ms();
            let code = if stubborn { 137 } else { 143 };
            let mut world = self.world();
            world.exit(id, code, now);
            world.log.push(format!("stopped {id}"));
            let exit = match &world.containers[id].state {
                ContainerState::Exited(exit) => exit.clone(),
                _ => unreachable!("just exited"),
            };
            Ok(StopOutcome {
                exit,
                signal_sent_at: None,
                killed: stubborn,
            })
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, HostResult<()>> {
        let mut world = self.world();
        world.log.push(format!("remove {id}"));
        world.containers.remove(id);
        boxed(Ok(()))
    }

    fn exec<'a>(
        &'a self,
        _: &'a str,
        _: &'a [String],
        _: usize,
    ) -> BoxFuture<'a, HostResult<ExecOutput>> {
        boxed(Ok(ExecOutput::default()))
    }

    fn log_dir(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        PathBuf::from(format!("/logs/{namespace}_{pod}/{container}"))
    }

    fn prune_logs(&self, _: PathBuf, _: usize) -> BoxFuture<'_, HostResult<()>> {
        boxed(Ok(()))
    }

    fn remove_pod_logs<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, HostResult<()>> {
        self.log(format!("remove logs {namespace}/{name}"));
        boxed(Ok(()))
    }
}

impl Sandboxes for FakeHost {
    fn locate(&self, pod: &PodInfo, netns: Option<PathBuf>) -> PodSandbox {
        let paths = crate::paths::Paths::new(Path::new("/fake/root"), Path::new("/fake/run"));
        PodSandbox::at(&paths, pod, netns)
    }

    fn alive<'a>(&'a self, sandbox: &'a PodSandbox) -> BoxFuture<'a, bool> {
        let world = self.world();
        boxed(
            world.sandboxes.contains(&sandbox.uid) && !world.dead_sandboxes.contains(&sandbox.uid),
        )
    }

    fn create<'a>(
        &'a self,
        pod: &'a PodInfo,
        netns: Option<PathBuf>,
        _: &'a EtcFiles,
    ) -> BoxFuture<'a, HostResult<PodSandbox>> {
        let mut world = self.world();
        world.log.push(format!("sandbox create {}", pod.uid));
        world.sandboxes.insert(pod.uid.clone());
        world.dead_sandboxes.remove(&pod.uid);
        if world.sandbox_create_stalls {
            return Box::pin(futures::future::pending());
        }
        drop(world);
        boxed(Ok(Sandboxes::locate(self, pod, netns)))
    }

    fn volume_dir(&self, pod_uid: &str, volume: &str) -> PathBuf {
        PathBuf::from(format!("/pods/{pod_uid}/volumes/{volume}"))
    }

    fn exists<'a>(&'a self, _: &'a Path) -> BoxFuture<'a, bool> {
        boxed(true)
    }

    fn write_files<'a>(
        &'a self,
        volume: &'a str,
        _: &'a Path,
        _: &'a [VolumeFile],
        _: FileOptions,
    ) -> BoxFuture<'a, HostResult<()>> {
        self.log(format!("write volume {volume}"));
        boxed(Ok(()))
    }

    fn prepare_volumes<'a>(
        &'a self,
        _: &'a str,
        _: &'a [Volume],
        _: Option<u32>,
    ) -> BoxFuture<'a, HostResult<BTreeMap<String, PreparedVolume>>> {
        boxed(Ok(BTreeMap::new()))
    }

    fn remove<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, HostResult<()>> {
        let mut world = self.world();
        world.log.push(format!("sandbox remove {pod_uid}"));
        world.sandboxes.remove(pod_uid);
        boxed(Ok(()))
    }

    fn list(&self) -> BoxFuture<'_, Vec<String>> {
        boxed(self.world().sandboxes.iter().cloned().collect())
    }

    fn storage_usage<'a>(
        &'a self,
        _: &'a crate::pod::storage::StorageQuery,
    ) -> BoxFuture<'a, HostResult<crate::pod::storage::Usage>> {
        boxed(Ok(self.world().storage.clone()))
    }

    fn free_space(&self) -> BoxFuture<'_, HostResult<u64>> {
        boxed(Ok(self.world().free_space.unwrap_or(u64::MAX)))
    }
}

/// An image record for `image` (digests made from its name).
pub fn record(image: &str) -> ImageRecord {
    let digest = |salt: &str| {
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(format!(
                "{salt}{image}"
            )))
        )
        .parse()
        .expect("a valid digest")
    };
    ImageRecord {
        name: image.to_string(),
        manifest_digest: digest("manifest"),
        index_digest: None,
        config_digest: digest("config"),
        platform: "linux/amd64".into(),
        compressed_size: 1,
        unpacked_size: None,
        created: None,
        recorded_at: 0,
        last_used: 0,
        pinned_by: Vec::new(),
        used_by: Vec::new(),
    }
}

impl Images for FakeHost {
    fn ensure<'a>(
        &'a self,
        image: &'a str,
        policy: ImagePullPolicy,
        _: Option<Credentials>,
    ) -> BoxFuture<'a, Result<EnsuredImage, PodError>> {
        Box::pin(async move {
            let present = self.world().images.contains(image);
            if present && policy != ImagePullPolicy::Always {
                return Ok(EnsuredImage {
                    record: record(image),
                    pulled: false,
                    offline: None,
                });
            }
            if policy == ImagePullPolicy::Never {
                return Err(PodError::new(
                    Reason::ErrImageNeverPull,
                    format!("{image} is not present"),
                ));
            }
            self.log(format!("pull {image}"));
            if self.world().slow_pulls.contains(image) {
                // Only a cancelled sync ends this pull.
                std::future::pending::<()>().await;
            }
            let mut world = self.world();
            if world.offline.contains(image) && present {
                return Ok(EnsuredImage {
                    record: record(image),
                    pulled: false,
                    offline: Some("no host of its registry answered".into()),
                });
            }
            if let Some(message) = world.pull_failures.get(image) {
                return Err(PodError::caused(
                    Reason::ImagePullBackOff,
                    format!("image {image}"),
                    message.clone(),
                ));
            }
            world.log.push(format!("pulled {image}"));
            world.images.insert(image.to_string());
            let name = if world.moved.contains(image) {
                format!("{image} (moved)")
            } else {
                image.to_string()
            };
            Ok(EnsuredImage {
                record: record(&name),
                pulled: true,
                offline: None,
            })
        })
    }

    fn would_pull<'a>(&'a self, image: &'a str, policy: ImagePullPolicy) -> BoxFuture<'a, bool> {
        boxed(policy == ImagePullPolicy::Always || !self.world().images.contains(image))
    }

    fn hold<'a>(&'a self, id: &'a str, _: &'a str) -> BoxFuture<'a, HostResult<Vec<PathBuf>>> {
        self.world().held.insert(id.to_string());
        boxed(Ok(vec![PathBuf::from("/layers/0")]))
    }

    fn release<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        self.world().held.remove(id);
        boxed(())
    }

    fn refresh<'a>(
        &'a self,
        image: &'a str,
        secrets: Option<Credentials>,
    ) -> BoxFuture<'a, Result<EnsuredImage, PodError>> {
        self.ensure(image, ImagePullPolicy::Always, secrets)
    }

    fn keep<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, HostResult<bool>> {
        boxed(Ok(true))
    }

    fn unkeep<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
        boxed(())
    }

    fn config<'a>(&'a self, _: &'a ImageRecord) -> BoxFuture<'a, HostResult<ImageConfiguration>> {
        boxed(Ok(ImageConfiguration::default()))
    }

    fn held(&self) -> BoxFuture<'_, HostResult<Vec<String>>> {
        boxed(Ok(self.world().held.iter().cloned().collect()))
    }

    fn delete_unused<'a>(&'a self, image: &'a str) -> BoxFuture<'a, HostResult<bool>> {
        let mut world = self.world();
        world.log.push(format!("delete image {image}"));
        boxed(Ok(world.images.remove(image)))
    }
}

impl UpdateLocks for FakeHost {
    fn take(&self, pid: i32) -> BoxFuture<'_, Lock> {
        boxed(if self.world().update_locks.contains(&pid) {
            Lock::Held
        } else {
            Lock::Absent
        })
    }

    fn take_force<'a>(&'a self, _: &'a ObjectKey) -> BoxFuture<'a, bool> {
        boxed(std::mem::take(&mut self.world().forced))
    }
}

impl Networks for FakeHost {
    fn setup<'a>(
        &'a self,
        request: &'a PodNetwork,
        _: bool,
    ) -> BoxFuture<'a, HostResult<NetworkStatus>> {
        let mut world = self.world();
        world.log.push(format!("network setup {}", request.pod_id));
        world.networks.insert(request.pod_id.clone());
        boxed(Ok(NetworkStatus {
            driver: "fake".into(),
            ..NetworkStatus::default()
        }))
    }

    fn verify<'a>(
        &'a self,
        _: &'a PodNetwork,
        _: bool,
    ) -> BoxFuture<'a, HostResult<Option<Repaired>>> {
        boxed(Ok(None))
    }

    fn teardown<'a>(&'a self, request: &'a PodNetwork, _: bool) -> BoxFuture<'a, HostResult<()>> {
        let mut world = self.world();
        world
            .log
            .push(format!("network teardown {}", request.pod_id));
        world.networks.remove(&request.pod_id);
        boxed(Ok(()))
    }

    fn cleanup_orphans<'a>(&'a self, alive: &'a HashSet<String>) -> BoxFuture<'a, Vec<String>> {
        let mut world = self.world();
        let orphans: Vec<String> = world
            .networks
            .iter()
            .filter(|uid| !alive.contains(*uid))
            .cloned()
            .collect();
        for uid in orphans {
            world.log.push(format!("network cleanup {uid}"));
            world.networks.remove(&uid);
        }
        boxed(Vec::new())
    }
}

impl PodRecords for FakeHost {
    fn load<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, HostResult<Option<PodState>>> {
        let key = (namespace.to_string(), name.to_string());
        boxed(Ok(self.world().records.get(&key).cloned()))
    }

    fn save<'a>(&'a self, state: &'a PodState) -> BoxFuture<'a, HostResult<()>> {
        let key = (state.namespace.clone(), state.name.clone());
        self.world().records.insert(key, state.clone());
        boxed(Ok(()))
    }

    fn remove<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, HostResult<()>> {
        let mut world = self.world();
        world.log.push(format!("forget {namespace}/{name}"));
        world
            .records
            .remove(&(namespace.to_string(), name.to_string()));
        boxed(Ok(()))
    }

    fn list(&self) -> BoxFuture<'_, (Vec<PodState>, Vec<String>)> {
        boxed((self.world().records.values().cloned().collect(), Vec::new()))
    }
}

impl Probes for FakeHost {
    fn watch(&self, _: &ObjectKey, _: &api::Container, id: &str, _: IpAddr) {
        self.world().probed.insert(id.to_string());
    }

    fn ready(&self, id: &str) -> bool {
        !self.world().not_ready.contains(id)
    }

    fn kill_request(&self, id: &str) -> Option<KillRequest> {
        self.world().kill_requests.get(id).cloned()
    }

    fn forget(&self, id: &str) {
        let mut world = self.world();
        world.probed.remove(id);
        world.kill_requests.remove(id);
    }
}

impl Exits for FakeHost {
    fn watch(&self, id: &str, _: &ObjectKey) {
        self.world().watched_exits.insert(id.to_string());
    }

    fn forget(&self, id: &str) {
        self.world().watched_exits.remove(id);
    }
}

impl Handlers for FakeHost {
    fn run<'a>(
        &'a self,
        action: &'a Action,
        container_id: &'a str,
        _: IpAddr,
        _: Duration,
    ) -> BoxFuture<'a, Outcome> {
        let mut world = self.world();
        world
            .log
            .push(format!("hook {container_id} {}", action.describe()));
        let failed = world.hook_failures.contains(&container_name(container_id));
        boxed(Outcome::from(if failed {
            Err("hook failed".to_string())
        } else {
            Ok(String::new())
        }))
    }
}

impl Events for FakeHost {
    fn record(&self, event: Event) {
        self.world().events.push(event);
    }
}

impl StatusSink for FakeHost {
    fn report(
        &self,
        key: &ObjectKey,
        _: &Origin,
        phase: Phase,
        message: String,
        _: Option<Details>,
    ) {
        self.world().status.insert(
            key.clone(),
            Reported {
                phase,
                message,
                error: None,
            },
        );
    }

    fn report_error(&self, key: &ObjectKey, _: Option<&Origin>, error: &str) {
        let mut world = self.world();
        let entry = world.status.entry(key.clone()).or_insert(Reported {
            phase: Phase::Pending,
            message: String::new(),
            error: None,
        });
        entry.error = Some(error.to_string());
    }

    fn terminating(&self, key: &ObjectKey, message: &str) {
        if let Some(entry) = self.world().status.get_mut(key) {
            entry.phase = Phase::Terminating;
            entry.message = message.to_string();
        }
    }

    fn remove(&self, key: &ObjectKey) {
        self.world().status.remove(key);
    }
}
