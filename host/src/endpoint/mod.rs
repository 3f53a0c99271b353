//! Local endpoints: where the daemon listens for this desktop's own clients
//! (its control endpoint and the forwarded Docker API) and how the CLI
//! reaches them.
//!
//! One address type, [`Endpoint`], written the way the docker CLI writes a
//! `DOCKER_HOST`: `unix:///path` for a unix socket (Linux, macOS), and
//! `npipe:////./pipe/NAME` for a Windows named pipe (as Docker Desktop's
//! `npipe:////./pipe/docker_engine`). Parsing and printing are data and work
//! on every platform; listening ([`bind_private`], a [`LocalListener`]) and
//! connecting ([`connect`], [`connect_blocking`]) use the platform's
//! mechanism: [`unix`] sockets (mode 0600) or [`pipe`]s (no remote clients,
//! the owner only). An endpoint of the other platform's kind fails with
//! [`EndpointError::Unsupported`].
//!
//! Not here: the hybrid-vsock socket, which is a unix socket by protocol
//! (`crate::vsock::hybrid`).

#[cfg(windows)]
pub mod pipe;
#[cfg(unix)]
pub mod unix;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

const UNIX_SCHEME: &str = "unix://";
const PIPE_SCHEME: &str = "npipe://";
/// The named-pipe namespace, as the docker CLI writes it after `npipe://`.
const PIPE_PREFIX: &str = "//./pipe/";

/// A local endpoint's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket at this absolute path.
    Unix(PathBuf),
    /// The Windows named pipe `\\.\pipe\NAME`.
    Pipe(String),
}

/// What an endpoint serves, which names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The forwarded Docker API.
    Docker,
    /// The daemon's own control endpoint.
    Daemon,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("unsupported address {0}: use unix:///path or npipe:////./pipe/NAME")]
    Parse(String),
    #[error("{0} cannot be used on this platform")]
    Unsupported(Endpoint),
    #[error("cannot listen on {endpoint}")]
    Bind {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: Endpoint,
        #[source]
        source: std::io::Error,
    },
}

impl Endpoint {
    /// Parses `unix:///path` or `npipe:////./pipe/NAME` (also
    /// `npipe://\\.\pipe\NAME`).
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        let bad = || EndpointError::Parse(text.to_owned());
        if let Some(path) = text.strip_prefix(UNIX_SCHEME) {
            return path
                .starts_with('/')
                .then(|| Endpoint::Unix(PathBuf::from(path)))
                .ok_or_else(bad);
        }
        let pipe = text.strip_prefix(PIPE_SCHEME).ok_or_else(bad)?;
        let name = pipe.replace('\\', "/");
        let name = name.strip_prefix(PIPE_PREFIX).ok_or_else(bad)?;
        valid_pipe_name(name)
            .then(|| Endpoint::Pipe(name.to_owned()))
            .ok_or_else(bad)
    }

    /// The platform's endpoint for `role` of machine `machine`, whose
    /// runtime directory is `run`: a socket there on unix; on Windows a pipe
    /// named after the machine (`vmctl-NAME`, `vmctl-NAME-daemon`), since
    /// pipes live in one machine-wide namespace rather than in a directory.
    pub fn for_machine(run: &Path, machine: &str, role: Role) -> Self {
        if cfg!(windows) {
            Endpoint::Pipe(pipe_name(machine, role))
        } else {
            Endpoint::Unix(run.join(socket_name(role)))
        }
    }

    /// Whether this platform serves and reaches endpoints of this kind
    /// (pipes on Windows, unix sockets elsewhere).
    pub fn is_native(&self) -> bool {
        match self {
            Endpoint::Pipe(_) => cfg!(windows),
            Endpoint::Unix(_) => cfg!(unix),
        }
    }

    /// The Win32 path of a pipe (`\\.\pipe\NAME`); `None` for a socket.
    pub fn pipe_path(&self) -> Option<String> {
        match self {
            Endpoint::Pipe(name) => Some(pipe_path(name)),
            Endpoint::Unix(_) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{UNIX_SCHEME}{}", path.display()),
            Endpoint::Pipe(name) => write!(f, "{PIPE_SCHEME}{PIPE_PREFIX}{name}"),
        }
    }
}

/// A socket's file name in the machine's runtime directory.
pub fn socket_name(role: Role) -> &'static str {
    match role {
        Role::Docker => "docker.sock",
        Role::Daemon => "daemon.sock",
    }
}

/// A machine's pipe name: `vmctl-NAME` for the Docker API (what users
/// type), `vmctl-NAME-daemon` for the daemon.
pub fn pipe_name(machine: &str, role: Role) -> String {
    match role {
        Role::Docker => format!("vmctl-{machine}"),
        Role::Daemon => format!("vmctl-{machine}-daemon"),
    }
}

/// The Win32 path of pipe `name`.
pub fn pipe_path(name: &str) -> String {
    format!(r"\\.\pipe\{name}")
}

/// Pipe names may hold anything but a path separator.
fn valid_pipe_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.contains(['/', '\\'])
}

/// A byte stream to or from a local client.
pub trait LocalIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> LocalIo for T {}

pub type LocalStream = Box<dyn LocalIo>;

pub type AcceptFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<LocalStream>> + Send + 'a>>;

/// Connections of local clients to one endpoint. Dropping it stops
/// listening (a unix socket's file stays: [`remove`] takes it away).
pub trait LocalListener: Send {
    fn accept(&mut self) -> AcceptFuture<'_>;
}

/// Listens on `endpoint` for this desktop user only, replacing a stale
/// socket file.
pub fn bind_private(endpoint: &Endpoint) -> Result<Box<dyn LocalListener>, EndpointError> {
    let bind = |source| EndpointError::Bind {
        endpoint: endpoint.clone(),
        source,
    };
    match endpoint {
        #[cfg(unix)]
        Endpoint::Unix(path) => Ok(Box::new(unix::bind_private(path).map_err(bind)?)),
        #[cfg(windows)]
        Endpoint::Pipe(name) => Ok(Box::new(pipe::PipeListener::bind(name).map_err(bind)?)),
        other => Err(EndpointError::Unsupported(other.clone())),
    }
}

/// Connects to `endpoint`.
pub async fn connect(endpoint: &Endpoint) -> Result<LocalStream, EndpointError> {
    let failed = |source| EndpointError::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    match endpoint {
        #[cfg(unix)]
        Endpoint::Unix(path) => Ok(Box::new(
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(failed)?,
        )),
        #[cfg(windows)]
        Endpoint::Pipe(name) => Ok(Box::new(pipe::connect(name).await.map_err(failed)?)),
        other => Err(EndpointError::Unsupported(other.clone())),
    }
}

/// A blocking byte stream, for the CLI's synchronous questions.
pub trait BlockingIo: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> BlockingIo for T {}

/// Connects to `endpoint` with blocking I/O.
pub fn connect_blocking(endpoint: &Endpoint) -> Result<Box<dyn BlockingIo>, EndpointError> {
    let failed = |source| EndpointError::Connect {
        endpoint: endpoint.clone(),
        source,
    };
    match endpoint {
        #[cfg(unix)]
        Endpoint::Unix(path) => Ok(Box::new(
            std::os::unix::net::UnixStream::connect(path).map_err(failed)?,
        )),
        #[cfg(windows)]
        Endpoint::Pipe(name) => Ok(Box::new(pipe::connect_blocking(name).map_err(failed)?)),
        other => Err(EndpointError::Unsupported(other.clone())),
    }
}

/// Takes a socket's file away once nobody listens (a pipe goes with its
/// last handle).
pub fn remove(endpoint: &Endpoint) {
    if let Endpoint::Unix(path) = endpoint {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_addresses_parse_and_print_back() {
        let endpoint = Endpoint::parse("unix:///run/user/1000/vmctl/default/docker.sock").unwrap();
        assert_eq!(
            endpoint,
            Endpoint::Unix("/run/user/1000/vmctl/default/docker.sock".into())
        );
        assert_eq!(
            endpoint.to_string(),
            "unix:///run/user/1000/vmctl/default/docker.sock"
        );
        assert_eq!(endpoint.pipe_path(), None);
    }

    #[test]
    fn pipe_addresses_parse_as_docker_writes_them() {
        let endpoint = Endpoint::parse("npipe:////./pipe/vmctl-default").unwrap();
        assert_eq!(endpoint, Endpoint::Pipe("vmctl-default".into()));
        assert_eq!(endpoint.to_string(), "npipe:////./pipe/vmctl-default");
        assert_eq!(endpoint.pipe_path().unwrap(), r"\\.\pipe\vmctl-default");
        assert_eq!(
            Endpoint::parse(r"npipe://\\.\pipe\docker_engine").unwrap(),
            Endpoint::Pipe("docker_engine".into())
        );
    }

    #[test]
    fn other_addresses_are_refused() {
        for text in [
            "tcp://1.2.3.4:2375",
            "unix://relative/docker.sock",
            "npipe:////./pipe/",
            "npipe:////./pipe/a/b",
            "npipe:////server/pipe/x",
            "npipe://vmctl-default",
            "/run/docker.sock",
        ] {
            assert!(
                matches!(Endpoint::parse(text), Err(EndpointError::Parse(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn machine_endpoints_are_named_after_the_machine() {
        assert_eq!(pipe_name("default", Role::Docker), "vmctl-default");
        assert_eq!(pipe_name("dev", Role::Daemon), "vmctl-dev-daemon");
        let run = Path::new("/run/vmctl/dev");
        let docker = Endpoint::for_machine(run, "dev", Role::Docker);
        let daemon = Endpoint::for_machine(run, "dev", Role::Daemon);
        if cfg!(windows) {
            assert_eq!(docker.to_string(), "npipe:////./pipe/vmctl-dev");
            assert_eq!(daemon, Endpoint::Pipe("vmctl-dev-daemon".into()));
        } else {
            assert_eq!(docker, Endpoint::Unix(run.join("docker.sock")));
            assert_eq!(daemon, Endpoint::Unix(run.join("daemon.sock")));
        }
        // What is printed parses back to the same endpoint.
        for endpoint in [docker, daemon, Endpoint::Pipe("vmctl-dev".into())] {
            assert_eq!(Endpoint::parse(&endpoint.to_string()).unwrap(), endpoint);
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_pipe_cannot_be_used_on_unix() {
        let pipe = Endpoint::Pipe("vmctl-default".into());
        assert!(matches!(
            bind_private(&pipe),
            Err(EndpointError::Unsupported(_))
        ));
        assert!(matches!(
            connect(&pipe).await,
            Err(EndpointError::Unsupported(_))
        ));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_private_socket_serves_its_owner() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let endpoint = Endpoint::Unix(dir.path().join("sub/daemon.sock"));
        // A stale file from a dead daemon is replaced.
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/daemon.sock"), b"stale").unwrap();
        let mut listener = bind_private(&endpoint).unwrap();
        let server = tokio::spawn(async move {
            let mut stream = listener.accept().await.unwrap();
            stream.write_all(b"hello").await.unwrap();
        });
        let mut client = connect(&endpoint).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        server.await.unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("sub/daemon.sock"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        remove(&endpoint);
        assert!(!dir.path().join("sub/daemon.sock").exists());
    }
}
