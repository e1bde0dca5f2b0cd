//! Netlink dumps against the real kernel (root).

use std::path::PathBuf;
use std::process::Command;

use berth_e2e::{require_root, unique_name};
use netplugins::netlink::in_netns;
use netplugins::ns::{self, NsKind};

/// Removes the namespace (and its links) even when an assertion fails first.
struct NsGuard(PathBuf);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = ns::remove(&self.0);
    }
}

/// Pods share the host's connection, and a dump that takes more than one
/// read (many links) was still running when the next pod's began: the
/// kernel answered the second with EBUSY and the pod's sandbox failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dumps_of_many_links_on_one_connection_all_answer() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(unique_name("dump"));
    let _guard = NsGuard(path.clone());
    ns::create(NsKind::Net, &path).expect("create netns");
    // Enough links that one dump spans several reads.
    // (veth pairs: this kernel has no dummy links)
    let batch: String = (0..100)
        .map(|i| format!("link add a{i} type veth peer name b{i}\n"))
        .collect();
    let mut ip = Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip -batch");
    std::io::Write::write_all(&mut ip.stdin.take().expect("stdin"), batch.as_bytes())
        .expect("writing the batch");
    assert!(ip.wait().expect("ip").success(), "adding dummy links");

    let counts = in_netns(&path, |netlink| async move {
        let dumps = (0..16).map(|_| netlink.links());
        let results = futures::future::join_all(dumps).await;
        results
            .into_iter()
            .map(|links| links.map(|l| l.len()))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .expect("every dump answered");
    assert!(
        counts.iter().all(|&n| n == 201),
        "lo and 200 veths each time: {counts:?}"
    );
}
