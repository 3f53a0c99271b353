//! The embedded DNS responder of a user-defined network: Docker's
//! `127.0.0.11`, served here on the network's gateway address.
//!
//! Owns the name table of one network ([`DnsRecords`], written by the engine
//! as endpoints join and leave) and the server that answers from it
//! ([`DnsServer`], UDP and TCP on one port, built on hickory-server). Does not
//! own the network namespace it runs in, the address it listens on, or the
//! containers' `resolv.conf`: the engine decides those.
//!
//! How a query is answered:
//!
//! - a name in the table: `A` gets every address that answers to it (an alias
//!   may be shared by several endpoints), TTL 600 like Docker; any other type
//!   gets NOERROR with no records, so a resolver asking `AAAA` falls back to
//!   `A`. Names match whole and case-insensitively: no search-domain games.
//! - `PTR` for `d.c.b.a.in-addr.arpa` of an address in the table: the first
//!   name of its endpoint.
//! - anything else, on a network that forwards: the query bytes are relayed to
//!   each upstream in turn (2 s per try, over the protocol the client used)
//!   and the first reply goes back with the client's query id; no upstream, or
//!   none answering, is SERVFAIL. On an internal network (no forwarding): NXDOMAIN.
//!
//! Local answers carry AA; RA is set when the server forwards.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode};
use hickory_proto::op::{LowerQuery, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// TTL of local answers, as Docker's embedded DNS.
const TTL: u32 = 600;
/// How long one upstream gets to answer a forwarded query.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client TCP connection may stay idle.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per client TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// EDNS payload size we advertise on local answers (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;
/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: usize = 16;

/// Failures of the DNS responder.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Binding the UDP socket failed.
    #[error("cannot bind the DNS UDP socket on {addr}")]
    BindUdp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Binding the TCP listener failed.
    #[error("cannot bind the DNS TCP listener on {addr}")]
    BindTcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Reading back the bound address failed.
    #[error("cannot read the address the DNS socket on {addr} is bound to")]
    LocalAddr {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Sending a query to, or reading a reply from, an upstream failed.
    #[error("cannot exchange a query with upstream {upstream} over {protocol}")]
    Upstream {
        upstream: SocketAddr,
        protocol: Protocol,
        #[source]
        source: std::io::Error,
    },
    /// An upstream did not answer in time.
    #[error("upstream {upstream} did not answer within {FORWARD_TIMEOUT:?}")]
    UpstreamTimeout { upstream: SocketAddr },
    /// An upstream's reply is not a DNS message.
    #[error("cannot decode the reply of upstream {upstream}")]
    UpstreamReply {
        upstream: SocketAddr,
        #[source]
        source: hickory_proto::serialize::binary::DecodeError,
    },
    /// A forwarded query is too long for a TCP length prefix.
    #[error("query of {len} bytes is too long to forward to {upstream} over TCP")]
    QueryTooLong { upstream: SocketAddr, len: usize },
}

/// One endpoint's entry: the names it answers to and its address.
#[derive(Debug)]
struct Entry {
    /// As given, first one used for `PTR`.
    names: Vec<String>,
    /// Normalised (lower case, no trailing dot) for lookups.
    keys: Vec<String>,
    ip: Ipv4Addr,
}

/// The names of one network: shared by the engine (writer) and the server
/// (reader). Clone = same table.
#[derive(Clone, Default, Debug)]
pub struct DnsRecords {
    entries: Arc<RwLock<BTreeMap<String, Entry>>>,
}

impl DnsRecords {
    /// An empty table.
    pub fn new() -> DnsRecords {
        DnsRecords::default()
    }

    /// Sets the names (container name, aliases, short id…) that endpoint
    /// `owner` answers to with address `ip`; replaces that owner's previous
    /// entry. Empty names are ignored.
    pub fn set(&self, owner: &str, names: &[String], ip: Ipv4Addr) {
        let names: Vec<String> = names
            .iter()
            .map(|name| name.strip_suffix('.').unwrap_or(name).to_string())
            .filter(|name| !name.is_empty())
            .collect();
        let keys = names.iter().map(|name| normalise(name)).collect();
        let entry = Entry { names, keys, ip };
        self.write().insert(owner.to_string(), entry);
    }

    /// Forgets endpoint `owner`; a no-op when it has no entry.
    pub fn remove(&self, owner: &str) {
        self.write().remove(owner);
    }

    /// Every address answering to `name` (case-insensitive, a trailing dot
    /// ignored), in owner order, without duplicates.
    pub fn lookup(&self, name: &str) -> Vec<Ipv4Addr> {
        let key = normalise(name);
        let mut ips = Vec::new();
        for entry in self.read().values() {
            if entry.keys.contains(&key) && !ips.contains(&entry.ip) {
                ips.push(entry.ip);
            }
        }
        ips
    }

    /// The first name of an endpoint holding `ip`.
    pub fn reverse(&self, ip: Ipv4Addr) -> Option<String> {
        self.read()
            .values()
            .filter(|entry| entry.ip == ip)
            .find_map(|entry| entry.names.first().cloned())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        // The table stays consistent even if a writer panicked: every write
        // is a single map operation.
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A name as looked up: lower case, without its trailing dot.
fn normalise(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The IPv4 address named by `d.c.b.a.in-addr.arpa` (already normalised).
fn arpa_to_ipv4(key: &str) -> Option<Ipv4Addr> {
    let reversed = key.strip_suffix(".in-addr.arpa")?;
    let mut octets = [0u8; 4];
    let mut labels = reversed.split('.');
    for octet in octets.iter_mut().rev() {
        *octet = labels.next()?.parse().ok()?;
    }
    match labels.next() {
        Some(_) => None,
        None => Some(Ipv4Addr::from(octets)),
    }
}

/// A running responder; dropping it without [`DnsServer::stop`] also aborts
/// its listeners.
pub struct DnsServer {
    server: Server<Responder>,
    local_addr: SocketAddr,
}

impl DnsServer {
    /// Serves UDP and TCP on `listen` (port 53 in production, 0 in tests:
    /// then UDP and TCP get the same free port). Names in `records` are
    /// answered locally; other names go to `upstreams` when `forward`, else
    /// get NXDOMAIN.
    pub async fn start(
        listen: SocketAddr,
        records: DnsRecords,
        upstreams: Vec<SocketAddr>,
        forward: bool,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp, local_addr) = bind(listen).await?;
        // Never forward to ourselves: that would loop until the timeout.
        let upstreams: Vec<SocketAddr> = upstreams
            .into_iter()
            .filter(|upstream| *upstream != local_addr)
            .collect();
        tracing::info!(%local_addr, ?upstreams, forward, "dns: serving");
        let mut server = Server::new(Responder {
            records,
            upstreams: upstreams.into(),
            forward,
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        Ok(DnsServer { server, local_addr })
    }

    /// The UDP address served (TCP is on the same port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops both listeners and waits for them to close, which releases the
    /// port.
    pub async fn stop(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::warn!(local_addr = %self.local_addr, %error, "dns: listener ended with an error");
        }
        tracing::info!(local_addr = %self.local_addr, "dns: stopped");
    }
}

/// Binds UDP on `listen` and TCP on the port UDP got.
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    let attempts = if listen.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| DnsError::BindUdp {
                addr: listen,
                source,
            })?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::LocalAddr {
            addr: listen,
            source,
        })?;
        match TcpListener::bind(local_addr).await {
            Ok(tcp) => return Ok((udp, tcp, local_addr)),
            // Port 0: UDP's free port may be taken for TCP; try another.
            Err(_) if attempt < attempts => continue,
            Err(source) => {
                return Err(DnsError::BindTcp {
                    addr: local_addr,
                    source,
                })
            }
        }
    }
}

/// What a query gets.
enum Reply {
    /// Answered from the table (maybe with no records).
    Local(Vec<Record>),
    /// An upstream's reply.
    Relayed(Message),
    /// Just a response code.
    Code(ResponseCode),
}

/// The hickory request handler: the table, and where to forward the rest.
struct Responder {
    records: DnsRecords,
    upstreams: Arc<[SocketAddr]>,
    forward: bool,
}

// `RequestHandler` is declared with `#[async_trait]`; this is the signature
// that macro produces, written out so the crate needs no `async-trait`.
impl RequestHandler for Responder {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.respond(request, response_handle))
    }
}

impl Responder {
    async fn respond<R: ResponseHandler>(&self, request: &Request, handle: R) -> ResponseInfo {
        let reply = self.answer(request).await;
        let sent = match reply {
            Reply::Local(records) => {
                let code = ResponseCode::NoError;
                self.send_own(request, handle, code, &records).await
            }
            Reply::Relayed(message) => send_relayed(request, handle, &message).await,
            Reply::Code(code) => self.send_own(request, handle, code, &[]).await,
        };
        sent.unwrap_or_else(|error| {
            tracing::warn!(src = %request.src(), %error, "dns: cannot send a response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        })
    }

    async fn answer(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::Code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::Code(ResponseCode::FormErr);
        };
        if let Some(records) = self.local(info.query) {
            return Reply::Local(records);
        }
        if !self.forward {
            return Reply::Code(ResponseCode::NXDomain);
        }
        match self.relay(request).await {
            Some(message) => Reply::Relayed(message),
            None => Reply::Code(ResponseCode::ServFail),
        }
    }

    /// The table's answer to `query`, or `None` when the name is not ours.
    fn local(&self, query: &LowerQuery) -> Option<Vec<Record>> {
        let key = normalise(&query.name().to_string());
        let name = query.original().name().clone();
        if query.query_type() == RecordType::PTR {
            if let Some(host) = arpa_to_ipv4(&key).and_then(|ip| self.records.reverse(ip)) {
                let mut target = Name::from_ascii(&host).ok()?;
                target.set_fqdn(true);
                return Some(vec![Record::from_rdata(name, TTL, RData::PTR(PTR(target)))]);
            }
        }
        let ips = self.records.lookup(&key);
        if ips.is_empty() {
            return None;
        }
        if query.query_type() != RecordType::A {
            return Some(Vec::new());
        }
        let records = ips
            .into_iter()
            .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip))))
            .collect();
        Some(records)
    }

    /// Tries each upstream in turn; the first reply wins.
    async fn relay(&self, request: &Request) -> Option<Message> {
        for &upstream in self.upstreams.iter() {
            let exchange = exchange(upstream, request.as_slice(), request.protocol());
            let result = match tokio::time::timeout(FORWARD_TIMEOUT, exchange).await {
                Ok(result) => result,
                Err(_) => Err(DnsError::UpstreamTimeout { upstream }),
            };
            match result {
                Ok(message) => return Some(message),
                Err(error) => {
                    tracing::warn!(src = %request.src(), %upstream, error = %crate::state::error_chain(&error), "dns: forwarding failed");
                }
            }
        }
        None
    }

    fn metadata(&self, request: &Request, code: ResponseCode) -> Metadata {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        metadata.authoritative = matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
        metadata.recursion_available = self.forward && !self.upstreams.is_empty();
        metadata
    }

    /// Sends our own answer: `code` with `records` (maybe none).
    async fn send_own<R: ResponseHandler>(
        &self,
        request: &Request,
        mut handle: R,
        code: ResponseCode,
        records: &[Record],
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let metadata = self.metadata(request, code);
        let none = std::iter::empty::<&Record>;
        let response = builder.build(metadata, records.iter(), none(), none(), none());
        handle.send_response(response).await
    }
}

/// Relays an upstream's reply: its flags, code and sections, the client's id.
async fn send_relayed<R: ResponseHandler>(
    request: &Request,
    mut handle: R,
    message: &Message,
) -> Result<ResponseInfo, hickory_server::net::NetError> {
    // hickory sizes a UDP response by its OPT record: keep the upstream's
    // options but never exceed what the client accepts.
    let edns = message.edns.clone().map(|mut edns| {
        edns.set_max_payload(edns.max_payload().min(request.max_payload()));
        edns
    });
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &edns {
        builder.edns(edns);
    }
    let mut metadata = message.metadata;
    metadata.id = request.metadata.id;
    let response = builder.build(
        metadata,
        message.answers.iter(),
        message.authorities.iter(),
        std::iter::empty(),
        message.additionals.iter(),
    );
    handle.send_response(response).await
}

/// An OPT record for the response when the query had one (RFC 6891 6.1.1).
/// hickory also sizes UDP responses by it, so it offers no more than the
/// client accepts.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|_| {
        let mut edns = Edns::new();
        let payload = EDNS_PAYLOAD.min(request.max_payload());
        edns.set_max_payload(payload).set_version(0);
        edns
    })
}

/// Sends `query` to `upstream` over `protocol` and reads its reply.
async fn exchange(
    upstream: SocketAddr,
    query: &[u8],
    protocol: Protocol,
) -> Result<Message, DnsError> {
    let reply = match protocol {
        Protocol::Tcp => exchange_tcp(upstream, query).await?,
        _ => exchange_udp(upstream, query).await?,
    };
    Message::from_vec(&reply).map_err(|source| DnsError::UpstreamReply { upstream, source })
}

/// The id in a query's header (the server only passes on well-formed ones).
fn query_id(query: &[u8]) -> u16 {
    match query {
        [high, low, ..] => u16::from_be_bytes([*high, *low]),
        _ => 0,
    }
}

/// One UDP datagram out; the first datagram back with the same id.
async fn exchange_udp(upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>, DnsError> {
    let id = query_id(query);
    let io_error = |source| DnsError::Upstream {
        upstream,
        protocol: Protocol::Udp,
        source,
    };
    let any: SocketAddr = match upstream {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await.map_err(io_error)?;
    socket.connect(upstream).await.map_err(io_error)?;
    socket.send(query).await.map_err(io_error)?;
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buffer).await.map_err(io_error)?;
        // A late reply to an earlier try could share the socket's port; only
        // a reply to this query counts.
        if len >= 2 && query_id(&buffer[..len]) == id {
            buffer.truncate(len);
            return Ok(buffer);
        }
    }
}

/// One length-prefixed query out on a fresh connection; its reply back.
async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>, DnsError> {
    let io_error = |source| DnsError::Upstream {
        upstream,
        protocol: Protocol::Tcp,
        source,
    };
    let len = u16::try_from(query.len()).map_err(|_| DnsError::QueryTooLong {
        upstream,
        len: query.len(),
    })?;
    let mut stream = TcpStream::connect(upstream).await.map_err(io_error)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(io_error)?;
    let reply_len = stream.read_u16().await.map_err(io_error)?;
    let mut reply = vec![0u8; usize::from(reply_len)];
    stream.read_exact(&mut reply).await.map_err(io_error)?;
    Ok(reply)
}

/// Upstream servers from a resolv.conf text: every `nameserver` line, port
/// 53, in order. No address is filtered out: the server runs in the engine's
/// network namespace, where even `127.0.0.53` is reachable. Lines whose
/// address does not parse are ignored.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            // A zoned IPv6 address (`fe80::1%eth0`) does not parse: ignored.
            let ip: std::net::IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, Query};
    use std::time::Instant;

    const LOOPBACK: &str = "127.0.0.1:0";

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn table() -> DnsRecords {
        let records = DnsRecords::new();
        records.set(
            "c1",
            &names(&["web", "abcdef123456", "app"]),
            ip("172.18.0.2"),
        );
        records.set("c2", &names(&["db", "app"]), ip("172.18.0.3"));
        records
    }

    async fn serve(records: DnsRecords, upstreams: Vec<SocketAddr>, forward: bool) -> DnsServer {
        DnsServer::start(LOOPBACK.parse().unwrap(), records, upstreams, forward)
            .await
            .unwrap()
    }

    async fn serve_on(addr: SocketAddr) -> DnsServer {
        DnsServer::start(addr, DnsRecords::new(), vec![], true)
            .await
            .unwrap()
    }

    fn query(name: &str, kind: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        message
    }

    async fn ask_udp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
        exchange_udp_message(server, query(name, kind)).await
    }

    async fn exchange_udp_message(server: SocketAddr, request: Message) -> Message {
        let socket = UdpSocket::bind(LOOPBACK).await.unwrap();
        socket.connect(server).await.unwrap();
        socket.send(&request.to_vec().unwrap()).await.unwrap();
        let mut buffer = vec![0u8; 4096];
        let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer))
            .await
            .expect("no reply within 5 s")
            .unwrap();
        let reply = Message::from_vec(&buffer[..len]).unwrap();
        assert_eq!(reply.metadata.id, request.metadata.id);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        reply
    }

    async fn ask_tcp(server: SocketAddr, name: &str, kind: RecordType) -> Message {
        let request = query(name, kind);
        let bytes = request.to_vec().unwrap();
        let mut stream = TcpStream::connect(server).await.unwrap();
        stream.write_u16(bytes.len() as u16).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut reply = vec![0u8; usize::from(len)];
        stream.read_exact(&mut reply).await.unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, request.metadata.id);
        reply
    }

    fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
        let mut ips: Vec<Ipv4Addr> = reply
            .answers
            .iter()
            .map(|record| match &record.data {
                RData::A(a) => a.0,
                other => panic!("not an A record: {other:?}"),
            })
            .collect();
        ips.sort();
        ips
    }

    #[test]
    fn table_lookup_reverse_remove() {
        let records = table();
        assert_eq!(records.lookup("web"), vec![ip("172.18.0.2")]);
        assert_eq!(records.lookup("WEB."), vec![ip("172.18.0.2")]);
        assert_eq!(
            records.lookup("app"),
            vec![ip("172.18.0.2"), ip("172.18.0.3")]
        );
        assert_eq!(records.reverse(ip("172.18.0.3")).as_deref(), Some("db"));
        records.set("c1", &names(&["front"]), ip("172.18.0.4"));
        assert!(records.lookup("web").is_empty());
        assert_eq!(records.lookup("front"), vec![ip("172.18.0.4")]);
        records.remove("c2");
        assert!(records.lookup("db").is_empty());
        assert_eq!(records.reverse(ip("172.18.0.3")), None);
    }

    #[test]
    fn arpa_names() {
        assert_eq!(
            arpa_to_ipv4("3.0.18.172.in-addr.arpa"),
            Some(ip("172.18.0.3"))
        );
        assert_eq!(arpa_to_ipv4("0.18.172.in-addr.arpa"), None);
        assert_eq!(arpa_to_ipv4("1.3.0.18.172.in-addr.arpa"), None);
        assert_eq!(arpa_to_ipv4("web"), None);
    }

    #[test]
    fn resolv_conf() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\n\
                    nameserver  8.8.8.8 \nnameserver 2001:4860:4860::8888\n\
                    nameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n";
        let expected: Vec<SocketAddr> =
            ["127.0.0.53:53", "8.8.8.8:53", "[2001:4860:4860::8888]:53"]
                .iter()
                .map(|addr| addr.parse().unwrap())
                .collect();
        assert_eq!(upstreams_from_resolv_conf(text), expected);
    }

    #[tokio::test]
    async fn answers_known_names_with_a_records() {
        let server = serve(table(), vec![], true).await;
        let addr = server.local_addr();
        let reply = ask_udp(addr, "web", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative);
        assert_eq!(addresses(&reply), vec![ip("172.18.0.2")]);
        assert_eq!(reply.answers[0].ttl, TTL);
        let reply = ask_udp(addr, "app", RecordType::A).await;
        assert_eq!(addresses(&reply), vec![ip("172.18.0.2"), ip("172.18.0.3")]);
        let reply = ask_udp(addr, "abcdef123456.", RecordType::A).await;
        assert_eq!(addresses(&reply), vec![ip("172.18.0.2")]);
        server.stop().await;
    }

    #[tokio::test]
    async fn edns_queries_get_an_opt_record() {
        let server = serve(table(), vec![], true).await;
        let mut request = query("web", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        request.set_edns(edns);
        let reply = exchange_udp_message(server.local_addr(), request).await;
        assert_eq!(addresses(&reply), vec![ip("172.18.0.2")]);
        let edns = reply.edns.expect("an OPT record in the reply");
        assert_eq!(edns.max_payload(), EDNS_PAYLOAD);
        server.stop().await;
    }

    #[tokio::test]
    async fn names_are_case_insensitive() {
        let server = serve(table(), vec![], true).await;
        let reply = ask_udp(server.local_addr(), "WeB", RecordType::A).await;
        assert_eq!(addresses(&reply), vec![ip("172.18.0.2")]);
        server.stop().await;
    }

    #[tokio::test]
    async fn other_types_of_known_names_are_empty() {
        let server = serve(table(), vec![], true).await;
        for kind in [RecordType::AAAA, RecordType::MX, RecordType::Unknown(65280)] {
            let reply = ask_udp(server.local_addr(), "web", kind).await;
            assert_eq!(
                reply.metadata.response_code,
                ResponseCode::NoError,
                "{kind}"
            );
            assert!(reply.answers.is_empty(), "{kind}");
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn ptr_names_the_owner() {
        let server = serve(table(), vec![], false).await;
        let arpa = Name::from(ip("172.18.0.3")).to_ascii();
        let reply = ask_udp(server.local_addr(), &arpa, RecordType::PTR).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        match &reply.answers[..] {
            [record] => assert_eq!(
                record.data,
                RData::PTR(PTR(Name::from_ascii("db.").unwrap()))
            ),
            other => panic!("expected one PTR record, got {other:?}"),
        }
        let arpa = Name::from(ip("172.18.0.9")).to_ascii();
        let reply = ask_udp(server.local_addr(), &arpa, RecordType::PTR).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        server.stop().await;
    }

    #[tokio::test]
    async fn forwards_unknown_names_and_removed_ones() {
        let upstream_records = DnsRecords::new();
        upstream_records.set("far", &names(&["far-away"]), ip("10.0.0.7"));
        let upstream = serve(upstream_records, vec![], false).await;
        let records = table();
        let server = serve(records.clone(), vec![upstream.local_addr()], true).await;
        let reply = ask_udp(server.local_addr(), "far-away", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&reply), vec![ip("10.0.0.7")]);
        // Relayed as is: the flags are the upstream's (authoritative, and an
        // internal network, so no recursion).
        assert!(reply.metadata.authoritative && !reply.metadata.recursion_available);
        let reply = ask_udp(server.local_addr(), "web", RecordType::A).await;
        assert!(reply.metadata.authoritative && reply.metadata.recursion_available);
        // Removed from the table: forwarded, and the upstream says NXDOMAIN.
        records.remove("c1");
        let reply = ask_udp(server.local_addr(), "web", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        let reply = ask_tcp(server.local_addr(), "far-away", RecordType::A).await;
        assert_eq!(addresses(&reply), vec![ip("10.0.0.7")]);
        server.stop().await;
        upstream.stop().await;
    }

    #[tokio::test]
    async fn internal_network_answers_nxdomain() {
        let server = serve(table(), vec!["127.0.0.1:9".parse().unwrap()], false).await;
        let reply = ask_udp(server.local_addr(), "example.com", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
        assert!(!reply.metadata.recursion_available);
        server.stop().await;
    }

    #[tokio::test]
    async fn no_upstream_is_servfail() {
        let server = serve(table(), vec![], true).await;
        let reply = ask_udp(server.local_addr(), "example.com", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        server.stop().await;
    }

    #[tokio::test]
    async fn dead_upstream_is_servfail_after_the_timeout() {
        let silent = UdpSocket::bind(LOOPBACK).await.unwrap();
        let server = serve(table(), vec![silent.local_addr().unwrap()], true).await;
        let started = Instant::now();
        let reply = ask_udp(server.local_addr(), "example.com", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        let waited = started.elapsed();
        assert!(
            waited >= FORWARD_TIMEOUT && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn tcp_queries_are_answered() {
        let server = serve(table(), vec![], true).await;
        let reply = ask_tcp(server.local_addr(), "db", RecordType::A).await;
        assert_eq!(addresses(&reply), vec![ip("172.18.0.3")]);
        server.stop().await;
    }

    #[tokio::test]
    async fn stop_releases_the_port() {
        let server = serve(table(), vec![], true).await;
        let addr = server.local_addr();
        // An open client connection must not keep the listener alive.
        let _client = TcpStream::connect(addr).await.unwrap();
        server.stop().await;
        drop(UdpSocket::bind(addr).await.unwrap());
        drop(TcpListener::bind(addr).await.unwrap());
        let again = serve_on(addr).await;
        assert_eq!(again.local_addr(), addr);
        again.stop().await;
    }
}
