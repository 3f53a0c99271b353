//! The engine's rtnetlink client: creates bridges, veth pairs and macvlans,
//! and configures the interface inside a container's network namespace. It
//! owns the netlink conversation only: names and addresses come from its
//! callers, packet filtering lives in `nft.rs`, interface knobs in `sysctl.rs`.
//!
//! A request is a message (`RTM_NEWLINK`, `RTM_NEWADDR`, ...) on an
//! `AF_NETLINK` socket; with `NLM_F_ACK` the kernel answers each with an
//! error code (0: done). It handles a datagram's messages in order, going on
//! after a failure, and answers inside `sendmsg` (a dump goes on inside
//! `recvmsg`). So this module builds messages with the `rtnetlink` crate but
//! talks to the socket itself: `rtnetlink`'s connection task adds hand-offs
//! (channel, reactor, wake-ups) costing 10 to 30 times the kernel's time.
//!
//! A socket acts for its whole life on the network namespace it was created
//! in. [`Netlink::in_netns`] creates one on a helper thread that `setns()`s
//! into the container's namespace (namespaces belong to threads; the
//! runtime's threads stay put). A link can also be born straight inside
//! another namespace, named by fd in `IFLA_NET_NS_FD`: that is how a veth
//! peer or a macvlan gets into a container.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, PoisonError};

use ipnet::Ipv4Net;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol};
use rtnetlink::packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_MULTIPART, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoPortKind, InfoVeth, LinkAttribute, LinkExtentMask, LinkInfo,
    LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::{AddressFamily as Family, RouteNetlinkMessage as Rtnl};
use rtnetlink::{
    AddressMessageBuilder, LinkBridge, LinkBridgePort, LinkMacVlan, LinkMessageBuilder, LinkUnspec,
    LinkVeth, RouteMessageBuilder,
};
use sha2::{Digest, Sha256};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A failed netlink step, with the interface (or namespace) it was about.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink needs a tokio runtime")]
    NoRuntime,
    #[error("cannot open a netlink socket")]
    Connect(#[source] io::Error),
    #[error("cannot open network namespace {0}")]
    OpenNetns(PathBuf, #[source] io::Error),
    #[error("cannot enter network namespace {0}")]
    Setns(PathBuf, #[source] io::Error),
    #[error("cannot start the thread that opens sockets in network namespaces")]
    SpawnHelper(#[source] io::Error),
    #[error("the thread that opens sockets in network namespaces has stopped")]
    HelperGone,
    #[error("cannot look up interface {0}")]
    Lookup(String, #[source] io::Error),
    #[error("interface {0} not found")]
    NotFound(String),
    #[error("cannot list interfaces")]
    ListLinks(#[source] io::Error),
    #[error("cannot list the addresses of {0}")]
    ListAddresses(String, #[source] io::Error),
    #[error("cannot create bridge {0}")]
    CreateBridge(String, #[source] io::Error),
    #[error("interface {0} exists and is not a bridge")]
    NotABridge(String),
    #[error("cannot set up bridge {0}")]
    SetBridge(String, #[source] io::Error),
    #[error("cannot add address {1} to {0}")]
    AddAddress(String, Ipv4Net, #[source] io::Error),
    #[error("cannot create veth pair {0}")]
    CreateVeth(String, #[source] io::Error),
    #[error("cannot turn on hairpin mode on {0}")]
    Hairpin(String, #[source] io::Error),
    #[error("cannot create macvlan {0} on interface {1}")]
    CreateMacvlan(String, u32, #[source] io::Error),
    #[error("cannot bring up interface {0}")]
    LinkUp(String, #[source] io::Error),
    #[error("cannot add the default route via {1} on {0}")]
    AddRoute(String, Ipv4Addr, #[source] io::Error),
    #[error("cannot delete interface {0}")]
    DeleteLink(String, #[source] io::Error),
}

type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// A bridge for [`Netlink::ensure_bridge`].
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    pub name: String,
    /// The network's gateway address, with the network's prefix.
    pub address: Ipv4Net,
    pub mtu: Option<u32>,
    /// A fixed MAC. Without one, a bridge takes the lowest MAC among its
    /// ports, so its MAC changes as containers come and go.
    pub mac: Option<[u8; 6]>,
}

/// A veth pair for [`Netlink::add_veth`].
#[derive(Debug)]
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    /// Index of the bridge the host end joins.
    pub bridge: u32,
    pub mtu: Option<u32>,
    /// The container's network namespace (an open `/proc/PID/ns/net`).
    pub netns: BorrowedFd<'a>,
    pub peer_name: &'a str,
    pub peer_mac: [u8; 6],
}

/// A macvlan for [`Netlink::add_macvlan`].
#[derive(Debug)]
pub struct MacvlanSpec<'a> {
    /// Index of the parent link, in the namespace of the [`Netlink`].
    pub parent: u32,
    pub name: &'a str,
    /// The container's network namespace (an open `/proc/PID/ns/net`).
    pub netns: BorrowedFd<'a>,
    pub mac: [u8; 6],
    pub mtu: Option<u32>,
}

/// What [`Netlink::configure`] sets on a container's interface.
#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    pub name: String,
    pub address: Ipv4Net,
    /// The default route's gateway; `None` adds no default route.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
}

/// A routing netlink socket in one network namespace. Tasks may share it:
/// their requests take turns. Dropping it closes the socket.
pub struct Netlink {
    conversation: tokio::sync::Mutex<Conversation>,
}

/// The socket, the last sequence number used and a buffer for replies.
struct Conversation {
    socket: AsyncFd<OwnedFd>,
    sequence: u32,
    replies: Vec<u8>,
}

/// A reply, with the position of the request it answers.
type Reply = (usize, NetlinkMessage<Rtnl>);

/// Room for the largest datagram the kernel sends (a dump part, ≤ 32 KiB).
const REPLY_ROOM: usize = 64 * 1024;
/// Flags of a request that creates something, failing if it exists.
const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

/// The value of the first item of `$items` matching `$pattern`.
macro_rules! find {
    ($items:expr, $pattern:pat $(if $guard:expr)? => $value:expr) => {
        $items.iter().find_map(|item| match item {
            $pattern $(if $guard)? => Some($value),
            _ => None,
        })
    };
}

impl Netlink {
    /// A socket in the caller's current network namespace (the engine's).
    /// Must be called inside a tokio runtime, which waits for the socket
    /// when it has to.
    pub fn new() -> Result<Netlink> {
        Netlink::with_socket(route_socket().map_err(NetlinkError::Connect)?)
    }

    /// A socket in the network namespace at `netns` (e.g.
    /// `/proc/1234/ns/net`), created by a long-lived helper thread that
    /// enters the namespace and comes back: no runtime thread changes
    /// namespace. Blocks the caller for that hand-off (tens of
    /// microseconds). Must be called inside a tokio runtime.
    pub fn in_netns(netns: &Path) -> Result<Netlink> {
        let file = File::open(netns).map_err(|e| NetlinkError::OpenNetns(netns.into(), e))?;
        Netlink::with_socket(socket_in(OwnedFd::from(file), netns)?)
    }

    fn with_socket(socket: OwnedFd) -> Result<Netlink> {
        tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        // SAFETY: an OwnedFd is open until dropped and always returns the
        // same descriptor, and the AsyncFd owns it from here on.
        let socket = unsafe { AsyncFd::register(socket) };
        let socket = socket.map_err(|error| NetlinkError::Connect(error.into()))?;
        let (sequence, replies) = (0, vec![0; REPLY_ROOM]);
        let conversation = tokio::sync::Mutex::new(Conversation {
            socket,
            sequence,
            replies,
        });
        Ok(Netlink { conversation })
    }

    /// The index of the link called `name`, if there is one.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let link = self.get_link(name).await;
        let link = link.map_err(|e| NetlinkError::Lookup(name.into(), e))?;
        Ok(link.map(|link| link.header.index))
    }

    /// Creates the bridge if it is missing, applies its MTU and MAC when
    /// given, brings it up and adds the address unless the bridge has it
    /// (keeping any other address). Idempotent. Returns the bridge's index.
    pub async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<u32> {
        let name = spec.name.as_str();
        match self
            .ack(Rtnl::NewLink(LinkBridge::new(name).build()), CREATE)
            .await
        {
            // There already (perhaps not a bridge): check it like a new one.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(NetlinkError::CreateBridge(name.into(), e)),
            Ok(()) => {}
        }
        let index = self.set_bridge(&self.link(name).await?, spec).await?;
        // The kernel refuses an address the link already has (same address
        // and prefix) with EEXIST, and keeps the others.
        let request = Rtnl::NewAddress(address_message(index, spec.address));
        match self.ack(request, CREATE).await {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                Err(NetlinkError::AddAddress(name.into(), spec.address, e))
            }
            _ => Ok(index),
        }
    }

    /// Brings an existing bridge in line with `spec`; returns its index.
    async fn set_bridge(&self, link: &LinkMessage, spec: &BridgeSpec) -> Result<u32> {
        let info = find!(link.attributes, LinkAttribute::LinkInfo(info) => info);
        if !info.is_some_and(|info| info.contains(&LinkInfo::Kind(InfoKind::Bridge))) {
            return Err(NetlinkError::NotABridge(spec.name.clone()));
        }
        let index = link.header.index;
        let mut change = with_mtu(LinkUnspec::new_with_index(index).up(), spec.mtu);
        if let Some(mac) = spec.mac {
            change = change.address(mac.to_vec());
        }
        let result = self.ack(Rtnl::NewLink(change.build()), 0).await;
        result.map_err(|e| NetlinkError::SetBridge(spec.name.clone(), e))?;
        Ok(index)
    }

    /// Deletes the link called `name`; `Ok(false)` when there is none.
    /// Deleting either end of a veth pair deletes both.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        match self
            .ack(Rtnl::DelLink(LinkUnspec::new_with_name(name).build()), 0)
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(NetlinkError::DeleteLink(name.into(), e)),
        }
    }

    /// Creates a veth pair in one request, whole or not at all: the host end
    /// `host_name`, up, on bridge `bridge`; the peer `peer_name`, down, with
    /// `peer_mac`, straight inside `netns`. Then turns on hairpin mode on the
    /// host end's bridge port (so a container reaches itself through a
    /// published port), deleting the pair if that fails.
    pub async fn add_veth(&self, spec: &VethSpec<'_>) -> Result<()> {
        let name = spec.host_name;
        let peer = with_mtu(LinkUnspec::new_with_name(spec.peer_name), spec.mtu)
            .address(spec.peer_mac.to_vec())
            .setns_by_fd(spec.netns.as_raw_fd());
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth);
        let veth = with_mtu(veth.name(name).controller(spec.bridge).up(), spec.mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        let created = self.ack(Rtnl::NewLink(veth.build()), CREATE).await;
        created.map_err(|e| NetlinkError::CreateVeth(name.into(), e))?;
        // A request of its own: the kernel reads port options
        // (IFLA_INFO_SLAVE_DATA) only for a link that already has a master.
        let hairpin = LinkMessageBuilder::<LinkBridgePort>::default()
            .name(name)
            .set_port_kind(InfoPortKind::Bridge)
            .hairpin(true);
        let Err(source) = self.ack(Rtnl::NewLink(hairpin.build()), 0).await else {
            return Ok(());
        };
        if let Err(error) = self.delete_link(name).await {
            tracing::warn!(interface = name, %error, "cannot remove a half-made veth pair");
        }
        Err(NetlinkError::Hairpin(name.into(), source))
    }

    /// Creates a macvlan in bridge mode on link `parent` of this namespace,
    /// straight inside `netns`, named `name`, with `mac`; left down.
    pub async fn add_macvlan(&self, spec: &MacvlanSpec<'_>) -> Result<()> {
        let macvlan = LinkMacVlan::new(spec.name, spec.parent, MacVlanMode::Bridge);
        let macvlan = with_mtu(macvlan, spec.mtu)
            .address(spec.mac.to_vec())
            .setns_by_fd(spec.netns.as_raw_fd());
        let created = self.ack(Rtnl::NewLink(macvlan.build()), CREATE).await;
        created.map_err(|e| NetlinkError::CreateMacvlan(spec.name.into(), spec.parent, e))
    }

    /// Configures an interface of this namespace (meant for a [`Netlink`]
    /// from [`Netlink::in_netns`]): brings `lo` up, brings the interface up
    /// with its MTU, adds the address and, when there is a gateway, the
    /// default route through it. One lookup, then one datagram for the rest.
    pub async fn configure(&self, cfg: &InterfaceConfig) -> Result<()> {
        let index = self.link(&cfg.name).await?.header.index;
        let lo_up = LinkUnspec::new_with_name("lo").up().build();
        let up = with_mtu(LinkUnspec::new_with_index(index).up(), cfg.mtu).build();
        let address = Rtnl::NewAddress(address_message(index, cfg.address));
        let mut requests = vec![(Rtnl::NewLink(lo_up), 0), (Rtnl::NewLink(up), 0)];
        requests.push((address, CREATE));
        if let Some(gateway) = cfg.gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway);
            requests.push((Rtnl::NewRoute(route.build()), CREATE));
        }
        let Err((step, e)) = self.acks(requests).await else {
            return Ok(());
        };
        let name = cfg.name.clone();
        Err(match (step, cfg.gateway) {
            (0, _) => NetlinkError::LinkUp("lo".into(), e),
            (1, _) => NetlinkError::LinkUp(name, e),
            (3, Some(gateway)) => NetlinkError::AddRoute(name, gateway, e),
            _ => NetlinkError::AddAddress(name, cfg.address, e),
        })
    }

    /// Names of the links whose master is `master`: the ports of a bridge.
    pub async fn ports_of(&self, master: u32) -> Result<Vec<String>> {
        let controller = LinkAttribute::Controller(master);
        let links = self.dump_links(Some(controller.clone())).await;
        let links = links.map_err(NetlinkError::ListLinks)?;
        let ports = links
            .iter()
            .filter(|link| link.attributes.contains(&controller));
        Ok(ports.filter_map(name_of).collect())
    }

    /// The names of all links in this namespace.
    pub async fn link_names(&self) -> Result<Vec<String>> {
        let links = self
            .dump_links(None)
            .await
            .map_err(NetlinkError::ListLinks)?;
        Ok(links.iter().filter_map(name_of).collect())
    }

    /// The IPv4 addresses of the link called `name`, with their prefixes.
    pub async fn addresses(&self, name: &str) -> Result<Vec<Ipv4Net>> {
        let addresses = self.addresses_of(self.link(name).await?.header.index).await;
        addresses.map_err(|e| NetlinkError::ListAddresses(name.into(), e))
    }
}

/// The exchanges underneath: acknowledged requests, lookups, dumps.
impl Netlink {
    async fn ack(&self, request: Rtnl, flags: u16) -> io::Result<()> {
        let result = self.acks(vec![(request, flags)]).await;
        result.map_err(|(_, error)| error)
    }

    /// Sends `requests` (with their extra `NLM_F_*` flags) in one datagram,
    /// asking for acknowledgements. The error is the first failure, with the
    /// position of its request.
    async fn acks(&self, requests: Vec<(Rtnl, u16)>) -> Result<(), (usize, io::Error)> {
        let requests = requests
            .into_iter()
            .map(|(request, flags)| (request, flags | NLM_F_ACK));
        let replies = self
            .exchange(requests.collect())
            .await
            .map_err(|e| (0, e))?;
        let failures = replies
            .into_iter()
            .filter_map(|(step, reply)| match reply.payload {
                NetlinkPayload::Error(error) if error.code.is_some() => Some((step, error.to_io())),
                _ => None,
            });
        failures.min_by_key(|(step, _)| *step).map_or(Ok(()), Err)
    }

    /// The link called `name`, or [`NetlinkError::NotFound`].
    async fn link(&self, name: &str) -> Result<LinkMessage> {
        let link = self.get_link(name).await;
        let link = link.map_err(|e| NetlinkError::Lookup(name.into(), e))?;
        link.ok_or_else(|| NetlinkError::NotFound(name.into()))
    }

    /// The link called `name` (without statistics), or `None`.
    async fn get_link(&self, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut query = LinkMessage::default();
        query.attributes = vec![LinkAttribute::IfName(name.into()), skip_stats()];
        let mut replies = self.exchange(vec![(Rtnl::GetLink(query), 0)]).await?;
        match replies.pop().map(|(_, reply)| reply.payload) {
            Some(NetlinkPayload::InnerMessage(Rtnl::NewLink(link))) => Ok(Some(link)),
            Some(NetlinkPayload::Error(error)) if error.raw_code() == -libc::ENODEV => Ok(None),
            Some(NetlinkPayload::Error(error)) => Err(error.to_io()),
            _ => Err(invalid("no link in the reply")),
        }
    }

    /// Every message of a dump.
    async fn dump(&self, query: Rtnl) -> io::Result<Vec<Rtnl>> {
        let mut found = Vec::new();
        for (_, reply) in self.exchange(vec![(query, NLM_F_DUMP)]).await? {
            match reply.payload {
                NetlinkPayload::InnerMessage(message) => found.push(message),
                NetlinkPayload::Error(error) if error.code.is_some() => return Err(error.to_io()),
                _ => {}
            }
        }
        Ok(found)
    }

    /// All links, or those the kernel's `filter` (on master or kind) keeps.
    async fn dump_links(&self, filter: Option<LinkAttribute>) -> io::Result<Vec<LinkMessage>> {
        let mut query = LinkMessage::default();
        query.attributes = filter.into_iter().chain([skip_stats()]).collect();
        let replies = self.dump(Rtnl::GetLink(query)).await?.into_iter();
        let links = replies.filter_map(|reply| match reply {
            Rtnl::NewLink(link) => Some(link),
            _ => None,
        });
        Ok(links.collect())
    }

    /// The IPv4 addresses of link `index`.
    async fn addresses_of(&self, index: u32) -> io::Result<Vec<Ipv4Net>> {
        let mut query = AddressMessage::default();
        query.header.family = Family::Inet;
        let replies = self.dump(Rtnl::GetAddress(query)).await?;
        let addresses = replies.iter().filter_map(|reply| match reply {
            Rtnl::NewAddress(address) if address.header.index == index => ipv4_of(address),
            _ => None,
        });
        Ok(addresses.collect())
    }

    /// Sends `requests` (with their `NLM_F_*` flags) in one datagram and
    /// reads until each is answered. Replies to an earlier exchange that
    /// was abandoned midway are skipped.
    async fn exchange(&self, requests: Vec<(Rtnl, u16)>) -> io::Result<Vec<Reply>> {
        let mut guard = self.conversation.lock().await;
        let talk = &mut *guard;
        let (first, count) = (talk.sequence.wrapping_add(1), requests.len());
        let mut datagram = Vec::new();
        for (request, flags) in requests {
            talk.sequence = talk.sequence.wrapping_add(1);
            let mut message = NetlinkMessage::from(request);
            message.header.flags = NLM_F_REQUEST | flags;
            message.header.sequence_number = talk.sequence;
            message.finalize();
            let start = datagram.len();
            datagram.resize(start + aligned(message.buffer_len()), 0);
            message.serialize(&mut datagram[start..]);
        }
        let sending = |fd| send(fd, &datagram, MsgFlags::empty());
        if when_ready(&talk.socket, Interest::WRITABLE, sending).await? != datagram.len() {
            return Err(invalid("netlink request cut short"));
        }
        let (mut unanswered, mut answers) = (count, Vec::new());
        while unanswered > 0 {
            let receiving = |fd| recv(fd, &mut talk.replies, MsgFlags::MSG_TRUNC);
            let received = when_ready(&talk.socket, Interest::READABLE, receiving).await?;
            let replies = talk.replies.get(..received);
            for reply in parse(replies.ok_or_else(|| invalid("netlink reply too large"))?)? {
                let step = reply.header.sequence_number.wrapping_sub(first) as usize;
                let more = reply.header.flags & NLM_F_MULTIPART != 0
                    && matches!(reply.payload, NetlinkPayload::InnerMessage(_));
                if step < count {
                    unanswered -= usize::from(!more);
                    answers.push((step, reply));
                }
            }
        }
        Ok(answers)
    }
}

/// Runs the non-blocking `op` on `socket`, waiting for readiness only when
/// it would block. (The first try usually succeeds: see the module doc.)
async fn when_ready<T>(
    socket: &AsyncFd<OwnedFd>,
    interest: Interest,
    mut op: impl FnMut(RawFd) -> nix::Result<T>,
) -> io::Result<T> {
    match op(socket.as_raw_fd()) {
        Err(Errno::EAGAIN) => {}
        done => return done.map_err(io::Error::from),
    }
    loop {
        let mut guard = socket.ready(interest).await?;
        if let Ok(done) = guard.try_io(|socket| op(socket.as_raw_fd()).map_err(io::Error::from)) {
            return done;
        }
    }
}

/// The messages of one datagram.
fn parse(mut datagram: &[u8]) -> io::Result<Vec<NetlinkMessage<Rtnl>>> {
    let mut messages = Vec::new();
    while !datagram.is_empty() {
        let header = NetlinkBuffer::new_checked(datagram).map_err(|e| invalid(e.to_string()))?;
        let length = aligned(header.length() as usize);
        messages.push(NetlinkMessage::deserialize(datagram).map_err(|e| invalid(e.to_string()))?);
        datagram = datagram.get(length..).unwrap_or_default();
    }
    Ok(messages)
}

fn aligned(length: usize) -> usize {
    (length + 3) & !3
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Docker's MAC for a container address: `02:42` then the address bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x42, a, b, c, d]
}

/// The host end's name for a container on a network: `veth` and 11 hex
/// digits of a SHA-256 of both ids (15 bytes, the kernel's limit). The same
/// ids always give the same name, so leftovers can be found after a crash.
pub fn veth_name(container_id: &str, network_id: &str) -> String {
    let hash = Sha256::new().chain_update(container_id).chain_update([0]);
    let digest = hex::encode(hash.chain_update(network_id).finalize());
    format!("veth{}", &digest[..11])
}

/// A non-blocking routing netlink socket in the calling thread's namespace.
fn route_socket() -> io::Result<OwnedFd> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let (family, kind) = (AddressFamily::Netlink, nix::sys::socket::SockType::Raw);
    Ok(socket(family, kind, flags, SockProtocol::NetlinkRoute)?)
}

fn skip_stats() -> LinkAttribute {
    LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])
}

fn with_mtu<T>(builder: LinkMessageBuilder<T>, mtu: Option<u32>) -> LinkMessageBuilder<T> {
    match mtu {
        Some(mtu) => builder.mtu(mtu),
        None => builder,
    }
}

fn address_message(index: u32, address: Ipv4Net) -> AddressMessage {
    let builder = AddressMessageBuilder::<Ipv4Addr>::new().index(index);
    let builder = builder.address(address.addr(), address.prefix_len());
    builder.build()
}

fn ipv4_of(message: &AddressMessage) -> Option<Ipv4Net> {
    let local = find!(message.attributes, AddressAttribute::Local(IpAddr::V4(ip)) => *ip);
    let ip = local.or(find!(message.attributes, AddressAttribute::Address(IpAddr::V4(ip)) => *ip));
    Ipv4Net::new(ip?, message.header.prefix_len).ok()
}

fn name_of(link: &LinkMessage) -> Option<String> {
    find!(link.attributes, LinkAttribute::IfName(name) => name.clone())
}

/// A request to the helper thread: a namespace to open a socket in, its
/// path (for errors), and where to send the socket.
struct Job {
    netns: OwnedFd,
    path: PathBuf,
    reply: mpsc::SyncSender<Result<OwnedFd>>,
}

/// The helper thread's queue, once started.
static HELPER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// A routing netlink socket created inside `netns` by the helper thread.
fn socket_in(netns: OwnedFd, path: &Path) -> Result<OwnedFd> {
    let jobs = {
        let mut helper = HELPER.lock().unwrap_or_else(PoisonError::into_inner);
        match helper.as_ref() {
            Some(jobs) => jobs.clone(),
            None => helper.insert(spawn_helper()?).clone(),
        }
    };
    let (reply, replies) = mpsc::sync_channel(1);
    let path = path.to_owned();
    jobs.send(Job { netns, path, reply })
        .map_err(|_| NetlinkError::HelperGone)?;
    replies.recv().map_err(|_| NetlinkError::HelperGone)?
}

/// Starts the helper thread. Its home is the caller's network namespace.
fn spawn_helper() -> Result<mpsc::Sender<Job>> {
    let home = File::open("/proc/thread-self/ns/net").map_err(NetlinkError::SpawnHelper)?;
    let (jobs, queue) = mpsc::channel::<Job>();
    let thread = std::thread::Builder::new().name("vmctl-netns".into());
    let spawned = thread.spawn(move || serve(&queue, &home));
    spawned.map_err(NetlinkError::SpawnHelper)?;
    Ok(jobs)
}

fn serve(queue: &mpsc::Receiver<Job>, home: &File) {
    for job in queue {
        let socket = match setns(&job.netns, CloneFlags::CLONE_NEWNET) {
            Ok(()) => route_socket().map_err(NetlinkError::Connect),
            Err(errno) => Err(NetlinkError::Setns(job.path, errno.into())),
        };
        // The caller may have stopped waiting; nothing to do then.
        let _ = job.reply.send(socket);
        // Go home, not to keep the container's namespace alive. (Each job
        // enters its own namespace first, so failing here harms no job.)
        if let Err(error) = setns(home, CloneFlags::CLONE_NEWNET) {
            tracing::warn!(%error, "the netns helper cannot return to its network namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::{SocketAddr as InetAddr, TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    use rtnetlink::packet_route::link::{InfoBridgePort, InfoPortData, LinkFlags};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

    use super::*;

    /// Runs `body` on a thread of its own in a fresh network namespace, so
    /// the machine's network is never touched. Skips, loudly, when not root.
    fn on_fresh_netns_thread(body: impl FnOnce() + Send + 'static) {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: network namespace tests need root");
            return;
        }
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
            body();
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// `test` on a current-thread runtime in a fresh network namespace.
    fn in_fresh_netns<F, Fut>(test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        on_fresh_netns_thread(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(test());
        });
    }

    /// A "container" network namespace, alive while its file is open.
    struct Netns {
        file: File,
    }

    impl Netns {
        fn new() -> Netns {
            let file = std::thread::spawn(|| {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
                File::open("/proc/thread-self/ns/net").expect("open the namespace")
            })
            .join()
            .expect("namespace thread");
            Netns { file }
        }

        fn path(&self) -> PathBuf {
            PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        }

        fn netlink(&self) -> Netlink {
            Netlink::in_netns(&self.path()).expect("netlink in the container")
        }

        /// Runs `f` on a thread inside this namespace.
        fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        nix::sched::setns(&self.file, CloneFlags::CLONE_NEWNET).expect("setns");
                        f()
                    })
                    .join()
                    .expect("thread in the container")
            })
        }
    }

    fn bridge_spec() -> BridgeSpec {
        BridgeSpec {
            name: "vmctl0".to_owned(),
            address: "172.30.0.1/16".parse().expect("address"),
            mtu: Some(1400),
            mac: Some([0x02, 0x42, 0xac, 0x1e, 0x00, 0x01]),
        }
    }

    fn veth<'a>(
        host_name: &'a str,
        bridge: u32,
        container: &'a Netns,
        ip: Ipv4Addr,
    ) -> VethSpec<'a> {
        VethSpec {
            host_name,
            bridge,
            mtu: Some(1400),
            netns: container.file.as_fd(),
            peer_name: "eth0",
            peer_mac: mac_for(ip),
        }
    }

    /// A veth pair with both ends here, as a parent for a macvlan.
    async fn plain_veth(netlink: &Netlink, name: &str, peer: &str) {
        let message = LinkVeth::new(name, peer).build();
        netlink
            .ack(Rtnl::NewLink(message), CREATE)
            .await
            .expect("plain veth pair");
    }

    async fn link(netlink: &Netlink, name: &str) -> LinkMessage {
        netlink
            .get_link(name)
            .await
            .expect("lookup")
            .expect("link exists")
    }

    fn hairpin(link: &LinkMessage) -> Option<bool> {
        let info = find!(link.attributes, LinkAttribute::LinkInfo(info) => info)?;
        let port = find!(info, LinkInfo::PortData(InfoPortData::BridgePort(port)) => port)?;
        find!(port, InfoBridgePort::HairpinMode(on) => *on)
    }

    fn controller(link: &LinkMessage) -> Option<u32> {
        find!(link.attributes, LinkAttribute::Controller(index) => *index)
    }

    async fn default_gateway(netlink: &Netlink) -> Option<Ipv4Addr> {
        let mut query = RouteMessage::default();
        query.header.address_family = Family::Inet;
        let routes = netlink.dump(Rtnl::GetRoute(query)).await.expect("routes");
        let default = find!(routes, Rtnl::NewRoute(route)
            if route.header.destination_prefix_length == 0 => route)?;
        find!(default.attributes, RouteAttribute::Gateway(RouteAddress::Inet(gateway)) => *gateway)
    }

    fn mtu_of(link: &LinkMessage) -> Option<u32> {
        find!(link.attributes, LinkAttribute::Mtu(mtu) => *mtu)
    }

    fn mac_of(link: &LinkMessage) -> Option<&[u8]> {
        find!(link.attributes, LinkAttribute::Address(mac) => mac.as_slice())
    }

    fn is_up(link: &LinkMessage) -> bool {
        link.header.flags.contains(LinkFlags::Up)
    }

    #[test]
    fn mac_for_is_docker_s_scheme() {
        assert_eq!(
            mac_for(Ipv4Addr::new(172, 17, 0, 2)),
            [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]
        );
    }

    #[test]
    fn veth_name_is_short_stable_and_distinct() {
        let name = veth_name("4f2a9c", "bridge");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("veth"));
        // Pinned: the engine finds its leftovers by recomputing this name.
        assert_eq!(name, veth_name("4f2a9c", "bridge"));
        assert_eq!(name, "veth0a1e721e496");
        assert_ne!(name, veth_name("4f2a9c", "other"));
        assert_ne!(veth_name("ab", "c"), veth_name("a", "bc"));
    }

    #[test]
    fn the_futures_can_move_between_runtime_threads() {
        fn is_send<T: Send>(_: &T) {}
        let _ = |netlink: &Netlink, bridge: &BridgeSpec, veth: &VethSpec, cfg: &InterfaceConfig| {
            is_send(&netlink.ensure_bridge(bridge));
            is_send(&netlink.add_veth(veth));
            is_send(&netlink.configure(cfg));
            is_send(&netlink.ports_of(1));
        };
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        on_fresh_netns_thread(|| {
            assert!(matches!(Netlink::new(), Err(NetlinkError::NoRuntime)));
        });
    }

    #[test]
    fn ensure_bridge_is_idempotent_and_keeps_other_addresses() {
        in_fresh_netns(|| async {
            let netlink = Netlink::new().expect("netlink");
            let spec = bridge_spec();
            let index = netlink.ensure_bridge(&spec).await.expect("bridge");
            assert_eq!(netlink.ensure_bridge(&spec).await.expect("again"), index);
            assert_eq!(
                netlink.link_index("vmctl0").await.expect("index"),
                Some(index)
            );
            assert_eq!(
                netlink.addresses("vmctl0").await.expect("addresses"),
                vec![spec.address]
            );

            let bridge = link(&netlink, "vmctl0").await;
            assert!(is_up(&bridge));
            assert_eq!(mtu_of(&bridge), Some(1400));
            assert_eq!(mac_of(&bridge), spec.mac.as_ref().map(|mac| &mac[..]));

            let other = BridgeSpec {
                address: "10.9.0.1/24".parse().expect("address"),
                mtu: Some(1300),
                ..spec.clone()
            };
            assert_eq!(
                netlink.ensure_bridge(&other).await.expect("second address"),
                index
            );
            let mut addresses = netlink.addresses("vmctl0").await.expect("addresses");
            addresses.sort();
            assert_eq!(addresses, vec![other.address, spec.address]);
            assert_eq!(mtu_of(&link(&netlink, "vmctl0").await), Some(1300));
        });
    }

    #[test]
    fn ensure_bridge_refuses_a_link_that_is_not_a_bridge() {
        in_fresh_netns(|| async {
            let netlink = Netlink::new().expect("netlink");
            plain_veth(&netlink, "vmctl0", "vmctl0-peer").await;
            let error = netlink
                .ensure_bridge(&bridge_spec())
                .await
                .expect_err("not a bridge");
            assert!(matches!(error, NetlinkError::NotABridge(_)), "{error:?}");
            assert_eq!(
                error.to_string(),
                "interface vmctl0 exists and is not a bridge"
            );
        });
    }

    #[test]
    fn add_veth_puts_eth0_in_the_container_and_the_host_end_on_the_bridge() {
        in_fresh_netns(|| async {
            let netlink = Netlink::new().expect("netlink");
            let bridge = netlink.ensure_bridge(&bridge_spec()).await.expect("bridge");
            let container = Netns::new();
            let ip = Ipv4Addr::new(172, 30, 0, 2);
            let host = veth_name("container", "network");
            netlink
                .add_veth(&veth(&host, bridge, &container, ip))
                .await
                .expect("veth");

            let host_end = link(&netlink, &host).await;
            assert_eq!(controller(&host_end), Some(bridge));
            assert_eq!(hairpin(&host_end), Some(true));
            assert!(is_up(&host_end));
            assert_eq!(mtu_of(&host_end), Some(1400));
            assert_eq!(
                netlink.ports_of(bridge).await.expect("ports"),
                vec![host.clone()]
            );
            assert_eq!(netlink.link_index("eth0").await.expect("lookup"), None);

            let inside = container.netlink();
            let eth0 = link(&inside, "eth0").await;
            assert_eq!(mac_of(&eth0), Some(&mac_for(ip)[..]));
            assert_eq!(mtu_of(&eth0), Some(1400));
            let mut names = inside.link_names().await.expect("names");
            names.sort();
            assert_eq!(names, vec!["eth0".to_owned(), "lo".to_owned()]);
        });
    }

    #[test]
    fn configure_sets_address_up_and_default_route_and_traffic_flows() {
        in_fresh_netns(|| async {
            let netlink = Netlink::new().expect("netlink");
            let spec = bridge_spec();
            let bridge = netlink.ensure_bridge(&spec).await.expect("bridge");
            let container = Netns::new();
            let ip = Ipv4Addr::new(172, 30, 0, 2);
            netlink
                .add_veth(&veth("vethtest", bridge, &container, ip))
                .await
                .expect("veth");

            let inside = container.netlink();
            let address = Ipv4Net::new(ip, 16).expect("address");
            let gateway = spec.address.addr();
            let config = InterfaceConfig {
                name: "eth0".to_owned(),
                address,
                gateway: Some(gateway),
                mtu: Some(1400),
            };
            inside.configure(&config).await.expect("configure");
            assert_eq!(
                inside.addresses("eth0").await.expect("addresses"),
                vec![address]
            );
            assert!(is_up(&link(&inside, "eth0").await));
            assert!(is_up(&link(&inside, "lo").await));
            assert_eq!(default_gateway(&inside).await, Some(gateway));

            let listener = TcpListener::bind((gateway, 0)).expect("listen on the bridge");
            let target = InetAddr::from((gateway, listener.local_addr().expect("port").port()));
            let local = container.run(move || {
                let stream = TcpStream::connect_timeout(&target, Duration::from_secs(10))
                    .expect("connect from the container");
                stream.local_addr().expect("local address")
            });
            assert_eq!(local.ip(), ip);
            let (_, peer) = listener.accept().expect("accept");
            assert_eq!(peer, local);
        });
    }

    #[test]
    fn configure_without_gateway_adds_no_default_route() {
        in_fresh_netns(|| async {
            let netlink = Netlink::new().expect("netlink");
            let bridge = netlink.ensure_bridge(&bridge_spec()).await.expect("bridge");
            let container = Netns::new();
            let ip = Ipv4Addr::new(172, 30, 0, 3);
            netlink
                .add_veth(&veth("vethinternal", bridge, &container, ip))
                .await
                .expect("veth");
            let inside = container.netlink();
            let config = InterfaceConfig {
                name: "eth0".to_owned(),
                address: Ipv4Net::new(ip, 16).expect("address"),
                gateway: None,
                mtu: None,
            };
            inside.configure(&config).await.expect("configure");
            assert_eq!(default_gateway(&inside).await, None);

            let missing = InterfaceConfig {
                name: "eth9".to_owned(),
                ..config
            };
            let error = inside.configure(&missing).await.expect_err("no eth9");
            assert_eq!(error.to_string(), "interface eth9 not found");
        });
    }

    #[test]
    fn a_failed_add_veth_leaves_no_host_end() {
        in_fresh_netns(|| async {
            let netlink = Netlink::new().expect("netlink");
            let bridge = netlink.ensure_bridge(&bridge_spec()).await.expect("bridge");
            let container = Netns::new();
            let ip = Ipv4Addr::new(172, 30, 0, 2);
            netlink
                .add_veth(&veth("vethfirst", bridge, &container, ip))
                .await
                .expect("first veth");

            // The container already has an eth0.
            let error = netlink
                .add_veth(&veth("vethsecond", bridge, &container, ip))
                .await
                .expect_err("eth0 is taken");
            assert_eq!(error.to_string(), "cannot create veth pair vethsecond");
            let NetlinkError::CreateVeth(_, source) = &error else {
                panic!("unexpected error {error:?}");
            };
            assert_eq!(source.raw_os_error(), Some(libc::EEXIST));
            assert_eq!(
                netlink.link_index("vethsecond").await.expect("lookup"),
                None
            );
            assert_eq!(
                netlink.ports_of(bridge).await.expect("ports"),
                vec!["vethfirst".to_owned()]
            );

            // A taken host name fails the same way and leaves the old pair.
            let other = Netns::new();
            let error = netlink
                .add_veth(&veth("vethfirst", bridge, &other, ip))
                .await
                .expect_err("vethfirst is taken");
            assert!(matches!(error, NetlinkError::CreateVeth(..)), "{error:?}");
            assert_eq!(
                other.netlink().link_names().await.expect("names"),
                vec!["lo".to_owned()]
            );
            assert!(netlink
                .link_index("vethfirst")
                .await
                .expect("lookup")
                .is_some());
        });
    }

    #[test]
    fn delete_link_removes_both_ends_and_tolerates_a_missing_link() {
        in_fresh_netns(|| async {
            let netlink = Netlink::new().expect("netlink");
            let bridge = netlink.ensure_bridge(&bridge_spec()).await.expect("bridge");
            let container = Netns::new();
            let ip = Ipv4Addr::new(172, 30, 0, 2);
            netlink
                .add_veth(&veth("vethgone", bridge, &container, ip))
                .await
                .expect("veth");

            assert!(netlink.delete_link("vethgone").await.expect("delete"));
            assert!(!netlink.delete_link("vethgone").await.expect("delete again"));
            assert_eq!(
                netlink.ports_of(bridge).await.expect("ports"),
                Vec::<String>::new()
            );
            let inside = container.netlink();
            assert_eq!(
                inside.link_names().await.expect("names"),
                vec!["lo".to_owned()]
            );
        });
    }

    #[test]
    fn add_macvlan_creates_the_link_inside_the_container() {
        in_fresh_netns(|| async {
            let netlink = Netlink::new().expect("netlink");
            plain_veth(&netlink, "parent0", "parent0-peer").await;
            let parent = netlink
                .link_index("parent0")
                .await
                .expect("lookup")
                .expect("parent");
            let container = Netns::new();
            let mac = mac_for(Ipv4Addr::new(192, 168, 50, 7));
            let spec = MacvlanSpec {
                parent,
                name: "eth1",
                netns: container.file.as_fd(),
                mac,
                mtu: Some(1400),
            };
            netlink.add_macvlan(&spec).await.expect("macvlan");
            assert_eq!(netlink.link_index("eth1").await.expect("lookup"), None);

            let inside = container.netlink();
            let eth1 = link(&inside, "eth1").await;
            let info = find!(eth1.attributes, LinkAttribute::LinkInfo(info) => info);
            assert!(info.is_some_and(|info| info.contains(&LinkInfo::Kind(InfoKind::MacVlan))));
            assert_eq!(mac_of(&eth1), Some(&mac[..]));
            assert_eq!(mtu_of(&eth1), Some(1400));

            let error = netlink.add_macvlan(&spec).await.expect_err("eth1 is taken");
            assert_eq!(
                error.to_string(),
                format!("cannot create macvlan eth1 on interface {parent}")
            );
        });
    }

    #[test]
    fn in_netns_reports_a_missing_namespace() {
        in_fresh_netns(|| async {
            let error = Netlink::in_netns(Path::new("/proc/0/ns/net"))
                .err()
                .expect("no such process");
            assert_eq!(
                error.to_string(),
                "cannot open network namespace /proc/0/ns/net"
            );
        });
    }

    /// Not a benchmark with a bound: prints what one container's setup costs
    /// (`cargo test -p vmctl-guest timing -- --nocapture`).
    #[test]
    fn timing_of_container_setup() {
        on_fresh_netns_thread(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(time_container_setups(200));
        });
    }

    async fn time_container_setups(runs: usize) {
        let netlink = Netlink::new().expect("netlink");
        let bridge = netlink.ensure_bridge(&bridge_spec()).await.expect("bridge");
        let mut steps: [(&str, Vec<Duration>); 5] = Default::default();
        for (i, name) in ["add_veth", "in_netns", "configure", "total", "delete_link"]
            .iter()
            .enumerate()
        {
            steps[i].0 = name;
        }
        for run in 0..runs {
            let container = Netns::new();
            let path = container.path();
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 30, 1, 0)) + run as u32);
            let host = veth_name(&run.to_string(), "timing");
            let start = Instant::now();
            netlink
                .add_veth(&veth(&host, bridge, &container, ip))
                .await
                .expect("veth");
            let veth_done = Instant::now();
            let inside = Netlink::in_netns(&path).expect("in_netns");
            let connected = Instant::now();
            let config = InterfaceConfig {
                name: "eth0".to_owned(),
                address: Ipv4Net::new(ip, 16).expect("address"),
                gateway: Some(Ipv4Addr::new(172, 30, 0, 1)),
                mtu: Some(1400),
            };
            inside.configure(&config).await.expect("configure");
            let end = Instant::now();
            netlink.delete_link(&host).await.expect("delete");
            let deleted = Instant::now();
            for (i, time) in [
                veth_done - start,
                connected - veth_done,
                end - connected,
                end - start,
                deleted - end,
            ]
            .into_iter()
            .enumerate()
            {
                steps[i].1.push(time);
            }
        }
        for (name, times) in &mut steps {
            times.sort();
            eprintln!(
                "{name:>12}: median {:>7.1?} min {:>7.1?} max {:>7.1?} ({} runs)",
                times[times.len() / 2],
                times[0],
                times[times.len() - 1],
                times.len()
            );
        }
    }
}
