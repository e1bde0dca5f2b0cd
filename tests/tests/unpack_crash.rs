//! A crash at any point of an import never leaves anything that stops the
//! next agent start: the real `berth import` killed (SIGKILL, by PID) in
//! the middle of unpacking a large image, and a 20,000-level-deep staging
//! tree (what a hostile layer left before the unpack limits existed)
//! planted in the store. The real `berth run` then reaches Ready, removes
//! the leftovers without crashing, and the store works.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use berth_e2e::agent::{AgentProcess, REACT};
use berth_e2e::layers::{
    GZIP, LayerBuilder, PLAIN, Tmpfs, busybox_layer, deep_tree, write_oci_layout,
};
use berth_e2e::{TestDirs, require_root, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Far above any pid_max: the "owner" of a planted leftover is gone.
const DEAD_PID: u32 = 4_194_999;

fn agent_config(dirs: &TestDirs) -> PathBuf {
    let path = dirs.temp.path().join("agent.toml");
    std::fs::write(&path, "[network]\ndriver = \"none\"\n").expect("agent config");
    path
}

fn start_agent(dirs: &TestDirs) -> AgentProcess {
    let config = agent_config(dirs);
    AgentProcess::start_ready(dirs, &["--config", config.to_str().expect("utf-8 path")])
}

fn staging(dirs: &TestDirs) -> PathBuf {
    dirs.root.join("snapshots/.staging")
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("entry").path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Fails the test, with the agent's log, if the agent process is gone.
fn assert_running(agent: &AgentProcess) {
    let pid = i32::try_from(agent.pid()).expect("pid fits");
    // A zombie still answers signal 0: look at its state instead.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let dead = kill(Pid::from_raw(pid), None).is_err()
        || state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
    assert!(!dead, "the agent died:\n{}", agent.log());
}

/// Waits until the agent has removed `what` (checked by `gone`), failing
/// early if the agent dies meanwhile.
fn wait_removed(agent: &AgentProcess, what: &str, gone: impl Fn() -> bool) {
    wait_until(REACT, what, || {
        assert_running(agent);
        gone().then_some(())
    });
}

/// The agent process is still there and still reports itself Ready.
fn assert_alive(agent: &AgentProcess, dirs: &TestDirs) {
    assert_running(agent);
    let pid = agent.pid();
    agent.wait_for_status(dirs, "the agent still Ready", |s| {
        s["agentRunning"] == true && s["agent"]["state"] == "Ready" && s["agent"]["pid"] == pid
    });
}

/// Four uncompressed layers of 10,000 one-byte files each: unpacking takes
/// seconds, long enough to be killed in the middle.
fn large_image_archive(dirs: &TestDirs) -> PathBuf {
    let layers: Vec<_> = (0..4)
        .map(|n| {
            let mut builder = LayerBuilder::new().dir(&format!("layer{n}"), 0o755);
            for i in 0..10_000 {
                builder = builder.file(&format!("layer{n}/{i}"), b"x", 0o644);
            }
            builder.build()
        })
        .collect();
    let with_types: Vec<_> = layers.iter().map(|layer| (layer, PLAIN)).collect();
    let layout = write_oci_layout(&dirs.temp.path().join("layout"), "1", &with_types);
    let archive = dirs.temp.path().join("large.tar");
    layout.write_archive(&archive);
    archive
}

#[test]
fn an_import_killed_mid_unpack_leaves_nothing_that_stops_the_agent() {
    require_root();
    let dirs = TestDirs::new();
    let archive = large_image_archive(&dirs);
    let archive = archive.to_str().expect("utf-8 path");
    let import = ["import", archive, "--name", "localhost/large:1"];
    let mut child = dirs
        .berth_command(&import)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning berth import");
    let half_unpacked = wait_until(REACT, "a layer being unpacked", || {
        entries(&staging(&dirs))
            .into_iter()
            .find(|dir| !entries(dir).is_empty())
    });
    let pid = i32::try_from(child.id()).expect("pid fits");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("killing berth import");
    child.wait().expect("reaping berth import");
    assert!(
        half_unpacked.exists(),
        "the kill came after the unpack: nothing was left to test with"
    );

    let agent = start_agent(&dirs);
    wait_until(
        REACT,
        "the agent to remove the half-unpacked layers",
        || entries(&staging(&dirs)).is_empty().then_some(()),
    );
    assert_alive(&agent, &dirs);
    assert_eq!(dirs.berth_json(&["images"]), serde_json::json!([]));

    // The store works: an import runs to its end.
    let layout = write_oci_layout(
        &dirs.temp.path().join("good"),
        "1",
        &[(&busybox_layer(), GZIP)],
    );
    let good = dirs.temp.path().join("good.tar");
    layout.write_archive(&good);
    let output = dirs.berth(&[
        "import",
        good.to_str().expect("utf-8 path"),
        "--name",
        "localhost/good:1",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(dirs.berth_json(&["images"])[0]["name"], "localhost/good:1");
    assert!(agent.stop().success());
}

#[test]
fn a_20000_deep_staging_tree_is_removed_at_start_without_a_crash() {
    require_root();
    let dirs = TestDirs::new();
    // tmpfs: this host's ext4 makes 20,000 nested directories slowly.
    let _root = Tmpfs::mount(&dirs.root, "1g");
    let staging = staging(&dirs);
    std::fs::create_dir_all(&staging).expect("staging dir");
    let leftover = staging.join(format!("{}-{DEAD_PID}-00000000deadbeef", "ab".repeat(32)));
    std::fs::create_dir(&leftover).expect("leftover");
    deep_tree(&leftover, 20_000);

    let agent = start_agent(&dirs);
    wait_removed(&agent, "the agent to remove the deep leftover", || {
        !leftover.exists()
    });
    assert_alive(&agent, &dirs);
    assert!(agent.stop().success());
}
