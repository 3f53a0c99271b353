//! Framed vsock streams: half-close for every host ↔ guest connection.
//!
//! vhost-device-vsock (the vhost-user backend QEMU uses without
//! `/dev/vhost-vsock`) turns the host side's `shutdown(SHUT_WR)` into a full
//! close of the guest's socket, and drops the guest's half-close on the
//! floor. A Docker client that closes its sending side (`docker run -i` at
//! the end of its input) and then waits for the rest of the output would
//! lose it. So both ends of every connection to a guest service port speak
//! frames: a 4-byte big-endian length, then that many bytes; a zero length
//! means "this side sends no more" (half-close). The transport underneath
//! is only closed when both directions have ended. [`Framed`] adapts any
//! stream; the byte pipes on either side stay oblivious.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame payload written (readers accept any u32 length).
pub const MAX_FRAME: usize = 64 * 1024;

/// How much the read side takes from the transport per read: headers and
/// payloads come out of one buffer, so a stream of small frames costs one
/// read(2) per buffer instead of two per frame (syscalls are what a guest
/// pays most for under emulation).
const READ_BUFFER: usize = 64 * 1024 + 4;

/// A stream whose bytes travel as frames over `inner`.
pub struct Framed<S> {
    inner: S,
    /// Read side: transport bytes not consumed yet (`buffer[start..end]`),
    /// and how much of the current frame's payload is still due.
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    payload_left: usize,
    read_eof: bool,
    /// Write side: an encoded frame not yet fully written.
    pending: Vec<u8>,
    pending_at: usize,
    write_eof: bool,
}

impl<S> Framed<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buffer: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            payload_left: 0,
            read_eof: false,
            pending: Vec::new(),
            pending_at: 0,
            write_eof: false,
        }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncWrite + Unpin> Framed<S> {
    /// Writes out the pending frame.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_at < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_at += n;
        }
        self.pending.clear();
        self.pending_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_eof || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let buffered = this.end - this.start;
            if this.payload_left > 0 && buffered > 0 {
                let n = this.payload_left.min(buffered).min(buf.remaining());
                buf.put_slice(&this.buffer[this.start..this.start + n]);
                this.start += n;
                this.payload_left -= n;
                return Poll::Ready(Ok(()));
            }
            if this.payload_left == 0 && buffered >= 4 {
                let header: [u8; 4] = this.buffer[this.start..this.start + 4]
                    .try_into()
                    .expect("four bytes");
                this.start += 4;
                this.payload_left = u32::from_be_bytes(header) as usize;
                if this.payload_left == 0 {
                    this.read_eof = true;
                }
                continue;
            }
            // Need more from the transport: keep what is left at the front.
            this.buffer.copy_within(this.start..this.end, 0);
            this.end = buffered;
            this.start = 0;
            let mut more = ReadBuf::new(&mut this.buffer[this.end..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut more))?;
            let n = more.filled().len();
            if n == 0 {
                if this.payload_left > 0 || this.end > 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                // The transport ended without a closing frame: treat as EOF.
                this.read_eof = true;
                return Poll::Ready(Ok(()));
            }
            this.end += n;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Framed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_eof {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(this.poll_drain(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_FRAME);
        this.pending.extend_from_slice(&(n as u32).to_be_bytes());
        this.pending.extend_from_slice(&data[..n]);
        // Start writing now; what is left goes out on the next call or flush.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    /// Sends the closing frame; the transport itself stays open for the
    /// other direction.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if !this.write_eof {
            this.write_eof = true;
            this.pending.extend_from_slice(&0u32.to_be_bytes());
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }
}

/// Encodes `data` as one frame (for simple synchronous clients).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 4);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_keeps_the_other_direction() {
        let (a, b) = tokio::io::duplex(16);
        let (mut a, mut b) = (Framed::new(a), Framed::new(b));
        let echo = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            b.write_all(&got).await.unwrap();
            b.write_all(b" after eof").await.unwrap();
            b.shutdown().await.unwrap();
        });
        let big = vec![7u8; 200_000];
        a.write_all(&big).await.unwrap();
        a.shutdown().await.unwrap();
        let mut back = Vec::new();
        a.read_to_end(&mut back).await.unwrap();
        echo.await.unwrap();
        assert_eq!(back.len(), big.len() + 10);
        assert!(back.ends_with(b" after eof"));
    }

    #[tokio::test]
    async fn frames_split_anywhere_are_read_whole() {
        // Many small frames and a big one, delivered a few bytes at a time.
        let (a, mut b) = tokio::io::duplex(3);
        let mut a = Framed::new(a);
        let mut wire = Vec::new();
        for i in 0..50u8 {
            wire.extend_from_slice(&frame(&[i; 5]));
        }
        wire.extend_from_slice(&frame(&vec![9u8; 100_000]));
        wire.extend_from_slice(&frame(b""));
        let writer = tokio::spawn(async move { b.write_all(&wire).await.unwrap() });
        let mut got = Vec::new();
        a.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), 50 * 5 + 100_000);
        assert_eq!(&got[..5], &[0; 5]);
        assert_eq!(&got[245..250], &[49; 5]);
    }

    #[tokio::test]
    async fn a_transport_cut_inside_a_frame_is_an_error() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Framed::new(a);
        b.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(b);
        let mut got = Vec::new();
        assert!(a.read_to_end(&mut got).await.is_err());
    }

    #[test]
    fn frames_encode() {
        assert_eq!(frame(b"ab"), vec![0, 0, 0, 2, b'a', b'b']);
        assert_eq!(frame(b""), vec![0, 0, 0, 0]);
    }
}
