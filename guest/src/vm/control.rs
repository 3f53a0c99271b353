//! The control service on vsock port 1025 (protocol in
//! `vmctl_proto::control`): health, clock, shutdown and shells for the host.
//! Generic over the stream so tests drive it over a unix socket pair.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use vmctl_proto::control::{ClockReading, ControlRequest, ControlResponse, Health};
use vmctl_proto::ports::PortEvent;

/// What the service needs from the rest of the guest.
pub struct Control {
    /// Notified when the host asks for a shutdown.
    pub shutdown: Arc<Notify>,
    /// The NIC whose address health reports.
    pub interface: String,
    /// The published-port list the host follows (`None`: no engine here).
    pub ports: Option<Arc<crate::engine::Engine>>,
}

impl Control {
    /// Serves one connection: one request, one answer (then, for a shell,
    /// the shell's bytes).
    pub async fn handle<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if reader.read_line(&mut line).await.is_err() || line.is_empty() {
            return;
        }
        let request: ControlRequest = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(e) => {
                let _ = answer(
                    reader.get_mut(),
                    ControlResponse::error(format!("bad request: {e}")),
                )
                .await;
                return;
            }
        };
        match request {
            ControlRequest::Health => {
                let mut response = ControlResponse::ok();
                response.health = Some(self.health().await);
                let _ = answer(reader.get_mut(), response).await;
            }
            ControlRequest::SetTime { unix_nanos } => {
                let response = match super::clock::set_nanos(unix_nanos) {
                    Ok(()) => ControlResponse::ok(),
                    Err(e) => ControlResponse::error(format!("cannot set the clock: {e}")),
                };
                let _ = answer(reader.get_mut(), response).await;
            }
            ControlRequest::Clock => clock(reader).await,
            ControlRequest::Shutdown => {
                tracing::info!("shutdown requested by the host");
                let _ = answer(reader.get_mut(), ControlResponse::ok()).await;
                self.shutdown.notify_one();
            }
            ControlRequest::WatchPorts => self.watch_ports(reader.into_inner()).await,
            ControlRequest::Shell {
                command,
                tty,
                rows,
                cols,
                term,
            } => {
                let request = super::shell::ShellRequest {
                    command,
                    tty,
                    rows,
                    cols,
                    term,
                };
                super::shell::run(reader, request).await;
            }
        }
    }

    /// `ok`, then the port list and its changes, one JSON line each, until
    /// the host hangs up; a snapshot again whenever this watcher lagged.
    async fn watch_ports<S>(&self, mut stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(engine) = &self.ports else {
            let _ = answer(&mut stream, ControlResponse::error("no engine here")).await;
            return;
        };
        if answer(&mut stream, ControlResponse::ok()).await.is_err() {
            return;
        }
        let (snapshot, mut receiver) = engine.networks.ports.watch();
        let mut event = PortEvent::Snapshot(snapshot);
        let (mut from_host, mut to_host) = tokio::io::split(stream);
        let mut sink = [0u8; 64];
        loop {
            let mut line = serde_json::to_vec(&event).unwrap_or_default();
            line.push(b'\n');
            if to_host.write_all(&line).await.is_err() || to_host.flush().await.is_err() {
                return;
            }
            event = tokio::select! {
                // The host closing its side ends the watch.
                read = from_host.read(&mut sink) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                next = engine.networks.ports.next(&mut receiver) => match next {
                    Some(event) => event,
                    None => return,
                },
            };
        }
    }

    async fn health(&self) -> Health {
        let interface = self.interface.clone();
        let address = tokio::task::spawn_blocking(move || super::dhcp::address(&interface))
            .await
            .ok()
            .flatten();
        Health {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            uptime_ms: uptime_ms(),
            engine_ready: true,
            address,
        }
    }
}

/// `ok`, then one [`ClockReading`] line for each line the host sends, until
/// it hangs up.
async fn clock<S>(mut reader: BufReader<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if answer(reader.get_mut(), ControlResponse::ok())
        .await
        .is_err()
    {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match vmctl_proto::line::read_line(&mut reader, &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reading = ClockReading {
            unix_nanos: super::clock::now_nanos(),
        };
        let mut out = serde_json::to_vec(&reading).unwrap_or_default();
        out.push(b'\n');
        let stream = reader.get_mut();
        if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

pub async fn answer<W: AsyncWrite + Unpin>(
    out: &mut W,
    response: ControlResponse,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await
}

/// Milliseconds since the kernel booted.
pub fn uptime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn ask(control: Arc<Control>, request: &str) -> String {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let task = tokio::spawn(async move { control.handle(theirs).await });
        let mut ours = ours;
        ours.write_all(request.as_bytes()).await.unwrap();
        ours.shutdown().await.unwrap();
        let mut text = String::new();
        ours.read_to_string(&mut text).await.unwrap();
        task.await.unwrap();
        text
    }

    #[tokio::test]
    async fn health_shell_and_bad_input() {
        let control = Arc::new(Control {
            shutdown: Arc::new(Notify::new()),
            interface: "lo".into(),
            ports: None,
        });
        let health = ask(control.clone(), "{\"op\":\"health\"}\n").await;
        let response: ControlResponse = serde_json::from_str(health.trim()).unwrap();
        assert!(response.ok && response.health.unwrap().engine_ready);

        // Two questions on one clock connection, two readings.
        let clock = ask(control.clone(), "{\"op\":\"clock\"}\n\n\n").await;
        let mut lines = clock.lines();
        assert!(lines.next().unwrap().contains("\"ok\":true"), "{clock}");
        let readings: Vec<ClockReading> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(readings.len(), 2, "{clock}");
        let now = super::super::clock::now_nanos();
        for reading in readings {
            assert!(now >= reading.unix_nanos && now - reading.unix_nanos < 5_000_000_000);
        }

        let bad = ask(control.clone(), "{\"op\":\"nope\"}\n").await;
        assert!(
            bad.contains("\"ok\":false") && bad.contains("bad request"),
            "{bad}"
        );

        if std::path::Path::new("/bin/sh").exists() {
            let shell = ask(
                control.clone(),
                "{\"op\":\"shell\",\"command\":[\"/bin/sh\",\"-c\",\"echo hi; echo err >&2\"]}\n",
            )
            .await;
            let (first, rest) = shell.split_once('\n').unwrap();
            assert!(first.contains("\"ok\":true"), "{first}");
            assert!(rest.contains("hi\n") && rest.contains("err\n"), "{rest:?}");
        }

        let shutdown = control.shutdown.clone();
        let notified = tokio::spawn(async move { shutdown.notified().await });
        let stop = ask(control, "{\"op\":\"shutdown\"}\n").await;
        assert!(stop.contains("\"ok\":true"));
        notified.await.unwrap();
    }
}
