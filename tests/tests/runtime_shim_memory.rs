//! The shim's memory with five containers running: VmRSS and PSS of each
//! berth-shim, printed (run with `--nocapture`, or see the report) and held
//! under a ceiling. conmon takes 2.0 MB RSS per container,
//! containerd-shim-runc-v2 13 MB; berth-shim aims for 1 MB. Set
//! BERTH_SHIM_BIN to a release build to measure what users run.

mod runtime_common;

use berth::runtime::ContainerState;
use runtime_common::{Harness, sh};

/// Generous for a debug build; a release build is well below 1 MB (see the
/// figures printed).
const RSS_CEILING_KB: u64 = 2048;

fn kb(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} missing"))
}

#[test]
fn five_shims_stay_small() {
    let mut h = Harness::new("runc");
    let pod = h.pod("mem");
    let mut shims = Vec::new();
    for n in 0..5 {
        let (id, _) = h.run(&pod, &sh(&format!("c{n}"), "echo hello; sleep 1000"));
        match h.runtime.container(&id).expect("container").state {
            ContainerState::Running {
                shim_pid: Some(pid),
                ..
            } => shims.push(pid),
            other => panic!("{other:?}"),
        }
    }
    let mut total_rss = 0;
    let mut total_pss = 0;
    for pid in &shims {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
        let rss = kb(&status, "VmRSS:");
        let pss = kb(&rollup, "Pss:");
        println!("berth-shim {pid}: VmRSS {rss} kB, PSS {pss} kB");
        assert!(rss <= RSS_CEILING_KB, "shim {pid} uses {rss} kB");
        total_rss += rss;
        total_pss += pss;
    }
    println!(
        "5 shims: VmRSS {} kB each on average, PSS {} kB each on average",
        total_rss / 5,
        total_pss / 5
    );
}
