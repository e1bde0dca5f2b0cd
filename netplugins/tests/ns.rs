//! Namespace files against the real kernel (root): create, join, remove.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_e2e::{require_root, unique_name};
use netplugins::ns::{self, NsKind};

/// Removes the namespace file even when an assertion fails first.
struct NsGuard(PathBuf);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = ns::remove(&self.0);
    }
}

fn inode_of(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat namespace").ino()
}

fn mountinfo_mentions(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let needle = path.to_str().expect("utf-8 path");
    mountinfo.lines().any(|line| line.contains(needle))
}

#[test]
fn net_namespace_file_outlives_its_thread_and_is_joined_by_path() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("netns").join(unique_name("ns"));
    let _guard = NsGuard(path.clone());

    ns::create(NsKind::Net, &path).expect("create");
    assert!(ns::is_namespace(&path));
    let created = inode_of(&path);
    assert_ne!(created, inode_of(Path::new("/proc/self/ns/net")));

    // Creating again keeps the same namespace.
    ns::create(NsKind::Net, &path).expect("create again");
    assert_eq!(inode_of(&path), created);

    // Inside: this thread's namespace is the file's, and only `lo` exists.
    let inside = ns::run_in(NsKind::Net, &path, || {
        inode_of(Path::new("/proc/thread-self/ns/net"))
    })
    .expect("run_in");
    assert_eq!(inside, created);
    let dev = ns::run_in(NsKind::Net, &path, || {
        std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev")
    })
    .expect("run_in");
    let names: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, vec!["lo"]);

    // The caller's thread never moved.
    assert_ne!(
        inode_of(Path::new("/proc/thread-self/ns/net")),
        created,
        "run_in must not switch the calling thread"
    );

    ns::remove(&path).expect("remove");
    assert!(!path.exists());
    assert!(!mountinfo_mentions(&path));
    ns::remove(&path).expect("remove again is fine");
    let err = ns::run_in(NsKind::Net, &path, || ()).expect_err("removed");
    assert!(
        err.to_string().contains(path.to_str().expect("utf-8")),
        "{err}"
    );
}

#[test]
fn uts_and_ipc_namespace_files_isolate_hostname_and_ipc() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let uts = dir.path().join(unique_name("uts"));
    let ipc = dir.path().join(unique_name("ipc"));
    let _guards = (NsGuard(uts.clone()), NsGuard(ipc.clone()));

    ns::create(NsKind::Uts, &uts).expect("create uts");
    ns::create(NsKind::Ipc, &ipc).expect("create ipc");
    assert_ne!(inode_of(&ipc), inode_of(Path::new("/proc/self/ns/ipc")));

    let host_name = nix::unistd::gethostname().expect("hostname");
    let pod_name = unique_name("h");
    let name = pod_name.clone();
    ns::run_in(NsKind::Uts, &uts, move || nix::unistd::sethostname(&name))
        .expect("run_in")
        .expect("sethostname inside");
    let seen = ns::run_in(NsKind::Uts, &uts, nix::unistd::gethostname)
        .expect("run_in")
        .expect("gethostname inside");
    assert_eq!(seen.to_str(), Some(pod_name.as_str()));
    assert_eq!(nix::unistd::gethostname().expect("hostname"), host_name);

    let inside_ipc = ns::run_in(NsKind::Ipc, &ipc, || {
        inode_of(Path::new("/proc/thread-self/ns/ipc"))
    })
    .expect("run_in ipc");
    assert_eq!(inside_ipc, inode_of(&ipc));

    for path in [&uts, &ipc] {
        ns::remove(path).expect("remove");
        assert!(!mountinfo_mentions(path));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_never_move_runtime_threads() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(unique_name("ans"));
    let _guard = NsGuard(path.clone());
    ns::create(NsKind::Net, &path).expect("create");
    let host = inode_of(Path::new("/proc/self/ns/net"));

    for _ in 0..20 {
        let inside = ns::run_in_async(NsKind::Net, path.clone(), || {
            inode_of(Path::new("/proc/thread-self/ns/net"))
        })
        .await
        .expect("run_in_async");
        assert_eq!(inside, inode_of(&path));
        // Whatever worker we resumed on is still in the host namespace.
        assert_eq!(inode_of(Path::new("/proc/thread-self/ns/net")), host);
    }
    let panicked = ns::run_in_async(NsKind::Net, path.clone(), || panic!("boom")).await;
    assert!(matches!(panicked, Err(ns::NsError::Panicked { .. })));
}
