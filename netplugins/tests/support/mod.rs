//! Shared by the privileged netplugins tests: a bridge network with names
//! and a subnet of its own (so tests run in parallel with each other and
//! with other suites on this machine), torn down by `Drop` with the plain
//! `ip`/`nft`/`umount` tools even when the test failed, plus small TCP/UDP
//! helpers that listen or connect from inside a network namespace.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use netplugins::bridge::{BridgeConfig, BridgeDriver, Environment};
use netplugins::cni::{CniConfig, CniDriver};
use netplugins::driver::{NetworkDriver, PodNetwork};
use netplugins::ns::{self, NsKind};
use netplugins::ports::{PortMapping, Protocol};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a command, panicking with its stderr on failure; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Link names in the host namespace.
pub fn host_links() -> Vec<String> {
    run("ip", &["-o", "link", "show"])
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

/// Mount points under `dir` (from this process's mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_str().expect("utf-8").to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount| mount.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Rules in nftables table `ip <table>` (0 when it does not exist).
pub fn nft_rule_count(table: &str) -> usize {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "ip", table])
        .output()
        .expect("nft");
    if !out.status.success() {
        return 0;
    }
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft json");
    value["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter(|obj| obj.get("rule").is_some())
        .count()
}

/// A /24 inside 10.215.0.0–10.254.255.0 that no route of this host uses.
fn free_subnet() -> String {
    let routes = run("ip", &["-4", "route", "show", "table", "all"]);
    loop {
        let a = 215 + fastrand_u8() % 40;
        let b = fastrand_u8();
        let subnet = format!("10.{a}.{b}.0/24");
        if !routes.contains(&format!("10.{a}.{b}.")) {
            return subnet;
        }
    }
}

fn fastrand_u8() -> u8 {
    // No rand crate needed: the clock's nanoseconds and a counter are
    // random enough to spread parallel tests over 10 000 subnets.
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let mixed =
        nanos ^ std::process::id().rotate_left(13) ^ COUNTER.fetch_add(0x9e37, Ordering::Relaxed);
    mixed.wrapping_mul(2_654_435_761).to_be_bytes()[0]
}

/// A short unique veth prefix (`bt` + 5 hex digits): hashes fill the rest.
fn veth_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "bt{:05x}",
        (std::process::id().wrapping_mul(16) + n) & 0xfffff
    )
}

/// A bridge network of a test's own, removed on drop.
pub struct TestNet {
    pub config: BridgeConfig,
    pub env: Environment,
    pub dir: tempfile::TempDir,
}

impl TestNet {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-net-")
            .tempdir()
            .expect("tempdir");
        let env = Environment {
            database: dir.path().join("berth.db"),
            netns_dir: dir.path().join("netns"),
            cni_cache_dir: dir.path().join("cni-cache"),
        };
        let config = BridgeConfig {
            network: berth_e2e::unique_name("net"),
            bridge: berth_e2e::unique_name("br"),
            subnet: free_subnet().parse().expect("subnet"),
            gateway: None,
            mtu: None,
            veth_prefix: veth_prefix(),
            nft_table: berth_e2e::unique_name("nft"),
        };
        TestNet { config, env, dir }
    }

    pub async fn driver(&self) -> BridgeDriver {
        BridgeDriver::new(self.config.clone(), self.env.clone())
            .await
            .expect("bridge driver")
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.config.subnet.hosts().next().expect("gateway")
    }

    pub fn netns(&self, pod_id: &str) -> PathBuf {
        self.env.netns_dir.join(pod_id)
    }

    /// Veths of this network left on the host.
    pub fn our_links(&self) -> Vec<String> {
        host_links()
            .into_iter()
            .filter(|name| name.starts_with(&self.config.veth_prefix))
            .collect()
    }

    pub fn rule_count(&self) -> usize {
        nft_rule_count(&self.config.nft_table)
    }

    /// Leases of this network in the database.
    pub fn lease_count(&self) -> usize {
        let store = netplugins::ipam::IpamStore::open(&self.env.database).expect("db");
        store.leases(&self.config.network).expect("leases").len()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.env.netns_dir) {
            for entry in entries.flatten() {
                let _ = Command::new("umount")
                    .arg("--lazy")
                    .arg(entry.path())
                    .output();
            }
        }
        for link in self.our_links() {
            let _ = Command::new("ip").args(["link", "del", &link]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.config.bridge])
            .output();
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.config.nft_table])
            .output();
    }
}

pub fn pod(pod_id: &str) -> PodNetwork {
    PodNetwork {
        pod_id: pod_id.to_string(),
        namespace: "default".to_string(),
        name: pod_id.to_string(),
        hostname: pod_id.to_string(),
        ..PodNetwork::default()
    }
}

pub fn host_port(
    container_port: u16,
    host_port: u16,
    protocol: Protocol,
    host_ip: Option<&str>,
) -> PortMapping {
    PortMapping {
        container_port,
        host_port,
        host_ip: host_ip.map(|ip| ip.parse().expect("host ip")),
        protocol,
    }
}

/// A port no one on the host uses right now (TCP and UDP).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// The host's primary IPv4 address (the source of its default route).
pub fn primary_address() -> Ipv4Addr {
    let out = run("ip", &["-j", "-4", "route", "get", "192.0.2.1"]);
    let value: serde_json::Value = serde_json::from_str(&out).expect("json");
    value[0]["prefsrc"]
        .as_str()
        .expect("prefsrc")
        .parse()
        .expect("ip")
}

/// A TCP echo server: listens (inside `netns`, or on the host for `None`)
/// on `addr` and echoes each connection's first message, with a prefix.
pub fn tcp_echo(netns: Option<&Path>, addr: SocketAddr, tag: &'static str) -> SocketAddr {
    let listener = match netns {
        Some(path) => {
            ns::run_in(NsKind::Net, path, || TcpListener::bind(addr)).expect("enter netns")
        }
        None => TcpListener::bind(addr),
    }
    .expect("listen");
    let local = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 256];
            let n = stream.read(&mut buf).unwrap_or(0);
            let _ = stream.write_all(format!("{tag}:").as_bytes());
            let _ = stream.write_all(&buf[..n]);
        }
    });
    local
}

/// A UDP echo server, like [`tcp_echo`].
pub fn udp_echo(netns: Option<&Path>, addr: SocketAddr, tag: &'static str) {
    let socket = match netns {
        Some(path) => ns::run_in(NsKind::Net, path, || UdpSocket::bind(addr)).expect("enter netns"),
        None => UdpSocket::bind(addr),
    }
    .expect("bind udp");
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let mut reply = format!("{tag}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from);
        }
    });
}

/// Connects (from inside `netns`, or the host for `None`), sends `message`
/// and returns the reply; an error if the connection fails.
pub fn tcp_ask(netns: Option<&Path>, to: SocketAddr, message: &str) -> std::io::Result<String> {
    let connect = move || TcpStream::connect_timeout(&to, TIMEOUT);
    let mut stream = match netns {
        Some(path) => ns::run_in(NsKind::Net, path, connect).expect("enter netns")?,
        None => connect()?,
    };
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(message.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Sends one UDP datagram from the host and waits for the reply.
pub fn udp_ask(to: SocketAddr, message: &str) -> std::io::Result<String> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    // UDP may lose the first datagram while ARP resolves: retry a few times.
    let mut buf = [0u8; 256];
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

/// A CNI network of the test's own; its bridge is deleted on drop (the
/// bridge plugin leaves it on DEL, as it should for other pods).
pub struct CniNet {
    pub net: TestNet,
    pub bridge: String,
    pub config: CniConfig,
}

impl CniNet {
    pub fn new() -> Self {
        let net = TestNet::new();
        let bridge = berth_e2e::unique_name("cni");
        let conflist = net.dir.path().join("test.conflist");
        let list = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": net.config.network,
            "plugins": [
                {
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.config.subnet.to_string()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": net.dir.path().join("host-local").display().to_string()
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(&conflist, serde_json::to_vec_pretty(&list).expect("json"))
            .expect("write conflist");
        let config = CniConfig {
            conflist,
            ..CniConfig::default()
        };
        CniNet {
            net,
            bridge,
            config,
        }
    }

    pub async fn driver(&self) -> CniDriver {
        CniDriver::new(self.config.clone(), self.net.env.clone())
            .await
            .expect("cni driver")
    }

    /// Ports of the CNI bridge (the pods' host-side veths).
    pub fn bridge_ports(&self) -> usize {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// Address leases host-local keeps on disk.
    pub fn host_local_leases(&self) -> usize {
        let dir = self
            .net
            .dir
            .path()
            .join("host-local")
            .join(&self.net.config.network);
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<IpAddr>().is_ok())
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for CniNet {
    /// DEL every pod the cache still knows (a failed test leaves iptables
    /// rules and host-local leases otherwise), then delete the bridge.
    fn drop(&mut self) {
        let (config, env) = (self.config.clone(), self.net.env.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(driver) = CniDriver::new(config, env).await {
                    let _ = driver.cleanup_orphans(&Default::default()).await;
                }
            });
        })
        .join();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
