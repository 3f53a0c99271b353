//! A `VZVirtioSocketConnection` as a tokio stream.
//!
//! The framework hands a connection object that owns a socket descriptor
//! and closes it when the object goes. The stream here reads and writes a
//! duplicate of that descriptor and keeps the object alive as long as the
//! duplicate is open ([`Held`]); when the stream is dropped its descriptor
//! closes first, then the object is released — on the VM's queue, like
//! every other touch of it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use objc2::rc::Retained;
use objc2::Message;
use objc2_virtualization::VZVirtioSocketConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

use super::queue::{OnQueue, VmQueue};

/// A connection object kept alive, released on the VM's queue.
pub struct Held {
    connection: Option<OnQueue<Retained<VZVirtioSocketConnection>>>,
    queue: Arc<VmQueue>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.queue.later(move || drop(connection));
        }
    }
}

/// The duplicate descriptor and the object it belongs to, before the
/// runtime turns them into a stream ([`VzStream::open`]).
pub struct Accepted {
    fd: OwnedFd,
    held: Held,
}

impl Accepted {
    /// Takes `connection` (retained) and duplicates its descriptor.
    ///
    /// # Safety
    /// On the VM's queue.
    pub unsafe fn take(
        connection: &VZVirtioSocketConnection,
        queue: Arc<VmQueue>,
    ) -> io::Result<Self> {
        // SAFETY: the caller is on the VM's queue; the connection is live
        // for this call, and the descriptor it returns is open while it is.
        let raw = unsafe { connection.fileDescriptor() };
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor that is open; the
        // new one is ours alone.
        let dup = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` was just returned by fcntl and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        Ok(Self {
            fd,
            held: Held {
                connection: Some(OnQueue::new(connection.retain())),
                queue,
            },
        })
    }
}

/// A guest vsock stream.
pub struct VzStream {
    // Declared first: dropped (closed) before the object is released.
    io: UnixStream,
    _held: Held,
}

impl VzStream {
    /// The stream over an accepted connection; call inside the runtime.
    pub fn open(accepted: Accepted) -> io::Result<Self> {
        let std = std::os::unix::net::UnixStream::from(accepted.fd);
        std.set_nonblocking(true)?;
        Ok(Self {
            io: UnixStream::from_std(std)?,
            _held: accepted.held,
        })
    }
}

impl AsyncRead for VzStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for VzStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
