//! Streams to one guest port opened ahead of need: a forwarded connection
//! takes one that already crossed the vsock device and proved the per-boot
//! secret, so its first byte waits only for the forward header's answer.
//!
//! [`Pooled`] wraps a transport (already [`super::auth::Authenticated`]).
//! The first connection to the pooled port starts a filler task that keeps
//! up to [`Pooled::new`]'s `size` streams ready; each one taken is replaced.
//! A ready stream that the guest closed meanwhile (the forward service
//! restarted, the VM went away) reads as ended when it is taken and is
//! dropped for the next, or for a fresh connection. Other ports pass
//! straight through. The guest side holds nothing for a waiting stream but
//! its socket and a task blocked on the header: the forward service takes
//! a slot only once a header names a target.

use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use super::{ConnectFuture, GuestListener, GuestStream, VsockError, VsockTransport};

/// The longest pause between two failed attempts to fill the pool.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct Pooled {
    inner: Arc<dyn VsockTransport>,
    port: u32,
    size: usize,
    ready: Mutex<Option<mpsc::Receiver<GuestStream>>>,
}

impl Pooled {
    /// Keeps up to `size` streams to guest `port` ready on `inner`.
    pub fn new(inner: Arc<dyn VsockTransport>, port: u32, size: usize) -> Arc<Self> {
        Arc::new(Self {
            inner,
            port,
            size: size.max(1),
            ready: Mutex::new(None),
        })
    }

    /// A ready stream that is still open, starting the filler on first use.
    fn take(self: &Arc<Self>) -> Option<GuestStream> {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = ready.get_or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(self.size);
            tokio::spawn(fill(Arc::downgrade(self), sender));
            receiver
        });
        while let Ok(mut stream) = receiver.try_recv() {
            if still_open(&mut stream) {
                return Some(stream);
            }
        }
        None
    }
}

/// Whether nothing was read from `stream` yet: a waiting forward stream
/// hears nothing until it sends its header, so readable means ended.
fn still_open(stream: &mut GuestStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut context = Context::from_waker(std::task::Waker::noop());
    matches!(
        std::pin::Pin::new(stream).poll_read(&mut context, &mut buf),
        Poll::Pending
    )
}

/// Keeps the channel full until the pool is dropped.
async fn fill(pool: Weak<Pooled>, ready: mpsc::Sender<GuestStream>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // Waits for room before connecting: a stream opened only when one
        // was taken.
        let Ok(permit) = ready.reserve().await else {
            return;
        };
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let (inner, port) = (pool.inner.clone(), pool.port);
        drop(pool);
        match inner.connect(port).await {
            Ok(stream) => {
                permit.send(stream);
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                drop(permit);
                tracing::debug!(port, error = %e, "cannot open a stream for the pool yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The transport of an `Arc<Pooled>` (the filler holds a weak reference).
pub struct PooledTransport(pub Arc<Pooled>);

impl VsockTransport for PooledTransport {
    fn name(&self) -> &'static str {
        self.0.inner.name()
    }

    fn connect(&self, port: u32) -> ConnectFuture<'_> {
        if port == self.0.port {
            if let Some(stream) = self.0.take() {
                return Box::pin(async move { Ok(stream) });
            }
        }
        self.0.inner.connect(port)
    }

    fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, VsockError> {
        self.0.inner.listen(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Counts connections; keeps the guest ends so a test can close them.
    #[derive(Default)]
    struct Counting {
        opened: AtomicUsize,
        guest_ends: Mutex<Vec<DuplexStream>>,
    }

    impl VsockTransport for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn connect(&self, _port: u32) -> ConnectFuture<'_> {
            Box::pin(async move {
                self.opened.fetch_add(1, Ordering::SeqCst);
                let (ours, theirs) = tokio::io::duplex(64);
                self.guest_ends.lock().unwrap().push(theirs);
                Ok(Box::new(ours) as GuestStream)
            })
        }
    }

    async fn settle(counting: &Counting, opened: usize) {
        for _ in 0..200 {
            if counting.opened.load(Ordering::SeqCst) >= opened {
                tokio::task::yield_now().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the pool never opened {opened} streams");
    }

    #[tokio::test]
    async fn streams_are_ready_before_they_are_needed_and_replaced() {
        let counting = Arc::new(Counting::default());
        let transport = PooledTransport(Pooled::new(counting.clone(), 1026, 2));
        // The first connect finds none ready, connects itself, starts the filler.
        let mut first = transport.connect(1026).await.unwrap();
        settle(&counting, 3).await;
        // The next two come from the pool, each replaced.
        let _second = transport.connect(1026).await.unwrap();
        let _third = transport.connect(1026).await.unwrap();
        settle(&counting, 5).await;
        assert_eq!(
            counting.opened.load(Ordering::SeqCst),
            5,
            "two in the pool, no more"
        );
        // Streams work as they came: the first reaches its guest end.
        first.write_all(b"hi").await.unwrap();
        let mut guest = counting.guest_ends.lock().unwrap().remove(0);
        let mut got = [0u8; 2];
        guest.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        // Another port is not pooled.
        let _other = transport.connect(2375).await.unwrap();
        assert_eq!(counting.opened.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn a_stream_the_guest_closed_while_waiting_is_not_handed_out() {
        let counting = Arc::new(Counting::default());
        let transport = PooledTransport(Pooled::new(counting.clone(), 1026, 2));
        let _first = transport.connect(1026).await.unwrap();
        settle(&counting, 3).await;
        // The guest closes both waiting streams (its forwarder restarted).
        counting.guest_ends.lock().unwrap().drain(1..);
        let mut next = transport.connect(1026).await.unwrap();
        next.write_all(b"x").await.unwrap();
        let opened = counting.opened.load(Ordering::SeqCst);
        assert!(
            opened >= 4,
            "a fresh stream, not a dead one ({opened} opened)"
        );
        let ends = counting.guest_ends.lock().unwrap();
        assert!(!ends.is_empty());
    }
}
