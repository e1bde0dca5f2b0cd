//! `berth logs` on pods the real agent runs (images from a local registry,
//! runc): the log file on disk is CRI-formatted, `berth logs` prints its
//! lines, `--tail` and `--timestamps` shape them, `-f` follows until the
//! container exits, and `--previous` shows the instance before a restart.

mod cli_common;

use std::path::PathBuf;
use std::time::Duration;

use berth_e2e::pods::{DataDir, PodWorld, container, restarts, running_pid};
use berth_e2e::wait_until;
use cli_common::{Follower, err, ok};

/// A hostPath volume `data` (a fresh directory) for the pod's trigger
/// files: (the directory, its `volumes:` YAML, its `volumeMounts:` YAML).
fn data_volume(world: &PodWorld) -> (PathBuf, String, String) {
    let data = world.data_dir("data");
    (data.path, data.volume, DataDir::MOUNT.to_owned())
}

#[test]
fn logs_are_cri_on_disk_and_follow_ends_when_the_container_exits() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let (data, volumes, mounts) = data_volume(&world);
    let mut containers = world.shell_container(
        "app",
        "echo one; echo two; echo three; \
         while [ ! -f /data/more ]; do sleep 0.05; done; echo four; \
         while [ ! -f /data/stop ]; do sleep 0.05; done; echo five",
    );
    containers.push_str(&mounts);
    let spec = format!("  restartPolicy: Never\n{volumes}");
    world.write_manifest("talker.yaml", &world.pod_yaml("talker", &spec, &containers));
    world.wait_pod("talker", "app running", |p| running_pid(p, "app").is_some());

    wait_until(Duration::from_secs(20), "three lines in berth logs", || {
        let out = world.dirs.berth(&["logs", "talker"]);
        (out.status.success() && out.stdout == b"one\ntwo\nthree\n").then_some(())
    });
    let log = world.dirs.root.join("logs/default_talker/app/0.log");
    let raw = std::fs::read_to_string(&log).expect("the container's log file");
    let records: Vec<Vec<&str>> = raw.lines().map(|l| l.splitn(4, ' ').collect()).collect();
    assert_eq!(records.len(), 3, "{raw}");
    for (record, line) in records.iter().zip(["one", "two", "three"]) {
        assert_eq!(&record[1..], ["stdout", "F", line], "{raw}");
        assert!(
            record[0].len() > 20 && record[0].ends_with('Z'),
            "RFC 3339 with nanoseconds: {raw}"
        );
    }
    assert_eq!(
        ok(world.dirs.berth(&["logs", "--tail", "2", "talker/app"])),
        "two\nthree\n"
    );
    let stamped = ok(world
        .dirs
        .berth(&["logs", "--timestamps", "default/talker"]));
    let expected: Vec<String> = records
        .iter()
        .map(|r| format!("{} {}", r[0], r[3]))
        .collect();
    assert_eq!(stamped.lines().collect::<Vec<_>>(), expected);

    let mut follow = Follower::start(&world.dirs, &["logs", "-f", "--tail", "1", "talker"]);
    assert_eq!(follow.next_line("the last line so far"), "three");
    std::fs::write(data.join("more"), "").expect("trigger");
    assert_eq!(follow.next_line("a new line"), "four");
    assert!(follow.is_running(), "-f goes on while the container runs");
    std::fs::write(data.join("stop"), "").expect("trigger");
    assert_eq!(follow.next_line("the container's last line"), "five");
    let status = wait_until(Duration::from_secs(20), "berth logs -f to end", || {
        follow.child.try_wait().expect("try_wait")
    });
    assert!(status.success(), "{status}");
    let pod = world.wait_pod("talker", "app completed", |p| {
        container(p, "app").is_some_and(|c| c["state"]["terminated"]["exitCode"] == 0)
    });
    assert_eq!(restarts(&pod, "app"), Some(0));
    // A follow started after the exit prints everything and ends.
    assert_eq!(
        ok(world.dirs.berth(&["logs", "-f", "talker"])),
        "one\ntwo\nthree\nfour\nfive\n"
    );
}

#[test]
fn previous_shows_the_instance_before_the_last_restart() {
    let mut world = PodWorld::new("runc");
    world.start_agent();
    let (_, volumes, mounts) = data_volume(&world);
    // Each instance counts itself in the volume; the first one fails.
    let mut containers = world.shell_container(
        "app",
        "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; \
         echo instance-$n; if [ $n -lt 2 ]; then exit 3; fi; \
         trap 'exit 0' TERM; sleep 1000 & wait",
    );
    containers.push_str(&mounts);
    world.write_manifest(
        "flaky.yaml",
        &world.pod_yaml("flaky", &volumes, &containers),
    );

    world.wait_pod("flaky", "the restarted app running", |p| {
        restarts(p, "app") == Some(1) && running_pid(p, "app").is_some()
    });
    wait_until(Duration::from_secs(20), "the second instance's log", || {
        (ok(world.dirs.berth(&["logs", "flaky"])) == "instance-2\n").then_some(())
    });
    assert_eq!(
        ok(world.dirs.berth(&["logs", "--previous", "flaky"])),
        "instance-1\n"
    );
    assert_eq!(
        ok(world.dirs.berth(&["logs", "-p", "-f", "flaky/app"])),
        "instance-1\n"
    );

    let text = err(world.dirs.berth(&["logs", "flaky/web"]));
    assert!(
        text.contains("pod default/flaky has no container \"web\"") && text.contains("flaky/app"),
        "{text}"
    );
    let text = err(world.dirs.berth(&["logs", "nope"]));
    assert!(
        text.contains("no pod default/nope") && text.contains("pods: default/flaky"),
        "{text}"
    );
}
