//! Containers outlive the agent: the shim survives its spawner being killed
//! with SIGKILL, and a restarted agent (a new `Runtime` on the same state)
//! finds running containers with the same PIDs and learns the real exit
//! status of those that ended meanwhile.

mod runtime_common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth::paths::Paths;
use berth::runtime::config::RuntimeConfig;
use berth::runtime::spec::{HostPathType, PodInfo, Volume, VolumeMount, VolumeSource};
use berth::runtime::{ContainerState, CreateContainer, PodSandbox, Runtime};
use berth_e2e::{shim_bin, unique_name, wait_until};
use runtime_common::{Harness, RUNTIMES, sh};

/// A container that runs until `/data/stop` exists, then exits 5.
const WAIT_FOR_STOP: &str =
    "echo started; while [ ! -e /data/stop ]; do sleep 0.1; done; echo after-stop; exit 5";

#[test]
fn the_shim_survives_its_spawner_being_killed() {
    for runtime in RUNTIMES {
        let mut h = Harness::new(runtime);
        let (pod, _) = h.pod("survivor");
        let (data_dir, _, _) = h.data_volume();
        let id = unique_name("c");
        h.track(&id);
        let layers = std::env::join_paths(&h.layers).expect("layer list");
        let mut spawner = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "spawner",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SPAWNER_HANDLER", runtime)
            .env("SPAWNER_ROOT", &h.dirs.root)
            .env("SPAWNER_RUN_ROOT", &h.dirs.run_root)
            .env("SPAWNER_CGROUP_PARENT", &h.cgroup_parent)
            .env("SPAWNER_POD_UID", &pod.uid)
            .env("SPAWNER_LAYERS", layers)
            .env("SPAWNER_DATA", &data_dir)
            .env("SPAWNER_ID", &id)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the spawner");
        let stdout = spawner.stdout.take().expect("piped");
        let reported = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            // libtest prints "test spawner ... " without a newline first.
            .find_map(|line| line.rsplit_once("started ").map(|(_, pid)| pid.to_string()))
            .expect("the spawner reports the container's pid");
        let pid: i32 = reported.trim().parse().expect("a pid");
        let spawner_pid = i32::try_from(spawner.id()).expect("pid");
        spawner.kill().expect("SIGKILL to the spawner");
        spawner.wait().expect("reaping the spawner");

        let ContainerState::Running {
            pid: running,
            shim_pid: Some(shim_pid),
            shim_alive: true,
        } = h.runtime.container(&id).expect("container").state
        else {
            panic!("{runtime}: the container did not survive its spawner");
        };
        assert_eq!(running, pid, "{runtime}");
        let stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).expect("shim stat");
        let ppid: i32 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .expect("ppid");
        assert_ne!(
            ppid, spawner_pid,
            "{runtime}: the shim is not the spawner's child"
        );

        // Later the container ends; the orphaned shim still records it.
        std::fs::write(data_dir.join("stop"), "").expect("stop file");
        let exit = h.wait_exit(&id);
        assert_eq!(exit.exit_code, 5, "{runtime}: {exit:?}");
        let dir = h.paths.container_logs("default", "survivor", "app");
        let lines = berth::runtime::logs::read_lines(&dir, 0, false).expect("log");
        assert_eq!(lines, ["started", "after-stop"], "{runtime}");
    }
}

/// Not a test on its own: the process `the_shim_survives_its_spawner_being_killed`
/// starts (and kills) to create a container, configured through SPAWNER_*.
#[test]
#[ignore = "helper process for the_shim_survives_its_spawner_being_killed"]
fn spawner() {
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let paths = Paths::new(
        &PathBuf::from(env("SPAWNER_ROOT")),
        &PathBuf::from(env("SPAWNER_RUN_ROOT")),
    );
    let config = RuntimeConfig {
        shim: Some(shim_bin()),
        cgroup_parent: env("SPAWNER_CGROUP_PARENT"),
        ..Default::default()
    };
    let runtime = Runtime::new(paths.clone(), config).expect("runtime");
    let pod = PodInfo {
        namespace: "default".into(),
        name: "survivor".into(),
        uid: env("SPAWNER_POD_UID"),
        hostname: "survivor".into(),
        ..Default::default()
    };
    let sandbox = PodSandbox::at(&paths, &pod, Some(paths.netns().join(&pod.uid)));
    let layers: Vec<PathBuf> = std::env::split_paths(&env("SPAWNER_LAYERS")).collect();
    let volume = Volume {
        name: "data".into(),
        source: VolumeSource::HostPath {
            path: PathBuf::from(env("SPAWNER_DATA")),
            kind: HostPathType::Directory,
        },
    };
    let volumes = runtime
        .prepare_volumes(&pod.uid, &[volume])
        .expect("volumes");
    let mut spec = sh("app", WAIT_FOR_STOP);
    spec.volume_mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: "/data".into(),
        ..Default::default()
    }];
    let handler = env("SPAWNER_HANDLER");
    let id = env("SPAWNER_ID");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let created = tokio
        .block_on(runtime.create_container(CreateContainer {
            id: &id,
            pod: &pod,
            sandbox: &sandbox,
            container: &spec,
            image: None,
            lowerdirs: &layers,
            volumes: &volumes,
            runtime_class: Some(&handler),
            log_path: berth::runtime::logs::instance_log(
                &paths.container_logs("default", "survivor", "app"),
                0,
            ),
            labels: BTreeMap::new(),
        }))
        .expect("container");
    println!("started {}", created.pid);
    // Stay alive, as an agent would, until the test kills this process.
    loop {
        std::thread::park();
    }
}

#[test]
fn a_restarted_agent_adopts_running_and_exited_containers() {
    for runtime in RUNTIMES {
        let mut h = Harness::new(runtime);
        let pod = h.pod("adopt");
        let (data_dir, volume, mount) = h.data_volume();
        let (keeps, _) = h.run(
            &pod,
            &sh(
                "keeps",
                "trap 'exit 0' TERM; while true; do sleep 0.1; done",
            ),
        );
        let mut ends = sh("ends", WAIT_FOR_STOP);
        ends.volume_mounts = vec![mount];
        let (ends_id, _) = h.run_with_volumes(&pod, &ends, &[volume]).expect("started");
        let keeps_pid = h.running_pid(&keeps);

        // The agent is gone now; meanwhile one container ends.
        std::fs::write(data_dir.join("stop"), "").expect("stop file");
        let exit_file = h.paths.shim_dir(&ends_id).join("exit.json");
        wait_until(Duration::from_secs(30), "the exit file", || {
            exit_file.exists().then_some(())
        });

        let restarted = h.restarted_runtime();
        let found: BTreeMap<String, ContainerState> = restarted
            .list()
            .into_iter()
            .map(|c| (c.record.expect("record").container_name, c.state))
            .collect();
        assert_eq!(found.len(), 2, "{runtime}: {found:?}");
        match &found["keeps"] {
            ContainerState::Running {
                pid, shim_alive, ..
            } => {
                assert_eq!(*pid, keeps_pid, "{runtime}: not restarted");
                assert!(shim_alive);
            }
            other => panic!("{runtime}: {other:?}"),
        }
        match &found["ends"] {
            ContainerState::Exited(exit) => assert_eq!(exit.exit_code, 5, "{runtime}"),
            other => panic!("{runtime}: {other:?}"),
        }
        // The restarted agent controls what it adopted.
        let outcome = h
            .block_on(restarted.stop(&keeps, Duration::from_secs(10)))
            .expect("stop");
        assert!(
            !outcome.killed && outcome.exit.exit_code == 0,
            "{runtime}: {outcome:?}"
        );
    }
}

#[test]
fn the_shim_ignores_signals_aimed_at_it() {
    for runtime in RUNTIMES {
        let mut h = Harness::new(runtime);
        let pod = h.pod("stubborn");
        let (id, _) = h.run(&pod, &sh("app", "sleep 1000"));
        let ContainerState::Running {
            pid,
            shim_pid: Some(shim_pid),
            ..
        } = h.runtime.container(&id).expect("container").state
        else {
            panic!("{runtime}: not running");
        };
        let shim = nix::unistd::Pid::from_raw(shim_pid);
        for signal in [
            nix::sys::signal::SIGHUP,
            nix::sys::signal::SIGINT,
            nix::sys::signal::SIGTERM,
        ] {
            nix::sys::signal::kill(shim, signal).expect("signal the shim");
        }
        // Signals are delivered before kill(2) returns for a process that
        // ignores them; a process that did not would be dying now. Prove
        // the shim still works: it records the container's end.
        assert!(matches!(
            h.runtime.container(&id).expect("container").state,
            ContainerState::Running { shim_alive: true, pid: p, .. } if p == pid
        ));
        h.block_on(h.runtime.kill(&id, "SIGKILL")).expect("kill");
        let exit = h.wait_exit(&id);
        assert_eq!(exit.signal, Some(9), "{runtime}: {exit:?}");
    }
}
