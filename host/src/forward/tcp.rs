//! TCP forwards: each connection accepted on a desktop listener becomes one
//! vsock stream to the guest's forward service (`vmctl_proto::forward`):
//! header, the guest's reply, then bytes both ways with half-close kept.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use vmctl_proto::ports::Protocol;

use super::stats::Stats;
use super::Route;
use crate::vsock::VsockTransport;

/// Accepts on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    route: Route,
    transport: Arc<dyn VsockTransport>,
    stats: Arc<Stats>,
) {
    let target = route.target;
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%target, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Refused by the policy or over the daemon's bound: the client is
        // closed at once (the gate logs why).
        let Some(permit) = route.gate.admit(route.listen, target, route.origin) else {
            continue;
        };
        tokio::spawn(connection(
            client,
            route.clone(),
            permit,
            transport.clone(),
            stats.clone(),
        ));
    }
}

async fn connection(
    client: TcpStream,
    route: Route,
    _permit: super::gate::Permit,
    transport: Arc<dyn VsockTransport>,
    stats: Arc<Stats>,
) {
    let target = route.target;
    let _active = stats.open();
    let _ = client.set_nodelay(true);
    let mut client = Counted {
        inner: client,
        read: &stats.bytes_in,
        written: &stats.bytes_out,
    };
    // Through the link when it is up.
    if let Some((link, to)) = route.through_link() {
        match link.connect_tcp(to).await {
            Ok(guest) => {
                if let Err(e) = super::pipe(&mut client, guest).await {
                    tracing::debug!(%target, error = %e, "forwarded connection ended with an error");
                }
                return;
            }
            Err(e @ crate::link::LinkError::Target(_)) => {
                tracing::debug!(%target, error = %e, "forward refused");
                return;
            }
            // vsock can still carry it.
            Err(e) => tracing::warn!(%target, error = %e, "forwarding over vsock instead"),
        }
    }
    let Some(guest) =
        super::open_forward(transport.as_ref(), Protocol::Tcp, target, route.origin).await
    else {
        return;
    };
    if let Err(e) = super::pipe(&mut client, guest).await {
        tracing::debug!(%target, error = %e, "forwarded connection ended with an error");
    }
}

/// A stream that counts the bytes through it as they pass.
struct Counted<'a, S> {
    inner: S,
    read: &'a AtomicU64,
    written: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
