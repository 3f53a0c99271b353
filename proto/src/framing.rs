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

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame payload [`Framed`]'s writer makes (readers accept any
/// u32 length; [`pump`] writes frames up to [`BULK`]).
pub const MAX_FRAME: usize = 64 * 1024;

/// The first size of a read buffer: headers and payloads come out of one
/// buffer, so a stream of small frames costs one read(2) per buffer instead
/// of two per frame (syscalls are what a guest pays most for under
/// emulation). A buffer that a read fills doubles, up to [`BULK`], so an
/// idle or chatty connection holds little and a bulk one reads in large
/// pieces.
const FIRST_BUFFER: usize = 16 * 1024;

/// The largest read buffer, and the largest frame [`pump`] writes.
pub const BULK: usize = 256 * 1024;

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
    /// The last read from the transport filled the buffer (it may grow).
    read_full: bool,
    /// Write side: an encoded frame not yet fully written.
    pending: Vec<u8>,
    pending_at: usize,
    write_eof: bool,
}

impl<S> Framed<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buffer: vec![0; FIRST_BUFFER + 4].into_boxed_slice(),
            start: 0,
            end: 0,
            payload_left: 0,
            read_eof: false,
            read_full: false,
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

impl<S: AsyncRead + Unpin> Framed<S> {
    /// Reads until payload is buffered, or the stream ended (`read_eof`).
    fn poll_payload(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.read_eof {
                return Poll::Ready(Ok(()));
            }
            let buffered = self.end - self.start;
            if self.payload_left > 0 && buffered > 0 {
                return Poll::Ready(Ok(()));
            }
            if self.payload_left == 0 && buffered >= 4 {
                let header: [u8; 4] = self.buffer[self.start..self.start + 4]
                    .try_into()
                    .expect("four bytes");
                self.start += 4;
                self.payload_left = u32::from_be_bytes(header) as usize;
                if self.payload_left == 0 {
                    self.read_eof = true;
                }
                continue;
            }
            // Need more from the transport: keep what is left at the front,
            // in a larger buffer if the last read filled this one.
            if self.read_full && self.buffer.len() < BULK + 4 {
                let mut larger = vec![0; (self.buffer.len() - 4) * 2 + 4].into_boxed_slice();
                larger[..buffered].copy_from_slice(&self.buffer[self.start..self.end]);
                self.buffer = larger;
            } else {
                self.buffer.copy_within(self.start..self.end, 0);
            }
            self.end = buffered;
            self.start = 0;
            let mut more = ReadBuf::new(&mut self.buffer[self.end..]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut more))?;
            let n = more.filled().len();
            self.read_full = more.remaining() == 0;
            if n == 0 {
                if self.payload_left > 0 || self.end > 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                // The transport ended without a closing frame: treat as EOF.
                self.read_eof = true;
                return Poll::Ready(Ok(()));
            }
            self.end += n;
        }
    }
}

/// The payload as it arrives, straight out of the read buffer: what
/// [`pump`] writes on without copying it first. Empty at the end.
impl<S: AsyncRead + Unpin> AsyncBufRead for Framed<S> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        ready!(this.poll_payload(cx))?;
        let n = this.payload_left.min(this.end - this.start);
        Poll::Ready(Ok(&this.buffer[this.start..this.start + n]))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        let this = self.get_mut();
        let amount = amount.min(this.payload_left).min(this.end - this.start);
        this.start += amount;
        this.payload_left -= amount;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Framed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let data = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
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

/// Joins a framed stream and a plain one (a forwarded connection's two
/// ends) until both directions have ended; returns the bytes carried each
/// way (framed → plain, plain → framed).
///
/// What [`tokio::io::copy_bidirectional`] over a [`Framed`] does, with
/// one copy of each byte in user space instead of two: payload is written on
/// from the framed side's read buffer ([`AsyncBufRead`]), and the plain
/// side is read into a buffer that leaves room for the frame header in
/// front, so each read goes out as one frame in one write, up to [`BULK`].
/// An end on one side becomes the other's half-close: a plain EOF sends the
/// closing frame, a closing frame shuts the plain side's write half down.
pub async fn pump<S, P>(framed: &mut Framed<S>, plain: &mut P) -> io::Result<(u64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: AsyncRead + AsyncWrite + Unpin,
{
    let mut inbound = Inbound::default();
    let mut outbound = Outbound::new(framed.write_eof);
    std::future::poll_fn(|cx| {
        let inbound_done = inbound.poll(cx, framed, plain)?.is_ready();
        let outbound_done = outbound.poll(cx, framed, plain)?.is_ready();
        if inbound_done && outbound_done {
            Poll::Ready(Ok((inbound.carried, outbound.carried)))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// [`pump`]'s framed → plain direction.
#[derive(Default)]
struct Inbound {
    carried: u64,
    done: bool,
}

impl Inbound {
    fn poll<S, P>(
        &mut self,
        cx: &mut Context<'_>,
        framed: &mut Framed<S>,
        plain: &mut P,
    ) -> Poll<io::Result<()>>
    where
        S: AsyncRead + Unpin,
        P: AsyncWrite + Unpin,
    {
        while !self.done {
            let data = ready!(Pin::new(&mut *framed).poll_fill_buf(cx))?;
            if data.is_empty() {
                ready!(Pin::new(&mut *plain).poll_shutdown(cx))?;
                self.done = true;
                break;
            }
            let n = ready!(Pin::new(&mut *plain).poll_write(cx, data))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            Pin::new(&mut *framed).consume(n);
            self.carried += n as u64;
        }
        Poll::Ready(Ok(()))
    }
}

/// [`pump`]'s plain → framed direction: `buffer[..4]` is the header of the
/// payload read behind it; `buffer[written..length]` is still to write.
struct Outbound {
    buffer: Vec<u8>,
    written: usize,
    length: usize,
    /// The closing frame is in the buffer (or was sent before the pump).
    closing: bool,
    /// The last read filled the buffer: double it before the next.
    grow: bool,
    carried: u64,
}

impl Outbound {
    fn new(closed: bool) -> Self {
        Self {
            buffer: vec![0; FIRST_BUFFER + 4],
            written: 0,
            length: 0,
            closing: closed,
            grow: false,
            carried: 0,
        }
    }

    fn poll<S, P>(
        &mut self,
        cx: &mut Context<'_>,
        framed: &mut Framed<S>,
        plain: &mut P,
    ) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
        P: AsyncRead + Unpin,
    {
        // Whatever the framed writer had pending goes first.
        ready!(framed.poll_drain(cx))?;
        loop {
            while self.written < self.length {
                let n = ready!(Pin::new(&mut framed.inner)
                    .poll_write(cx, &self.buffer[self.written..self.length]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
            }
            if self.closing {
                framed.write_eof = true;
                return Pin::new(&mut framed.inner).poll_flush(cx);
            }
            if self.grow {
                self.buffer = vec![0; (self.buffer.len() - 4) * 2 + 4];
                self.grow = false;
            }
            let mut read = ReadBuf::new(&mut self.buffer[4..]);
            ready!(Pin::new(&mut *plain).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            let full = read.remaining() == 0;
            self.buffer[..4].copy_from_slice(&(n as u32).to_be_bytes());
            self.written = 0;
            self.length = 4 + n;
            self.carried += n as u64;
            self.closing = n == 0;
            // A read that filled the buffer: the next one gets twice the
            // room (once this frame is out: nothing to move then).
            self.grow = full && self.buffer.len() < BULK + 4;
        }
    }
}

/// A blocking view of a framed stream (a handshake, a synchronous client):
/// writes go out as one frame each, up to [`MAX_FRAME`]; reads take payload
/// bytes across frames (a zero-length frame, the peer's half-close, reads
/// as the end). `S` may be a `&mut` of the stream.
pub struct FramedSync<S> {
    inner: S,
    /// Payload bytes of the current frame not read yet.
    left: usize,
}

impl<S: std::io::Read + std::io::Write> FramedSync<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, left: 0 }
    }
}

impl<S: std::io::Read + std::io::Write> std::io::Read for FramedSync<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut len = [0u8; 4];
            self.inner.read_exact(&mut len)?;
            self.left = u32::from_be_bytes(len) as usize;
            if self.left == 0 {
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n;
        Ok(n)
    }
}

impl<S: std::io::Read + std::io::Write> std::io::Write for FramedSync<S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_FRAME);
        self.inner.write_all(&frame(&data[..n]))?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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

    #[tokio::test]
    async fn pump_carries_both_ways_and_keeps_each_half_close() {
        // host (Framed) ⇄ [framed | pump | plain] ⇄ server
        let (host, framed_end) = tokio::io::duplex(1 << 16);
        let (plain_end, mut server) = tokio::io::duplex(1 << 16);
        let mut host = Framed::new(host);
        let pumping = tokio::spawn(async move {
            let (mut framed, mut plain) = (Framed::new(framed_end), plain_end);
            pump(&mut framed, &mut plain).await
        });
        // The server answers only after the host's half-close, then more
        // than one bulk frame, in uneven pieces.
        let server = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            let answer: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
            for piece in answer.chunks(77_777) {
                server.write_all(piece).await.unwrap();
            }
            server.shutdown().await.unwrap();
            got
        });
        let sent: Vec<u8> = (0..1_000_003u32).map(|i| (i % 241) as u8).collect();
        host.write_all(&sent).await.unwrap();
        host.shutdown().await.unwrap();
        let mut back = Vec::new();
        host.read_to_end(&mut back).await.unwrap();
        assert_eq!(server.await.unwrap(), sent);
        assert_eq!(back.len(), 700_000);
        assert!(back.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        let (inbound, outbound) = pumping.await.unwrap().unwrap();
        assert_eq!((inbound, outbound), (1_000_003, 700_000));
    }

    #[tokio::test]
    async fn pump_reads_large_frames_and_closes_the_plain_side_first() {
        // A peer that sends one frame bigger than any buffer, and the
        // plain side that ends first: the host hears the closing frame
        // while its own direction still flows.
        let (mut host, framed_end) = tokio::io::duplex(1 << 20);
        let (plain_end, mut server) = tokio::io::duplex(1 << 16);
        let pumping = tokio::spawn(async move {
            let (mut framed, mut plain) = (Framed::new(framed_end), plain_end);
            pump(&mut framed, &mut plain).await
        });
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut closing = [0u8; 11];
        host.read_exact(&mut closing).await.unwrap();
        assert_eq!(&closing, &[0, 0, 0, 3, b'b', b'y', b'e', 0, 0, 0, 0]);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        let big = vec![5u8; 3 << 20];
        host.write_all(&frame(&big)).await.unwrap();
        host.write_all(&frame(b"")).await.unwrap();
        assert_eq!(reader.await.unwrap(), big.len());
        assert_eq!(pumping.await.unwrap().unwrap(), (3 << 20, 3));
    }

    #[test]
    fn frames_encode() {
        assert_eq!(frame(b"ab"), vec![0, 0, 0, 2, b'a', b'b']);
        assert_eq!(frame(b""), vec![0, 0, 0, 0]);
    }
}
