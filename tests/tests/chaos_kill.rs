//! Chaos: the agent is killed with SIGKILL at random moments (seeded,
//! see `berth_e2e::chaos::Rng`) while pods on a bridge network are
//! created, edited and deleted. After the last kill an agent starts and
//! must converge: every desired pod runs the version its manifest says,
//! with exactly one container instance (runtime state, shim), the pods
//! never touched kept their PIDs, the store keeps its invariants; and once
//! every manifest is removed nothing of the run is left (mounts, veths,
//! netns, IP leases, shims, container processes, cgroups, runtime state).
//!
//! Short version: 5 kills; `BERTH_CHAOS=full` (`make chaos`): 110.

use std::time::{Duration, Instant};

use berth_e2e::chaos::{self, Churn, Rng};
use berth_e2e::crash::{Findings, recovered_invariants};
use berth_e2e::net::NetWorld;
use berth_e2e::{poll_until, require_root};

/// Garbage is collected every second, so what a kill left is cleared
/// while the test watches.
const QUICK_GC: &str = "[store]\ngc-interval = \"1s\"\nleftover-age = \"1s\"\n";
/// How long the last agent may take to bring every pod to its version.
const CONVERGE: Duration = Duration::from_secs(120);
/// The latest moment of a kill after the agent was started, in ms: past
/// its start-up, recovery and a reconcile of every pod.
const MAX_DELAY_MS: u64 = 4000;

#[test]
fn pods_converge_with_one_instance_each_and_nothing_leaks_after_kill_9_at_random_moments() {
    require_root();
    let mut rng = Rng::seeded("chaos kill -9");
    let kills = chaos::rounds(5, 110);
    let mut net = NetWorld::bridge_with(QUICK_GC);
    let mut churn = Churn::new(4, 2);
    net.world.start_agent();
    churn.start_steady(&net);
    net.world.kill_agent();

    let mut table = chaos::table("chaos: kill -9 of the agent during pod churn");
    for round in 1..=kills as u64 {
        let began = Instant::now();
        net.world.spawn_agent_with_env(&[]);
        let ops: Vec<String> = (0..rng.below(3))
            .map(|_| churn.step(&net, &mut rng))
            .collect();
        let delay = rng.below(MAX_DELAY_MS);
        // The random moment of the kill (what is being tested), not a wait
        // for anything.
        std::thread::sleep(Duration::from_millis(delay));
        let mut findings = Findings::default();
        let exited = net.world.agent_mut().try_exit();
        findings.check("agent", exited.is_none(), || {
            format!(
                "the agent ended on its own ({exited:?}):\n{}",
                net.world.agent().log()
            )
        });
        net.world.kill_agent();
        chaos::check_durable(&mut findings, net.root());
        let what = if ops.is_empty() {
            "no change".to_string()
        } else {
            ops.join(", ")
        };
        table.row(chaos::row(
            round,
            "kill -9",
            format!("at {delay} ms; {what}"),
            findings,
            began,
        ));
    }

    let began = Instant::now();
    let mut findings = Findings::default();
    net.world.start_agent();
    churn.check_converged(&mut findings, &net, CONVERGE);
    let network = net.net.network.clone();
    let recovered = || recovered_invariants(net.root(), Some(&network));
    let _ = poll_until(Duration::from_secs(30), || {
        recovered().iter().all(|v| v.holds()).then_some(())
    });
    chaos::invariants(&mut findings, recovered());
    chaos::check_durable(&mut findings, net.root());
    let converged = churn.ops_text();
    churn.remove_all(&mut findings, &net, &[]);
    if !findings.failures.is_empty() {
        println!("--- agent log:\n{}", net.world.agent().log());
    }
    table.row(chaos::row(
        kills as u64 + 1,
        "recover",
        "converge, then remove all".to_string(),
        findings,
        began,
    ));
    let failed = chaos::finish(table, &format!("{kills} kills during {converged}"));
    assert_eq!(failed, 0, "rounds left something (table above)");
}
