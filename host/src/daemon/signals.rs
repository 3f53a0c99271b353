//! What stops the daemon from outside: SIGTERM and SIGINT on unix; on
//! Windows, Ctrl-C, Ctrl-Break, the console closing and the system shutting
//! down. Each ends the daemon the same clean way as a stop request.

/// Resolves with the name of the first stop signal to arrive. Pending for
/// ever if none can be watched (logged), so a stop request still works.
pub(super) async fn stopped() -> &'static str {
    match sys::stopped().await {
        Ok(name) => name,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch stop signals; only `vmctl machine stop` stops the daemon");
            std::future::pending().await
        }
    }
}

#[cfg(unix)]
mod sys {
    use tokio::signal::unix::{signal, SignalKind};

    pub(super) async fn stopped() -> std::io::Result<&'static str> {
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        })
    }
}

#[cfg(windows)]
mod sys {
    use tokio::signal::windows;

    pub(super) async fn stopped() -> std::io::Result<&'static str> {
        let mut c = windows::ctrl_c()?;
        let mut brk = windows::ctrl_break()?;
        let mut close = windows::ctrl_close()?;
        let mut shutdown = windows::ctrl_shutdown()?;
        Ok(tokio::select! {
            _ = c.recv() => "Ctrl-C",
            _ = brk.recv() => "Ctrl-Break",
            _ = close.recv() => "console close",
            _ = shutdown.recv() => "system shutdown",
        })
    }
}
