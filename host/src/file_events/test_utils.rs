//! A guest played by the test: each connect gets one end of an in-memory
//! pipe, the other end handed to a task the test wrote.
#![cfg(test)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::DuplexStream;

use crate::vsock::{ConnectFuture, GuestStream, VsockTransport};

type Serve =
    Box<dyn Fn(u32, usize, DuplexStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Runs `serve(port, nth connection from 0, stream)` for every connect.
pub struct Scripted {
    serve: Serve,
    connects: AtomicUsize,
}

impl Scripted {
    pub fn new<F, Fut>(serve: F) -> Self
    where
        F: Fn(u32, usize, DuplexStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            serve: Box::new(move |port, n, stream| Box::pin(serve(port, n, stream))),
            connects: AtomicUsize::new(0),
        }
    }

    pub fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }
}

impl VsockTransport for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn connect(&self, port: u32) -> ConnectFuture<'_> {
        let n = self.connects.fetch_add(1, Ordering::SeqCst);
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn((self.serve)(port, n, theirs));
        Box::pin(async move { Ok(Box::new(ours) as GuestStream) })
    }
}
