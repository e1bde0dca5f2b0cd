//! The pod lifecycle through the real agent (`berth run`) with real
//! runc AND crun (`runtimeClassName`), images from a local registry:
//! every case runs once per runtime (`runc::<case>`, `crun::<case>`).

use std::time::Duration;

use berth_e2e::pods::{PodWorld, container, restarts, running_pid};
use berth_e2e::wait_until;

macro_rules! for_each_runtime {
    ($($case:ident),* $(,)?) => {
        mod runc {
            $( #[test] fn $case() { super::$case("runc") } )*
        }
        mod crun {
            $( #[test] fn $case() { super::$case("crun") } )*
        }
    };
}

for_each_runtime!(a_pod_runs_and_writes_to_a_host_path);

fn a_pod_runs_and_writes_to_a_host_path(runtime: &str) {
    let mut world = PodWorld::new(runtime);
    world.start_agent();
    let data = world.dirs.temp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let extra = format!(
        "  volumes:\n  - name: data\n    hostPath:\n      path: {data:?}\n      type: Directory\n"
    );
    let mut containers = world.shell_container(
        "app",
        "echo hello from $(hostname) > /data/out.txt; exec sleep 1000",
    );
    containers.push_str("    volumeMounts:\n    - name: data\n      mountPath: /data\n");
    world.write_manifest("web.yaml", &world.pod_yaml("web", &extra, &containers));

    let pod = world.wait_pod("web", "app running", |p| {
        p["phase"] == "Running" && running_pid(p, "app").is_some()
    });
    let out = wait_until(
        Duration::from_secs(20),
        "the pod to write /data/out.txt",
        || {
            std::fs::read_to_string(data.join("out.txt"))
                .ok()
                .filter(|t| t.ends_with('\n'))
        },
    );
    assert!(out.starts_with("hello from "), "{out}");
    assert_eq!(pod["message"], "1/1 running", "{pod:#}");
    let app = container(&pod, "app").expect("app status");
    assert_eq!(app["runtime"], runtime, "{pod:#}");
    assert_eq!(app["restartCount"], 0);
    assert_eq!(app["imageDigest"], world.image.digest.as_str(), "{pod:#}");
    assert_eq!(restarts(&pod, "app"), Some(0));
    let pid = running_pid(&pod, "app").expect("pid");
    assert!(
        world.processes().iter().any(|p| i64::from(*p) == pid),
        "the container's process {pid} is in the world's cgroup parent"
    );
}
