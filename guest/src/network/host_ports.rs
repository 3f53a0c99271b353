//! The engine's side of the host-port service (guest → host vsock 1027,
//! protocol in `vmctl_proto::forward`): inside the VM the desktop is where
//! published ports live, so the host daemon — not a socket in the VM —
//! holds them. One blocking request per connection; the requests are rare
//! (a container start) and small.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use vmctl_proto::auth::{self, Secret};
use vmctl_proto::forward::{HostPortRequest, HostPortResponse};
use vmctl_proto::framing::FramedSync;
use vmctl_proto::ports::PortBinding;

/// How long the host may take to answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HostPortsError {
    #[error("cannot reach the vmctl host daemon on vsock port {port}")]
    Unreachable {
        port: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the vmctl host daemon sent a malformed answer")]
    Malformed(#[source] serde_json::Error),
}

/// A client of the host daemon's port service.
#[derive(Debug, Clone)]
pub struct HostPorts {
    port: u32,
    /// The per-boot secret: the host answers only a guest that proves it,
    /// and this client talks only to a host that proves it back.
    secret: Secret,
}

impl HostPorts {
    /// A client that proves `secret` (`vmctl_proto::auth`) on each call.
    pub fn new(secret: Secret) -> Self {
        HostPorts {
            port: vmctl_proto::VSOCK_PORT_HOST_PORTS,
            secret,
        }
    }

    /// Asks the host to listen for `binding` (host port 0: any).
    pub fn reserve(&self, binding: &PortBinding) -> Result<HostPortResponse, HostPortsError> {
        self.call(&HostPortRequest::Reserve {
            binding: binding.clone(),
        })
    }

    /// Tells the host a reservation is not needed any more; in the
    /// background, so dropping a reservation never blocks.
    pub fn release_later(&self, binding: PortBinding) {
        let client = self.clone();
        std::thread::spawn(move || {
            if let Err(e) = client.call(&HostPortRequest::Release { binding }) {
                tracing::debug!(error = %e, "cannot release a host port (the host reconciles)");
            }
        });
    }

    fn call(&self, request: &HostPortRequest) -> Result<HostPortResponse, HostPortsError> {
        let unreachable = |source| HostPortsError::Unreachable {
            port: self.port,
            source,
        };
        let run = || -> std::io::Result<Vec<u8>> {
            let mut stream = std::fs::File::from(self.connect()?);
            // The handshake's messages travel in frames like everything else.
            auth::connect_blocking(&mut FramedSync::new(&mut stream), &self.secret, self.port)
                .map_err(std::io::Error::other)?;
            let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
            line.push(b'\n');
            stream.write_all(&vmctl_proto::framing::frame(&line))?;
            read_frame(&mut stream)
        };
        let answer = if in_multi_thread_runtime() {
            tokio::task::block_in_place(run)
        } else {
            run()
        }
        .map_err(unreachable)?;
        serde_json::from_slice(&answer).map_err(HostPortsError::Malformed)
    }

    fn connect(&self) -> std::io::Result<OwnedFd> {
        crate::vm::vsock::connect_host(self.port, ANSWER_LIMIT)
    }
}

fn in_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// One frame's payload (`vmctl_proto::framing`); frames of zero length (a
/// half-close) end it.
fn read_frame(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > 1 << 20 {
            return Ok(out);
        }
        let start = out.len();
        out.resize(start + len, 0);
        stream.read_exact(&mut out[start..])?;
        if out.ends_with(b"\n") {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_joined_up_to_the_newline() {
        let mut wire = vmctl_proto::framing::frame(b"{\"ok\":");
        wire.extend(vmctl_proto::framing::frame(b"true}\n"));
        let got = read_frame(&mut &wire[..]).unwrap();
        assert_eq!(got, b"{\"ok\":true}\n");
    }

    #[test]
    fn framed_reads_cross_frames_and_stop_at_a_half_close() {
        let mut wire = vmctl_proto::framing::frame(b"ab");
        wire.extend(vmctl_proto::framing::frame(b"cde"));
        wire.extend(vmctl_proto::framing::frame(b""));
        let mut stream = std::io::Cursor::new(wire);
        let mut framed = FramedSync::new(&mut stream);
        let mut got = [0u8; 5];
        framed.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcde");
        assert_eq!(framed.read(&mut got).unwrap(), 0);
        framed.write_all(b"xy").unwrap();
        assert!(stream
            .get_ref()
            .ends_with(&vmctl_proto::framing::frame(b"xy")));
    }
}
