//! Images that try to hurt the agent through the files it reads out of a
//! container's root filesystem on the host (`/etc/passwd`, `/etc/group`,
//! read to resolve the container's user): a FIFO there used to block the
//! pod's first reconcile forever (the agent never became Ready, the pod
//! never showed in `berth status`, SIGTERM no longer ended the agent); a
//! character device was opened as root on the host; a symlink pointing at
//! a host path must resolve inside the rootfs. Real agent, real runc, real
//! images built here and pulled from a real registry.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::images::{Entry, PushedImage, busybox_image_with};
use berth_e2e::pods::{PodWorld, container, running_pid};

/// The controller's default `shutdown-timeout`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A pod running `image` as uid `uid` (so its `/etc/passwd` is read).
fn pod(world: &PodWorld, name: &str, image: &PushedImage, uid: u32) -> String {
    world.pod_yaml(
        name,
        &format!("  securityContext:\n    runAsUser: {uid}\n"),
        &format!(
            "  - name: app\n    image: {image}\n    command: [\"/bin/sh\", \"-c\", \"exec sleep 1000\"]\n",
            image = image.reference
        ),
    )
}

/// The container's waiting message once it reports `reason`.
fn wait_for_error(world: &PodWorld, name: &str) -> String {
    let pod = world.wait_pod(name, "app waiting with CreateContainerError", |p| {
        container(p, "app")
            .is_some_and(|c| c["state"]["waiting"]["reason"] == "CreateContainerError")
    });
    container(&pod, "app").expect("app")["state"]["waiting"]["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

/// Entries making `path` (absolute, on the host) exist inside an image,
/// with its directories (those busybox already has are left alone).
fn entries_at(path: &Path, contents: &str) -> Vec<Entry> {
    let relative = path.strip_prefix("/").expect("an absolute path");
    let mut entries: Vec<Entry> = relative
        .ancestors()
        .skip(1)
        .filter(|dir| !dir.as_os_str().is_empty() && *dir != Path::new("tmp"))
        .map(|dir| Entry::dir(dir.to_str().expect("utf-8")))
        .collect();
    entries.reverse();
    entries.push(Entry::file(relative.to_str().expect("utf-8"), contents));
    entries
}

#[test]
fn a_fifo_or_device_as_etc_passwd_fails_only_its_pod_and_never_wedges_the_agent() {
    let mut world = PodWorld::new("runc");
    let fifo = busybox_image_with(
        &world.registry,
        "berth/fifo-passwd",
        vec![Entry::fifo("etc/passwd")],
    );
    let device = busybox_image_with(
        &world.registry,
        "berth/device-passwd",
        vec![Entry::char_device("etc/passwd", 1, 3)],
    );
    // The good pod's /etc/passwd is a symlink to a path that exists on the
    // host too, with another home directory: inside the rootfs it must
    // resolve to the image's own file.
    let host_passwd = world.dirs.temp.path().join("host-passwd");
    std::fs::write(&host_passwd, "app:x:4242:4242::/outside:/bin/sh\n").expect("host passwd");
    let mut extra = entries_at(&host_passwd, "app:x:4242:4242::/inside:/bin/sh\n");
    extra.push(Entry::symlink(
        "etc/passwd",
        host_passwd.to_str().expect("utf-8"),
    ));
    let symlinked = busybox_image_with(&world.registry, "berth/symlinked-passwd", extra);

    // One manifest change with all three: the agent must still get Ready.
    world.write_manifest(
        "pods.yaml",
        &[
            pod(&world, "good", &symlinked, 4242),
            pod(&world, "fifo", &fifo, 1000),
            pod(&world, "device", &device, 1000),
        ]
        .join("---\n"),
    );
    world.start_agent();

    let good = world.wait_pod("good", "app running", |p| running_pid(p, "app").is_some());
    assert!(running_pid(&good, "app").is_some());
    let home = world
        .dirs
        .berth(&["exec", "good", "--", "sh", "-c", "echo $HOME; id -u"]);
    assert!(home.status.success(), "{home:?}");
    assert_eq!(
        String::from_utf8_lossy(&home.stdout),
        "/inside\n4242\n",
        "/etc/passwd must resolve inside the container's rootfs"
    );

    let message = wait_for_error(&world, "fifo");
    assert!(
        message.contains("container app: /etc/passwd in the image is a FIFO, not a regular file"),
        "{message}"
    );
    let message = wait_for_error(&world, "device");
    assert!(
        message.contains(
            "container app: /etc/passwd in the image is a character device, not a regular file"
        ),
        "{message}"
    );

    // Deleting the hostile pods works, the good one stays.
    world.write_manifest("pods.yaml", &pod(&world, "good", &symlinked, 4242));
    world.wait_pod_gone("fifo");
    world.wait_pod_gone("device");
    assert!(
        world
            .pod("good")
            .is_some_and(|p| running_pid(&p, "app").is_some())
    );

    // And SIGTERM still ends the agent within its shutdown timeout.
    let mut agent = world.take_agent();
    let started = Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let status = agent.wait_exit(SHUTDOWN_TIMEOUT + Duration::from_secs(2));
    assert!(status.success(), "{status:?} after {:?}", started.elapsed());
    // A new agent adopts the good pod and removes it when the world ends.
    world.start_agent();
}
