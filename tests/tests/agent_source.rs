//! The agent's directory source end to end: the real `berth run` watches a
//! temp manifest directory while the test edits it the ways users and
//! tools do; after each step `berth status -o json` must show the expected
//! objects and errors within a deadline.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use berth_e2e::agent::{AgentProcess, REACT, file, names_of, object};
use berth_e2e::{TestDirs, write_atomically};
use nix::sys::signal::Signal;
use serde_json::Value;

fn config_map(name: &str, keys: &[&str]) -> String {
    let data: String = keys
        .iter()
        .map(|k| format!("  {k}: \"value of {k}\"\n"))
        .collect();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n{data}")
}

fn pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: main\n    image: localhost/berth/busybox:1.35\n"
    )
}

fn generation(status: &Value, name: &str) -> Option<u64> {
    object(status, "ConfigMap", "default", name)?["generation"].as_u64()
}

fn message(status: &Value, name: &str) -> String {
    object(status, "ConfigMap", "default", name)
        .and_then(|o| o["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn events(dirs: &TestDirs) -> Vec<Value> {
    serde_json::from_value(dirs.berth_json(&["events"])).expect("events are a JSON array")
}

fn count_events(dirs: &TestDirs, subject: &str, reason: &str) -> usize {
    events(dirs)
        .iter()
        .filter(|e| e["subject"] == subject && e["reason"] == reason)
        .count()
}

fn file_errors(status: &Value, dirs: &TestDirs, relative: &str) -> Vec<String> {
    file(status, dirs, relative)
        .and_then(|f| f["diagnostics"].as_array())
        .map(|diags| {
            diags
                .iter()
                .filter(|d| d["severity"] == "error")
                .map(|d| {
                    format!(
                        "{}:{}: {}",
                        d["line"],
                        d["column"],
                        d["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn add_edit_break_fix_rename_over_ignore_leftovers_and_delete() {
    let dirs = TestDirs::new();
    let agent = AgentProcess::start_ready(&dirs, &[]);
    let app = dirs.manifests.join("app.yaml");

    // Add.
    fs::write(
        &app,
        format!("{}---\n{}", config_map("app", &["a"]), pod("web")),
    )
    .expect("write");
    // Nothing serves localhost/berth/busybox: the pod says it pulls, then
    // waits for its image.
    let status = agent.wait_for_status(&dirs, "app and web to appear", |s| {
        generation(s, "app") == Some(1)
            && object(s, "Pod", "default", "web").is_some_and(|web| {
                web["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("ImagePullBackOff"))
            })
    });
    assert_eq!(message(&status, "app"), "1 key: a");
    let web = object(&status, "Pod", "default", "web").expect("web");
    assert_eq!(web["phase"], "Pending");
    assert_eq!(web["source"]["file"].as_str(), app.to_str());
    assert_eq!(web["source"]["line"], 8);
    let app_status = object(&status, "ConfigMap", "default", "app").expect("app");
    assert_eq!(app_status["phase"], "Ready");
    assert_eq!(app_status["observedGeneration"], 1);

    // Edit in place.
    fs::write(
        &app,
        format!("{}---\n{}", config_map("app", &["a", "b"]), pod("web")),
    )
    .expect("write");
    agent.wait_for_status(&dirs, "the edit", |s| {
        generation(s, "app") == Some(2) && message(s, "app") == "2 keys: a, b"
    });

    // Break it: the previous objects stay, same generation, old content.
    fs::write(
        &app,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: [oops\n",
    )
    .expect("write");
    let status = agent.wait_for_status(&dirs, "the parse error", |s| {
        !file_errors(s, &dirs, "app.yaml").is_empty()
    });
    assert_eq!(
        generation(&status, "app"),
        Some(2),
        "last-known-good generation"
    );
    assert_eq!(
        message(&status, "app"),
        "2 keys: a, b",
        "last-known-good content"
    );
    assert!(
        object(&status, "Pod", "default", "web").is_some(),
        "the broken file's pod stays applied"
    );
    assert_eq!(
        file(&status, &dirs, "app.yaml").expect("file")["lastKnownGood"],
        true
    );
    let errors = file_errors(&status, &dirs, "app.yaml");
    assert!(errors[0].starts_with("6:"), "error on line 6: {errors:?}");

    // Fix it (and drop the pod): the pod's deletion runs its cleanup path.
    fs::write(&app, config_map("app", &["a", "b", "c"])).expect("write");
    let status = agent.wait_for_status(&dirs, "the fix", |s| {
        generation(s, "app") == Some(3) && object(s, "Pod", "default", "web").is_none()
    });
    assert!(file_errors(&status, &dirs, "app.yaml").is_empty());
    assert_eq!(
        file(&status, &dirs, "app.yaml").expect("file")["lastKnownGood"],
        false
    );
    assert_eq!(count_events(&dirs, "Pod/default/web", "Deleted"), 1);

    // Atomic rename-over.
    write_atomically(&app, &config_map("app", &["d"]));
    agent.wait_for_status(&dirs, "the renamed-over file", |s| {
        generation(s, "app") == Some(4) && message(s, "app") == "1 key: d"
    });

    // Editor leftovers and backups never count, even with valid content.
    for leftover in [
        "app.yaml~",
        ".app.yaml.swp",
        "app.yaml.bak",
        ".#app.yaml",
        "#app.yaml#",
        "4913",
    ] {
        fs::write(dirs.manifests.join(leftover), config_map("ghost", &["x"]))
            .expect("write leftover");
    }
    fs::write(
        dirs.manifests.join("barrier.yaml"),
        config_map("barrier", &["x"]),
    )
    .expect("write");
    let status = agent.wait_for_status(&dirs, "the barrier object", |s| {
        generation(s, "barrier").is_some()
    });
    assert_eq!(names_of(&status, "ConfigMap"), ["app", "barrier"]);
    let files: Vec<&str> = status["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(files.len(), 2, "only real manifests are files: {files:?}");

    // Delete.
    fs::remove_file(&app).expect("remove");
    let status = agent.wait_for_status(&dirs, "app to go away", |s| {
        object(s, "ConfigMap", "default", "app").is_none()
    });
    assert!(file(&status, &dirs, "app.yaml").is_none());
    assert_eq!(
        count_events(&dirs, "ConfigMap/default/app", "Deleted"),
        1,
        "deleted once, never in between"
    );
    assert_eq!(
        count_events(&dirs, "ConfigMap/default/app", "Applied"),
        4,
        "one apply per generation"
    );
    assert!(agent.stop().success());
}

#[test]
fn a_configmap_volume_style_data_swap_is_one_consistent_change() {
    let dirs = TestDirs::new();
    let m = &dirs.manifests;
    let old = m.join("..2026_01_01_00_00_00.1");
    fs::create_dir(&old).expect("mkdir");
    for (name, file) in [("first", "first.yaml"), ("second", "second.yaml")] {
        fs::write(old.join(file), config_map(name, &["v1"])).expect("write");
        symlink(Path::new("..data").join(file), m.join(file)).expect("symlink");
    }
    symlink("..2026_01_01_00_00_00.1", m.join("..data")).expect("symlink");
    let agent = AgentProcess::start_ready(&dirs, &[]);
    let before = agent.wait_for_status(&dirs, "both objects", |s| {
        generation(s, "first") == Some(1) && generation(s, "second") == Some(1)
    });
    let revision = before["agent"]["desiredRevision"]
        .as_u64()
        .expect("revision");

    // What kubelet's atomic writer does: new timestamped dir, new symlink,
    // rename it over `..data`, remove the old dir.
    let new = m.join("..2026_01_01_00_00_01.2");
    fs::create_dir(&new).expect("mkdir");
    for (name, file) in [("first", "first.yaml"), ("second", "second.yaml")] {
        fs::write(new.join(file), config_map(name, &["v2"])).expect("write");
    }
    symlink("..2026_01_01_00_00_01.2", m.join("..data_tmp")).expect("symlink");
    fs::rename(m.join("..data_tmp"), m.join("..data")).expect("swap");
    fs::remove_dir_all(&old).expect("cleanup");

    let after = agent.wait_for_status(&dirs, "both objects at v2", |s| {
        generation(s, "first") == Some(2) && generation(s, "second") == Some(2)
    });
    assert_eq!(message(&after, "first"), "1 key: v2");
    assert_eq!(
        after["agent"]["desiredRevision"].as_u64(),
        Some(revision + 1),
        "the swap is one new desired state, not a file-by-file sequence"
    );
    assert_eq!(
        after["files"].as_array().map(Vec::len),
        Some(2),
        "hidden dirs are not files"
    );
}

#[test]
fn swapping_the_manifest_directory_symlink_moves_the_watch() {
    let dirs = TestDirs::new();
    let base = dirs.temp.path();
    fs::create_dir(base.join("rev1")).expect("mkdir");
    fs::write(base.join("rev1/one.yaml"), config_map("one", &["x"])).expect("write");
    // The manifest dir itself is a symlink, as git-sync keeps it.
    fs::remove_dir(&dirs.manifests).expect("rmdir");
    symlink(base.join("rev1"), &dirs.manifests).expect("symlink");
    let agent = AgentProcess::start_ready(&dirs, &[]);
    agent.wait_for_status(&dirs, "one", |s| generation(s, "one").is_some());

    fs::create_dir(base.join("rev2")).expect("mkdir");
    fs::write(base.join("rev2/two.yaml"), config_map("two", &["x"])).expect("write");
    symlink(base.join("rev2"), base.join("manifests.tmp")).expect("symlink");
    fs::rename(base.join("manifests.tmp"), &dirs.manifests).expect("swap");
    fs::remove_dir_all(base.join("rev1")).expect("cleanup");
    let status = agent.wait_for_status(&dirs, "the new revision", |s| {
        names_of(s, "ConfigMap") == ["two"]
    });
    assert_eq!(
        object(&status, "ConfigMap", "default", "two").expect("two")["source"]["file"].as_str(),
        dirs.manifests.join("two.yaml").to_str(),
        "paths stay under the configured directory"
    );

    // A plain write into the new target is seen: the watch moved with it.
    fs::write(base.join("rev2/three.yaml"), config_map("three", &["x"])).expect("write");
    agent.wait_for_status(&dirs, "a file written into the new target", |s| {
        names_of(s, "ConfigMap") == ["three", "two"]
    });
}

#[test]
fn the_same_object_in_two_files_stays_with_the_first_and_both_report_it() {
    let dirs = TestDirs::new();
    fs::write(
        dirs.manifests.join("a.yaml"),
        config_map("shared", &["from-a"]),
    )
    .expect("write");
    let agent = AgentProcess::start_ready(&dirs, &[]);
    fs::write(
        dirs.manifests.join("0-newer.yaml"),
        config_map("shared", &["from-newer"]),
    )
    .expect("write");
    let status = agent.wait_for_status(&dirs, "the conflict", |s| {
        file(s, &dirs, "0-newer.yaml")
            .is_some_and(|f| f["conflicts"].as_array().is_some_and(|c| !c.is_empty()))
    });
    assert_eq!(
        message(&status, "shared"),
        "1 key: from-a",
        "the file that held it keeps it"
    );
    let conflicts_of =
        |relative: &str| file(&status, &dirs, relative).expect("file")["conflicts"].to_string();
    assert!(
        conflicts_of("a.yaml").contains("0-newer.yaml"),
        "{}",
        conflicts_of("a.yaml")
    );
    assert!(
        conflicts_of("0-newer.yaml").contains("a.yaml"),
        "{}",
        conflicts_of("0-newer.yaml")
    );
}

#[test]
fn hostile_files_are_errors_and_the_agent_keeps_working() {
    let dirs = TestDirs::new();
    let m = &dirs.manifests;
    fs::write(m.join("good.yaml"), config_map("good", &["x"])).expect("write");
    let agent = AgentProcess::start_ready(&dirs, &[]);

    // 50 MB of valid-looking YAML.
    let mut huge = config_map("huge", &["x"]);
    let line = format!("  # {}\n", "x".repeat(1000));
    while huge.len() < 50 * 1024 * 1024 {
        huge.push_str(&line);
    }
    let huge_size = huge.len();
    fs::write(m.join("huge.yaml"), huge).expect("write");
    // Billion laughs.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("{next}: &{next} [{refs}]\n"));
    }
    fs::write(m.join("bomb.yaml"), bomb).expect("write");
    // Deep nesting, binary garbage, a FIFO, a symlink loop.
    fs::write(
        m.join("deep.yaml"),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .expect("write");
    let garbage: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    fs::write(m.join("garbage.yaml"), garbage).expect("write");
    nix::unistd::mkfifo(
        &m.join("fifo.yaml"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    symlink("loop2.yaml", m.join("loop1.yaml")).expect("symlink");
    symlink("loop1.yaml", m.join("loop2.yaml")).expect("symlink");
    fs::write(m.join("after.yaml"), config_map("after", &["x"])).expect("write");

    let status = agent.wait_for_status(&dirs, "the hostile files to be reported", |s| {
        generation(s, "after").is_some()
            && ["huge.yaml", "bomb.yaml", "deep.yaml", "garbage.yaml"]
                .iter()
                .all(|f| !file_errors(s, &dirs, f).is_empty())
    });
    assert_eq!(names_of(&status, "ConfigMap"), ["after", "good"]);
    assert_eq!(status["agentRunning"], true);
    let huge_errors = file_errors(&status, &dirs, "huge.yaml").join("\n");
    assert!(
        huge_errors.contains(&format!("file is {huge_size} bytes, over the")),
        "{huge_errors}"
    );
    // The agent still reacts afterwards.
    fs::write(m.join("good.yaml"), config_map("good", &["y"])).expect("write");
    agent.wait_for_status(&dirs, "an edit after the hostile files", |s| {
        generation(s, "good") == Some(2)
    });
}

#[test]
fn a_restart_is_not_an_edit_and_deletions_while_down_are_cleaned_up() {
    let dirs = TestDirs::new();
    fs::write(dirs.manifests.join("keep.yaml"), config_map("keep", &["a"])).expect("write");
    fs::write(dirs.manifests.join("gone.yaml"), config_map("gone", &["a"])).expect("write");
    let agent = AgentProcess::start_ready(&dirs, &[]);
    fs::write(dirs.manifests.join("keep.yaml"), config_map("keep", &["b"])).expect("write");
    agent.wait_for_status(&dirs, "the edit", |s| generation(s, "keep") == Some(2));
    assert!(agent.stop().success());
    let stopped = berth_e2e::agent::status_json(&dirs).expect("status after stop");
    assert_eq!(stopped["agentRunning"], false);
    assert_eq!(stopped["agent"]["state"], "Stopped");

    fs::remove_file(dirs.manifests.join("gone.yaml")).expect("remove while down");
    let agent = AgentProcess::start_ready(&dirs, &[]);
    let status = agent.wait_for_status(&dirs, "gone to be cleaned up", |s| {
        object(s, "ConfigMap", "default", "gone").is_none()
    });
    let keep = object(&status, "ConfigMap", "default", "keep").expect("keep");
    assert_eq!(
        (
            keep["generation"].as_u64(),
            keep["observedGeneration"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(
        count_events(&dirs, "ConfigMap/default/keep", "Applied"),
        2,
        "no re-apply after restart"
    );
    assert_eq!(count_events(&dirs, "ConfigMap/default/gone", "Deleted"), 1);
}

#[test]
fn a_second_agent_on_the_same_run_root_is_refused_naming_the_first() {
    let dirs = TestDirs::new();
    let first = AgentProcess::start_ready(&dirs, &[]);
    let mut second = AgentProcess::start(&dirs, &[]);
    let exit = second.wait_exit(REACT);
    assert!(!exit.success());
    let log = second.log();
    assert!(log.contains(&format!("PID {}", first.pid())), "{log}");
    assert!(log.contains("agent.lock"), "{log}");
}

#[test]
fn status_without_any_agent_fails_with_a_clear_message() {
    let dirs = TestDirs::new();
    for command in [&["status"][..], &["events"]] {
        let output = dirs.berth(command);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no berth agent has run"), "{stderr}");
        assert!(stderr.contains("berth run"), "{stderr}");
    }
}

#[test]
fn sighup_resyncs_sigterm_stops_cleanly_and_readiness_reaches_systemd() {
    use std::os::unix::net::UnixDatagram;
    let dirs = TestDirs::new();
    let socket_path = dirs.temp.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("binding the notify socket");
    socket.set_read_timeout(Some(REACT)).expect("timeout");
    let socket_env = socket_path.to_str().expect("utf-8 path");
    let agent = AgentProcess::start_with(&dirs, &[], &[("NOTIFY_SOCKET", socket_env)]);
    let mut buffer = [0u8; 512];
    let received = socket
        .recv(&mut buffer)
        .expect("a notification before the deadline");
    let message = String::from_utf8_lossy(&buffer[..received]);
    assert!(message.contains("READY=1"), "{message}");
    agent.wait_for_status(&dirs, "state Ready", |s| s["agent"]["state"] == "Ready");

    agent.signal(Signal::SIGHUP);
    agent.wait_for_status(&dirs, "the resync event", |_| {
        count_events(&dirs, "agent", "Resync") == 1
    });

    assert!(agent.stop().success(), "SIGTERM is a clean exit");
    assert_eq!(count_events(&dirs, "agent", "Stopped"), 1);
}

#[test]
fn a_missing_manifest_directory_is_a_clear_start_error() {
    let dirs = TestDirs::new();
    fs::remove_dir(&dirs.manifests).expect("rmdir");
    let mut agent = AgentProcess::start(&dirs, &[]);
    assert!(!agent.wait_exit(REACT).success());
    let log = agent.log();
    assert!(
        log.contains(&format!("manifest directory {}", dirs.manifests.display())),
        "{log}"
    );
    assert!(log.contains("does not exist"), "{log}");
}

#[test]
fn a_vanished_manifest_directory_keeps_the_last_state_until_it_returns() {
    let dirs = TestDirs::new();
    fs::write(dirs.manifests.join("a.yaml"), config_map("a", &["x"])).expect("write");
    let agent = AgentProcess::start_ready(&dirs, &[]);
    let moved = dirs.temp.path().join("moved-away");
    fs::rename(&dirs.manifests, &moved).expect("move the directory away");
    let status = agent.wait_for_status(&dirs, "the source error", |s| {
        s["agent"]["sourceError"].as_str().is_some()
    });
    assert!(
        status["agent"]["sourceError"]
            .as_str()
            .is_some_and(|e| e.contains("keeping the last desired state")),
        "{status:#}"
    );
    assert_eq!(names_of(&status, "ConfigMap"), ["a"], "nothing deleted");

    fs::rename(&moved, &dirs.manifests).expect("move it back");
    fs::write(dirs.manifests.join("b.yaml"), config_map("b", &["x"])).expect("write");
    agent.wait_for_status(&dirs, "recovery", |s| {
        s["agent"]["sourceError"].is_null() && names_of(s, "ConfigMap") == ["a", "b"]
    });
}
