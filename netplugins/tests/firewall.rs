//! The rendered nftables batch against the real `nft` (root). Each check
//! runs `nft` inside a fresh network namespace of its own (`unshare --net`),
//! so the host's firewall is never touched and nothing needs cleaning up.

use std::io::Write;
use std::process::{Command, Stdio};

use berth_e2e::require_root;
use netplugins::firewall::{FirewallSpec, render};
use netplugins::ipam::Attachment;
use netplugins::ports::{PortMapping, Protocol};

/// Applies `batches` in order in a throw-away netns, returns `nft list ruleset`.
fn apply_in_private_netns(batches: &[String]) -> String {
    let script = "set -e; i=0; while [ \"$i\" -lt \"$1\" ]; do IFS= read -r line; printf '%s' \"$line\" | nft -j -f -; i=$((i+1)); done; nft list ruleset";
    let mut child = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            script,
            "sh",
            &batches.len().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for batch in batches {
            writeln!(stdin, "{batch}").expect("write batch");
        }
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "nft rejected the batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn spec(pods: Vec<Attachment>) -> FirewallSpec {
    FirewallSpec {
        table: "bttest".into(),
        bridge: "btbr0".into(),
        subnet: "10.213.0.0/16".parse().expect("net"),
        pods,
    }
}

fn batch(spec: &FirewallSpec) -> String {
    serde_json::to_string(&render(spec).expect("render")).expect("json")
}

#[test]
fn rendered_table_is_accepted_by_nft_and_replaced_atomically() {
    require_root();
    let web = Attachment {
        pod_id: "default_web".into(),
        address: "10.213.0.2".parse().expect("ip"),
        ports: vec![
            PortMapping {
                container_port: 80,
                host_port: 8080,
                host_ip: None,
                protocol: Protocol::Tcp,
            },
            PortMapping {
                container_port: 53,
                host_port: 5353,
                host_ip: Some("127.0.0.1".parse().expect("ip")),
                protocol: Protocol::Udp,
            },
        ],
    };
    let full = batch(&spec(vec![web]));
    // Applied twice: the second replaces the first instead of doubling it.
    let listed = apply_in_private_netns(&[full.clone(), full]);
    assert_eq!(listed.matches("table ip bttest").count(), 1, "{listed}");
    assert_eq!(
        listed.matches("dnat to 10.213.0.2:80").count(),
        1,
        "{listed}"
    );
    assert!(
        listed.contains("tcp dport 8080 dnat to 10.213.0.2:80"),
        "{listed}"
    );
    assert!(
        listed.contains("ip daddr 127.0.0.1 udp dport 5353 dnat to 10.213.0.2:53"),
        "{listed}"
    );
    assert!(
        listed.contains("fib daddr type local jump hostports"),
        "{listed}"
    );
    assert!(
        listed.contains("ip saddr 10.213.0.0/16 oifname != \"btbr0\" masquerade"),
        "{listed}"
    );
    assert!(
        listed.contains("ct status dnat ip saddr 127.0.0.0/8 oifname \"btbr0\" masquerade"),
        "{listed}"
    );

    assert!(
        listed
            .contains("iifname \"btbr0\" ip daddr 127.0.0.0/8 ct state invalid,new,untracked drop"),
        "{listed}"
    );

    // The last pod gone: the table goes too.
    let empty = batch(&spec(vec![]));
    let listed = apply_in_private_netns(&[batch(&spec(vec![])), empty.clone(), empty]);
    assert!(!listed.contains("bttest"), "{listed}");
}

/// A docker-style `FORWARD` chain with a drop policy, made in a namespace
/// of the test's own, is found by the detection the bridge driver runs at
/// start (its warning then appears in every pod's status).
#[test]
fn a_foreign_forward_drop_policy_is_detected() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let netns = dir.path().join(berth_e2e::unique_name("fw"));
    netplugins::ns::create(netplugins::ns::NsKind::Net, &netns).expect("netns");
    struct Remove<'a>(&'a std::path::Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = netplugins::ns::remove(self.0);
        }
    }
    let _guard = Remove(&netns);
    let drops = netplugins::ns::run_in(netplugins::ns::NsKind::Net, &netns, || {
        let status = Command::new("nft")
            .args([
                "add table ip filter; add chain ip filter FORWARD { type filter hook forward priority 0; policy drop; }",
            ])
            .status()
            .expect("nft");
        assert!(status.success(), "nft add table");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(netplugins::firewall::detect_foreign_forward_drops("bt_ours"))
    })
    .expect("run in netns")
    .expect("detect");
    assert_eq!(drops.len(), 1, "{drops:?}");
    assert_eq!(
        (drops[0].table.as_str(), drops[0].chain.as_str()),
        ("filter", "FORWARD")
    );
    assert!(drops[0].warning("berth0").contains("iifname berth0 accept"));
}
