//! crun on a hybrid-cgroup host: crun 1.8 refuses to run while the cgroup2
//! hierarchy holds a controller (hugetlb on this machine).
//! [`make_crun_work`] moves such controllers to cgroup v1 hierarchies under
//! `/sys/fs/cgroup/<name>` — the layout a plain v1 host has — serialised
//! across test processes with a lock file, and leaves them mounted: the
//! kernel can take minutes to hand a controller back to cgroup2 after an
//! unmount, so unmounting would break the next test (and other helpers'
//! tests running at the same time).

use std::path::Path;

use berth::runtime::CgroupLayout;

/// Mounts each controller crun cannot tolerate on cgroup2 as a cgroup v1
/// hierarchy (see the module doc). Idempotent and serialised across test
/// processes.
pub fn make_crun_work() {
    let layout = CgroupLayout::detect().expect("cgroup layout");
    if layout.crun_blocker().is_none() {
        return;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/berth-test-cgroup-v1.lock")
        .expect("lock file");
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("locking");
    let layout = CgroupLayout::detect().expect("cgroup layout");
    for controller in &layout.v2_controllers {
        let dir = Path::new("/sys/fs/cgroup").join(controller);
        std::fs::create_dir_all(&dir).expect("creating a cgroup mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "cgroup", "-o", controller, "cgroup"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "cannot mount the {controller} controller as cgroup v1 at {} (after an unmount the kernel \
             may take minutes to release it from cgroup2; retry later)",
            dir.display()
        );
    }
    assert_eq!(
        CgroupLayout::detect()
            .expect("cgroup layout")
            .crun_blocker(),
        None,
        "crun still cannot run after moving the controllers to cgroup v1"
    );
}
