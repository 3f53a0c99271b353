//! What the fuzz targets share: driving the project's async parsers over
//! in-memory bytes, and splitting one fuzz input into several files.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs `future` to completion on this thread. The targets only await
/// in-memory readers and writers, which are always ready, so a future that
/// stays pending is a bug of the target (or a parser waiting for bytes that
/// can never come) and panics rather than spinning.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("an in-memory future never finished");
}

/// Splits a fuzz input at `0xFF` bytes (never part of UTF-8 text or JSON),
/// so one input carries several files: `body 0xFF passwd 0xFF group …`.
/// Missing parts are `None`.
pub fn parts<const N: usize>(data: &[u8]) -> [Option<&[u8]>; N] {
    let mut out = [None; N];
    for (slot, part) in out.iter_mut().zip(data.splitn(N, |b| *b == 0xff)) {
        *slot = Some(part);
    }
    out
}

/// A tiny deterministic generator (xorshift) seeded from the input, for the
/// chunk sizes and pending points that make a transport split bytes badly.
pub struct Chop(u64);

impl Chop {
    pub fn new(seed: u8) -> Self {
        Chop(0x9e37_79b9_7f4a_7c15 ^ u64::from(seed).wrapping_mul(0x1000_0000_01b3))
    }

    pub fn step(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A size in `1..=max`.
    pub fn size(&mut self, max: usize) -> usize {
        1 + (self.step() % max.max(1) as u64) as usize
    }

    /// True about one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.step().is_multiple_of(n)
    }
}

/// Writes the passwd and group files of a fuzz input into `rootfs/etc`
/// (removing them when the input has none), as a container image would
/// carry them.
pub fn write_etc(rootfs: &std::path::Path, passwd: Option<&[u8]>, group: Option<&[u8]>) {
    let etc = rootfs.join("etc");
    std::fs::create_dir_all(&etc).expect("rootfs/etc");
    for (name, content) in [("passwd", passwd), ("group", group)] {
        let path = etc.join(name);
        match content {
            Some(bytes) => std::fs::write(&path, bytes).expect("write an /etc file"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}
