//! Hybrid vsock: guest ports reached through one host unix socket.
//!
//! Protocol primer (Firecracker's "hybrid vsock", also Cloud Hypervisor's and
//! vhost-device-vsock's): the host connects to the unix socket, writes
//! `CONNECT <port>\n`, and reads one line. `OK <n>\n` means the guest accepted
//! (vhost-device-vsock sends the guest port, Firecracker the host-side port:
//! only the prefix is checked); from then on the socket carries the stream's
//! bytes. A port nobody listens on closes the socket without an answer.
//! Guest-initiated connections to host port P arrive on `<socket>_P`.
//! After the handshake the stream is framed ([`vmctl_proto::framing`]),
//! because vhost-device-vsock turns a half-close into a full close.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use vmctl_proto::framing::Framed;

use super::{AcceptFuture, ConnectFuture, GuestListener, GuestStream, VsockError, VsockTransport};

/// The longest handshake answer accepted (`OK 4294967295\n` is 14 bytes).
const MAX_ANSWER: usize = 64;

pub struct HybridVsock {
    socket: PathBuf,
}

impl HybridVsock {
    /// A transport over the unix socket `socket` (vhost-device-vsock's `uds-path`).
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    async fn open(&self, port: u32) -> Result<GuestStream, VsockError> {
        let mut stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| VsockError::Device {
                    path: self.socket.clone(),
                    source,
                })?;
        let io = |source| VsockError::Io { port, source };
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .await
            .map_err(io)?;
        // Byte by byte: what follows the newline is the guest's data.
        let mut answer = Vec::with_capacity(16);
        loop {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte).await {
                Ok(0) => return Err(VsockError::Refused { port }),
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) if answer.len() < MAX_ANSWER => answer.push(byte[0]),
                Ok(_) => {
                    return Err(VsockError::Handshake {
                        port,
                        answer: String::from_utf8_lossy(&answer).into_owned(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(VsockError::Refused { port })
                }
                Err(e) => return Err(io(e)),
            }
        }
        if !answer.starts_with(b"OK ") {
            return Err(VsockError::Handshake {
                port,
                answer: String::from_utf8_lossy(&answer).into_owned(),
            });
        }
        Ok(Box::new(Framed::new(stream)))
    }
}

impl VsockTransport for HybridVsock {
    fn name(&self) -> &'static str {
        "hybrid-vsock"
    }

    fn connect(&self, port: u32) -> ConnectFuture<'_> {
        Box::pin(self.open(port))
    }

    /// The backend hands guest connections to host port P to `<socket>_P`.
    fn listen(&self, port: u32) -> Result<Box<dyn GuestListener>, VsockError> {
        let mut path = self.socket.clone().into_os_string();
        path.push(format!("_{port}"));
        let path = PathBuf::from(path);
        let listener =
            crate::endpoint::unix::bind_private(&path).map_err(|source| VsockError::Listen {
                port,
                path: path.clone(),
                source,
            })?;
        Ok(Box::new(HybridListener(listener)))
    }
}

struct HybridListener(tokio::net::UnixListener);

impl GuestListener for HybridListener {
    fn accept(&mut self) -> AcceptFuture<'_> {
        Box::pin(async move {
            let (stream, _) = self.0.accept().await?;
            Ok(Box::new(Framed::new(stream)) as GuestStream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// A fake device: accepts port 7 (answering `OK 7`, then echoing), refuses others.
    async fn fake_device(listener: UnixListener) {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                if line != "CONNECT 7\n" {
                    return;
                }
                let mut stream = reader.into_inner();
                stream.write_all(b"OK 7\n").await.unwrap();
                let (r, w) = tokio::io::split(Framed::new(stream));
                let (mut r, mut w) = (r, w);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    }

    #[tokio::test]
    async fn handshake_then_bytes_and_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.vsock");
        tokio::spawn(fake_device(UnixListener::bind(&path).unwrap()));
        let transport = HybridVsock::new(path);
        let mut stream = transport.connect(7).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(
            echoed, b"ping",
            "half-close kept the reverse direction open"
        );
        assert!(matches!(
            transport.connect(8).await,
            Err(VsockError::Refused { port: 8 })
        ));
    }
}
