//! The nftables table berth owns for one bridge network, rendered from the
//! full current set of pods. Pure: the same pods always give the same batch,
//! and the batch replaces the whole table atomically
//! (`add table; delete table; add table …` in one transaction), so applying
//! it twice is a no-op and a crash can never leave half a table.
//!
//! ```text
//! table ip <name>
//!   chain prerouting   nat/prerouting dstnat: fib daddr type local jump hostports
//!   chain output       nat/output dstnat:     fib daddr type local jump hostports
//!   chain hostports    [ip daddr HOSTIP] tcp|udp dport HP dnat to POD:CP
//!   chain postrouting  nat/postrouting srcnat:
//!       ip saddr SUBNET oifname != BRIDGE masquerade              pod egress
//!       ct status dnat ip saddr SUBNET oifname BRIDGE masquerade   hairpin
//!       ct status dnat ip saddr 127.0.0.0/8 oifname BRIDGE masquerade
//!   chain input        filter/input:
//!       iifname BRIDGE ip daddr 127.0.0.0/8 ct state new,invalid,untracked drop
//! ```
//!
//! `fib daddr type local` keeps host-port DNAT to packets addressed to this
//! host (any of its addresses, 127.0.0.1 included): a pod's or the host's
//! outbound connection to some other machine's port 8080 is left alone.
//! The hairpin rule lets a pod reach another pod (or itself) through the
//! host's address: without it the answer would come straight from the
//! target pod's address and be dropped. The loopback rule pairs with
//! `route_localnet=1` on the bridge, so `curl 127.0.0.1:HP` works.
//! `route_localnet=1` also lets a pod with CAP_NET_RAW send packets to the
//! host's 127.0.0.1 services through the bridge (CVE-2020-8558): the input
//! rule drops such connections, while replies of DNATed localhost
//! connections (established) still pass.
//! When no pod is left, the batch just deletes the table.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{self, Expression, NamedExpression};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, NAT, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::ipam::Attachment;
use crate::ports::{PortMapping, Protocol};

const FAMILY: NfFamily = NfFamily::IP;
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;
const FILTER: i32 = 0;
/// The jump target for host ports; the only regular (non-base) chain.
const HOSTPORTS: &str = "hostports";

/// What the table is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallSpec {
    pub table: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub pods: Vec<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "pod {pod_id}: hostPort {mapping}: {protocol} host ports are not supported by the bridge driver (TCP and UDP are)"
    )]
    UnsupportedProtocol {
        pod_id: String,
        mapping: PortMapping,
        protocol: Protocol,
    },
    #[error(
        "pod {pod_id}: hostPort {mapping}: an IPv6 hostIP needs IPv6 on the bridge network, which is IPv4 only"
    )]
    Ipv6HostIp {
        pod_id: String,
        mapping: PortMapping,
    },
}

/// Checks a pod's mappings can be expressed by the table.
pub fn check_mappings(pod_id: &str, mappings: &[PortMapping]) -> Result<(), RenderError> {
    for mapping in mappings {
        if mapping.protocol == Protocol::Sctp {
            return Err(RenderError::UnsupportedProtocol {
                pod_id: pod_id.to_string(),
                mapping: *mapping,
                protocol: mapping.protocol,
            });
        }
        if let Some(IpAddr::V6(_)) = mapping.bound_ip() {
            return Err(RenderError::Ipv6HostIp {
                pod_id: pod_id.to_string(),
                mapping: *mapping,
            });
        }
    }
    Ok(())
}

/// The batch that makes the kernel's table exactly `spec`.
pub fn render(spec: &FirewallSpec) -> Result<Nftables<'static>, RenderError> {
    for pod in &spec.pods {
        check_mappings(&pod.pod_id, &pod.ports)?;
    }
    let mut batch = Batch::new();
    let table = || {
        NfListObject::Table(Table {
            family: FAMILY,
            name: spec.table.clone().into(),
            handle: None,
        })
    };
    // `add` first so that `delete` never fails on a missing table.
    batch.add(table());
    batch.delete(table());
    if spec.pods.is_empty() {
        return Ok(batch.to_nftables());
    }
    batch.add(table());

    let chain = |name: &str, hook: Option<(NfChainType, NfHook, i32)>| {
        let (kind, hook, prio) = match hook {
            Some((kind, hook, prio)) => (Some(kind), Some(hook), Some(prio)),
            None => (None, None, None),
        };
        NfListObject::Chain(Chain {
            family: FAMILY,
            table: spec.table.clone().into(),
            name: name.to_string().into(),
            _type: kind,
            hook,
            prio,
            policy: kind.map(|_| NfChainPolicy::Accept),
            ..Chain::default()
        })
    };
    let rule = |chain: &str, expr: Vec<Statement<'static>>| {
        NfListObject::Rule(Rule {
            family: FAMILY,
            table: spec.table.clone().into(),
            chain: chain.to_string().into(),
            expr: Cow::Owned(expr),
            ..Rule::default()
        })
    };

    batch.add(chain(
        "postrouting",
        Some((NfChainType::NAT, NfHook::Postrouting, SRCNAT)),
    ));
    let subnet = prefix(spec.subnet);
    batch.add(rule(
        "postrouting",
        vec![
            eq(payload("ip", "saddr"), subnet.clone()),
            neq(meta(expr::MetaKey::Oifname), text(&spec.bridge)),
            masquerade(),
        ],
    ));

    batch.add(chain(
        "input",
        Some((NfChainType::Filter, NfHook::Input, FILTER)),
    ));
    batch.add(rule(
        "input",
        vec![
            eq(meta(expr::MetaKey::Iifname), text(&spec.bridge)),
            eq(payload("ip", "daddr"), prefix(loopback_net())),
            has_bits(
                ct("state"),
                Expression::List(vec![text("new"), text("invalid"), text("untracked")]),
            ),
            Statement::Drop(None),
        ],
    ));

    let published: Vec<(&Attachment, &PortMapping)> = spec
        .pods
        .iter()
        .flat_map(|pod| pod.ports.iter().map(move |m| (pod, m)))
        .collect();
    if published.is_empty() {
        return Ok(batch.to_nftables());
    }

    for source in [
        subnet,
        prefix(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).expect("8 is a valid prefix")),
    ] {
        batch.add(rule(
            "postrouting",
            vec![
                has_bits(ct("status"), text("dnat")),
                eq(payload("ip", "saddr"), source),
                eq(meta(expr::MetaKey::Oifname), text(&spec.bridge)),
                masquerade(),
            ],
        ));
    }
    batch.add(chain(HOSTPORTS, None));
    for (name, hook) in [
        ("prerouting", NfHook::Prerouting),
        ("output", NfHook::Output),
    ] {
        batch.add(chain(name, Some((NfChainType::NAT, hook, DSTNAT))));
        batch.add(rule(
            name,
            vec![
                eq(fib_daddr_type(), text("local")),
                Statement::Jump(JumpTarget {
                    target: HOSTPORTS.into(),
                }),
            ],
        ));
    }
    for (pod, mapping) in published {
        let mut expr = Vec::new();
        if let Some(host_ip) = mapping.bound_ip() {
            expr.push(eq(payload("ip", "daddr"), text(&host_ip.to_string())));
        }
        expr.push(eq(
            payload(mapping.protocol.as_str(), "dport"),
            Expression::Number(u32::from(mapping.host_port)),
        ));
        expr.push(Statement::DNAT(Some(NAT {
            addr: Some(text(&pod.address.to_string())),
            family: None,
            port: Some(Expression::Number(u32::from(mapping.container_port))),
            flags: None,
        })));
        batch.add(rule(HOSTPORTS, expr));
    }
    Ok(batch.to_nftables())
}

fn loopback_net() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).expect("8 is a valid prefix")
}

fn text(s: &str) -> Expression<'static> {
    Expression::String(s.to_string().into())
}

fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(expr::Payload::PayloadField(
        expr::PayloadField {
            protocol: protocol.to_string().into(),
            field: field.to_string().into(),
        },
    )))
}

fn meta(key: expr::MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(expr::Meta { key }))
}

fn ct(key: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(expr::CT {
        key: key.to_string().into(),
        family: None,
        dir: None,
    }))
}

fn fib_daddr_type() -> Expression<'static> {
    Expression::Named(NamedExpression::Fib(expr::Fib {
        result: expr::FibResult::Type,
        flags: HashSet::from([expr::FibFlag::Daddr]),
    }))
}

fn prefix(net: Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(expr::Prefix {
        addr: Box::new(text(&net.network().to_string())),
        len: u32::from(net.prefix_len()),
    }))
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

/// A flag test (`ct status dnat`): `==` would demand exactly these bits.
fn has_bits(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::IN,
    })
}

fn neq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

fn masquerade() -> Statement<'static> {
    Statement::Masquerade(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(id: &str, address: &str, ports: Vec<PortMapping>) -> Attachment {
        Attachment {
            pod_id: id.into(),
            address: address.parse().expect("ip"),
            ports,
        }
    }

    fn mapping(
        host_port: u16,
        container_port: u16,
        protocol: Protocol,
        host_ip: Option<&str>,
    ) -> PortMapping {
        PortMapping {
            container_port,
            host_port,
            host_ip: host_ip.map(|ip| ip.parse().expect("ip")),
            protocol,
        }
    }

    fn spec(pods: Vec<Attachment>) -> FirewallSpec {
        FirewallSpec {
            table: "bttable".into(),
            bridge: "btbr0".into(),
            subnet: "10.213.0.0/16".parse().expect("net"),
            pods,
        }
    }

    fn json(spec: &FirewallSpec) -> serde_json::Value {
        serde_json::to_value(render(spec).expect("render")).expect("json")
    }

    /// The commands of a batch as (verb, kind) pairs, e.g. ("add", "rule").
    fn commands(value: &serde_json::Value) -> Vec<(String, String)> {
        value["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .map(|cmd| {
                let (verb, obj) = cmd.as_object().expect("object").iter().next().expect("cmd");
                let kind = obj
                    .as_object()
                    .expect("obj")
                    .keys()
                    .next()
                    .expect("kind")
                    .clone();
                (verb.clone(), kind)
            })
            .collect()
    }

    fn rules_in(value: &serde_json::Value, chain: &str) -> Vec<String> {
        value["nftables"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|cmd| cmd.get("add")?.get("rule"))
            .filter(|rule| rule["chain"] == chain)
            .map(|rule| rule["expr"].to_string())
            .collect()
    }

    #[test]
    fn no_pods_means_no_table() {
        let value = json(&spec(vec![]));
        assert_eq!(
            commands(&value),
            vec![
                ("add".into(), "table".into()),
                ("delete".into(), "table".into())
            ]
        );
    }

    #[test]
    fn pods_without_ports_get_egress_masquerade_and_the_localhost_guard() {
        let value = json(&spec(vec![pod("a", "10.213.0.2", vec![])]));
        let adds: Vec<_> = commands(&value).into_iter().skip(2).collect();
        assert_eq!(
            adds,
            vec![
                ("add".into(), "table".into()),
                ("add".into(), "chain".into()),
                ("add".into(), "rule".into()),
                ("add".into(), "chain".into()),
                ("add".into(), "rule".into())
            ]
        );
        let martian = &rules_in(&value, "input")[0];
        assert!(
            martian.contains("127.0.0.0") && martian.contains("drop"),
            "{martian}"
        );
        let egress = &rules_in(&value, "postrouting")[0];
        assert!(egress.contains("\"10.213.0.0\""), "{egress}");
        assert!(egress.contains("\"len\":16"), "{egress}");
        assert!(egress.contains("\"!=\""), "{egress}");
        assert!(egress.contains("btbr0"), "{egress}");
        assert!(egress.contains("masquerade"), "{egress}");
    }

    #[test]
    fn host_ports_become_dnat_rules_behind_a_local_destination_check() {
        let value = json(&spec(vec![
            pod(
                "web",
                "10.213.0.2",
                vec![mapping(8080, 80, Protocol::Tcp, None)],
            ),
            pod(
                "dns",
                "10.213.0.3",
                vec![mapping(5353, 53, Protocol::Udp, Some("127.0.0.1"))],
            ),
        ]));
        let hostports = rules_in(&value, "hostports");
        assert_eq!(hostports.len(), 2);
        assert!(hostports[0].contains("\"tcp\"") && hostports[0].contains("8080"));
        assert!(hostports[0].contains("\"10.213.0.2\"") && hostports[0].contains("\"port\":80"));
        assert!(!hostports[0].contains("daddr"), "no hostIP: every address");
        assert!(hostports[1].contains("\"udp\"") && hostports[1].contains("\"127.0.0.1\""));
        for chain in ["prerouting", "output"] {
            let jump = rules_in(&value, chain);
            assert_eq!(jump.len(), 1);
            assert!(
                jump[0].contains("\"fib\"") && jump[0].contains("\"local\""),
                "{}",
                jump[0]
            );
            assert!(jump[0].contains("hostports"));
        }
        let post = rules_in(&value, "postrouting");
        assert_eq!(post.len(), 3, "egress, hairpin, localhost");
        assert!(post[1].contains("dnat") && post[1].contains("10.213.0.0"));
        assert!(post[2].contains("127.0.0.0"));
    }

    #[test]
    fn rendering_is_deterministic() {
        let pods = vec![pod(
            "web",
            "10.213.0.2",
            vec![mapping(8080, 80, Protocol::Tcp, None)],
        )];
        assert_eq!(json(&spec(pods.clone())), json(&spec(pods)));
    }

    #[test]
    fn unsupported_mappings_name_the_pod() {
        let err = render(&spec(vec![pod(
            "ns_sctp",
            "10.213.0.2",
            vec![mapping(9, 9, Protocol::Sctp, None)],
        )]))
        .expect_err("sctp");
        assert!(err.to_string().contains("ns_sctp"), "{err}");
        let err =
            check_mappings("v6", &[mapping(9, 9, Protocol::Tcp, Some("::1"))]).expect_err("v6");
        assert!(err.to_string().contains("IPv6"), "{err}");
    }
}
