//! The VMM process's life around a running VM, whatever the VM is: its
//! unix socket served ([`crate::protocol`]), the guest's connections to
//! host ports taken in (the secret's port by [`crate::secret::OneShot`],
//! every other one spliced to `<socket>_<port>`), until the VM stops.
//!
//! Told to end (SIGTERM, SIGINT: [`termination`]), the VMM asks the guest
//! to power off and gives it [`STOP_GRACE`] before stopping the VM at once:
//! a VZ VM dies with its process, and a guest that flushes its disk first
//! loses nothing.
//!
//! The VM's own code (`vm.rs`, Virtualization.framework) delivers the
//! guest's connections as [`Incoming`] on a channel: they are accepted on
//! the VM's dispatch queue and become streams here, inside the runtime.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::protocol::{self, Device, GuestConn, VmState};
use crate::secret::OneShot;

/// How often the VM's state is polled for its end.
const STATE_POLL: Duration = Duration::from_millis(250);

/// How long the guest may take to power off once the VMM is told to end,
/// before the VM is stopped at once (PID 1 stops the containers and syncs
/// the disk well within it).
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// A connection the guest opened to a host port.
pub struct Incoming {
    pub port: u32,
    /// Makes the stream; called inside the runtime (a tokio socket needs its reactor).
    pub open: Box<dyn FnOnce() -> std::io::Result<GuestConn> + Send>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on the VMM socket {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The VMM socket at `path`, mode 0600, replacing a stale one. Must run
/// inside the runtime.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let listen = |source| ServeError::Listen {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen(e)),
    }
    let listener = UnixListener::bind(path).map_err(listen)?;
    set_private(path).map_err(listen)?;
    Ok(listener)
}

#[cfg(unix)]
fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Serves `listener` and the guest's `incoming` connections until the VM
/// stops or fails; returns that last state. When `ended` completes (the
/// process was told to end), the guest is asked to power off and, after
/// `grace`, the VM is stopped at once.
pub async fn serve_until_stopped(
    listener: UnixListener,
    socket: PathBuf,
    device: Arc<dyn Device>,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    secret: Arc<OneShot>,
    ended: impl Future<Output = ()>,
    grace: Duration,
) -> VmState {
    let server = tokio::spawn(protocol::serve(listener, device.clone()));
    let mut poll = tokio::time::interval(STATE_POLL);
    let mut ended = std::pin::pin!(ended);
    let mut deadline: Option<tokio::time::Instant> = None;
    let last = loop {
        tokio::select! {
            Some(conn) = incoming.recv() => take(conn, &socket, &secret),
            () = &mut ended, if deadline.is_none() => {
                tracing::info!(grace_s = grace.as_secs(), "told to end: asking the guest to power off");
                if let Err(e) = device.request_stop() {
                    tracing::warn!(error = %e, "the guest cannot be asked to power off");
                }
                deadline = Some(tokio::time::Instant::now() + grace);
            }
            _ = poll.tick() => {
                let state = device.state();
                if matches!(state, VmState::Stopped | VmState::Error(_)) {
                    break state;
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    tracing::warn!("the guest did not power off in time: stopping the VM");
                    if let Err(e) = device.quit() {
                        tracing::warn!(error = %e, "cannot stop the VM");
                    }
                }
            }
        }
    };
    server.abort();
    let _ = std::fs::remove_file(&socket);
    last
}

/// Completes when this process is told to end: SIGTERM or SIGINT (on
/// unix), Ctrl-C elsewhere. Never completes if no handler can be set.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One guest connection, in a task of its own.
fn take(conn: Incoming, socket: &Path, secret: &Arc<OneShot>) {
    let port = conn.port;
    let guest = match (conn.open)() {
        Ok(guest) => guest,
        Err(e) => {
            tracing::warn!(port, error = %e, "cannot take the guest's connection");
            return;
        }
    };
    if port == vmctl_proto::auth::SECRET_PORT {
        let secret = secret.clone();
        tokio::spawn(async move {
            match secret.hand_over(guest).await {
                Ok(()) => tracing::info!(port, "handed the per-boot secret to the guest"),
                Err(e) => tracing::warn!(port, error = %e, "secret handoff refused"),
            }
        });
    } else {
        let socket = socket.to_owned();
        tokio::spawn(async move { protocol::to_host(guest, &socket, port).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ConnectFuture, GuestPorts, VmControl};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vmctl_proto::auth::{Secret, SECRET_LEN, SECRET_PORT};

    struct Vm(Mutex<VmState>);

    impl GuestPorts for Vm {
        fn connect(&self, _: u32) -> ConnectFuture<'_> {
            Box::pin(async { Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) })
        }
    }

    impl VmControl for Vm {
        fn state(&self) -> VmState {
            self.0.lock().unwrap().clone()
        }
        fn request_stop(&self) -> std::io::Result<()> {
            *self.0.lock().unwrap() = VmState::Stopped;
            Ok(())
        }
        fn quit(&self) -> std::io::Result<()> {
            self.request_stop()
        }
    }

    fn guest_conn(port: u32) -> (Incoming, tokio::io::DuplexStream) {
        let (ours, guest) = tokio::io::duplex(256);
        let open = Box::new(move || Ok(Box::new(ours) as GuestConn));
        (Incoming { port, open }, guest)
    }

    #[tokio::test]
    async fn serves_the_secret_once_host_ports_and_ends_with_the_vm() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vm.vsock");
        let host = UnixListener::bind(protocol::host_port_socket(&socket, 1027)).unwrap();
        let listener = bind(&socket).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let vm = Arc::new(Vm(Mutex::new(VmState::Running)));
        let (sender, receiver) = mpsc::unbounded_channel();
        let secret = Arc::new(OneShot::new(Secret::from_bytes(&[3; SECRET_LEN]).unwrap()));
        let served = tokio::spawn(serve_until_stopped(
            listener,
            socket.clone(),
            vm.clone(),
            receiver,
            secret,
            std::future::pending(),
            STOP_GRACE,
        ));

        let (first, mut pid1) = guest_conn(SECRET_PORT);
        let (second, mut late) = guest_conn(SECRET_PORT);
        sender.send(first).unwrap();
        let mut got = Vec::new();
        pid1.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [3; SECRET_LEN]);
        sender.send(second).unwrap();
        let mut got = Vec::new();
        late.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());

        let (engine, mut guest) = guest_conn(1027);
        sender.send(engine).unwrap();
        let (mut daemon_side, _) = host.accept().await.unwrap();
        guest.write_all(b"hello host").await.unwrap();
        let mut buf = [0u8; 10];
        daemon_side.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello host");

        let mut client = tokio::net::UnixStream::connect(&socket).await.unwrap();
        client.write_all(b"STOP\n").await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "OK\n");
        let last = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last, VmState::Stopped);
        assert!(!socket.exists(), "the socket goes with the VM");
    }

    /// A guest that ignores the power button: only `quit` stops it.
    struct Stubborn {
        state: Mutex<VmState>,
        stops: std::sync::atomic::AtomicUsize,
    }

    impl GuestPorts for Stubborn {
        fn connect(&self, _: u32) -> ConnectFuture<'_> {
            Box::pin(async { Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) })
        }
    }

    impl VmControl for Stubborn {
        fn state(&self) -> VmState {
            self.state.lock().unwrap().clone()
        }
        fn request_stop(&self) -> std::io::Result<()> {
            self.stops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
        fn quit(&self) -> std::io::Result<()> {
            *self.state.lock().unwrap() = VmState::Stopped;
            Ok(())
        }
    }

    #[tokio::test]
    async fn told_to_end_the_guest_is_asked_first_then_the_vm_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let serve = |vm: Arc<dyn Device>, grace: Duration| {
            let socket = dir.path().join(format!("vm{}.vsock", grace.as_millis()));
            let listener = bind(&socket).unwrap();
            let (sender, receiver) = mpsc::unbounded_channel();
            let secret = Arc::new(OneShot::new(Secret::from_bytes(&[1; SECRET_LEN]).unwrap()));
            async move {
                // Held while serving: the guest's channel stays open.
                let _open = sender;
                serve_until_stopped(listener, socket, vm, receiver, secret, async {}, grace).await
            }
        };
        // A guest that powers off when asked: no quit needed.
        let obedient = Arc::new(Vm(Mutex::new(VmState::Running)));
        let last = tokio::time::timeout(
            Duration::from_secs(5),
            serve(obedient, Duration::from_secs(3600)),
        )
        .await
        .expect("the guest powered off when asked");
        assert_eq!(last, VmState::Stopped);
        // A guest that ignores it: asked once, then stopped after the grace.
        let stubborn = Arc::new(Stubborn {
            state: Mutex::new(VmState::Running),
            stops: Default::default(),
        });
        let last = tokio::time::timeout(
            Duration::from_secs(5),
            serve(stubborn.clone(), Duration::from_millis(300)),
        )
        .await
        .expect("the VM was stopped after the grace");
        assert_eq!(last, VmState::Stopped);
        assert_eq!(stubborn.stops.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
