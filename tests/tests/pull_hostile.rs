//! Registries that misbehave never wedge or bloat a pull: endless error
//! bodies, oversized manifests and token answers are refused while they are
//! read (the limit named), a host that stops sending is given up after the
//! stall timeout for the next one, and the error names every host tried.
//! The `berth pull` process stays small while a registry floods it.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use berth_e2e::images::{ImageSpec, PushFormat, busybox_entries, busybox_image, push_image};
use berth_e2e::proxy::{Fault, Proxy};
use berth_e2e::pull::{certs_d, pull, pull_err, pull_ok, stored_blob, write_hosts_toml};
use berth_e2e::registry::{Registry, RegistryOptions};
use berth_e2e::{TestDirs, images::Entry, poll_until};

const MIB: u64 = 1 << 20;
/// Short, so the tests do not wait long; the default is 30 s.
const STALL: &str = "2s";
/// Far below the 60 s read timeout berth used to have, far above `STALL`.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);

fn mirrors_then_server(dirs: &TestDirs, registry: &str, mirrors: &[String], server: &str) {
    let mut toml = format!("server = \"{server}\"\n");
    for mirror in mirrors {
        toml.push_str(&format!("[host.\"{mirror}\"]\n"));
    }
    write_hosts_toml(&certs_d(dirs), registry, &toml);
}

/// `berth pull --stall-timeout STALL`, which must end within `deadline`.
fn pull_within(dirs: &TestDirs, image: &str, deadline: Duration) -> (bool, String) {
    let certs = certs_d(dirs);
    std::fs::create_dir_all(&certs).expect("certs.d");
    let certs = certs.to_str().expect("utf-8");
    let mut child = dirs
        .berth_command(&[
            "pull",
            "--hosts-dir",
            certs,
            "--stall-timeout",
            STALL,
            image,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning berth pull");
    let status = poll_until(deadline, || {
        child.try_wait().expect("waiting for berth pull")
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("berth pull {image} did not end within {deadline:?}: it waits on a stalled host");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr piped"), &mut stderr)
        .expect("reading stderr");
    (status.success(), stderr)
}

#[test]
fn an_endless_error_body_is_cut_short_and_the_next_host_used() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/endless-error");
    let mirror = Proxy::start(&registry.host());
    mirror.add_fault("/manifests/", Fault::endless(500), usize::MAX);
    let dirs = TestDirs::new();
    mirrors_then_server(&dirs, &registry.host(), &[mirror.url()], &registry.url());
    let (ok, stderr) = pull_within(&dirs, &image.reference, FAILOVER_DEADLINE);
    assert!(ok, "the server serves after the mirror failed:\n{stderr}");
    assert!(
        stderr.contains(&mirror.url()) && stderr.contains("status 500"),
        "the mirror's failure is reported:\n{stderr}"
    );
    assert!(stored_blob(&dirs, &image.digest).is_some());
}

#[test]
fn a_100_mb_manifest_is_refused_while_read_and_the_next_host_used() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/huge-manifest");
    // One declares its 100 MB, the other sends without a length.
    let declared = Proxy::start(&registry.host());
    declared.add_fault(
        "/manifests/",
        Fault::Flood {
            status: 200,
            length: Some(100 * 1_000_000),
        },
        usize::MAX,
    );
    let endless = Proxy::start(&registry.host());
    endless.add_fault("/manifests/", Fault::endless(200), usize::MAX);
    let dirs = TestDirs::new();
    mirrors_then_server(
        &dirs,
        &registry.host(),
        &[declared.url(), endless.url()],
        &registry.url(),
    );
    let result = pull_ok(&dirs, &image.reference, &[]);
    assert_eq!(result["manifestDigest"], image.digest.as_str());

    // With no good host left, the error names each with the limit.
    let alone = TestDirs::new();
    let down = format!("http://127.0.0.1:{}", berth_e2e::registry::free_port());
    mirrors_then_server(
        &alone,
        &registry.host(),
        &[declared.url(), endless.url()],
        &down,
    );
    let stderr = pull_err(&alone, &image.reference, &[]);
    let path = "/v2/berth/huge-manifest/manifests/latest";
    for mirror in [&declared, &endless] {
        let line = stderr
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("- {}/v2", mirror.url()))
            })
            .unwrap_or_else(|| panic!("no line for {}:\n{stderr}", mirror.url()));
        assert!(
            line.contains(&format!("{}{path}", mirror.url()))
                && line.contains("manifest is larger than the limit of 4 MiB"),
            "host, URL path and limit named: {line}"
        );
    }
    assert!(
        endless.body_bytes("/manifests/") < 64 * MIB,
        "berth stopped reading the endless manifest"
    );
}

/// busybox plus a 4 MiB layer of incompressible bytes; the big layer's digest.
fn big_image(registry: &Registry, name: &str) -> (berth_e2e::images::PushedImage, String) {
    let spec = ImageSpec::new(vec![
        busybox_entries(),
        vec![Entry::noise("data/blob.bin", 4 << 20, 11)],
    ]);
    let image = push_image(registry, name, &[spec], PushFormat::Oci);
    let layer = image.manifests[0].layers[1].digest.clone();
    (image, layer)
}

#[test]
fn a_blob_that_stalls_midway_moves_to_the_next_host_which_resumes_it() {
    let registry = Registry::start(RegistryOptions::default());
    let (image, layer) = big_image(&registry, "berth/stall");
    let stalling = Proxy::start(&registry.host());
    stalling.add_fault(
        &format!("/blobs/{layer}"),
        Fault::StallAfter(MIB),
        usize::MAX,
    );
    // The server, behind a proxy too, to see the Range it is asked for.
    let server = Proxy::start(&registry.host());
    let dirs = TestDirs::new();
    mirrors_then_server(&dirs, &registry.host(), &[stalling.url()], &server.url());

    let (ok, stderr) = pull_within(&dirs, &image.reference, FAILOVER_DEADLINE);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&stalling.url()) && stderr.contains(&format!("no data for {STALL}")),
        "the stalled host is reported with the stall timeout:\n{stderr}"
    );
    assert_eq!(
        stalling.requests_for(&format!("/blobs/{layer}")).len(),
        1,
        "a stalled host is not asked again when another host can serve"
    );
    let resumed = server.requests_for(&format!("/blobs/{layer}"));
    assert_eq!(resumed.len(), 1, "{resumed:?}");
    assert_eq!(
        resumed[0].range.as_deref(),
        Some(format!("bytes={MIB}-").as_str()),
        "the next host resumes from the bytes the stalled one sent"
    );
    assert!(stored_blob(&dirs, &layer).is_some());
}

#[test]
fn a_host_that_accepts_but_never_answers_is_given_up_after_the_stall_timeout() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/silent");
    // The kernel completes the handshake; nobody ever reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("listen");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let dirs = TestDirs::new();
    mirrors_then_server(
        &dirs,
        &registry.host(),
        std::slice::from_ref(&silent_url),
        &registry.url(),
    );
    let (ok, stderr) = pull_within(&dirs, &image.reference, FAILOVER_DEADLINE);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&silent_url) && stderr.contains("no response for 2s"),
        "the silent host is reported:\n{stderr}"
    );
}

#[test]
fn when_every_host_misbehaves_the_error_names_each_host_with_its_failure() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/all-bad");
    let flooding = Proxy::start(&registry.host());
    flooding.add_fault("/v2/", Fault::endless(200), usize::MAX);
    let silent = TcpListener::bind("127.0.0.1:0").expect("listen");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let stalling = Proxy::start(&registry.host());
    stalling.add_fault("/manifests/", Fault::StallAfter(10), usize::MAX);
    let dirs = TestDirs::new();
    mirrors_then_server(
        &dirs,
        &registry.host(),
        &[flooding.url(), silent_url.clone()],
        &stalling.url(),
    );
    let (ok, stderr) = pull_within(&dirs, &image.reference, FAILOVER_DEADLINE);
    assert!(!ok, "no host could serve");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .collect();
    assert_eq!(lines.len(), 3, "one line per host:\n{stderr}");
    assert!(
        lines[0].contains(&flooding.url()) && lines[0].contains("larger than the limit"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(&silent_url) && lines[1].contains("no response for 2s"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(&stalling.url()) && lines[2].contains("no data for 2s"),
        "{}",
        lines[2]
    );
}

/// The peak resident memory (`VmHWM`, kB) of a process, while it runs.
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Well above what this pull needs (28 MB measured: the binary, TLS
/// roots, the 4 MiB manifest cap), far below what reading a flood whole
/// would take.
const PEAK_LIMIT_KB: u64 = 64 * 1024;

#[test]
fn a_registry_flooding_endless_bodies_does_not_grow_berth_pull() {
    // No real registry: every answer is a flood, so nothing else costs memory.
    let upstream = format!("127.0.0.1:{}", berth_e2e::registry::free_port());
    let error_body = Proxy::start(&upstream);
    error_body.add_fault("/v2/", Fault::endless(404), usize::MAX);
    let manifest = Proxy::start(&upstream);
    manifest.add_fault("/v2/", Fault::endless(200), usize::MAX);
    let token_server = Proxy::start(&upstream);
    token_server.add_fault("/token", Fault::endless(200), usize::MAX);
    let wants_token = Proxy::start(&upstream);
    wants_token.require_bearer_token_from(&token_server.url());

    let dirs = TestDirs::new();
    let registry = "flood.invalid:5000";
    mirrors_then_server(
        &dirs,
        registry,
        &[error_body.url(), manifest.url()],
        &wants_token.url(),
    );
    let certs = certs_d(&dirs);
    let mut child = dirs
        .berth_command(&[
            "pull",
            "--hosts-dir",
            certs.to_str().expect("utf-8"),
            "--stall-timeout",
            STALL,
            &format!("{registry}/berth/flood:1"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning berth pull");
    let pid = child.id();
    let mut peak = 0;
    let status = poll_until(FAILOVER_DEADLINE, || {
        if let Some(kb) = peak_rss_kb(pid) {
            peak = peak.max(kb);
        }
        if peak > PEAK_LIMIT_KB {
            return Some(None);
        }
        child.try_wait().expect("waiting").map(Some)
    });
    let status = match status {
        Some(Some(status)) => status,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth pull grew to {peak} kB or did not end: it reads a flood whole");
        }
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    assert!(!status.success(), "nothing can be pulled here");
    assert!(peak > 0, "VmHWM was read while berth pull ran");
    assert!(peak <= PEAK_LIMIT_KB, "peak {peak} kB");
    assert!(
        stderr.contains("status 404")
            && stderr.contains("manifest is larger than the limit of 4 MiB")
            && stderr.contains("token response is larger than the limit of 1 MiB"),
        "each flood is refused with its limit:\n{stderr}"
    );
    eprintln!("berth pull peak VmHWM against three floods: {peak} kB");
}

#[test]
fn a_huge_token_response_fails_that_host_and_the_next_one_serves() {
    let registry = Registry::start(RegistryOptions::default());
    let image = busybox_image(&registry, "berth/huge-token");
    let token_server = Proxy::start(&registry.host());
    token_server.add_fault(
        "/token",
        Fault::Flood {
            status: 200,
            length: Some(8 * MIB),
        },
        usize::MAX,
    );
    let mirror = Proxy::start(&registry.host());
    mirror.require_bearer_token_from(&token_server.url());
    let dirs = TestDirs::new();
    mirrors_then_server(&dirs, &registry.host(), &[mirror.url()], &registry.url());
    let output = pull(&dirs, &image.reference, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/token", token_server.url()))
            && stderr.contains("token response is larger than the limit of 1 MiB"),
        "the token server's URL and the limit are named:\n{stderr}"
    );
}

#[test]
fn a_manifest_whose_config_is_over_the_limit_is_refused_before_downloading_it() {
    let upstream = format!("127.0.0.1:{}", berth_e2e::registry::free_port());
    let proxy = Proxy::start(&upstream);
    let config_size = 9 * MIB;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{config_size},
                       "digest":"sha256:{zeros}"}},
            "layers":[]}}"#,
        zeros = "0".repeat(64)
    );
    proxy.add_fault(
        "/manifests/",
        Fault::Answer {
            status: 200,
            body: manifest,
        },
        usize::MAX,
    );
    let dirs = TestDirs::new();
    let registry = "config.invalid:5000";
    mirrors_then_server(&dirs, registry, &[], &proxy.url());
    let stderr = pull_err(&dirs, &format!("{registry}/berth/big-config:1"), &[]);
    assert!(
        stderr.contains("image config is larger than the limit of 8 MiB")
            && stderr.contains(&format!("sha256:{}", "0".repeat(64))),
        "the config digest and the limit are named:\n{stderr}"
    );
    assert!(
        proxy.requests_for("/blobs/").is_empty(),
        "the config was not downloaded: {:?}",
        proxy.requests()
    );
}
