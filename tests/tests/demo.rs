//! `make demo` end to end: `scripts/demo.sh` with the binaries under test
//! (`BERTH_BIN`, so it does not build), on a free port and a subnet of its
//! own. It must succeed, show what it promises — the web page over the
//! hostPort, `berth ps` rows, logs, exec — and leave nothing on the host:
//! no mount, bridge, nftables table, cgroup or state directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_e2e::registry::free_port;
use berth_e2e::{berth_bin, require_root};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The demo takes a few seconds here; this bounds a hang.
const DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn the_demo_shows_a_running_web_pod_and_leaves_nothing_behind() {
    require_root();
    let temp = tempfile::tempdir().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh");
    let port = free_port();
    let subnet = format!("10.218.{}.0/24", std::process::id() % 250);
    let out_path = temp.path().join("demo.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = Command::new("bash")
        .arg(&script)
        .env("BERTH_BIN", berth_bin())
        .env("DEMO_PORT", port.to_string())
        .env("DEMO_SUBNET", &subnet)
        .env_remove("BERTH_ROOT")
        .env_remove("BERTH_RUN_ROOT")
        .env_remove("BERTH_MANIFESTS")
        .env_remove("BERTH_CONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(out)
        .spawn()
        .expect("running scripts/demo.sh");
    // The script names its bridge, table and cgroup parent after its PID.
    let id = child.id();
    let finished =
        berth_e2e::poll_until(DEADLINE, || child.try_wait().expect("waiting for the demo"));
    let Some(status) = finished else {
        // SIGTERM runs the script's cleanup; give it time to finish.
        let pid = i32::try_from(id).expect("pid fits in i32");
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let _ = child.wait();
        panic!(
            "the demo did not finish within {DEADLINE:?}:\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default()
        );
    };
    let output = std::fs::read_to_string(&out_path).expect("demo output");
    assert!(status.success(), "the demo failed ({status}):\n{output}");

    for expected in [
        "<h1>Hello from berth</h1>",
        "$ berth ps",
        "hello from berth",
        "password_length=28",
        "inside: web, pid",
        "\"rootfs\": \"overlay\"",
        "No containers.",
    ] {
        assert!(
            output.contains(expected),
            "{expected:?} missing from:\n{output}"
        );
    }
    assert!(
        !output.contains("correct-horse-battery-staple"),
        "a secret value was printed:\n{output}"
    );
    let ps: Vec<&str> = output
        .lines()
        .skip_while(|l| !l.starts_with("$ berth ps"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    for (pod, container) in [("web", "httpd"), ("hello", "hello"), ("config-demo", "app")] {
        assert!(
            ps.iter().any(|row| {
                let cells: Vec<&str> = row.split_whitespace().collect();
                cells.first() == Some(&pod)
                    && cells.get(1) == Some(&container)
                    && cells.get(3) == Some(&"Running")
                    && cells.last().is_some_and(|ip| ip.starts_with("10.218."))
            }),
            "no running {pod}/{container} with an address in {subnet}:\n{}",
            ps.join("\n")
        );
    }

    let state = output
        .lines()
        .find_map(|l| l.strip_prefix("state: "))
        .and_then(|l| l.split_whitespace().next())
        .map(PathBuf::from)
        .expect("the demo says where its state is");
    assert!(!state.exists(), "{} is left behind", state.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(state.to_str().expect("utf8")),
        "mounts left under {}",
        state.display()
    );
    let bridge = format!("berthdemo{}", id % 100_000);
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} is left behind"
    );
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft list tables");
    let table = format!("berth_demo_{id}");
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains(&table),
        "nftables table {table} is left behind"
    );
    let cgroup = format!("berth-demo-{id}");
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroup mounts")
        .flatten()
    {
        let dir = hierarchy.path().join(&cgroup);
        assert!(!dir.exists(), "cgroup {} is left behind", dir.display());
    }
}
