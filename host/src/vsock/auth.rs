//! Every host ↔ guest stream proves the per-boot secret
//! (`vmctl_proto::auth`) before it carries a byte: [`Authenticated`] wraps
//! any [`VsockTransport`] so that its streams do.
//!
//! - [`VsockTransport::connect`] (the API socket, published ports, `vmctl
//!   port` rules, the control client, `vmctl machine ssh`, the boot probe):
//!   the host is the client; the stream is handed out only once the guest
//!   proved the secret back — on the host kernel's vsock any local user could
//!   otherwise stand in for a guest port it reached first.
//! - [`VsockTransport::listen`] (host port 1027, the guest engine's port
//!   reservations): the host is the server. The kernel transport already
//!   checks the peer's CID, but a forged request from a container comes from
//!   the VM's own CID: only the secret tells the engine from it. Each
//!   accepted stream proves it in a task of its own, so a silent one delays
//!   no other.
//!
//! The handshake runs inside the transport's frames, right after connecting
//! (after `CONNECT`/`OK` on hybrid vsock). The secret is read at each
//! connection from a [`SharedSecret`], so the listener bound before a boot
//! answers with the secret of the boot that followed.

use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;
use vmctl_proto::auth::{self, Secret, HANDSHAKE_LIMIT};

use super::{AcceptFuture, ConnectFuture, GuestListener, GuestStream, VsockError, VsockTransport};

/// The secret of the VM that runs now: set before each boot, read back by
/// an adopting daemon; none until then.
#[derive(Default)]
pub struct SharedSecret(RwLock<Option<Secret>>);

impl SharedSecret {
    pub fn new(secret: Option<Secret>) -> Self {
        Self(RwLock::new(secret))
    }

    /// Replaces the secret (a new boot).
    pub fn set(&self, secret: Secret) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(secret);
    }

    pub fn get(&self) -> Option<Secret> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Proven streams waiting for the service to take them.
const QUEUE: usize = 64;

/// A transport whose every stream proved the secret.
pub struct Authenticated {
    inner: Arc<dyn VsockTransport>,
    secret: Arc<SharedSecret>,
}

impl Authenticated {
    pub fn new(inner: Arc<dyn VsockTransport>, secret: Arc<SharedSecret>) -> Self {
        Self { inner, secret }
    }
}

impl VsockTransport for Authenticated {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn connect(&self, port: u32) -> ConnectFuture<'_> {
        Box::pin(async move {
            let secret = self.secret.get().ok_or(VsockError::NoSecret { port })?;
            let mut stream = self.inner.connect(port).await?;
            auth::connect(&mut stream, &secret, port, HANDSHAKE_LIMIT)
                .await
                .map_err(|source| VsockError::Auth { port, source })?;
            Ok(stream)
        })
    }

    fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, VsockError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| VsockError::Listen {
            port,
            path: "(no async runtime)".into(),
            source: std::io::Error::other(e),
        })?;
        let inner = self.inner.listen(port)?;
        let (sender, proven) = mpsc::channel(QUEUE);
        runtime.spawn(admit(inner, port, self.secret.clone(), sender));
        Ok(Box::new(AuthListener { proven }))
    }
}

/// Streams the guest opened to one host port that proved the secret.
struct AuthListener {
    proven: mpsc::Receiver<GuestStream>,
}

impl GuestListener for AuthListener {
    fn accept(&mut self) -> AcceptFuture<'_> {
        Box::pin(async move {
            self.proven
                .recv()
                .await
                .ok_or_else(|| std::io::Error::other("the vsock listener stopped"))
        })
    }
}

/// Accepts from `inner` until the [`AuthListener`] is dropped.
async fn admit(
    mut inner: Box<dyn GuestListener>,
    port: u32,
    secret: Arc<SharedSecret>,
    proven: mpsc::Sender<GuestStream>,
) {
    loop {
        let mut stream = tokio::select! {
            _ = proven.closed() => return,
            accepted = inner.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(port, error = %e, "accept on a host vsock port failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let secret = secret.get();
        let proven = proven.clone();
        tokio::spawn(async move {
            let Some(secret) = secret else {
                tracing::warn!(port, "no vsock secret yet: closed a guest connection");
                return;
            };
            match auth::serve(&mut stream, &secret, port, HANDSHAKE_LIMIT).await {
                Ok(()) => {
                    let _ = proven.send(stream).await;
                }
                Err(e) => tracing::warn!(
                    port,
                    error = %crate::error_chain(&e),
                    "closed a guest connection that did not prove the VM's secret"
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A transport over in-memory pipes: `connect` reaches a guest service
    /// that runs the server's side with `guest_secret` and answers "pong";
    /// `listen` yields the streams pushed into `incoming`.
    struct Loopback {
        guest_secret: Secret,
        incoming: std::sync::Mutex<Option<mpsc::Receiver<GuestStream>>>,
    }

    impl VsockTransport for Loopback {
        fn name(&self) -> &'static str {
            "loopback"
        }

        fn connect(&self, port: u32) -> ConnectFuture<'_> {
            let secret = self.guest_secret.clone();
            Box::pin(async move {
                let (ours, mut theirs) = tokio::io::duplex(4096);
                tokio::spawn(async move {
                    if auth::serve(&mut theirs, &secret, port, HANDSHAKE_LIMIT)
                        .await
                        .is_ok()
                    {
                        let _ = theirs.write_all(b"pong").await;
                    }
                });
                Ok(Box::new(ours) as GuestStream)
            })
        }

        fn listen(&self, _port: u32) -> Result<Box<dyn GuestListener>, VsockError> {
            let incoming = self.incoming.lock().unwrap().take().unwrap();
            Ok(Box::new(AuthListener { proven: incoming }))
        }
    }

    fn secret(byte: u8) -> Secret {
        Secret::from_bytes(&[byte; 32]).unwrap()
    }

    fn transport(guest: u8, host: Option<u8>) -> (Authenticated, mpsc::Sender<GuestStream>) {
        let (push, incoming) = mpsc::channel(4);
        let inner = Arc::new(Loopback {
            guest_secret: secret(guest),
            incoming: std::sync::Mutex::new(Some(incoming)),
        });
        let shared = Arc::new(SharedSecret::new(host.map(secret)));
        (Authenticated::new(inner, shared), push)
    }

    #[tokio::test]
    async fn connect_hands_out_only_streams_to_a_guest_that_proved_the_secret() {
        let (honest, _) = transport(1, Some(1));
        let mut stream = honest.connect(2375).await.unwrap();
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");

        let (impostor, _) = transport(2, Some(1));
        assert!(matches!(
            impostor.connect(2375).await,
            Err(VsockError::Auth { port: 2375, .. })
        ));
        let (unbooted, _) = transport(1, None);
        assert!(matches!(
            unbooted.connect(1025).await,
            Err(VsockError::NoSecret { port: 1025 })
        ));
    }

    #[tokio::test]
    async fn the_listener_admits_the_guest_and_closes_a_forger() {
        let (transport, push) = transport(1, Some(1));
        let mut listener = transport.listen(1027).unwrap();
        // A forger first (a container with AF_VSOCK, no secret): it sends a
        // reservation where the proof should be.
        let (forger, mut forger_end) = tokio::io::duplex(4096);
        push.send(Box::new(forger)).await.unwrap();
        let mut hello = [0u8; auth::HELLO_LEN];
        forger_end.read_exact(&mut hello).await.unwrap();
        let forged = br#"{"op":"reserve","binding":{"host_ip":"0.0.0.0","host_port":18998}}"#;
        forger_end
            .write_all(&forged[..auth::CLIENT_PROOF_LEN])
            .await
            .unwrap();
        let mut rest = Vec::new();
        forger_end.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the forger got {rest:?}");

        // Then the engine, with the secret: its stream reaches the service.
        let (engine, mut engine_end) = tokio::io::duplex(4096);
        push.send(Box::new(engine)).await.unwrap();
        let client = tokio::spawn(async move {
            auth::connect(&mut engine_end, &secret(1), 1027, HANDSHAKE_LIMIT)
                .await
                .unwrap();
            engine_end.write_all(b"request").await.unwrap();
        });
        let mut admitted = listener.accept().await.unwrap();
        let mut request = [0u8; 7];
        admitted.read_exact(&mut request).await.unwrap();
        assert_eq!(&request, b"request");
        client.await.unwrap();
    }
}
