//! Shared by the privileged netplugins tests: a bridge network with names
//! and a subnet of its own (so tests run in parallel with each other and
//! with other suites on this machine), torn down by `Drop` with the plain
//! `ip`/`nft`/`umount` tools even when the test failed, plus small TCP/UDP
//! helpers that listen or connect from inside a network namespace.
#![allow(dead_code, unused_imports)] // each test binary uses a different part

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_e2e::net::{
    cni_conflist, free_subnet, host_links, host_local_leases, nft_rule_count, veth_prefix,
};
pub use berth_e2e::net::{free_port, mounts_under, primary_address, run, udp_ask};

use netplugins::bridge::{BridgeConfig, BridgeDriver, Environment};
use netplugins::cni::{CniConfig, CniDriver};
use netplugins::driver::{NetworkDriver, PodNetwork};
use netplugins::ns::{self, NsKind};
use netplugins::ports::{PortMapping, Protocol};

pub const TIMEOUT: Duration = Duration::from_secs(10);

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
        nft_rule_count(&self.config.nft_table).unwrap_or(0)
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
        let list = cni_conflist(
            &net.config.network,
            &bridge,
            &net.config.subnet.to_string(),
            &net.dir.path().join("host-local"),
        );
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
        host_local_leases(
            &self.net.dir.path().join("host-local"),
            &self.net.config.network,
        )
        .len()
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
