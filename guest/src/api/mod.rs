//! The Docker Engine API over HTTP/1.1: routing, the version prefix, the
//! headers every answer carries, and the accept loop on a unix socket.
//!
//! Handlers are thin: they parse the request, call one engine verb and render
//! its answer. Errors become status codes in [`error`] only.

pub mod archive;
pub mod build;
pub mod containers;
pub mod df;
pub mod distribution;
pub mod error;
pub mod events;
pub mod exec;
pub mod hijack;
pub mod images;
pub mod networks;
pub mod pull;
pub mod resources;
pub mod swarm;
pub mod system;
pub mod version;
pub mod volumes;

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use crate::engine::Engine;

/// Errors of setting up the API listener.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("unsupported --host {0}: only unix:///path is supported")]
    UnsupportedHost(String),
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every route of the API, with the engine as state.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(build::routes())
        .merge(containers::routes())
        .merge(resources::routes())
        .merge(archive::routes())
        .merge(events::routes())
        .merge(exec::routes())
        .merge(images::routes())
        .merge(pull::routes())
        .merge(distribution::routes())
        .merge(df::routes())
        .merge(volumes::routes())
        .merge(networks::routes())
        .merge(swarm::routes())
        .with_state(engine)
}

/// Adds the headers Docker puts on every answer.
fn decorate(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        "Api-Version",
        HeaderValue::from_static(vmctl_proto::API_VERSION),
    );
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    headers.insert(
        "Server",
        HeaderValue::from_static(concat!("vmctl/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    response
}

/// Turns `unix:///path` into the path.
pub fn unix_path(host: &str) -> Result<PathBuf, ServeError> {
    host.strip_prefix("unix://")
        .filter(|p| p.starts_with('/'))
        .map(PathBuf::from)
        .ok_or_else(|| ServeError::UnsupportedHost(host.to_owned()))
}

/// A source of connections: a unix socket, or vsock inside the VM.
pub trait Listener: Send + 'static {
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static;
    fn accept(&mut self) -> impl std::future::Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Binds the unix socket `path` (mode 0600, replacing a stale one).
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let bind_err = |source| ServeError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(bind_err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Binds the socket (mode 0600, replacing a stale one) and serves until the
/// process ends.
pub async fn serve(engine: Arc<Engine>, path: &Path) -> Result<(), ServeError> {
    let listener = bind_unix(path)?;
    tracing::info!(socket = %path.display(), "serving the Docker Engine API");
    serve_on(router(engine), listener).await;
    Ok(())
}

/// Serves the API on every connection `listener` accepts, forever.
pub async fn serve_on<L: Listener>(router: Router, mut listener: L) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let router = router.clone();
        let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            let router = router.clone();
            async move {
                tracing::debug!(method = %request.method(), uri = %request.uri(), "request");
                let response = match version::strip_version(request.map(Body::new)) {
                    Ok(request) => match router.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    Err(err) => err.into_response(),
                };
                Ok::<_, Infallible>(decorate(response))
            }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
