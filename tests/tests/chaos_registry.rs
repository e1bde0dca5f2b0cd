//! Chaos: registry faults through the kit's fault-injecting proxy on
//! loopback — refused connection, a stall mid-blob, a truncated blob, a
//! blob with the wrong digest, 500 and 503 with `Retry-After`, a slow
//! trickle — once with the faulty host as a mirror before the real
//! server (`hosts.toml`), once as the only host. Each pull must end in the
//! next host (the image complete) or a clear error naming the host, never
//! a corrupt or half-visible image; afterwards `berth prune` works, the
//! store keeps its invariants, and a healthy pull leaves no leftovers.
//!
//! Short version: every fault in both modes once (offsets from the seeded
//! `Rng`); `BERTH_CHAOS=full` (`make chaos`): three times each.

use std::time::Instant;

use berth_e2e::TestDirs;
use berth_e2e::chaos::{self, Rng};
use berth_e2e::crash::{Findings, durable_invariants, recovered_invariants};
use berth_e2e::images::{Entry, ImageSpec, PushFormat, PushedImage, busybox_entries, push_image};
use berth_e2e::proxy::{Fault, Proxy};
use berth_e2e::pull::{certs_d, write_hosts_toml};
use berth_e2e::registry::{Registry, RegistryOptions, free_port};

/// A host that sends nothing this long is given up.
const STALL: &str = "2s";
/// The noise layer (incompressible): faults hit it mid-transfer.
const NOISE: usize = 512 << 10;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Refused,
    Stall,
    Truncate,
    WrongDigest,
    Error500,
    Error503,
    Trickle,
}

const KINDS: [Kind; 7] = [
    Kind::Refused,
    Kind::Stall,
    Kind::Truncate,
    Kind::WrongDigest,
    Kind::Error500,
    Kind::Error503,
    Kind::Trickle,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Refused => "refused",
            Kind::Stall => "stall mid-blob",
            Kind::Truncate => "truncated blob",
            Kind::WrongDigest => "wrong digest",
            Kind::Error500 => "500 Retry-After",
            Kind::Error503 => "503 Retry-After",
            Kind::Trickle => "slow trickle",
        }
    }
}

/// The faulty host of one round: its URL and what it did.
struct Faulty {
    url: String,
    host: String,
    detail: String,
    proxy: Option<Proxy>,
}

impl Faulty {
    /// Whether the client asked the faulty host for the rest of a blob
    /// (`Range`) after a cut or a stall.
    fn resumed(&self) -> bool {
        self.proxy.as_ref().is_some_and(|proxy| {
            proxy
                .requests_for("/blobs/")
                .iter()
                .any(|r| r.range.is_some())
        })
    }
}

fn faulty(kind: Kind, registry: &Registry, image: &PushedImage, rng: &mut Rng) -> Faulty {
    if let Kind::Refused = kind {
        let host = format!("127.0.0.1:{}", free_port());
        return Faulty {
            url: format!("http://{host}"),
            detail: format!("nothing listens on {host}"),
            host,
            proxy: None,
        };
    }
    let proxy = Proxy::start(&registry.host());
    let noise = &image.manifests[0].layers[1];
    let at = 1 + rng.below(noise.size - 1);
    let blob = format!("/blobs/{}", noise.digest);
    let target = if rng.below(2) == 0 {
        "/manifests/"
    } else {
        "/blobs/"
    };
    let (path, fault, detail) = match kind {
        Kind::Refused => unreachable!("handled above"),
        Kind::Stall => (blob, Fault::StallAfter(at), format!("after {at} bytes")),
        Kind::Truncate => (blob, Fault::CutAfter(at), format!("after {at} bytes")),
        Kind::WrongDigest => (blob, Fault::Corrupt, "first 64 bytes flipped".to_string()),
        Kind::Error500 | Kind::Error503 => {
            let status = if let Kind::Error500 = kind { 500 } else { 503 };
            let seconds = 1 + rng.below(30);
            let fault = Fault::RetryAfter { status, seconds };
            (
                target.to_string(),
                fault,
                format!("on {target}, {seconds} s"),
            )
        }
        Kind::Trickle => {
            let rate = (256 << 10) + rng.below(256 << 10);
            (blob, Fault::Throttle(rate), format!("{} KiB/s", rate >> 10))
        }
    };
    proxy.add_fault(&path, fault, usize::MAX);
    Faulty {
        url: proxy.url(),
        host: proxy.host(),
        detail,
        proxy: Some(proxy),
    }
}

fn pull(dirs: &TestDirs, image: &str) -> std::process::Output {
    berth_e2e::pull::pull(dirs, image, &["--stall-timeout", STALL])
}

/// Whether `berth images` lists `reference`.
fn listed(dirs: &TestDirs, reference: &str) -> bool {
    dirs.berth_json(&["images"]).to_string().contains(reference)
}

/// One round: a pull through `kind`'s faulty host, as a mirror before the
/// registry (`mirror`) or as the only host; then the checks.
fn round(
    kind: Kind,
    mirror: bool,
    registry: &Registry,
    image: &PushedImage,
    rng: &mut Rng,
) -> (String, Findings) {
    let dirs = TestDirs::new();
    let bad = faulty(kind, registry, image, rng);
    let hosts = if mirror {
        format!("server = \"{}\"\n[host.\"{}\"]\n", registry.url(), bad.url)
    } else {
        format!("server = \"{}\"\n", bad.url)
    };
    write_hosts_toml(&certs_d(&dirs), &registry.host(), &hosts);
    let mut findings = Findings::default();
    let output = pull(&dirs, &image.reference);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // A trickle is slow, not broken: the pull completes through it. A
    // host that cuts or stalls each answer after some bytes still moves
    // the download on: resumed from where it stopped, it may complete.
    let must_succeed = mirror || matches!(kind, Kind::Trickle);
    let may_succeed =
        must_succeed || (matches!(kind, Kind::Stall | Kind::Truncate) && bad.resumed());
    let outcome = if output.status.success() {
        findings.check("outcome", may_succeed, || {
            format!("the pull succeeded through the faulty host alone:\n{stderr}")
        });
        if must_succeed {
            "pulled"
        } else {
            "resumed, pulled"
        }
    } else {
        findings.check("outcome", !must_succeed, || {
            format!("the pull failed though a good host was next:\n{stderr}")
        });
        findings.check("outcome", output.status.code() == Some(1), || {
            format!("berth pull ended with {}:\n{stderr}", output.status)
        });
        findings.check("outcome", stderr.contains(&bad.host), || {
            format!("the error does not name the host {}:\n{stderr}", bad.host)
        });
        "clear error"
    };
    let visible = listed(&dirs, &image.reference);
    chaos::left(
        &mut findings,
        "invariant",
        if visible == output.status.success() {
            Vec::new()
        } else {
            vec![format!(
                "the image is listed: {visible}, pulled: {}",
                output.status
            )]
        },
    );
    chaos::invariants(&mut findings, durable_invariants(&dirs.root));
    let prune = dirs.berth(&["prune"]);
    findings.check("prune", prune.status.success(), || {
        format!("berth prune: {}", String::from_utf8_lossy(&prune.stderr))
    });
    chaos::invariants(&mut findings, durable_invariants(&dirs.root));
    // After a failure, a healthy pull, with nothing left of the faulty one.
    if output.status.success() {
        chaos::invariants(&mut findings, recovered_invariants(&dirs.root, None));
        return finish(kind, mirror, &bad, outcome, &stderr, findings);
    }
    write_hosts_toml(
        &certs_d(&dirs),
        &registry.host(),
        &format!("server = \"{}\"\n", registry.url()),
    );
    let healthy = pull(&dirs, &image.reference);
    findings.check("healthy pull", healthy.status.success(), || {
        format!(
            "a healthy pull after the fault: {}",
            String::from_utf8_lossy(&healthy.stderr)
        )
    });
    chaos::invariants(&mut findings, recovered_invariants(&dirs.root, None));
    chaos::invariants(&mut findings, durable_invariants(&dirs.root));
    finish(kind, mirror, &bad, outcome, &stderr, findings)
}

/// The round's description and findings (the faulty pull's stderr
/// printed when it failed a check).
fn finish(
    kind: Kind,
    mirror: bool,
    bad: &Faulty,
    outcome: &str,
    stderr: &str,
    findings: Findings,
) -> (String, Findings) {
    if !findings.failures.is_empty() {
        println!("--- the faulty pull's stderr:\n{stderr}");
    }
    let mode = if mirror { "mirror" } else { "alone" };
    (
        format!("{mode}: {} ({}) → {outcome}", kind.name(), bad.detail),
        findings,
    )
}

#[test]
fn registry_faults_end_in_the_next_host_or_a_clear_error_and_never_in_a_broken_store() {
    let mut rng = Rng::seeded("chaos registry");
    let registry = Registry::start(RegistryOptions::default());
    let spec = ImageSpec::new(vec![
        busybox_entries(),
        vec![Entry::dir("data"), Entry::noise("data/noise", NOISE, 7)],
        vec![Entry::dir("etc"), Entry::file("etc/chaos", "registry\n")],
    ]);
    let image = push_image(&registry, "chaos/registry", &[spec], PushFormat::Oci);
    let repeats = chaos::rounds(1, 3);
    let mut table = chaos::table("chaos: registry faults");
    let mut n = 0;
    for _ in 0..repeats {
        for kind in KINDS {
            for mirror in [true, false] {
                let began = Instant::now();
                n += 1;
                let (what, findings) = round(kind, mirror, &registry, &image, &mut rng);
                table.row(chaos::row(n, kind.name(), what, findings, began));
            }
        }
    }
    let failed = chaos::finish(
        table,
        &format!("{n} faulty pulls ({} kinds of fault)", KINDS.len()),
    );
    assert_eq!(failed, 0, "rounds left something (table above)");
}
