//! Every netlink call berth makes, over rtnetlink (pinned `=0.24.0`: its
//! API breaks every few months, so it stays inside this one module).
//!
//! A netlink socket is bound to the network namespace of the thread that
//! opened it. [`Netlink::connect`] on the agent's runtime talks to the host;
//! [`in_netns`] opens a socket inside a pod's namespace on a throw-away
//! thread (with a small runtime of its own) and runs the given work there.
//! No pooled thread ever switches namespaces.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder,
};

use crate::ns::{self, NsError, NsKind};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{action}")]
    Request {
        action: String,
        source: rtnetlink::Error,
    },
    #[error("opening a netlink socket{}", in_ns(.netns))]
    Connect {
        netns: Option<PathBuf>,
        source: std::io::Error,
    },
    #[error(transparent)]
    Namespace(#[from] NsError),
    #[error(
        "link {name} exists but is a {found}, not a {wanted}; rename or delete it, or configure another name"
    )]
    WrongKind {
        name: String,
        found: String,
        wanted: &'static str,
    },
    #[error("link {name} not found{}", in_ns(.netns))]
    NotFound {
        name: String,
        netns: Option<PathBuf>,
    },
}

fn in_ns(netns: &Option<PathBuf>) -> String {
    netns
        .as_ref()
        .map(|p| format!(" in network namespace {}", p.display()))
        .unwrap_or_default()
}

/// The errno of a kernel refusal, if that is what `err` is.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}

/// What berth needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `bridge`, `veth`, …; `None` for physical devices and `lo`.
    pub kind: Option<String>,
    pub alias: Option<String>,
    pub controller: Option<u32>,
    pub mtu: Option<u32>,
    pub up: bool,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            alias: None,
            controller: None,
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// One netlink connection, bound to the namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    netns: Option<PathBuf>,
    /// The kernel runs one dump at a time per socket and refuses a second
    /// with EBUSY, so the pods that share this connection take turns.
    dumps: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Netlink {
    /// Connects to the current thread's network namespace. Call it inside a
    /// tokio runtime: the connection runs as a task of that runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        Self::connect_labelled(None)
    }

    fn connect_labelled(netns: Option<PathBuf>) -> Result<Self, NetlinkError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetlinkError::Connect {
                netns: netns.clone(),
                source,
            })?;
        tokio::spawn(connection);
        Ok(Netlink {
            handle,
            netns,
            dumps: Default::default(),
        })
    }

    fn fail(&self, action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
        let action = format!("{}{}", action.into(), in_ns(&self.netns));
        move |source| NetlinkError::Request { action, source }
    }

    /// The link called `name`, if it exists.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut request = std::pin::pin!(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
        );
        match request.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(Link::from_message)),
            Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
            Err(err) => Err(self.fail(format!("looking up link {name}"))(err)),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let _turn = self.dumps.lock().await;
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(self.fail("listing links"))?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    async fn require(&self, name: &str) -> Result<Link, NetlinkError> {
        self.link(name)
            .await?
            .ok_or_else(|| NetlinkError::NotFound {
                name: name.to_string(),
                netns: self.netns.clone(),
            })
    }

    /// The bridge `name`, created (up, with `mtu`) if missing. An existing
    /// link of that name must be a bridge; it is brought up.
    pub async fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link, NetlinkError> {
        if let Some(link) = self.link(name).await? {
            if link.kind.as_deref() != Some("bridge") {
                return Err(NetlinkError::WrongKind {
                    name: name.to_string(),
                    found: link.kind.unwrap_or_else(|| "device".to_string()),
                    wanted: "bridge",
                });
            }
            self.configure(&link, None, mtu, true).await?;
            return self.require(name).await;
        }
        let mut builder = LinkBridge::new(name);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        match self.handle.link().add(builder.build()).execute().await {
            Ok(()) => {}
            // Someone created it between our look and our add: fine.
            Err(err) if errno(&err) == Some(libc::EEXIST) => {}
            Err(err) => return Err(self.fail(format!("creating bridge {name}"))(err)),
        }
        self.require(name).await
    }

    /// Sets what differs of controller (bridge), MTU and up on `link`.
    async fn configure(
        &self,
        link: &Link,
        controller: Option<u32>,
        mtu: Option<u32>,
        up: bool,
    ) -> Result<(), NetlinkError> {
        let mut builder = LinkUnspec::new_with_index(link.index);
        let mut changed = false;
        if let Some(ctrl) = controller.filter(|c| link.controller != Some(*c)) {
            builder = builder.controller(ctrl);
            changed = true;
        }
        if let Some(mtu) = mtu.filter(|m| link.mtu != Some(*m)) {
            builder = builder.mtu(mtu);
            changed = true;
        }
        if up && !link.up {
            builder = builder.up();
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(self.fail(format!("configuring link {}", link.name)))
    }

    /// Brings `name` up (and sets its MTU when given).
    pub async fn set_up(&self, name: &str, mtu: Option<u32>) -> Result<Link, NetlinkError> {
        let link = self.require(name).await?;
        self.configure(&link, None, mtu, true).await?;
        Ok(link)
    }

    /// Gives `index` the address `address/prefix` (kept if already there).
    pub async fn ensure_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, address, prefix)
            .replace()
            .execute()
            .await
            .map_err(self.fail(format!(
                "adding address {address}/{prefix} to link #{index}"
            )))
    }

    /// The addresses of link `index`, with their prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
        let _turn = self.dumps.lock().await;
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(self.fail(format!("listing addresses of link #{index}")))?;
        Ok(msgs
            .iter()
            .filter_map(|msg| {
                msg.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => Some((*ip, msg.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// The main table's IPv4 unicast routes to a network (not the default
    /// route), with their output link.
    pub async fn ipv4_routes(&self) -> Result<Vec<(Ipv4Net, Option<u32>)>, NetlinkError> {
        let _turn = self.dumps.lock().await;
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(self.fail("listing routes"))?;
        Ok(msgs
            .iter()
            .filter(|msg| {
                msg.header.table == RouteHeader::RT_TABLE_MAIN
                    && msg.header.kind == RouteType::Unicast
            })
            .filter(|msg| msg.header.destination_prefix_length > 0)
            .filter_map(|msg| {
                let mut destination = None;
                let mut oif = None;
                for attr in &msg.attributes {
                    match attr {
                        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                            destination = Some(*ip)
                        }
                        RouteAttribute::Oif(index) => oif = Some(*index),
                        _ => {}
                    }
                }
                let net = Ipv4Net::new(destination?, msg.header.destination_prefix_length).ok()?;
                Some((net, oif))
            })
            .collect())
    }

    /// Makes `gateway` via link `index` the default IPv4 route.
    pub async fn ensure_default_route(
        &self,
        gateway: Ipv4Addr,
        index: u32,
    ) -> Result<(), NetlinkError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(self.fail(format!("adding default route via {gateway}")))
    }

    /// Creates a veth pair: `host_name` here, attached to `bridge` and up,
    /// labelled with `alias`; its peer created directly inside the namespace
    /// at `netns` as `peer_name` (so the pod side never exists on the host
    /// under a name that could collide).
    pub async fn add_veth_into(
        &self,
        host_name: &str,
        peer_name: &str,
        netns: &Path,
        bridge: u32,
        mtu: Option<u32>,
        alias: &str,
    ) -> Result<Link, NetlinkError> {
        let ns_file = std::fs::File::open(netns).map_err(|source| NsError::Open {
            path: netns.to_path_buf(),
            source,
        })?;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .setns_by_fd(ns_file.as_raw_fd());
        let mut veth = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host_name.to_string())
            .controller(bridge)
            .up();
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
            veth = veth.mtu(mtu);
        }
        let veth = veth.set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        self.handle
            .link()
            .add(veth.build())
            .execute()
            .await
            .map_err(self.fail(format!(
                "creating veth {host_name} with peer {peer_name} in {}",
                netns.display()
            )))?;
        // ns_file must stay open until the kernel has the request.
        drop(ns_file);
        let link = self.require(host_name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).alias(alias).build())
            .execute()
            .await
            .map_err(self.fail(format!("labelling veth {host_name}")))?;
        self.require(host_name).await
    }

    /// Lets bridge port `name` send a frame back out the port it came in
    /// on. With `br_netfilter` loaded, a pod's connection to its own host
    /// port is DNATed inside the bridge and must go back out its own port.
    pub async fn set_hairpin(&self, name: &str) -> Result<(), NetlinkError> {
        let link = self.require(name).await?;
        self.handle
            .link()
            .set_port(LinkBridgePort::new(link.index).hairpin(true).build())
            .execute()
            .await
            .map_err(self.fail(format!("enabling hairpin mode on {name}")))
    }

    /// Deletes the link `name`; `false` if it did not exist.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(false),
            Err(err) => Err(self.fail(format!("deleting link {name}"))(err)),
        }
    }
}

/// Runs `work` with a netlink connection opened inside the namespace at
/// `netns`, on a throw-away thread with a runtime of its own.
pub async fn in_netns<T, F, Fut>(netns: &Path, work: F) -> Result<T, NetlinkError>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetlinkError>>,
    T: Send + 'static,
{
    let label = netns.to_path_buf();
    ns::run_in_async(NsKind::Net, netns.to_path_buf(), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| NetlinkError::Connect {
                netns: Some(label.clone()),
                source,
            })?;
        runtime.block_on(async move {
            let netlink = Netlink::connect_labelled(Some(label))?;
            work(netlink).await
        })
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_refusals_expose_their_errno() {
        let mut msg = rtnetlink::packet_core::ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-libc::EEXIST);
        assert_eq!(
            errno(&rtnetlink::Error::NetlinkError(msg)),
            Some(libc::EEXIST)
        );
        assert_eq!(errno(&rtnetlink::Error::RequestFailed), None);
    }
}
