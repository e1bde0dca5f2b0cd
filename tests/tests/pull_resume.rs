//! Interrupted downloads resume with an HTTP Range request from the bytes
//! already in `content/ingest/`: within one pull, across pulls, after the
//! `berth pull` process is killed, and start over when the server ignores
//! Range. A proxy cuts the connection after a fixed number of body bytes (so
//! the test knows exactly what was sent) or slows the link down.

use std::time::Duration;

use berth_e2e::images::{
    Entry, ImageSpec, PushFormat, PushedImage, busybox_entries, push_image, sha256,
};
use berth_e2e::proxy::{Fault, Proxy};
use berth_e2e::pull::{partial_file, pull_err, pull_ok, stored_blob, use_server};
use berth_e2e::registry::{Registry, RegistryOptions};
use berth_e2e::{TestDirs, wait_until};

const MIB: u64 = 1 << 20;

/// busybox plus a 4 MiB layer of incompressible bytes.
fn big_image(registry: &Registry, name: &str) -> (PushedImage, String, u64) {
    let spec = ImageSpec::new(vec![
        busybox_entries(),
        vec![Entry::noise("data/blob.bin", 4 << 20, 7)],
    ]);
    let image = push_image(registry, name, &[spec], PushFormat::Oci);
    let layer = image.manifests[0].layers[1].clone();
    assert!(layer.size > 4 * MIB, "noise does not compress");
    (image, layer.digest, layer.size)
}

#[test]
fn an_interrupted_pull_resumes_where_it_stopped_without_refetching_bytes() {
    let registry = Registry::start(RegistryOptions::default());
    let (image, layer, size) = big_image(&registry, "berth/resume");
    let proxy = Proxy::start(&registry.host());
    let blob_path = format!("/blobs/{layer}");
    // The first attempt and both in-pull resumes are cut after 1 MiB each:
    // the first pull gives up with 3 MiB kept.
    proxy.add_fault(&blob_path, Fault::CutAfter(MIB), 3);
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &proxy.url());

    let stderr = pull_err(&dirs, &image.reference, &[]);
    assert!(stderr.contains(&layer), "{stderr}");
    let partial = partial_file(&dirs, &layer);
    let kept = std::fs::metadata(&partial)
        .unwrap_or_else(|err| panic!("{} kept for a resume: {err}", partial.display()))
        .len();
    assert_eq!(kept, 3 * MIB, "every byte received is kept");
    assert!(
        stored_blob(&dirs, &layer).is_none(),
        "not visible before verification"
    );

    pull_ok(&dirs, &image.reference, &[]);
    let bytes = stored_blob(&dirs, &layer).expect("the layer is stored");
    assert_eq!(sha256(&bytes), layer);
    assert!(!partial.exists(), "the partial file became the blob");

    let requests = proxy.requests_for(&blob_path);
    let ranges: Vec<Option<String>> = requests.iter().map(|r| r.range.clone()).collect();
    assert_eq!(
        ranges,
        [
            None,
            Some(format!("bytes={}-", MIB)),
            Some(format!("bytes={}-", 2 * MIB)),
            Some(format!("bytes={}-", 3 * MIB)),
        ],
        "each attempt asks for the bytes after those it has"
    );
    assert_eq!(requests[3].status, 206);
    assert_eq!(
        proxy.body_bytes(&blob_path),
        size,
        "no byte of the layer crossed the network twice"
    );
}

#[test]
fn a_server_that_ignores_range_makes_the_download_start_over() {
    let registry = Registry::start(RegistryOptions::default());
    let (image, layer, size) = big_image(&registry, "berth/no-range");
    let proxy = Proxy::start(&registry.host());
    proxy.strip_range();
    let blob_path = format!("/blobs/{layer}");
    proxy.add_fault(&blob_path, Fault::CutAfter(MIB), 1);
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &proxy.url());

    pull_ok(&dirs, &image.reference, &[]);
    let bytes = stored_blob(&dirs, &layer).expect("the layer is stored");
    assert_eq!(sha256(&bytes), layer);
    let requests = proxy.requests_for(&blob_path);
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].range,
        Some(format!("bytes={MIB}-")),
        "a resume was asked for"
    );
    assert_eq!(requests[1].status, 200, "and refused");
    assert_eq!(proxy.body_bytes(&blob_path), MIB + size);
}

#[test]
fn a_pull_killed_mid_download_resumes_from_its_partial_file() {
    let registry = Registry::start(RegistryOptions::default());
    let (image, layer, size) = big_image(&registry, "berth/killed");
    let proxy = Proxy::start(&registry.host());
    let blob_path = format!("/blobs/{layer}");
    // About 2 s for the layer: time to see the partial file grow.
    proxy.add_fault(&blob_path, Fault::Throttle(2 * MIB), 1);
    let dirs = TestDirs::new();
    use_server(&dirs, &registry.host(), &proxy.url());
    let certs_d = berth_e2e::pull::certs_d(&dirs);
    let mut child = dirs
        .berth_command(&[
            "pull",
            "--hosts-dir",
            certs_d.to_str().expect("utf-8"),
            &image.reference,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning berth pull");
    let partial = partial_file(&dirs, &layer);
    wait_until(
        Duration::from_secs(60),
        "the partial layer to pass 512 KiB",
        || {
            let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            (len >= MIB / 2).then_some(())
        },
    );
    // SIGKILL to this child's PID: no chance to clean up or flush anything.
    child.kill().expect("killing berth pull");
    child.wait().expect("reaping berth pull");
    let kept = std::fs::metadata(&partial).expect("partial kept").len();
    assert!(kept < size, "killed before the end ({kept} of {size})");
    assert!(stored_blob(&dirs, &layer).is_none());

    pull_ok(&dirs, &image.reference, &[]);
    let bytes = stored_blob(&dirs, &layer).expect("the layer is stored");
    assert_eq!(sha256(&bytes), layer);
    let requests = proxy.requests_for(&blob_path);
    // Requests are logged as they finish: the killed one may come last.
    let resumed = requests
        .iter()
        .find(|r| r.fault.is_none())
        .expect("the second pull's request for the layer");
    assert_eq!(
        resumed.range,
        Some(format!("bytes={kept}-")),
        "{requests:?}"
    );
    assert_eq!(resumed.status, 206);
    assert_eq!(
        resumed.body_bytes,
        size - kept,
        "only the missing bytes were fetched"
    );
}
