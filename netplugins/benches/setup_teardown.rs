//! Pod network setup + teardown time: berth's bridge driver against the
//! same pod (one TCP hostPort) through the CNI chain bridge + host-local +
//! portmap (Debian's containernetworking-plugins), in the same run,
//! alternating so that both see the same machine load.
//!
//! Needs root. Run:
//!
//! ```text
//! cargo bench -p netplugins --bench setup_teardown            # 30 rounds
//! BENCH_ROUNDS=100 cargo bench -p netplugins --bench setup_teardown
//! ```
//!
//! Prints median, min, max and mean per driver and the ratio of medians.
//! Each driver uses a bridge, subnet and nftables table of its own (the
//! same test kit as the privileged tests), removed at the end.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use netplugins::driver::NetworkDriver;
use netplugins::ports::Protocol;

const WARMUP: usize = 3;

async fn round(driver: &dyn NetworkDriver, pod_id: &str, port: u16) -> Duration {
    let mut pod = support::pod(pod_id);
    pod.ports = vec![support::host_port(80, port, Protocol::Tcp, None)];
    let start = Instant::now();
    driver.setup(&pod).await.expect("setup");
    driver.teardown(&pod).await.expect("teardown");
    start.elapsed()
}

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    mean: Duration,
}

fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort();
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    };
    let total: Duration = samples.iter().sum();
    Stats {
        median,
        min: samples[0],
        max: samples[n - 1],
        mean: total / u32::try_from(n).expect("a sane number of rounds"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    berth_e2e::require_root();
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bridge_net = support::TestNet::new();
    let cni_net = support::CniNet::new();
    let (mut bridge_samples, mut cni_samples) = runtime.block_on(async {
        let bridge = bridge_net.driver().await;
        let cni = cni_net.driver().await;
        let port = support::free_port();
        let (mut b, mut c) = (Vec::new(), Vec::new());
        for i in 0..WARMUP + rounds {
            let tb = round(&bridge, &format!("bench-b{i}"), port).await;
            let tc = round(&cni, &format!("bench-c{i}"), port).await;
            if i >= WARMUP {
                b.push(tb);
                c.push(tc);
            }
        }
        (b, c)
    });
    let b = stats(&mut bridge_samples);
    let c = stats(&mut cni_samples);
    println!(
        "pod network setup + teardown, {rounds} rounds each (after {WARMUP} warm-up), one TCP hostPort"
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "driver", "median", "min", "max", "mean"
    );
    for (name, s) in [
        ("berth bridge (netlink + nft)", &b),
        ("CNI bridge+host-local+portmap", &c),
    ] {
        println!(
            "{name:<34} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms",
            ms(s.median),
            ms(s.min),
            ms(s.max),
            ms(s.mean)
        );
    }
    println!(
        "CNI median / berth bridge median = {:.2}x",
        ms(c.median) / ms(b.median)
    );
}
