//! UDP forwards: one desktop socket; each client address is a flow with its
//! own vsock stream to the guest's forward service, datagrams length-prefixed
//! (`vmctl_proto::forward`), or while the forward link is up
//! (`crate::link`) its own UDP socket there. A flow idle for [`IDLE`] is closed, like a
//! conntrack entry; the guest closes its side at the same age. A socket
//! keeps at most [`MAX_FLOWS`] flows: a datagram from a new client beyond
//! that is dropped (logged once per episode), and every flow passes the
//! daemon's [`super::gate`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use vmctl_proto::forward::{read_datagram, write_datagram, MAX_DATAGRAM};
use vmctl_proto::ports::Protocol;

use super::gate::Permit;
use super::stats::Stats;
use super::Route;
use crate::vsock::VsockTransport;

/// How long a flow lives without a datagram either way.
pub const IDLE: Duration = Duration::from_secs(60);

/// Datagrams queued per flow while its stream opens; more are dropped (UDP).
const QUEUE: usize = 256;

/// Flows (client addresses) per published UDP port at once.
pub const MAX_FLOWS: usize = 1024;

/// Serves `socket` until the task is dropped.
pub async fn serve(
    socket: UdpSocket,
    route: Route,
    transport: Arc<dyn VsockTransport>,
    stats: Arc<Stats>,
) {
    let target = route.target;
    let mut full = false;
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    loop {
        let (n, client) = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(%target, error = %e, "UDP receive failed");
                    continue;
                }
            },
            _ = sweep.tick() => {
                flows.retain(|_, sender| !sender.is_closed());
                continue;
            }
        };
        stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let datagram = buffer[..n].to_vec();
        if let Some(sender) = flows.get(&client) {
            match sender.try_send(datagram) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => continue,
                Err(mpsc::error::TrySendError::Closed(datagram)) => {
                    flows.remove(&client);
                    start_flow(
                        &mut flows, client, datagram, &socket, &route, &transport, &stats,
                    );
                }
            }
            continue;
        }
        if flows.len() >= MAX_FLOWS {
            flows.retain(|_, sender| !sender.is_closed());
        }
        if flows.len() >= MAX_FLOWS {
            if !full {
                tracing::warn!(%target, max = MAX_FLOWS, "too many UDP flows on one port: datagrams from new clients are dropped until some end");
                full = true;
            }
            continue;
        }
        full = false;
        start_flow(
            &mut flows, client, datagram, &socket, &route, &transport, &stats,
        );
    }
}

fn start_flow(
    flows: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    client: SocketAddr,
    first: Vec<u8>,
    socket: &Arc<UdpSocket>,
    route: &Route,
    transport: &Arc<dyn VsockTransport>,
    stats: &Arc<Stats>,
) {
    let Some(permit) = route.gate.admit(route.listen, route.target, route.origin) else {
        return;
    };
    let (sender, receiver) = mpsc::channel(QUEUE);
    let _ = sender.try_send(first);
    flows.insert(client, sender);
    tokio::spawn(flow(
        client,
        receiver,
        socket.clone(),
        route.clone(),
        permit,
        transport.clone(),
        stats.clone(),
    ));
}

async fn flow(
    client: SocketAddr,
    mut datagrams: mpsc::Receiver<Vec<u8>>,
    socket: Arc<UdpSocket>,
    route: Route,
    _permit: Permit,
    transport: Arc<dyn VsockTransport>,
    stats: Arc<Stats>,
) {
    let target = route.target;
    let _open = stats.open();
    // Through the link when it is up.
    if let Some((link, to)) = route.through_link() {
        match link.connect_udp(to).await {
            Ok(guest) => return linked(client, datagrams, socket, guest, &stats).await,
            // vsock can still carry it.
            Err(e) => {
                tracing::warn!(%target, error = %e, "no UDP socket on the link: vsock instead")
            }
        }
    }
    let Some(guest) =
        super::open_forward(transport.as_ref(), Protocol::Udp, target, route.origin).await
    else {
        return;
    };
    let (mut from_guest, mut to_guest) = tokio::io::split(guest);
    let mut reply = Vec::new();
    loop {
        tokio::select! {
            datagram = datagrams.recv() => match datagram {
                Some(datagram) => {
                    if write_datagram(&mut to_guest, &datagram).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            read = read_datagram(&mut from_guest, &mut reply) => match read {
                Ok(Some(())) => {
                    stats.bytes_out.fetch_add(reply.len() as u64, Ordering::Relaxed);
                    let _ = socket.send_to(&reply, client).await;
                }
                _ => return,
            },
            _ = tokio::time::sleep(IDLE) => {
                tracing::debug!(%client, %target, "UDP flow idle: closed");
                let _ = to_guest.shutdown().await;
                return;
            }
        }
    }
}

/// One flow through the forward link: a UDP socket of the link's namespace
/// connected to the container, datagrams as they are, both ways.
async fn linked(
    client: SocketAddr,
    mut datagrams: mpsc::Receiver<Vec<u8>>,
    socket: Arc<UdpSocket>,
    guest: UdpSocket,
    stats: &Stats,
) {
    let mut reply = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            datagram = datagrams.recv() => match datagram {
                // A refused send (nothing listens yet) is what UDP does: dropped.
                Some(datagram) => {
                    let _ = guest.send(&datagram).await;
                }
                None => return,
            },
            received = guest.recv(&mut reply) => match received {
                Ok(n) => {
                    stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    let _ = socket.send_to(&reply[..n], client).await;
                }
                // ICMP port unreachable from an earlier send: the flow lives on.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(_) => return,
            },
            _ = tokio::time::sleep(IDLE) => {
                tracing::debug!(%client, "UDP flow idle: closed");
                return;
            }
        }
    }
}
