//! The per-boot secret and the handshake that proves it on every host ↔
//! guest vsock stream.
//!
//! Who can reach a vsock port is not who should: on the host kernel's vsock
//! any local desktop user can connect to the guest's CID (and listen on a
//! host port before the daemon does), and inside the VM a container that
//! gets hold of `AF_VSOCK` connects from the VM's own CID, which is all the
//! host can check. So the host daemon draws a fresh 32-byte [`Secret`] for
//! every boot and hands it to the guest out of band (QEMU: the fw_cfg file
//! [`FW_CFG_NAME`], read by PID 1 before any container exists), and every
//! stream — host → guest on 2375, 1025, 1026 and guest → host on 1027 —
//! opens with a mutual challenge–response before its first byte of payload:
//!
//! ```text
//! server → client  Hello        "vma1" ‖ server nonce (32)
//! client → server  ClientProof  client nonce (32) ‖ HMAC(secret, "vmctl-client" ‖ port ‖ sn ‖ cn)
//! server → client  ServerProof  HMAC(secret, "vmctl-server" ‖ port ‖ sn ‖ cn)
//! ```
//!
//! `port` is the service's vsock port (4 bytes, big-endian), so a proof for
//! one service is worth nothing on another; the two labels keep a server's
//! proof from passing as a client's. Both nonces are fresh per stream, so a
//! recorded proof cannot be replayed. A server that gets a wrong or
//! malformed proof closes the stream without a word; a client that gets a
//! wrong server proof has sent nothing but its proof. The client sends its
//! payload only after checking the server's proof: one round trip per
//! stream, 132 bytes in all.
//!
//! The messages are fixed-size; [`Server`] and [`Client`] check them as pure
//! functions of bytes (what the fuzz targets drive), and [`serve`] /
//! [`connect`] run them over any async stream (each side's framed vsock
//! stream, [`crate::framing`]). [`connect_blocking`] is the same client for
//! blocking callers.

use std::io::{Read, Write};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes in a [`Secret`].
pub const SECRET_LEN: usize = 32;

/// Bytes in a nonce (either side's).
pub const NONCE_LEN: usize = 32;

/// Bytes in an HMAC-SHA256 proof.
pub const PROOF_LEN: usize = 32;

/// What opens a [`Hello`](Server::hello): the protocol's name and version.
pub const MAGIC: [u8; 4] = *b"vma1";

/// Bytes in the server's hello.
pub const HELLO_LEN: usize = MAGIC.len() + NONCE_LEN;

/// Bytes in the client's answer.
pub const CLIENT_PROOF_LEN: usize = NONCE_LEN + PROOF_LEN;

/// Bytes in the server's answer.
pub const SERVER_PROOF_LEN: usize = PROOF_LEN;

/// How long a server waits for the client's proof (and a client for each
/// server message) before it gives up on the stream: a silent peer holds
/// nothing longer than this. Generous because a guest under emulation is slow.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// The fw_cfg file QEMU carries the secret in
/// (`-fw_cfg name=opt/vmctl/secret,file=…`); the guest reads it from
/// `/sys/firmware/qemu_fw_cfg/by_name/opt/vmctl/secret/raw`.
pub const FW_CFG_NAME: &str = "opt/vmctl/secret";

/// Where there is no fw_cfg (Virtualization.framework): the host vsock port
/// on which the VMM process hands the secret's 32 raw bytes to the first
/// guest connection only, then stops listening for good. The guest's PID 1
/// connects to it (host CID 2) before any container can exist.
pub const SECRET_PORT: u32 = 1028;

/// Kernel command-line key telling the guest where its secret comes from
/// when fw_cfg has none: [`CMDLINE_SECRET_VSOCK`] means [`SECRET_PORT`].
pub const CMDLINE_SECRET: &str = "vmctl.secret";

/// The value of [`CMDLINE_SECRET`] for the vsock handoff on [`SECRET_PORT`].
pub const CMDLINE_SECRET_VSOCK: &str = "vsock";

const CLIENT_LABEL: &[u8; 12] = b"vmctl-client";
const SERVER_LABEL: &[u8; 12] = b"vmctl-server";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a secret is {SECRET_LEN} bytes, not {0}")]
    SecretLength(usize),
    #[error("no randomness from the kernel: {0}")]
    Random(String),
    #[error("{what} is {expected} bytes, not {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the peer does not speak this handshake (no {MAGIC:?} hello)")]
    NotAHello,
    #[error("the peer's proof of the secret is wrong (port {port})")]
    BadProof { port: u32 },
    #[error("the peer sent nothing within {0:?}")]
    Timeout(Duration),
    #[error("handshake on port {port}")]
    Io {
        port: u32,
        #[source]
        source: std::io::Error,
    },
}

/// The per-boot secret both ends hold. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// A secret from exactly [`SECRET_LEN`] bytes (a file, fw_cfg, a pipe).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuthError> {
        let bytes: [u8; SECRET_LEN] = bytes
            .try_into()
            .map_err(|_| AuthError::SecretLength(bytes.len()))?;
        Ok(Self(bytes))
    }

    /// A fresh secret from the kernel's CSPRNG.
    pub fn generate() -> Result<Self, AuthError> {
        Ok(Self(random()?))
    }

    /// The bytes, to hand to the other end out of band.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    fn proof(
        &self,
        label: &[u8; 12],
        port: u32,
        server_nonce: &[u8; NONCE_LEN],
        client_nonce: &[u8; NONCE_LEN],
    ) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label);
        mac.update(&port.to_be_bytes());
        mac.update(server_nonce);
        mac.update(client_nonce);
        mac
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

fn exact<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<[u8; N], AuthError> {
    bytes.try_into().map_err(|_| AuthError::Length {
        what,
        expected: N,
        got: bytes.len(),
    })
}

/// The server's half, as pure functions of the bytes exchanged.
pub struct Server {
    secret: Secret,
    port: u32,
    nonce: [u8; NONCE_LEN],
}

impl Server {
    /// A server for `port` with its nonce (fresh per stream: [`Server::new`]).
    pub fn with_nonce(secret: Secret, port: u32, nonce: [u8; NONCE_LEN]) -> Self {
        Self {
            secret,
            port,
            nonce,
        }
    }

    /// A server for `port` with a fresh random nonce.
    pub fn new(secret: Secret, port: u32) -> Result<Self, AuthError> {
        Ok(Self::with_nonce(secret, port, random()?))
    }

    /// What the server sends first.
    pub fn hello(&self) -> [u8; HELLO_LEN] {
        let mut hello = [0u8; HELLO_LEN];
        hello[..MAGIC.len()].copy_from_slice(&MAGIC);
        hello[MAGIC.len()..].copy_from_slice(&self.nonce);
        hello
    }

    /// Checks the client's answer (in constant time); on success answers
    /// the server's own proof.
    pub fn check(&self, client_proof: &[u8]) -> Result<[u8; SERVER_PROOF_LEN], AuthError> {
        let answer: [u8; CLIENT_PROOF_LEN] = exact("the client's proof", client_proof)?;
        let (client_nonce, proof) = answer.split_at(NONCE_LEN);
        let client_nonce: [u8; NONCE_LEN] = exact("the client's nonce", client_nonce)?;
        self.secret
            .proof(CLIENT_LABEL, self.port, &self.nonce, &client_nonce)
            .verify_slice(proof)
            .map_err(|_| AuthError::BadProof { port: self.port })?;
        let ours = self
            .secret
            .proof(SERVER_LABEL, self.port, &self.nonce, &client_nonce)
            .finalize()
            .into_bytes();
        Ok(ours.into())
    }
}

/// The client's half, as pure functions of the bytes exchanged.
pub struct Client {
    secret: Secret,
    port: u32,
    server_nonce: [u8; NONCE_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Client {
    /// Reads the server's hello and answers the client's proof, with a
    /// chosen nonce (fresh per stream: [`Client::answer`]).
    pub fn answer_with_nonce(
        secret: Secret,
        port: u32,
        hello: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<(Self, [u8; CLIENT_PROOF_LEN]), AuthError> {
        let hello: [u8; HELLO_LEN] = exact("the server's hello", hello)?;
        if hello[..MAGIC.len()] != MAGIC {
            return Err(AuthError::NotAHello);
        }
        let server_nonce: [u8; NONCE_LEN] = exact("the server's nonce", &hello[MAGIC.len()..])?;
        let proof = secret
            .proof(CLIENT_LABEL, port, &server_nonce, &nonce)
            .finalize()
            .into_bytes();
        let mut answer = [0u8; CLIENT_PROOF_LEN];
        answer[..NONCE_LEN].copy_from_slice(&nonce);
        answer[NONCE_LEN..].copy_from_slice(&proof);
        let client = Self {
            secret,
            port,
            server_nonce,
            nonce,
        };
        Ok((client, answer))
    }

    /// [`Client::answer_with_nonce`] with a fresh random nonce.
    pub fn answer(
        secret: Secret,
        port: u32,
        hello: &[u8],
    ) -> Result<(Self, [u8; CLIENT_PROOF_LEN]), AuthError> {
        Self::answer_with_nonce(secret, port, hello, random()?)
    }

    /// Checks the server's proof (in constant time).
    pub fn check(&self, server_proof: &[u8]) -> Result<(), AuthError> {
        let proof: [u8; SERVER_PROOF_LEN] = exact("the server's proof", server_proof)?;
        self.secret
            .proof(SERVER_LABEL, self.port, &self.server_nonce, &self.nonce)
            .verify_slice(&proof)
            .map_err(|_| AuthError::BadProof { port: self.port })
    }
}

/// Reads exactly `N` bytes within `limit`.
async fn read_message<S: AsyncRead + Unpin, const N: usize>(
    stream: &mut S,
    port: u32,
    limit: Duration,
) -> Result<[u8; N], AuthError> {
    let mut message = [0u8; N];
    match tokio::time::timeout(limit, stream.read_exact(&mut message)).await {
        Ok(Ok(_)) => Ok(message),
        Ok(Err(source)) => Err(AuthError::Io { port, source }),
        Err(_) => Err(AuthError::Timeout(limit)),
    }
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    port: u32,
    message: &[u8],
) -> Result<(), AuthError> {
    let io = |source| AuthError::Io { port, source };
    stream.write_all(message).await.map_err(io)?;
    stream.flush().await.map_err(io)
}

/// The server's side on `stream`: nothing else may be read from or written
/// to the stream unless this succeeds. A client silent for `limit` fails.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    port: u32,
    limit: Duration,
) -> Result<(), AuthError> {
    let server = Server::new(secret.clone(), port)?;
    send(stream, port, &server.hello()).await?;
    let answer: [u8; CLIENT_PROOF_LEN] = read_message(stream, port, limit).await?;
    let proof = server.check(&answer)?;
    send(stream, port, &proof).await
}

/// The client's side on `stream`, right after it connected: on success the
/// peer is known to hold the secret. Each server message must come within
/// `limit` (an old guest that does not speak this would stay silent).
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    port: u32,
    limit: Duration,
) -> Result<(), AuthError> {
    let hello: [u8; HELLO_LEN] = read_message(stream, port, limit).await?;
    let (client, answer) = Client::answer(secret.clone(), port, &hello)?;
    send(stream, port, &answer).await?;
    let proof: [u8; SERVER_PROOF_LEN] = read_message(stream, port, limit).await?;
    client.check(&proof)
}

/// [`connect`] for a blocking stream; the caller bounds the wait (a socket
/// receive timeout). `read_exact` must read the server's messages whole,
/// whatever carries them (an unframed stream, or a framed reader).
pub fn connect_blocking<S: Read + Write>(
    stream: &mut S,
    secret: &Secret,
    port: u32,
) -> Result<(), AuthError> {
    let io = |source| AuthError::Io { port, source };
    let mut hello = [0u8; HELLO_LEN];
    stream.read_exact(&mut hello).map_err(io)?;
    let (client, answer) = Client::answer(secret.clone(), port, &hello)?;
    stream.write_all(&answer).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut proof = [0u8; SERVER_PROOF_LEN];
    stream.read_exact(&mut proof).map_err(io)?;
    client.check(&proof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    const PORT: u32 = 2375;

    fn secret(byte: u8) -> Secret {
        Secret::from_bytes(&[byte; SECRET_LEN]).unwrap()
    }

    async fn pair(
        server_secret: Secret,
        client_secret: Secret,
        server_port: u32,
        client_port: u32,
    ) -> (Result<(), AuthError>, Result<(), AuthError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            let result = serve(&mut a, &server_secret, server_port, HANDSHAKE_LIMIT).await;
            drop(a);
            result
        });
        let client = connect(&mut b, &client_secret, client_port, HANDSHAKE_LIMIT).await;
        drop(b);
        (server.await.unwrap(), client)
    }

    #[tokio::test]
    async fn the_right_secret_passes_both_ways_and_the_stream_carries_on() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            serve(&mut a, &secret(1), PORT, HANDSHAKE_LIMIT)
                .await
                .unwrap();
            let mut request = [0u8; 4];
            a.read_exact(&mut request).await.unwrap();
            a.write_all(b"pong").await.unwrap();
            request
        });
        connect(&mut b, &secret(1), PORT, HANDSHAKE_LIMIT)
            .await
            .unwrap();
        b.write_all(b"ping").await.unwrap();
        let mut answer = [0u8; 4];
        b.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong");
        assert_eq!(&server.await.unwrap(), b"ping");
    }

    #[tokio::test]
    async fn a_client_without_the_secret_is_refused() {
        let (server, client) = pair(secret(1), secret(2), PORT, PORT).await;
        assert!(
            matches!(server, Err(AuthError::BadProof { port: PORT })),
            "{server:?}"
        );
        // The server closed without its proof: the client learns nothing.
        assert!(matches!(client, Err(AuthError::Io { .. })), "{client:?}");
    }

    #[test]
    fn a_server_without_the_secret_is_refused() {
        // An impostor (a local user listening on a host vsock port) answers
        // the honest client with a proof made from the wrong secret.
        let impostor = Server::with_nonce(secret(9), PORT, [3; NONCE_LEN]);
        let (client, answer) =
            Client::answer_with_nonce(secret(1), PORT, &impostor.hello(), [4; NONCE_LEN]).unwrap();
        assert!(impostor.check(&answer).is_err());
        let forged = secret(9)
            .proof(SERVER_LABEL, PORT, &[3; NONCE_LEN], &[4; NONCE_LEN])
            .finalize()
            .into_bytes();
        assert!(matches!(
            client.check(&forged),
            Err(AuthError::BadProof { .. })
        ));
    }

    #[tokio::test]
    async fn a_proof_for_another_port_is_refused() {
        let (server, _) = pair(secret(1), secret(1), 1027, 1025).await;
        assert!(matches!(server, Err(AuthError::BadProof { port: 1027 })));
    }

    #[test]
    fn a_replayed_proof_is_refused() {
        // A proof recorded on one stream, replayed on the next: the server's
        // nonce differs, so the proof does not fit.
        let first = Server::new(secret(1), PORT).unwrap();
        let (_, recorded) = Client::answer(secret(1), PORT, &first.hello()).unwrap();
        assert!(first.check(&recorded).is_ok());
        let second = Server::new(secret(1), PORT).unwrap();
        assert!(matches!(
            second.check(&recorded),
            Err(AuthError::BadProof { .. })
        ));
    }

    #[test]
    fn a_server_proof_cannot_pass_as_a_client_proof() {
        // A client echoes the server's own proof back (the labels differ).
        let server = Server::with_nonce(secret(1), PORT, [5; NONCE_LEN]);
        let (_, honest) =
            Client::answer_with_nonce(secret(1), PORT, &server.hello(), [6; NONCE_LEN]).unwrap();
        let server_proof = server.check(&honest).unwrap();
        let mut reflected = [0u8; CLIENT_PROOF_LEN];
        reflected[..NONCE_LEN].copy_from_slice(&[6; NONCE_LEN]);
        reflected[NONCE_LEN..].copy_from_slice(&server_proof);
        assert!(server.check(&reflected).is_err());
    }

    #[test]
    fn truncated_oversized_and_garbage_messages_are_refused() {
        let server = Server::with_nonce(secret(1), PORT, [7; NONCE_LEN]);
        let (client, good) =
            Client::answer_with_nonce(secret(1), PORT, &server.hello(), [8; NONCE_LEN]).unwrap();
        for bad in [
            &good[..0],
            &good[..CLIENT_PROOF_LEN - 1],
            &[good.as_slice(), &[0]].concat()[..],
            &[0xff; CLIENT_PROOF_LEN][..],
        ] {
            assert!(server.check(bad).is_err(), "{} bytes", bad.len());
        }
        let mut flipped = good;
        flipped[CLIENT_PROOF_LEN - 1] ^= 1;
        assert!(server.check(&flipped).is_err());

        let hello = server.hello();
        for bad in [
            &hello[..HELLO_LEN - 1],
            &[hello.as_slice(), &[0]].concat()[..],
            b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n\0\0\0\0",
        ] {
            assert!(Client::answer(secret(1), PORT, bad).is_err());
        }
        assert!(matches!(
            Client::answer(secret(1), PORT, &[0u8; HELLO_LEN]),
            Err(AuthError::NotAHello)
        ));
        for bad in [&[][..], &[0u8; SERVER_PROOF_LEN + 1][..], &[1u8; 32][..]] {
            assert!(client.check(bad).is_err());
        }
        for length in [0, 31, 33] {
            assert!(Secret::from_bytes(&vec![0; length]).is_err());
        }
    }

    #[tokio::test]
    async fn a_silent_client_times_out() {
        let (mut server_end, _client_end) = tokio::io::duplex(1024);
        let limit = Duration::from_millis(50);
        let result = serve(&mut server_end, &secret(1), PORT, limit).await;
        assert!(matches!(result, Err(AuthError::Timeout(l)) if l == limit));
    }

    #[tokio::test]
    async fn a_client_sending_garbage_then_hanging_up_is_refused() {
        let (mut a, mut b): (DuplexStream, DuplexStream) = tokio::io::duplex(1024);
        let server =
            tokio::spawn(async move { serve(&mut a, &secret(1), PORT, HANDSHAKE_LIMIT).await });
        let mut hello = [0u8; HELLO_LEN];
        b.read_exact(&mut hello).await.unwrap();
        b.write_all(b"GET /_ping HTTP/1.1\r\n\r\n").await.unwrap();
        drop(b);
        assert!(matches!(server.await.unwrap(), Err(AuthError::Io { .. })));
    }

    #[test]
    fn the_blocking_client_speaks_the_same_handshake() {
        let server = Server::with_nonce(secret(1), 1027, [2; NONCE_LEN]);
        // The server's messages, prepared: the proof depends on the client's
        // nonce, so run the client against a stream that computes it.
        struct Peer {
            server: Server,
            out: Vec<u8>,
            at: usize,
        }
        impl Read for Peer {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.out.len() - self.at);
                buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
                self.at += n;
                Ok(n)
            }
        }
        impl Write for Peer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let proof = self.server.check(buf).map_err(std::io::Error::other)?;
                self.out.extend_from_slice(&proof);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let hello = server.hello().to_vec();
        let mut peer = Peer {
            server,
            out: hello,
            at: 0,
        };
        connect_blocking(&mut peer, &secret(1), 1027).unwrap();
        peer.at = 0;
        peer.out = peer.server.hello().to_vec();
        assert!(connect_blocking(&mut peer, &secret(2), 1027).is_err());
    }
}
