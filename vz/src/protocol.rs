//! The VMM's unix socket: hybrid vsock for the guest's ports, and control
//! lines for the daemon.
//!
//! Protocol primer. A client connects to the socket and writes one line of
//! at most [`MAX_REQUEST`] bytes:
//!
//! | request | answer | then |
//! |---|---|---|
//! | `CONNECT <port>` | `OK <port>` | the socket carries the guest stream's bytes both ways |
//! | `STATE` | `OK <state>[ <detail>]` | closed; `<state>`: see [`VmState`] |
//! | `PID` | `OK <pid>` | closed (the daemon checks a pid file against it) |
//! | `STOP` | `OK` or `ERR <why>` | closed; the guest was asked to power off |
//! | `QUIT` | `OK` or `ERR <why>` | closed; the VM is stopped at once |
//!
//! `CONNECT` is Firecracker's hybrid vsock, which the daemon's
//! `vsock/hybrid.rs` already speaks: a guest port nobody listens on closes
//! the socket without an answer, and so does a line that is not a request
//! (garbage, too long, no newline before the end). Bytes are spliced as
//! they come, and a half-close on either side reaches the other as one
//! (the daemon frames its streams end to end, so nothing here looks inside).
//!
//! The other direction: for each connection the guest opens to host port
//! P, [`to_host`] connects to `<socket>_P` ([`host_port_socket`], the
//! Firecracker convention the daemon's hybrid `listen` binds) and splices;
//! when nobody listens there the guest's stream is closed.
//!
//! The VM behind it is anything that implements [`GuestPorts`] and
//! [`VmControl`]: Virtualization.framework in `vm.rs`, an in-memory fake in
//! the tests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The longest request line, newline included (`CONNECT 4294967295\n` is 19).
pub const MAX_REQUEST: usize = 64;

/// A byte stream to or from a guest vsock port; shutting down its write
/// half reaches the guest as a half-close.
pub trait GuestIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> GuestIo for T {}

pub type GuestConn = Box<dyn GuestIo>;

pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<GuestConn>> + Send + 'a>>;

/// Opens streams to the guest's vsock ports.
pub trait GuestPorts: Send + Sync {
    /// A stream to guest `port`; fails when nothing listens there.
    fn connect(&self, port: u32) -> ConnectFuture<'_>;
}

/// The VM's life, as the daemon's `Vm` trait needs it.
pub trait VmControl: Send + Sync {
    fn state(&self) -> VmState;
    /// Asks the guest to power off; it may ignore it.
    fn request_stop(&self) -> std::io::Result<()>;
    /// Stops the VM at once.
    fn quit(&self) -> std::io::Result<()>;
}

/// Both halves of a VM the socket serves.
pub trait Device: GuestPorts + VmControl {}
impl<T: GuestPorts + VmControl> Device for T {}

/// The VM's state, as `STATE` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    /// Created, not yet running guest code.
    Starting,
    Running,
    /// Paused, pausing, resuming, saving, restoring.
    Paused(String),
    /// The guest stopped (powered off); the VMM exits.
    Stopped,
    /// The framework gave up on the VM.
    Error(String),
}

impl VmState {
    /// The answer line's words.
    pub fn to_line(&self) -> String {
        match self {
            VmState::Starting => "starting".into(),
            VmState::Running => "running".into(),
            VmState::Paused(what) => format!("paused {what}"),
            VmState::Stopped => "stopped".into(),
            VmState::Error(why) => format!("error {why}"),
        }
    }

    /// Reads an answer's words back (the daemon's side).
    pub fn from_line(line: &str) -> Option<Self> {
        let (word, detail) = line.split_once(' ').unwrap_or((line, ""));
        Some(match word {
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "paused" => VmState::Paused(detail.to_owned()),
            "stopped" => VmState::Stopped,
            "error" => VmState::Error(detail.to_owned()),
            _ => return None,
        })
    }
}

/// One request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Connect(u32),
    State,
    Pid,
    Stop,
    Quit,
}

impl Request {
    /// Parses a line without its newline; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(port) = line.strip_prefix("CONNECT ") {
            // Digits only: u32's parser takes a leading '+'.
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return port.parse().ok().map(Request::Connect);
        }
        match line {
            "STATE" => Some(Request::State),
            "PID" => Some(Request::Pid),
            "STOP" => Some(Request::Stop),
            "QUIT" => Some(Request::Quit),
            _ => None,
        }
    }
}

/// Serves `listener` until the task is dropped: each client in a task of its own.
pub async fn serve(listener: UnixListener, device: Arc<dyn Device>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let device = device.clone();
                tokio::spawn(async move { serve_client(stream, device.as_ref()).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "VMM socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// One client: its request, then the answer (and, for `CONNECT`, the stream).
pub async fn serve_client(stream: UnixStream, device: &dyn Device) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let request =
        match vmctl_proto::line::read_line_capped(&mut stream, &mut line, MAX_REQUEST).await {
            Ok(_) => line.strip_suffix('\n').and_then(Request::parse),
            Err(_) => None,
        };
    let Some(request) = request else {
        tracing::debug!(line = %line.escape_debug(), "closed a VMM socket client with no request");
        return;
    };
    let answer = match request {
        Request::Connect(port) => return connect(stream, device, port).await,
        Request::State => format!("OK {}", device.state().to_line()),
        Request::Pid => format!("OK {}", std::process::id()),
        Request::Stop => control_answer(device.request_stop()),
        Request::Quit => control_answer(device.quit()),
    };
    let _ = stream.write_all(format!("{answer}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn control_answer(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "OK".into(),
        Err(e) => format!("ERR {}", e.to_string().replace('\n', " ")),
    }
}

/// `CONNECT <port>`: the guest stream, or a close without a word.
async fn connect(mut client: BufReader<UnixStream>, device: &dyn Device, port: u32) {
    let mut guest = match device.connect(port).await {
        Ok(guest) => guest,
        Err(e) => {
            tracing::debug!(port, error = %e, "guest port refused");
            return;
        }
    };
    if client
        .write_all(format!("OK {port}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    // The BufReader hands over whatever the client sent early, then reads on.
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut guest).await {
        tracing::debug!(port, error = %e, "guest stream ended");
    }
}

/// Where the daemon listens for the guest's connections to host `port`:
/// `<socket>_<port>`.
pub fn host_port_socket(socket: &Path, port: u32) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

/// A connection the guest opened to host `port`: spliced to `<socket>_<port>`,
/// or closed when nobody listens there.
pub async fn to_host(mut guest: GuestConn, socket: &Path, port: u32) {
    let path = host_port_socket(socket, port);
    let mut host = match UnixStream::connect(&path).await {
        Ok(host) => host,
        Err(e) => {
            tracing::warn!(port, path = %path.display(), error = %e, "nobody takes the guest's connection");
            let _ = guest.shutdown().await;
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut guest, &mut host).await {
        tracing::debug!(port, error = %e, "guest-to-host stream ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, DuplexStream};

    /// An in-memory VM: port 7 echoes (and closes its side once the
    /// client half-closed), other ports refuse.
    struct FakeVm {
        state: Mutex<VmState>,
        calls: Mutex<HashMap<&'static str, usize>>,
    }

    impl FakeVm {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                state: Mutex::new(VmState::Running),
                calls: Mutex::new(HashMap::new()),
            })
        }
        fn called(&self, what: &'static str) -> usize {
            self.calls.lock().unwrap().get(what).copied().unwrap_or(0)
        }
    }

    impl GuestPorts for FakeVm {
        fn connect(&self, port: u32) -> ConnectFuture<'_> {
            Box::pin(async move {
                if port != 7 {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
                }
                let (ours, guest): (DuplexStream, DuplexStream) = tokio::io::duplex(1024);
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(guest);
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
                Ok(Box::new(ours) as GuestConn)
            })
        }
    }

    impl VmControl for FakeVm {
        fn state(&self) -> VmState {
            self.state.lock().unwrap().clone()
        }
        fn request_stop(&self) -> std::io::Result<()> {
            *self.calls.lock().unwrap().entry("stop").or_default() += 1;
            Err(std::io::Error::other("the guest has no power button\nyet"))
        }
        fn quit(&self) -> std::io::Result<()> {
            *self.calls.lock().unwrap().entry("quit").or_default() += 1;
            *self.state.lock().unwrap() = VmState::Stopped;
            Ok(())
        }
    }

    async fn vmm() -> (tempfile::TempDir, PathBuf, Arc<FakeVm>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vm.vsock");
        let listener = UnixListener::bind(&socket).unwrap();
        let vm = FakeVm::new();
        tokio::spawn(serve(listener, vm.clone()));
        (dir, socket, vm)
    }

    async fn ask(socket: &Path, request: &[u8]) -> Vec<u8> {
        let mut stream = UnixStream::connect(socket).await.unwrap();
        // The VMM may close before reading it all (a huge line).
        let _ = stream.write_all(request).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    }

    #[test]
    fn requests_parse_strictly() {
        assert_eq!(Request::parse("CONNECT 2375"), Some(Request::Connect(2375)));
        assert_eq!(
            Request::parse("CONNECT 4294967295\r"),
            Some(Request::Connect(u32::MAX))
        );
        assert_eq!(Request::parse("STATE"), Some(Request::State));
        assert_eq!(Request::parse("QUIT"), Some(Request::Quit));
        for bad in [
            "CONNECT",
            "CONNECT ",
            "CONNECT +7",
            "CONNECT -1",
            "CONNECT 4294967296",
            "CONNECT 7 8",
            "connect 7",
            "STATE now",
            "",
            "\u{0}",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
        for state in [
            VmState::Starting,
            VmState::Running,
            VmState::Paused("saving".into()),
            VmState::Stopped,
            VmState::Error("internal error".into()),
        ] {
            assert_eq!(VmState::from_line(&state.to_line()), Some(state));
        }
        assert_eq!(VmState::from_line("dancing"), None);
    }

    #[tokio::test]
    async fn connect_splices_both_ways_and_keeps_the_half_close() {
        let (_dir, socket, _vm) = vmm().await;
        let mut stream = UnixStream::connect(&socket).await.unwrap();
        // Bytes sent right behind the request are not lost.
        stream.write_all(b"CONNECT 7\nping").await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        reader.read_line(&mut answer).await.unwrap();
        assert_eq!(answer, "OK 7\n");
        reader.get_mut().write_all(b" pong").await.unwrap();
        reader.get_mut().shutdown().await.unwrap();
        let mut echoed = Vec::new();
        reader.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(
            echoed, b"ping pong",
            "after our half-close the guest's bytes still came back, then its own close"
        );
    }

    #[tokio::test]
    async fn refusals_and_bad_lines_close_without_a_word() {
        let (_dir, socket, vm) = vmm().await;
        assert_eq!(ask(&socket, b"CONNECT 8\n").await, b"");
        assert_eq!(ask(&socket, b"HELLO\n").await, b"");
        assert_eq!(
            ask(&socket, b"CONNECT 7").await,
            b"",
            "no newline: no request"
        );
        let huge = vec![b'A'; 1 << 20];
        assert_eq!(ask(&socket, &huge).await, b"", "a huge line is dropped");
        let mut garbage = b"\xff\xfe CONNECT 7\n".to_vec();
        garbage.extend_from_slice(b"more");
        assert_eq!(ask(&socket, &garbage).await, b"");
        assert_eq!(vm.called("stop") + vm.called("quit"), 0);
        // The socket still serves after all that.
        assert_eq!(ask(&socket, b"STATE\n").await, b"OK running\n");
    }

    #[tokio::test]
    async fn control_lines_reach_the_vm() {
        let (_dir, socket, vm) = vmm().await;
        assert_eq!(
            ask(&socket, b"PID\n").await,
            format!("OK {}\n", std::process::id()).into_bytes()
        );
        assert_eq!(
            ask(&socket, b"STOP\n").await,
            b"ERR the guest has no power button yet\n"
        );
        assert_eq!(vm.called("stop"), 1);
        assert_eq!(ask(&socket, b"QUIT\n").await, b"OK\n");
        assert_eq!(vm.called("quit"), 1);
        assert_eq!(ask(&socket, b"STATE\n").await, b"OK stopped\n");
    }

    #[tokio::test]
    async fn guest_connections_reach_the_host_port_socket_or_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vm.vsock");
        assert_eq!(
            host_port_socket(&socket, 1027),
            dir.path().join("vm.vsock_1027")
        );
        // Nobody listens: the guest's stream is closed.
        let (ours, mut guest) = tokio::io::duplex(64);
        to_host(Box::new(ours), &socket, 1027).await;
        let mut rest = Vec::new();
        guest.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());

        let listener = UnixListener::bind(host_port_socket(&socket, 1027)).unwrap();
        let host = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            stream.write_all(b"reply after your EOF").await.unwrap();
            got
        });
        let (ours, mut guest) = tokio::io::duplex(64);
        let splice = tokio::spawn(async move { to_host(Box::new(ours), &socket, 1027).await });
        guest.write_all(b"reserve 8080").await.unwrap();
        guest.shutdown().await.unwrap();
        let mut reply = Vec::new();
        guest.read_to_end(&mut reply).await.unwrap();
        assert_eq!(host.await.unwrap(), b"reserve 8080");
        assert_eq!(reply, b"reply after your EOF");
        splice.await.unwrap();
    }
}
