//! Pods through the real agent: a [`PodWorld`] per test with its own
//! directories, a local registry serving a busybox image, an agent config
//! (unique cgroup parent, the `none` network driver, a fast back-off) and a
//! `berth run` to drive with manifest files, read through `berth status`.
//!
//! Dropping the world removes its manifests and waits for the agent to
//! remove the pods (so deletion is exercised), then stops the agent, and
//! as a last resort kills whatever is left in its cgroup parent and
//! unmounts whatever is left under its directories.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::agent::{self, AgentProcess};
use crate::images::{PushedImage, busybox_image};
use crate::registry::{Registry, RegistryOptions};
use crate::{TestDirs, require_root, shim_bin, unique_name};

/// How long a test waits for a pod to reach a state.
pub const POD_WAIT: Duration = Duration::from_secs(60);

pub struct PodWorld {
    pub dirs: TestDirs,
    pub registry: Registry,
    pub image: PushedImage,
    pub cgroup_parent: String,
    pub config: PathBuf,
    /// The runtime handler pods name with `runtimeClassName`.
    pub runtime: String,
    agent: Option<AgentProcess>,
}

/// The `gvisor` handler the tests name: Debian's runsc, configured the
/// way a user would (only its path; berth derives the rest).
pub const GVISOR_HANDLER: &str = "[runtime.handlers.gvisor]\npath = \"/usr/bin/runsc\"\n";

/// Agent config for handlers that are not found on PATH by themselves.
fn handler_config(runtime: &str) -> &'static str {
    match runtime {
        "gvisor" => GVISOR_HANDLER,
        _ => "",
    }
}

impl PodWorld {
    /// A world for pods run by `runtime` (`runc`, `crun`, or `gvisor`:
    /// runsc).
    pub fn new(runtime: &str) -> Self {
        Self::with_config(runtime, "")
    }

    /// Like [`Self::new`], with extra agent config TOML appended.
    pub fn with_config(runtime: &str, extra_config: &str) -> Self {
        require_root();
        if runtime == "crun" {
            crate::crun::make_crun_work();
        }
        let handlers = handler_config(runtime);
        let dirs = TestDirs::new();
        let registry = Registry::start(RegistryOptions::default());
        let image = busybox_image(&registry, "berth/busybox");
        let certs_d = dirs.temp.path().join("certs.d");
        crate::pull::write_hosts_toml(
            &certs_d,
            &registry.host(),
            &format!("server = \"{}\"\n", registry.url()),
        );
        let cgroup_parent = unique_name("cg");
        let config = dirs.temp.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[images]\nhosts-dir = {certs_d:?}\n\
                 [runtime]\nshim = {shim:?}\ncgroup-parent = {cgroup_parent:?}\n\
                 [runtime.rlimits]\nnofile = {{ soft = 1024, hard = 4096 }}\n\
                 [network]\ndriver = \"none\"\n\
                 [pods]\nbackoff-initial = \"200ms\"\nbackoff-max = \"1600ms\"\n\
                 {handlers}{extra_config}\n",
                shim = shim_bin(),
            ),
        )
        .expect("writing the agent config");
        Self {
            dirs,
            registry,
            image,
            cgroup_parent,
            config,
            runtime: runtime.to_string(),
            agent: None,
        }
    }

    /// Starts the agent and waits until it is ready.
    pub fn start_agent(&mut self) {
        self.start_agent_with_env(&[]);
    }

    /// Like [`Self::start_agent`], with extra environment variables.
    pub fn start_agent_with_env(&mut self, env: &[(&str, &str)]) {
        let config = self.config.to_str().expect("utf-8 path").to_string();
        self.agent = Some(AgentProcess::start_ready_with(
            &self.dirs,
            &["--config", &config],
            env,
        ));
    }

    /// Like [`Self::start_agent`], with more `berth run` flags.
    pub fn start_agent_with_args(&mut self, args: &[&str]) {
        let config = self.config.to_str().expect("utf-8 path").to_string();
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        self.agent = Some(AgentProcess::start_ready_with(&self.dirs, &all, &[]));
    }

    /// Starts the agent without waiting for it (a test that may crash it
    /// early polls it with [`AgentProcess::try_exit`]).
    pub fn spawn_agent_with_env(&mut self, env: &[(&str, &str)]) {
        let config = self.config.to_str().expect("utf-8 path").to_string();
        self.agent = Some(AgentProcess::start_with(
            &self.dirs,
            &["--config", &config],
            env,
        ));
    }

    pub fn agent_mut(&mut self) -> &mut AgentProcess {
        self.agent.as_mut().expect("the agent runs")
    }

    pub fn agent(&self) -> &AgentProcess {
        self.agent.as_ref().expect("the agent runs")
    }

    /// Hands the running agent to the caller (to signal it and time its
    /// exit); [`Self::start_agent`] starts a new one for the cleanup.
    pub fn take_agent(&mut self) -> AgentProcess {
        self.agent.take().expect("the agent runs")
    }

    /// kill -9 the agent (containers keep running); one that died on
    /// its own already is only forgotten.
    pub fn kill_agent(&mut self) {
        let mut agent = self.agent.take().expect("the agent runs");
        if agent.try_exit().is_none() {
            agent.signal(nix::sys::signal::Signal::SIGKILL);
            agent.wait_exit(agent::REACT);
        }
    }

    /// A fresh directory under the test's temp dir for a pod to write to,
    /// with the YAML that mounts it at `/data` (see [`DataDir`]).
    pub fn data_dir(&self, name: &str) -> DataDir {
        let path = self.dirs.temp.path().join(name);
        std::fs::create_dir_all(&path).expect("creating a data dir");
        DataDir {
            volume: format!(
                "  volumes:\n  - name: data\n    hostPath:\n      path: {path:?}\n      type: Directory\n"
            ),
            path,
        }
    }

    /// Writes manifest `file` atomically (temp file + rename).
    pub fn write_manifest(&self, file: &str, yaml: &str) {
        self.dirs.write_manifest(file, yaml);
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.dirs.manifests.join(file)).expect("removing a manifest");
    }

    /// A pod manifest: `hostNetwork: true`, this world's runtime and image,
    /// `extra_spec` (indented YAML lines under `spec:`) and `containers`
    /// (a YAML list under `containers:`, indented by 2).
    /// Unless `extra_spec` sets it, the grace period is 2 s (a shell as
    /// pid 1 ignores SIGTERM, so every stop would wait it out).
    pub fn pod_yaml(&self, name: &str, extra_spec: &str, containers: &str) -> String {
        let grace = if extra_spec.contains("terminationGracePeriodSeconds") {
            ""
        } else {
            "  terminationGracePeriodSeconds: 2\n"
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  runtimeClassName: {runtime}\n{grace}{extra_spec}  containers:\n{containers}",
            runtime = self.runtime
        )
    }

    /// One container running `script` with `sh -c`, as a YAML list entry.
    pub fn shell_container(&self, name: &str, script: &str) -> String {
        format!(
            "  - name: {name}\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", {script:?}]\n",
            image = self.image.reference
        )
    }

    /// The pod's status object, if it has one.
    pub fn pod(&self, name: &str) -> Option<Value> {
        agent::status_json(&self.dirs)
            .and_then(|status| agent::object(&status, "Pod", "default", name).cloned())
    }

    /// Waits until pod `name`'s status satisfies `predicate`; returns it.
    pub fn wait_pod(&self, name: &str, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        let mut last = None;
        crate::poll_until(POD_WAIT, || {
            last = self.pod(name);
            last.as_ref().filter(|pod| predicate(pod)).cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "timed out after {POD_WAIT:?} waiting for pod {name}: {what}\nlast status: {}\nagent log:\n{}",
                last.map_or_else(|| "<none>".to_owned(), |p| format!("{p:#}")),
                self.agent_log_tail()
            )
        })
    }

    fn agent_log_tail(&self) -> String {
        self.agent
            .as_ref()
            .map(|a| tail(&a.log(), 80))
            .unwrap_or_default()
    }

    /// Waits until the pod has no status any more (its cleanup finished).
    pub fn wait_pod_gone(&self, name: &str) {
        let gone = crate::poll_until(POD_WAIT, || self.pod(name).is_none().then_some(()));
        assert!(
            gone.is_some(),
            "pod {name} was not removed within {POD_WAIT:?}\nagent log:\n{}",
            self.agent_log_tail()
        );
    }

    /// Events about pod `name` from the agent's event log, oldest first.
    pub fn events(&self, name: &str) -> Vec<Value> {
        let subject = format!("Pod/default/{name}");
        let path = self.dirs.run_root.join("events.jsonl");
        let rotated = self.dirs.run_root.join("events.jsonl.1");
        [rotated, path]
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .filter(|e| e["subject"] == subject.as_str())
            .collect()
    }

    /// Every process in this world's cgroup parent (any hierarchy).
    pub fn processes(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in cgroup_dirs(&self.cgroup_parent) {
            for entry in walk(&dir) {
                if let Ok(text) = std::fs::read_to_string(entry.join("cgroup.procs")) {
                    pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Cgroup directories left under this world's parent, in any hierarchy.
    pub fn cgroups(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_parent)
            .into_iter()
            .flat_map(|dir| walk(&dir).into_iter().skip(1))
            .collect()
    }

    /// Mounts at or below this world's directories.
    pub fn mounts(&self) -> Vec<PathBuf> {
        let mounts = berth::runtime::mountinfo::read().expect("mountinfo");
        berth::runtime::mountinfo::mounts_under(&mounts, self.dirs.temp.path())
    }
}

/// A container's entry in a pod status (`details.pod.containers`, then
/// `initContainers`).
pub fn container<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    let details = &pod["details"]["pod"];
    details["containers"]
        .as_array()
        .into_iter()
        .chain(details["initContainers"].as_array())
        .flatten()
        .find(|c| c["name"] == name)
}

/// The pid of a running container, from its status.
pub fn running_pid(pod: &Value, name: &str) -> Option<i64> {
    container(pod, name)?["state"]["running"]["pid"].as_i64()
}

/// The restart count of a container.
pub fn restarts(pod: &Value, name: &str) -> Option<u64> {
    container(pod, name)?["restartCount"].as_u64()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(parent))
        .filter(|p| p.is_dir())
        .collect()
}

/// `dir` and every directory below it, parents first.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(entry.path());
                }
            }
        }
        i += 1;
    }
    out
}

impl Drop for PodWorld {
    fn drop(&mut self) {
        if self.agent.is_some() {
            if let Ok(entries) = std::fs::read_dir(&self.dirs.manifests) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            // Best effort: whatever is left is removed by force below.
            let _ = crate::poll_until(POD_WAIT, || {
                agent::status_json(&self.dirs)
                    .map(|s| agent::names_of(&s, "Pod"))
                    .unwrap_or_default()
                    .is_empty()
                    .then_some(())
            });
            // Dropping stops it (SIGTERM, then SIGKILL) without panicking:
            // a panic here, while a failed test unwinds, would abort the run
            // before the cleanup below.
            drop(self.agent.take());
        }
        // Last resort, so a failed test leaves nothing running.
        for pid in self.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = crate::poll_until(Duration::from_secs(10), || {
            self.processes().is_empty().then_some(())
        });
        let mut cgroups = self.cgroups();
        cgroups.reverse();
        for dir in cgroups.into_iter().chain(cgroup_dirs(&self.cgroup_parent)) {
            let _ = std::fs::remove_dir(dir);
        }
        for mount in self.mounts() {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A host directory a pod writes its findings to: `volume` goes into the
/// pod's spec (`extra_spec`), [`DataDir::MOUNT`] after a container entry.
pub struct DataDir {
    pub path: PathBuf,
    pub volume: String,
}

impl DataDir {
    /// The `volumeMounts` of a container entry: the directory at `/data`.
    pub const MOUNT: &str = "    volumeMounts:\n    - name: data\n      mountPath: /data\n";

    /// Waits for the pod to write `file` (written last, by a rename, so it
    /// is complete) and returns its contents.
    pub fn wait_file(&self, file: &str) -> String {
        let path = self.path.join(file);
        crate::wait_until(POD_WAIT, &format!("{}", path.display()), || {
            std::fs::read_to_string(&path).ok()
        })
    }

    /// The contents of `file`, which must exist.
    pub fn read(&self, file: &str) -> String {
        let path = self.path.join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
    }
}
