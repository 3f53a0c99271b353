//! The framed vsock stream (`vmctl_proto::framing::Framed`) that every
//! host ↔ guest connection travels in. Both directions use the same type, so
//! one target drives both sides:
//!
//! - read: arbitrary bytes from a transport that hands them over in odd
//!   chunks (and sometimes would block) into odd-sized reads; what comes out
//!   must be exactly the payloads up to the closing frame, and a stream cut
//!   inside a frame must be an error;
//! - write: the input's bytes written in odd pieces to a transport that takes
//!   a few bytes at a time, then a half-close; the wire must read back as the
//!   same bytes, closed.
//!
//! Input: `[seed] bytes…`; the seed picks the chunking.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use vmctl_fuzz::Chop;
use vmctl_proto::framing::{frame, Framed, MAX_FRAME};

/// A transport that hands out `data` in chunks, sometimes not at all.
struct Trickle<'a> {
    data: &'a [u8],
    chop: Chop,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.chop.one_in(5) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = self
            .chop
            .size(300)
            .min(self.data.len())
            .min(buf.remaining());
        let (now, rest) = self.data.split_at(n);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// A transport that takes a few bytes at a time, sometimes none.
struct Sink {
    wire: Vec<u8>,
    chop: Chop,
}

impl AsyncWrite for Sink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.chop.one_in(4) {
            return Poll::Pending;
        }
        let n = self.chop.size(700).min(data.len());
        self.wire.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Polls `step` until it is ready; the transports above are never pending
/// for long, so many polls in a row mean a hang.
fn drive<T>(mut step: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(out) = step(&mut cx) {
            return out;
        }
    }
    panic!("the framed stream made no progress");
}

/// Reads `framed` to its end: what came out, and whether it ended cleanly.
fn read_all(framed: &mut Framed<Trickle<'_>>, chop: &mut Chop) -> (Vec<u8>, io::Result<()>) {
    let mut out = Vec::new();
    loop {
        let mut space = vec![0u8; chop.size(200)];
        let mut buf = ReadBuf::new(&mut space);
        match drive(|cx| Pin::new(&mut *framed).poll_read(cx, &mut buf)) {
            Ok(()) if buf.filled().is_empty() => return (out, Ok(())),
            Ok(()) => out.extend_from_slice(buf.filled()),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// What a framed wire carries: the payloads before the closing frame (or the
/// end of the wire), and whether the wire ends on a frame boundary.
fn expected(mut wire: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        if wire.is_empty() {
            return (out, true);
        }
        let Some((header, rest)) = wire.split_first_chunk::<4>() else {
            return (out, false);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len == 0 {
            return (out, true);
        }
        if rest.len() < len {
            out.extend_from_slice(rest);
            return (out, false);
        }
        out.extend_from_slice(&rest[..len]);
        wire = &rest[len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let mut chop = Chop::new(seed);

    // Read side: arbitrary bytes off the wire.
    let mut framed = Framed::new(Trickle {
        data: bytes,
        chop: Chop::new(seed ^ 0x5a),
    });
    let (got, ended) = read_all(&mut framed, &mut chop);
    let (want, clean) = expected(bytes);
    assert_eq!(got, want, "payload bytes");
    assert_eq!(ended.is_ok(), clean, "end of stream: {ended:?}");

    // Write side: the input as payload, sometimes large enough to need
    // several frames.
    let payload: Vec<u8> = if seed & 0xc0 == 0xc0 && !bytes.is_empty() {
        bytes
            .iter()
            .copied()
            .cycle()
            .take(MAX_FRAME * 2 + 3)
            .collect()
    } else {
        bytes.to_vec()
    };
    let mut writer = Framed::new(Sink {
        wire: Vec::new(),
        chop: Chop::new(seed ^ 0xa5),
    });
    let mut sent = 0;
    while sent < payload.len() {
        let piece = &payload[sent..(sent + chop.size(MAX_FRAME + 100)).min(payload.len())];
        let n = drive(|cx| Pin::new(&mut writer).poll_write(cx, piece)).expect("write");
        assert!(
            n > 0 && n <= piece.len() && n <= MAX_FRAME,
            "wrote {n} of {}",
            piece.len()
        );
        sent += n;
    }
    drive(|cx| Pin::new(&mut writer).poll_shutdown(cx)).expect("half-close");
    let wire = writer.into_inner().wire;
    assert!(wire.ends_with(&[0, 0, 0, 0]), "the closing frame is last");
    let (back, clean) = expected(&wire);
    assert!(clean);
    assert_eq!(back, payload, "what was written");
    let mut reader = Framed::new(Trickle {
        data: &wire,
        chop: Chop::new(seed.wrapping_add(1)),
    });
    let (read_back, ended) = read_all(&mut reader, &mut chop);
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(read_back, payload, "round trip");
    // A frame built by hand reads the same.
    let mut by_hand = frame(&payload[..payload.len().min(MAX_FRAME)]);
    by_hand.extend_from_slice(&frame(b""));
    let mut reader = Framed::new(Trickle {
        data: &by_hand,
        chop: Chop::new(seed),
    });
    let (read_back, ended) = read_all(&mut reader, &mut chop);
    assert!(ended.is_ok(), "{ended:?}");
    assert_eq!(read_back, &payload[..payload.len().min(MAX_FRAME)]);
});
