//! `docker cp` inside the container's view: the hidden `vmctl-guest cp`
//! process that stats, archives (GET) or extracts into (PUT) one path of a
//! container, for the engine's `/containers/{id}/archive` endpoints.
//!
//! Containers are hostile, and a running one may swap a directory for a
//! symlink to `/` while a copy walks it. So the work is never done on the
//! engine's own view of the files. The engine runs this process (its own
//! binary, `cp REQUEST`), which:
//!
//! 1. unshares a private mount namespace (nothing propagates back);
//! 2. uses the container's root overlay where the running container has it
//!    mounted, else mounts the layers and the upper directory itself;
//! 3. bind-mounts the container's volumes, binds and `/etc` files at their
//!    destinations, each destination resolved inside the root
//!    (`openat2(RESOLVE_IN_ROOT)`) and mounted through that descriptor;
//!    every mount of the view is `nodev` (a device node a container made is
//!    never opened), read-only ones (and a `--read-only` root) read-only;
//! 4. `pivot_root`s into it and detaches everything else, so the view
//!    holds no engine mount alive and has no `/proc`: in here, `/` is the
//!    container's root, every symlink and `..` resolves inside it, and no
//!    path can name an engine or VM file — Docker's chrootarchive idea;
//! 5. answers on fd 3 (one JSON [`Reply`] per line: the stat, then `done`
//!    or an error), writes the tar to stdout (GET) or reads it from stdin
//!    (PUT, plain, gzip or zstd).
//!
//! It never joins the container's namespaces, so the container's `/proc`
//! (and its magic links) are not in the view. When it exits, its mount
//! namespace and every mount in it go with it, so a killed copy leaks
//! nothing. What this module does not do: look containers up, decide
//! events or status codes (the engine's `archive.rs`).

pub mod pack;
pub mod path;
pub mod unpack;
pub mod view;

use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use path::PathStat;

/// The descriptor the process answers on.
pub const REPLY_FD: i32 = 3;

/// What the engine asks of one `cp` process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub op: Op,
    /// The path as the client gave it (absolute or not, maybe with a
    /// trailing `/` or `/.`).
    pub path: String,
    pub view: View,
}

/// The three archive operations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `HEAD`: the stat only.
    Stat,
    /// `GET`: the stat, then a tar of the path on stdout.
    Archive,
    /// `PUT`: extract the tar on stdin into the path, a directory.
    Extract {
        no_overwrite_dir_non_dir: bool,
        /// `copyUIDGID`: the container's user (`Config.User`) owns what
        /// is extracted; empty when not asked or when the user is root.
        chown_to_user: Option<String>,
    },
}

/// The container's filesystem as the view is built from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct View {
    /// Where the engine mounts the root overlay while the container runs.
    pub rootfs: PathBuf,
    /// Image layers (lowest first), upper and work dirs, for mounting the
    /// root when the container does not run.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Volumes, binds and the engine's `/etc` files, in any order.
    pub mounts: Vec<ViewMount>,
    /// `--read-only`.
    pub readonly_rootfs: bool,
}

/// One mount of the container: `source` (an engine path) at `destination`
/// (a path in the container).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewMount {
    pub source: PathBuf,
    pub destination: String,
    pub rw: bool,
    /// A volume or bind (counts as "in a volume" for `--read-only`); the
    /// engine's `/etc` files do not.
    pub volume: bool,
}

/// What the process answers on fd 3, one per line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Stat(PathStat),
    Done,
    Error { kind: FailKind, message: String },
}

/// How a failure is reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// The path does not exist (dockerd's "Could not find the file").
    NotFound,
    /// The request cannot be met as asked (not a directory, read-only).
    Invalid,
    /// Anything else (a bad tar, an I/O error).
    Failed,
}

/// Errors of a copy, each with the kind the engine reports it as.
#[derive(Debug, thiserror::Error)]
pub enum CpError {
    #[error("invalid cp request")]
    Request(#[source] serde_json::Error),
    #[error("cannot set up the container's filesystem: {step} {}", path.display())]
    View {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no such file or directory: {0}")]
    NotFound(String),
    #[error("extraction point is not a directory")]
    NotADirectory,
    #[error("container rootfs is marked read-only")]
    ReadonlyRootfs,
    #[error("mounted volume is marked read-only")]
    ReadonlyVolume,
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Tar(String),
    #[error("cannot write the archive")]
    Write(#[source] std::io::Error),
}

impl CpError {
    pub fn kind(&self) -> FailKind {
        match self {
            Self::NotFound(_) => FailKind::NotFound,
            Self::NotADirectory | Self::ReadonlyRootfs | Self::ReadonlyVolume => FailKind::Invalid,
            _ => FailKind::Failed,
        }
    }

    /// An io error of `what` on `path`; a missing path is [`CpError::NotFound`].
    pub fn io(what: &'static str, path: impl Into<String>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            return Self::NotFound(path);
        }
        Self::Io { what, path, source }
    }
}

/// Entry point of `vmctl-guest cp REQUEST`: answers on fd 3, exits 0 when
/// the operation succeeded.
pub fn main(request: &str) -> i32 {
    // SAFETY: the engine hands fd 3 to this process as the reply pipe, and
    // nothing else in this fresh process owns it.
    let mut replies = unsafe { std::fs::File::from_raw_fd(REPLY_FD) };
    let mut reply = |r: &Reply| {
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        let _ = replies.write_all(&line);
    };
    match run(request, &mut reply) {
        Ok(()) => {
            reply(&Reply::Done);
            0
        }
        Err(e) => {
            reply(&Reply::Error {
                kind: e.kind(),
                message: crate::state::error_chain(&e),
            });
            1
        }
    }
}

fn run(request: &str, reply: &mut dyn FnMut(&Reply)) -> Result<(), CpError> {
    let request: Request = serde_json::from_str(request).map_err(CpError::Request)?;
    let writes = matches!(request.op, Op::Extract { .. });
    let chown = match &request.op {
        Op::Extract {
            chown_to_user: Some(user),
            ..
        } => Some(user.as_str()),
        _ => None,
    };
    let entered = view::enter(&request.view, writes, chown)?;
    let absolute = path::absolute(&request.path);
    match request.op {
        Op::Stat => {
            let (stat, _) = pack::stat(&absolute)?;
            reply(&Reply::Stat(stat));
            Ok(())
        }
        Op::Archive => {
            let (stat, target) = pack::stat(&absolute)?;
            reply(&Reply::Stat(stat));
            let out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
            pack::archive(&absolute, target, out)
        }
        Op::Extract {
            no_overwrite_dir_non_dir,
            ..
        } => {
            let options = unpack::Options {
                no_overwrite_dir_non_dir,
                chown: entered.chown,
            };
            let dest = unpack::destination(&absolute, &request.view)?;
            let input = crate::state::compress::decompress(std::io::stdin().lock())
                .map_err(|e| CpError::Tar(crate::state::error_chain(&e)))?;
            unpack::extract(dest, input, &options)
        }
    }
}
