//! Churn (root): 100 pods set up and torn down, 20 at a time, on one bridge
//! network. No address may be held by two live pods, and afterwards nothing
//! of theirs is left: veths, leases, netns mounts, firewall rules.

mod support;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use berth_e2e::require_root;
use futures::StreamExt;
use netplugins::driver::NetworkDriver;
use netplugins::ports::Protocol;
use support::{TestNet, host_port, pod};

const PODS: usize = 100;
const AT_ONCE: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pods_twenty_at_a_time_leave_nothing_behind() {
    require_root();
    let net = TestNet::new();
    let driver = Arc::new(net.driver().await);

    // A pod that stays for the whole run: what is left at the end must be
    // exactly its base state.
    let anchor = driver.setup(&pod("anchor")).await.expect("anchor");
    let base_rules = net.rule_count();
    assert!(base_rules > 0, "the anchor's egress masquerade rule");

    let live: Arc<Mutex<HashSet<IpAddr>>> =
        Arc::new(Mutex::new(anchor.pod_ips().into_iter().collect()));
    let ports: Vec<u16> = (0..PODS / 10).map(|_| support::free_port()).collect();
    let results: Vec<Result<(), String>> = futures::stream::iter(0..PODS)
        .map(|i| {
            let (driver, live, ports) = (driver.clone(), live.clone(), ports.clone());
            async move {
                let mut p = pod(&format!("churn-{i}"));
                if i % 10 == 0 {
                    p.ports = vec![host_port(80, ports[i / 10], Protocol::Tcp, None)];
                }
                let status = driver
                    .setup(&p)
                    .await
                    .map_err(|e| format!("setup {i}: {e}"))?;
                let ip = status.pod_ips()[0];
                if !live.lock().expect("lock").insert(ip) {
                    return Err(format!(
                        "{ip} handed to churn-{i} while another live pod holds it"
                    ));
                }
                driver
                    .check(&p)
                    .await
                    .map_err(|e| format!("check {i}: {e}"))?;
                live.lock().expect("lock").remove(&ip);
                driver
                    .teardown(&p)
                    .await
                    .map_err(|e| format!("teardown {i}: {e}"))
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {PODS} failed: {failures:#?}",
        failures.len()
    );

    let anchor_veth = net.config.veth_name("anchor");
    assert_eq!(
        net.our_links(),
        vec![anchor_veth],
        "only the anchor's veth is left"
    );
    assert_eq!(net.lease_count(), 1, "only the anchor's lease is left");
    let anchor_ns = net.netns("anchor").display().to_string();
    assert_eq!(support::mounts_under(&net.env.netns_dir), vec![anchor_ns]);
    assert_eq!(
        net.rule_count(),
        base_rules,
        "only the base firewall rules are left"
    );

    driver
        .teardown(&pod("anchor"))
        .await
        .expect("teardown anchor");
    assert!(net.our_links().is_empty());
    assert_eq!(net.lease_count(), 0);
    assert!(support::mounts_under(&net.env.netns_dir).is_empty());
    assert_eq!(net.rule_count(), 0);
}
