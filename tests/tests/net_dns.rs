//! DNS and names through the real agent: a bridge pod's `/etc/resolv.conf`
//! follows the host's resolvers (or `dnsPolicy: None` + `dnsConfig`), its
//! `/etc/hosts` has its own IP and hostname plus `hostAliases`, and a
//! host-network pod gets the host's resolv.conf unchanged.

use std::net::IpAddr;

use berth_e2e::net::{DataDir, NetWorld};

/// Copies the pod's name files to /data; `hostname` is written last.
const SCRIPT: &str = "cat /etc/resolv.conf > /data/resolv; cat /etc/hosts > /data/hosts; \
                      hostname > /data/hostname.tmp; mv /data/hostname.tmp /data/hostname; exec sleep 3600";

const ALIASES: &str = "  hostAliases:\n  - ip: 10.1.2.3\n    hostnames: [db, db.local]\n  - ip: 10.1.2.4\n    hostnames: [cache]\n";

fn lines_starting<'a>(text: &'a str, keyword: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| line.strip_prefix(keyword))
        .map(str::trim)
        .collect()
}

/// Whether `hosts` maps `ip` to every one of `names` on one line.
fn maps(hosts: &str, ip: &str, names: &[&str]) -> bool {
    hosts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.next() == Some(ip) && {
            let rest: Vec<&str> = fields.collect();
            names.iter().all(|n| rest.contains(n))
        }
    })
}

fn start_pod(net: &NetWorld, name: &str, extra_spec: &str, host_network: bool) -> DataDir {
    let data = net.data_dir(name);
    let mut containers = net.world.shell_container("app", SCRIPT);
    containers.push_str(DataDir::MOUNT);
    let spec = format!("{}{extra_spec}", data.volume);
    // PodWorld's manifests are hostNetwork pods, NetWorld's are not.
    let yaml = if host_network {
        net.world.pod_yaml(name, &spec, &containers)
    } else {
        net.pod_yaml(name, &spec, &containers)
    };
    net.world.write_manifest(&format!("{name}.yaml"), &yaml);
    data
}

#[test]
fn resolv_conf_and_hosts_follow_the_host_the_dns_settings_and_host_aliases() {
    let mut net = NetWorld::bridge();
    net.world.start_agent();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_servers: Vec<&str> = lines_starting(&host_resolv, "nameserver")
        .into_iter()
        .filter(|ip| ip.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback()))
        .collect();

    let default = start_pod(&net, "dns-default", ALIASES, false);
    let none = start_pod(
        &net,
        "dns-none",
        "  dnsPolicy: \"None\"\n  dnsConfig:\n    nameservers: [192.0.2.53]\n    searches: [example.test]\n    options:\n    - name: ndots\n      value: \"2\"\n",
        false,
    );
    let host = start_pod(&net, "dns-host", ALIASES, true);

    // Default policy: the host's reachable resolvers, never a loopback one.
    assert_eq!(default.wait_file("hostname").trim(), "dns-default");
    let (_, ip) = net.wait_running_ip("dns-default");
    let resolv = default.read("resolv");
    let servers = lines_starting(&resolv, "nameserver");
    for server in &host_servers {
        assert!(servers.contains(server), "{server} missing:\n{resolv}");
    }
    assert!(!servers.is_empty(), "{resolv}");
    assert!(
        servers
            .iter()
            .all(|s| s.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback())),
        "a pod cannot reach the host's loopback resolvers:\n{resolv}"
    );
    let hosts = default.read("hosts");
    assert!(
        maps(&hosts, &ip.to_string(), &["dns-default"]),
        "its own IP and name:\n{hosts}"
    );
    assert!(maps(&hosts, "10.1.2.3", &["db", "db.local"]), "{hosts}");
    assert!(maps(&hosts, "10.1.2.4", &["cache"]), "{hosts}");
    assert!(maps(&hosts, "127.0.0.1", &["localhost"]), "{hosts}");

    // dnsPolicy None: exactly dnsConfig.
    none.wait_file("hostname");
    let resolv = none.read("resolv");
    assert_eq!(
        lines_starting(&resolv, "nameserver"),
        ["192.0.2.53"],
        "{resolv}"
    );
    assert_eq!(
        lines_starting(&resolv, "search"),
        ["example.test"],
        "{resolv}"
    );
    assert_eq!(lines_starting(&resolv, "options"), ["ndots:2"], "{resolv}");

    // hostNetwork: the host's file as it is, and the host's hosts + aliases.
    host.wait_file("hostname");
    assert_eq!(host.read("resolv"), host_resolv);
    let hosts = host.read("hosts");
    assert!(maps(&hosts, "10.1.2.3", &["db", "db.local"]), "{hosts}");
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for line in host_hosts.lines().filter(|l| !l.trim().is_empty()) {
        assert!(hosts.contains(line), "host line {line:?} missing:\n{hosts}");
    }
}
