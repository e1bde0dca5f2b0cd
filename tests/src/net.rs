//! Pod networking through the real agent: a [`BridgeNet`] of the test's own
//! (bridge, subnet, veth prefix, nft table, IPAM network name — all unique,
//! so tests run in parallel with each other and with other suites on this
//! machine), a [`NetWorld`] that runs `berth run` on it, and the probes the
//! tests count leftovers with (veths on the bridge, leases, netns mounts,
//! firewall rules) or talk to pods with (TCP/UDP from the host or from
//! inside a pod's netns).
//!
//! Dropping a [`NetWorld`] first drops its [`PodWorld`] (manifests removed,
//! the agent removes the pods, then stops), then removes whatever the agent
//! left of the network: veths with the test's prefix, the bridge, the nft
//! table. Dropping a [`BridgeNet`] alone does the latter. A CNI world whose
//! agent is not running any more DELs its pods from the test process first.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

pub use crate::pods::DataDir;
use crate::pods::PodWorld;
use crate::{poll_until, unique_name};

/// How long a connection attempt or a read may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running {program}: {err}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Link names in the host namespace.
pub fn host_links() -> Vec<String> {
    link_names(&run("ip", &["-o", "link", "show"]))
}

/// Names of the links attached to `bridge` (none if it does not exist).
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("running ip");
    link_names(&String::from_utf8_lossy(&out.stdout))
}

/// Interface names of `ip -o link` output (`3: eth0@if4: <...>`).
pub fn link_names(ip_o_link: &str) -> Vec<String> {
    ip_o_link
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .map(|name| {
            name.trim()
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Mount points at or below `dir` (from this process's mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_str().expect("utf-8 path").to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("reading mountinfo")
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount| mount.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Rules in nftables table `ip <table>`; `None` when the table does not
/// exist.
pub fn nft_rule_count(table: &str) -> Option<usize> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "ip", table])
        .output()
        .expect("running nft");
    if !out.status.success() {
        return None;
    }
    let value: Value = serde_json::from_slice(&out.stdout).expect("nft prints JSON");
    Some(
        value["nftables"]
            .as_array()
            .expect("nft JSON holds an array")
            .iter()
            .filter(|obj| obj.get("rule").is_some())
            .count(),
    )
}

/// A /24 inside 10.215.0.0–10.254.255.0 that no route of this host uses.
/// Random, so parallel test processes spread over 10 000 subnets; the agent
/// refuses a subnet that overlaps a route, so a collision fails loudly.
pub fn free_subnet() -> String {
    let routes = run("ip", &["-4", "route", "show", "table", "all"]);
    loop {
        let a = 215 + random_byte() % 40;
        let b = random_byte();
        if !routes.contains(&format!("10.{a}.{b}.")) {
            return format!("10.{a}.{b}.0/24");
        }
    }
}

fn random_byte() -> u8 {
    // No rand crate needed: the clock's nanoseconds, the pid and a counter
    // are random enough to spread parallel tests.
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .subsec_nanos();
    let mixed =
        nanos ^ std::process::id().rotate_left(13) ^ COUNTER.fetch_add(0x9e37, Ordering::Relaxed);
    mixed.wrapping_mul(2_654_435_761).to_be_bytes()[0]
}

/// A short unique veth prefix (`bt` + 5 hex digits); the driver appends a
/// hash of the pod id up to 15 characters.
pub fn veth_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "bt{:05x}",
        (std::process::id().wrapping_mul(16) + n) & 0xfffff
    )
}

/// A port no one on the host uses right now (TCP and UDP).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("0.0.0.0:0").expect("binding a TCP port");
        let port = tcp.local_addr().expect("local address").port();
        if UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// The host's primary IPv4 address (the source of its default route).
pub fn primary_address() -> Ipv4Addr {
    let out = run("ip", &["-j", "-4", "route", "get", "192.0.2.1"]);
    let value: Value = serde_json::from_str(&out).expect("ip prints JSON");
    value[0]["prefsrc"]
        .as_str()
        .expect("the default route has a source address")
        .parse()
        .expect("an IPv4 address")
}

/// A bridge network of the test's own, as the agent's `[network]` section
/// names it. Dropping it removes what the agent left of it.
pub struct BridgeNet {
    /// The IPAM network name (leases are stored under it).
    pub network: String,
    pub bridge: String,
    pub subnet: String,
    pub veth_prefix: String,
    pub nft_table: String,
}

impl Default for BridgeNet {
    fn default() -> Self {
        Self::new()
    }
}

impl BridgeNet {
    pub fn new() -> Self {
        Self {
            network: unique_name("net"),
            bridge: unique_name("br"),
            subnet: free_subnet(),
            veth_prefix: veth_prefix(),
            nft_table: unique_name("nft"),
        }
    }

    /// The `[network.bridge]` section (without the `[network]` header).
    pub fn bridge_section(&self) -> String {
        format!(
            "[network.bridge]\nnetwork = {:?}\nbridge = {:?}\nsubnet = {:?}\nveth-prefix = {:?}\nnft-table = {:?}\n",
            self.network, self.bridge, self.subnet, self.veth_prefix, self.nft_table
        )
    }

    /// The bridge's address (the subnet's first).
    pub fn gateway(&self) -> Ipv4Addr {
        let network: Ipv4Addr = self
            .subnet
            .split('/')
            .next()
            .and_then(|ip| ip.parse().ok())
            .expect("the subnet is an IPv4 network");
        Ipv4Addr::from(u32::from(network) + 1)
    }

    /// Whether `ip` is in this network's subnet (a /24).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.octets()[..3] == self.gateway().octets()[..3]
    }

    /// berth's veths on this network's bridge (the driver's naming scheme:
    /// the prefix, on the bridge).
    pub fn veths(&self) -> Vec<String> {
        bridge_ports(&self.bridge)
            .into_iter()
            .filter(|name| name.starts_with(&self.veth_prefix))
            .collect()
    }

    /// Links anywhere on the host named with this network's veth prefix
    /// (a veth that fell off the bridge still counts as a leak).
    pub fn prefixed_links(&self) -> Vec<String> {
        host_links()
            .into_iter()
            .filter(|name| name.starts_with(&self.veth_prefix))
            .collect()
    }

    /// Rules in this network's nft table; `None` when there is no table.
    pub fn rules(&self) -> Option<usize> {
        nft_rule_count(&self.nft_table)
    }

    /// The leases of this network in the agent's database under `root`.
    pub fn leases(&self, root: &Path) -> Vec<(String, Ipv4Addr)> {
        let store = netplugins::ipam::IpamStore::open(&root.join("berth.db"))
            .expect("opening the agent's database");
        store
            .leases(&self.network)
            .expect("reading leases")
            .into_iter()
            .map(|lease| (lease.pod_id, lease.address))
            .collect()
    }
}

impl Drop for BridgeNet {
    fn drop(&mut self) {
        for link in self.prefixed_links() {
            let _ = Command::new("ip").args(["link", "del", &link]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.nft_table])
            .output();
    }
}

/// A CNI network configuration list of Debian's containernetworking
/// plugins: `bridge` (gateway, masquerade, hairpin) with `host-local`
/// addresses from `subnet` kept in `data_dir`, then `portmap` for hostPorts.
pub fn cni_conflist(name: &str, bridge: &str, subnet: &str, data_dir: &Path) -> Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": data_dir.display().to_string()
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// Addresses host-local holds in `data_dir` for network `name` (one file
/// per address).
pub fn host_local_leases(data_dir: &Path, name: &str) -> Vec<IpAddr> {
    std::fs::read_dir(data_dir.join(name))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<IpAddr>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The `[network]` section [`PodWorld`] writes; [`NetWorld`] replaces it.
const POD_WORLD_NETWORK: &str = "[network]\ndriver = \"none\"\n";

/// A [`PodWorld`] whose agent runs pods on a network of the test's own.
/// Field order matters: the world (agent, pods) goes before the network.
pub struct NetWorld {
    pub world: PodWorld,
    pub net: BridgeNet,
    cni: Option<CniFiles>,
}

/// A CNI world's conflist and host-local data (kept outside the world's
/// temp dir, which goes before them).
struct CniFiles {
    dir: tempfile::TempDir,
    config: netplugins::cni::CniConfig,
}

impl CniFiles {
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("host-local")
    }
}

impl Drop for NetWorld {
    /// Runs before the world drops. If a CNI world's agent is not running
    /// (it died, or the test killed it), nothing would DEL its pods: DEL
    /// them from here through the agent's CNI result cache while their
    /// netns files still exist (the bridge plugin finds the address to
    /// unmasquerade inside the netns), so no plugin state (iptables rules)
    /// is left behind. A running agent DELs them itself when the world
    /// removes the manifests.
    fn drop(&mut self) {
        let Some(cni) = &self.cni else { return };
        let agent_running = crate::agent::status_json(&self.world.dirs)
            .is_some_and(|status| status["agentRunning"] == true);
        if agent_running {
            return;
        }
        let env = netplugins::driver::Environment {
            database: self.root().join("berth.db"),
            netns_dir: self.netns_dir(),
            cni_cache_dir: self.root().join("cni-cache"),
        };
        let config = cni.config.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async {
                use netplugins::driver::NetworkDriver;
                if let Ok(driver) = netplugins::cni::CniDriver::new(config, env).await {
                    let _ = driver.cleanup_orphans(&Default::default()).await;
                }
            });
        })
        .join();
    }
}

impl NetWorld {
    /// A power cut, as the next boot sees it: the agent and every process of
    /// the world gone (SIGKILL), every mount and file of the run root (a
    /// tmpfs) gone, the kernel's bridge, veths and nftables table gone; the
    /// persistent root stays.
    pub fn power_cut(&mut self) {
        self.world.kill_agent();
        for pid in self.world.processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        crate::wait_until(crate::pods::POD_WAIT, "the containers to die", || {
            self.world.processes().is_empty().then_some(())
        });
        let mut mounts = self.world.mounts();
        mounts.reverse();
        for mount in mounts {
            match nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
                // EINVAL: already gone with a parent mount.
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(err) => panic!("unmounting {}: {err}", mount.display()),
            }
        }
        let run_root = &self.world.dirs.run_root;
        std::fs::remove_dir_all(run_root).expect("emptying the run root");
        std::fs::create_dir_all(run_root).expect("recreating the run root");
        for link in self
            .net
            .prefixed_links()
            .into_iter()
            .chain([self.net.bridge.clone()])
        {
            let _ = Command::new("ip").args(["link", "del", &link]).output();
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.net.nft_table])
            .output();
        assert!(self.net.prefixed_links().is_empty() && self.net.rules().is_none());
    }

    /// An agent with the bridge driver on a fresh [`BridgeNet`] (runc).
    pub fn bridge() -> Self {
        Self::bridge_with("")
    }

    /// Like [`Self::bridge`], with more agent config TOML (whole sections).
    pub fn bridge_with(extra_config: &str) -> Self {
        Self::with_network(BridgeNet::new(), |net, _| {
            format!(
                "[network]\ndriver = \"bridge\"\n{}{extra_config}",
                net.bridge_section()
            )
        })
    }

    /// An agent with the cni driver running Debian's bridge + host-local +
    /// portmap chain ([`cni_conflist`]) on the net's bridge name and subnet,
    /// host-local's leases in [`Self::cni_data_dir`].
    pub fn cni() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-cni-")
            .tempdir()
            .expect("creating a temp dir");
        let config = netplugins::cni::CniConfig {
            conflist: dir.path().join("pods.conflist"),
            ..Default::default()
        };
        let files = CniFiles { dir, config };
        let mut world = Self::with_network(BridgeNet::new(), |net, _| {
            let list = cni_conflist(&net.network, &net.bridge, &net.subnet, &files.data_dir());
            std::fs::write(
                &files.config.conflist,
                serde_json::to_vec_pretty(&list).expect("JSON"),
            )
            .expect("writing the conflist");
            format!(
                "[network]\ndriver = \"cni\"\n[network.cni]\nconflist = {:?}\n",
                files.config.conflist
            )
        });
        world.cni = Some(files);
        world
    }

    /// Where host-local keeps a CNI world's leases.
    pub fn cni_data_dir(&self) -> PathBuf {
        self.cni
            .as_ref()
            .expect("a CNI world (NetWorld::cni)")
            .data_dir()
    }

    /// An agent whose `[network]` section is `section(&net, temp dir)`
    /// (the net's names stay reserved for the test and are cleaned up on
    /// drop).
    pub fn with_network(net: BridgeNet, section: impl FnOnce(&BridgeNet, &Path) -> String) -> Self {
        let world = PodWorld::new("runc");
        let config = std::fs::read_to_string(&world.config).expect("reading the agent config");
        assert!(
            config.contains(POD_WORLD_NETWORK),
            "the pod kit's agent config no longer has {POD_WORLD_NETWORK:?}; update tests/src/net.rs"
        );
        let config = config.replace(POD_WORLD_NETWORK, &section(&net, world.dirs.temp.path()));
        std::fs::write(&world.config, config).expect("writing the agent config");
        Self {
            world,
            net,
            cni: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.world.dirs.root
    }

    /// Where the agent keeps network namespace files.
    pub fn netns_dir(&self) -> PathBuf {
        self.world.dirs.run_root.join("netns")
    }

    /// Network namespace mounts the agent holds.
    pub fn netns_mounts(&self) -> Vec<String> {
        mounts_under(&self.netns_dir())
    }

    /// The pod ids (uids) holding a lease on this world's network, sorted.
    pub fn leased_pods(&self) -> Vec<String> {
        let mut pods: Vec<String> = self
            .net
            .leases(self.root())
            .into_iter()
            .map(|(pod, _)| pod)
            .collect();
        pods.sort();
        pods
    }

    /// Asserts that nothing of any pod's network is left: no veth with
    /// this network's prefix anywhere, no lease, no netns mount, no
    /// firewall table. `context` goes into the failure messages.
    pub fn assert_nothing_left(&self, context: &str) {
        assert_eq!(
            self.net.prefixed_links(),
            Vec::<String>::new(),
            "{context}: veths left"
        );
        assert_eq!(
            self.net.leases(self.root()),
            vec![],
            "{context}: leases left"
        );
        assert_eq!(
            self.netns_mounts(),
            Vec::<String>::new(),
            "{context}: netns mounts left"
        );
        assert_eq!(self.net.rules(), None, "{context}: firewall table left");
    }

    /// A pod manifest like [`PodWorld::pod_yaml`], but on the pod network
    /// (`hostNetwork: false`) with a grace period of 0 unless `extra_spec`
    /// sets one (pid 1 ignores SIGTERM, and these pods keep no state).
    pub fn pod_yaml(&self, name: &str, extra_spec: &str, containers: &str) -> String {
        let grace = if extra_spec.contains("terminationGracePeriodSeconds") {
            ""
        } else {
            "  terminationGracePeriodSeconds: 0\n"
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  runtimeClassName: {runtime}\n{grace}{extra_spec}  containers:\n{containers}",
            runtime = self.world.runtime
        )
    }

    /// A container serving `body` over HTTP on `port` with busybox httpd.
    pub fn web_container(&self, name: &str, port: u16, body: &str) -> String {
        self.world.shell_container(
            name,
            &format!(
                "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www"
            ),
        )
    }

    /// A fresh directory for a pod to write to (see [`PodWorld::data_dir`]).
    pub fn data_dir(&self, name: &str) -> DataDir {
        self.world.data_dir(name)
    }

    /// Waits for pod `name` to run with an address; returns its status and IP.
    pub fn wait_running_ip(&self, name: &str) -> (Value, Ipv4Addr) {
        let pod = self
            .world
            .wait_pod(name, "running with a pod IP", running_with_ip);
        let ip = pod_ip(&pod).expect("checked above");
        (pod, ip)
    }

    /// Waits until every pod of `names` has a status satisfying `ready`
    /// (one `berth status` per poll for all of them); returns the statuses
    /// in the order of `names`.
    pub fn wait_pods(
        &self,
        names: &[String],
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let mut last = None;
        let found = poll_until(timeout, || {
            let status = crate::agent::status_json(&self.world.dirs)?;
            let pods: Option<Vec<Value>> = names
                .iter()
                .map(|name| {
                    crate::agent::object(&status, "Pod", "default", name)
                        .filter(|pod| ready(pod))
                        .cloned()
                })
                .collect();
            last = Some(status);
            pods
        });
        found.unwrap_or_else(|| {
            panic!(
                "timed out after {timeout:?} waiting for pods {names:?}: {what}\nlast status: {:#}\nagent log:\n{}",
                last.unwrap_or_default(),
                self.world.agent().log()
            )
        })
    }

    /// Waits until none of `names` has a status (their removal finished).
    pub fn wait_pods_gone(&self, names: &[String], timeout: Duration) {
        let gone = poll_until(timeout, || {
            let status = crate::agent::status_json(&self.world.dirs)?;
            let left = crate::agent::names_of(&status, "Pod");
            names.iter().all(|n| !left.contains(n)).then_some(())
        });
        assert!(
            gone.is_some(),
            "pods {names:?} were not removed within {timeout:?}\nagent log:\n{}",
            self.world.agent().log()
        );
    }

    /// Waits until the agent has removed its record of pod `name`, the
    /// last step of removing a pod (a pod whose first reconcile never
    /// finished has no status to watch disappear).
    pub fn wait_pod_record_gone(&self, name: &str) {
        let record = self
            .root()
            .join("pod-state")
            .join(format!("default_{name}.json"));
        assert!(
            poll_until(crate::pods::POD_WAIT, || (!record.exists()).then_some(())).is_some(),
            "the agent did not remove {} within {:?}\nagent log:\n{}",
            record.display(),
            crate::pods::POD_WAIT,
            self.world.agent().log()
        );
    }

    /// The path of pod `uid`'s netns file.
    pub fn netns_of(&self, pod: &Value) -> PathBuf {
        self.netns_dir().join(pod_uid(pod))
    }
}

/// Whether a pod's status shows it running (its first app container)
/// with an address.
pub fn running_with_ip(pod: &Value) -> bool {
    pod["phase"] == "Running"
        && crate::pods::running_pid(pod, &first_container(pod)).is_some()
        && pod_ip(pod).is_some()
}

/// The name of the pod's first app container.
fn first_container(pod: &Value) -> String {
    pod["details"]["pod"]["containers"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The pod's first IPv4 address from its status (`details.pod.podIPs`).
pub fn pod_ip(pod: &Value) -> Option<Ipv4Addr> {
    pod["details"]["pod"]["podIPs"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip.as_str()?.parse::<Ipv4Addr>().ok())
        .next()
}

/// The pod's uid (its current incarnation), from its status.
pub fn pod_uid(pod: &Value) -> String {
    pod["details"]["pod"]["uid"]
        .as_str()
        .expect("the pod status has a uid")
        .to_string()
}

/// `GET /` over HTTP/1.0 to `addr`; the response body.
pub fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_string())
        }
        _ => Err(std::io::Error::other(format!(
            "unexpected HTTP response from {addr}: {response:?}"
        ))),
    }
}

/// `curl` of `http://addr/`: its body, or its error text.
pub fn curl(addr: SocketAddr) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://{addr}/")])
        .output()
        .expect("running curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Waits until `http://addr/` answers; returns the body.
pub fn wait_http(addr: SocketAddr) -> String {
    crate::wait_until(Duration::from_secs(20), &format!("http://{addr}/"), || {
        http_get(addr).ok()
    })
}

/// Accepts one connection on `listener` (in a thread) and sends back its
/// peer address and first line.
pub fn hear_one_line(listener: TcpListener) -> std::sync::mpsc::Receiver<(SocketAddr, String)> {
    let (heard_tx, heard_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, peer)) = listener.accept() {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut line);
            let _ = heard_tx.send((peer, line));
        }
    });
    heard_rx
}

/// A UDP echo server bound inside the network namespace at `netns` on
/// `port` (every address), answering `<tag>:<datagram>`. It runs in a
/// thread for the rest of the test.
pub fn udp_echo_in(netns: &Path, port: u16, tag: &'static str) {
    let socket = netplugins::ns::run_in(netplugins::ns::NsKind::Net, netns, || {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
    })
    .expect("entering the pod's netns")
    .expect("binding UDP inside the pod");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let mut reply = format!("{tag}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from);
        }
    });
}

/// Sends a UDP datagram from the host and returns the reply (retrying:
/// the first datagram may be lost while ARP resolves).
pub fn udp_ask(to: SocketAddr, message: &str) -> std::io::Result<String> {
    let socket = UdpSocket::bind(match to.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => "127.0.0.1:0",
        _ => "0.0.0.0:0",
    })?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = [0u8; 512];
    let mut last_err = None;
    for _ in 0..10 {
        socket.send_to(message.as_bytes(), to)?;
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.expect("at least one attempt"))
}
