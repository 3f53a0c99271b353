//! Desktop file changes raised as inotify events in the VM: the service on
//! vsock port 1029 (protocol in `vmctl_proto::file_events`), for streams
//! that proved the host's secret ([`super::vsock`]). virtio-fs does not
//! carry the desktop's change notifications, so the host daemon names each
//! path an editor changed, and this service makes the VM's kernel report
//! an event on it to every watcher in every container.
//!
//! To raise: open the file for writing and close it again — `IN_OPEN` and
//! `IN_CLOSE_WRITE` (what `inotifywait -e close_write`, `cargo watch` and
//! Python's watchdog wait for), and FUSE drops its cached pages of the file
//! so readers get the new bytes — and in between set the file's mode to
//! what it already is: `IN_ATTRIB`, which libuv (webpack, nodemon, every
//! Node `fs.watch`) reports as a "change" and `IN_CLOSE_WRITE` it does not
//! watch. No byte is written and the file is not truncated, so its content
//! and modification time stay what the editor left (its change time moves,
//! on the desktop too). A file that cannot be opened for writing (a
//! read-only share, mode 0444 on the desktop, a running binary) is opened
//! read-only instead: `IN_CLOSE_NOWRITE`. A directory is only looked up.
//! The mode is read fresh from the desktop right before it is set again
//! (`AT_STATX_FORCE_SYNC`), so only a desktop `chmod` in the same instant
//! could be undone; a setuid or setgid file's mode is never touched.
//!
//! Hostile ground: the host is trusted, but a share holds what containers
//! wrote. Every path is resolved from an `O_PATH` descriptor of its share's
//! root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV)`: a symlink anywhere on the way, a `..` or another
//! mount refuse the path, so nothing outside the share is ever opened. Only
//! what an `O_PATH` look found to be a regular file is opened, the same
//! way again (a fresh lookup: see [`Raiser::raise`]), non-blocking and
//! without taking a terminal, so a FIFO swapped in between never hangs the
//! service (shares are `nodev`: a device node opens nothing).
//!
//! It runs in the forwarder process (`/init vm-forward`), which needs
//! nothing from the engine either: blocking filesystem calls go to tokio's
//! blocking threads, one batch at a time per stream, at most
//! [`MAX_STREAMS`] streams at once.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use vmctl_proto::auth::Secret;
use vmctl_proto::file_events::{Batch, BatchReply};
use vmctl_proto::VSOCK_PORT_FILE_EVENTS;

use super::vsock::{AuthListener, HostStream};

/// Streams served at once (the host keeps one).
pub const MAX_STREAMS: usize = 4;

/// How a path was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// Opened for writing: `IN_CLOSE_WRITE`.
    Written,
    /// Opened read-only: `IN_CLOSE_NOWRITE`.
    Read,
}

/// Why a path was not raised.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Skipped {
    #[error("{0} lies in no share")]
    Outside(PathBuf),
    #[error("{path} cannot be reached within its share (gone, a symlink, `..` or another mount)")]
    Resolve {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{0} is a directory")]
    Directory(PathBuf),
    #[error("{0} is not a regular file")]
    NotRegular(PathBuf),
    #[error("{path} cannot be opened")]
    Open {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// One share: where it is mounted, and an `O_PATH` descriptor of its root.
struct Root {
    path: PathBuf,
    fd: OwnedFd,
}

/// Raises events on paths within a fixed set of share roots.
pub struct Raiser {
    /// Deepest first, so a nested share wins over the one around it.
    roots: Vec<Root>,
}

impl Raiser {
    /// Opens each root (`O_PATH`); returns those that could not be, each
    /// with why.
    pub fn open(paths: &[PathBuf]) -> (Self, Vec<(PathBuf, Errno)>) {
        let mut roots = Vec::new();
        let mut failed = Vec::new();
        for path in paths {
            let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            match nix::fcntl::open(path, flags, Mode::empty()) {
                Ok(fd) => roots.push(Root {
                    path: path.clone(),
                    // SAFETY: open just returned this descriptor; nothing else owns it.
                    fd: unsafe { OwnedFd::from_raw_fd(fd) },
                }),
                Err(e) => failed.push((path.clone(), e)),
            }
        }
        roots.sort_by_key(|root| std::cmp::Reverse(root.path.components().count()));
        (Self { roots }, failed)
    }

    /// The mounted shares of this VM's command line (virtio-fs only: a
    /// share whose mount failed is the VM's own empty directory).
    pub fn from_cmdline() -> Self {
        let paths: Vec<PathBuf> = super::shares::parse(&super::cmdline::read())
            .into_iter()
            .filter_map(Result::ok)
            .map(|share| share.path)
            .collect();
        let (mut raiser, failed) = Self::open(&paths);
        for (path, e) in failed {
            tracing::warn!(path = %path.display(), error = %e, "share not open: no file events in it");
        }
        raiser.roots.retain(|root| {
            let fuse = nix::sys::statfs::fstatfs(root.fd.as_fd())
                .map(|fs| fs.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
                .unwrap_or(false);
            if !fuse {
                tracing::warn!(path = %root.path.display(), "share not mounted: no file events in it");
            }
            fuse
        });
        raiser
    }

    /// Raises an event on `path` (see the module's doc).
    pub fn raise(&self, path: &Path) -> Result<Raised, Skipped> {
        let (root, inside) = self
            .roots
            .iter()
            .find_map(|root| Some((root, path.strip_prefix(&root.path).ok()?)))
            .ok_or_else(|| Skipped::Outside(path.to_owned()))?;
        if inside.as_os_str().is_empty() {
            return Err(Skipped::Directory(path.to_owned()));
        }
        let skipped_open = |source| Skipped::Open {
            path: path.to_owned(),
            source,
        };
        // First a look (O_PATH opens nothing): only a regular file goes on.
        let found =
            open_beneath(root, inside, OFlag::O_PATH).map_err(|source| Skipped::Resolve {
                path: path.to_owned(),
                source,
            })?;
        match file_type(&found).map_err(skipped_open)? {
            SFlag::S_IFDIR => return Err(Skipped::Directory(path.to_owned())),
            SFlag::S_IFREG => {}
            _ => return Err(Skipped::NotRegular(path.to_owned())),
        }
        drop(found);
        // Then the open itself, resolved again rather than reopened through
        // the look's descriptor: after the desktop replaced the file (an
        // atomic save) the VM's cached name still leads to the old inode,
        // whose open virtiofsd answers ESTALE, and only an open by path
        // makes the kernel look the name up afresh and retry.
        let base = OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let (file, raised) = match open_beneath(root, inside, OFlag::O_WRONLY | base) {
            Ok(file) => (file, Raised::Written),
            Err(_) => (
                open_beneath(root, inside, OFlag::O_RDONLY | base).map_err(skipped_open)?,
                Raised::Read,
            ),
        };
        // Swapped for something else in between: opened without blocking,
        // closed untouched.
        if file_type(&file).map_err(skipped_open)? != SFlag::S_IFREG {
            return Err(Skipped::NotRegular(path.to_owned()));
        }
        same_mode_again(&file);
        drop(file);
        Ok(raised)
    }

    /// Raises every path of `batch`; counts what was raised and skipped.
    pub fn raise_all(&self, batch: &Batch) -> BatchReply {
        let mut reply = BatchReply::default();
        for path in &batch.paths {
            match self.raise(path) {
                Ok(_) => reply.raised = reply.raised.saturating_add(1),
                Err(e) => {
                    let cause = std::error::Error::source(&e).map(|c| c.to_string());
                    tracing::debug!(error = %e, cause, "file event not raised");
                    reply.skipped = reply.skipped.saturating_add(1);
                }
            }
        }
        reply
    }
}

/// `inside` opened with `flags` from `root`, never leaving it: no
/// symlink, no `..` above it, no other mount on the way.
fn open_beneath(root: &Root, inside: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = nix::fcntl::openat2(root.fd.as_raw_fd(), inside, how)?;
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn file_type(fd: &OwnedFd) -> Result<SFlag, Errno> {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .map(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT)
}

/// Sets `file`'s mode to the one the desktop has now: `IN_ATTRIB`, nothing
/// changed. Skipped for setuid/setgid files and when anything fails.
fn same_mode_again(file: &OwnedFd) {
    // SAFETY: statx is all zeroes before the call fills it.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, an empty NUL-terminated path with
    // AT_EMPTY_PATH (the descriptor itself), and a statx buffer we own.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_FORCE_SYNC,
            libc::STATX_TYPE | libc::STATX_MODE,
            &mut stat,
        )
    };
    if rc != 0 || stat.stx_mask & libc::STATX_MODE == 0 {
        return;
    }
    let mode = u32::from(stat.stx_mode);
    if mode & libc::S_IFMT != libc::S_IFREG || mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
        return;
    }
    let _ = nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode & 0o1777));
}

/// Starts the service on vsock [`VSOCK_PORT_FILE_EVENTS`] for the shares
/// of this VM's command line; must run inside a tokio runtime. Without
/// shares, or when the port cannot be had, it logs why and serves nothing.
pub fn start(secret: Secret) {
    let raiser = Arc::new(Raiser::from_cmdline());
    if raiser.roots.is_empty() {
        tracing::info!("no shares mounted: no file-events service");
        return;
    }
    let port = VSOCK_PORT_FILE_EVENTS;
    let mut listener = match AuthListener::bind(port, secret) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(port, error = %format!("{e:#}"), "no file-events service");
            return;
        }
    };
    tracing::info!(port, shares = raiser.roots.len(), "file-events service up");
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(port, error = %e, "file-events accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(
                    port,
                    max = MAX_STREAMS,
                    "too many file-events streams: closed one"
                );
                continue;
            };
            let raiser = raiser.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, raiser).await {
                    tracing::debug!(error = %e, "file-events stream ended");
                }
                drop(slot);
            });
        }
    });
}

/// Raises each batch of one stream and answers it, until the host closes.
async fn serve(mut stream: HostStream, raiser: Arc<Raiser>) -> anyhow::Result<()> {
    while let Some(batch) = Batch::read(&mut stream).await? {
        let raiser = raiser.clone();
        let reply = tokio::task::spawn_blocking(move || raiser.raise_all(&batch)).await?;
        stream.write_all(&reply.encode()).await?;
        stream.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::time::Duration;

    /// A real inotify watch on one directory.
    struct Inotify(OwnedFd);

    impl Inotify {
        fn watch(dir: &Path) -> Self {
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            assert!(fd >= 0, "inotify_init1");
            // SAFETY: inotify_init1 just returned this descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid inotify descriptor and a NUL-terminated path.
            let wd = unsafe {
                libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_ALL_EVENTS)
            };
            assert!(wd >= 0, "inotify_add_watch");
            Self(fd)
        }

        /// The (mask, name) of every event queued now.
        fn drain(&self) -> Vec<(u32, String)> {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut events = Vec::new();
            loop {
                let n = match nix::unistd::read(self.0.as_raw_fd(), &mut buffer) {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => return events,
                    Err(e) => panic!("inotify read: {e}"),
                };
                let mut at = 0;
                while at + 16 <= n {
                    let word = |i: usize| {
                        u32::from_ne_bytes(buffer[at + i..at + i + 4].try_into().unwrap())
                    };
                    let (mask, len) = (word(4), word(12) as usize);
                    let name = &buffer[at + 16..at + 16 + len];
                    let name = String::from_utf8_lossy(name)
                        .trim_end_matches('\0')
                        .to_owned();
                    events.push((mask, name));
                    at += 16 + len;
                }
            }
        }
    }

    fn has(events: &[(u32, String)], mask: u32, name: &str) -> bool {
        events.iter().any(|(m, n)| m & mask != 0 && n == name)
    }

    fn share() -> (tempfile::TempDir, PathBuf, Raiser) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("share");
        std::fs::create_dir(&root).unwrap();
        let (raiser, failed) = Raiser::open(std::slice::from_ref(&root));
        assert!(failed.is_empty());
        (dir, root, raiser)
    }

    #[test]
    fn raising_wakes_watchers_and_leaves_the_file_as_it_was() {
        let (_dir, root, raiser) = share();
        let file = root.join("app.js");
        std::fs::write(&file, "console.log(1)\n").unwrap();
        // An mtime far from now: any write or truncate would move it.
        let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let before = std::fs::metadata(&file).unwrap();
        let watch = Inotify::watch(&root);

        assert_eq!(raiser.raise(&file), Ok(Raised::Written));
        let events = watch.drain();
        assert!(has(&events, libc::IN_CLOSE_WRITE, "app.js"), "{events:?}");
        assert!(has(&events, libc::IN_ATTRIB, "app.js"), "{events:?}");
        assert!(!has(&events, libc::IN_MODIFY, "app.js"), "{events:?}");
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "console.log(1)\n");
        assert_eq!(after.modified().unwrap(), old);
        assert_eq!(after.modified().unwrap(), before.modified().unwrap());
        assert_eq!(after.permissions(), before.permissions());

        // A directory is looked up, nothing more.
        std::fs::create_dir(root.join("src")).unwrap();
        watch.drain();
        assert_eq!(
            raiser.raise(&root.join("src")),
            Err(Skipped::Directory(root.join("src")))
        );
        assert_eq!(raiser.raise(&root), Err(Skipped::Directory(root.clone())));
        assert!(watch.drain().is_empty());

        // Gone, or in no share.
        assert!(matches!(
            raiser.raise(&root.join("gone.js")),
            Err(Skipped::Resolve {
                source: Errno::ENOENT,
                ..
            })
        ));
        assert!(matches!(
            raiser.raise(Path::new("/etc/hostname")),
            Err(Skipped::Outside(_))
        ));
    }

    #[test]
    fn symlinks_and_dotdot_never_leave_the_share() {
        let (dir, root, raiser) = share();
        let outside = dir.path().canonicalize().unwrap().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("dir")).unwrap();
        std::os::unix::fs::symlink("../outside/secret", root.join("relative")).unwrap();
        std::fs::write(root.join("inside"), "i").unwrap();
        let watch = Inotify::watch(&outside);

        for refused in [
            root.join("link"),
            root.join("dir/secret"),
            root.join("relative"),
            root.join("../outside/secret"),
            root.join("inside/../../outside/secret"),
        ] {
            let result = raiser.raise(&refused);
            assert!(
                matches!(
                    result,
                    Err(Skipped::Resolve { .. } | Skipped::NotRegular(_))
                ),
                "{}: {result:?}",
                refused.display()
            );
        }
        assert!(watch.drain().is_empty(), "something outside was opened");
        assert_eq!(raiser.raise(&root.join("inside")), Ok(Raised::Written));
    }

    #[test]
    fn a_fifo_never_blocks() {
        let (_dir, root, raiser) = share();
        let fifo = root.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(raiser.raise(&fifo));
        });
        let result = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("raising a FIFO blocked");
        assert!(matches!(result, Err(Skipped::NotRegular(_))), "{result:?}");
    }

    #[test]
    fn the_deepest_share_is_used_and_batches_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().canonicalize().unwrap();
        let inner = outer.join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::write(inner.join("f"), "x").unwrap();
        let (raiser, _) = Raiser::open(&[outer.clone(), inner.clone()]);
        assert_eq!(raiser.roots[0].path, inner);
        let (missing, failed) = Raiser::open(&[outer.join("missing")]);
        assert!(missing.roots.is_empty() && failed.len() == 1);
        let batch = Batch {
            paths: vec![inner.join("f"), inner.join("nope"), "/elsewhere".into()],
        };
        assert_eq!(
            raiser.raise_all(&batch),
            BatchReply {
                raised: 1,
                skipped: 2
            }
        );
    }
}
