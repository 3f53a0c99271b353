//! `vmctl __share-guard ROOT -- virtiofsd ARGS…`: the process that runs a
//! share's virtiofsd under the filter of [`super::seccomp`] and judges every
//! symlink it makes, so that no symlink a container creates through a share
//! leads out of it on the desktop.
//!
//! virtiofsd makes what the guest asks; a container can ask for
//! `ln -s /home/ann/.ssh/id_rsa x` or `ln -s ../../../etc x` in a share. In
//! the VM such a link resolves in the VM, but on the desktop it would point
//! out of the share, waiting for a desktop program to follow it. A
//! classic seccomp filter cannot read a path, so the filter hands each
//! `symlinkat` (and `symlink`) to this guard through a seccomp user
//! notification: the guard reads the target from the caller's memory, finds
//! the link's directory from the caller's descriptor, and lets the call go
//! on only if the target stays inside the share — an absolute target under
//! the share's own path (the guest sees the share at the desktop's path), a
//! relative one that never climbs above the share's root. Anything else
//! gets `EPERM`; so does any call the guard cannot judge.
//!
//! The guard is the process the daemon starts, records and adopts: it
//! outlives a daemon restart with virtiofsd, forwards SIGTERM/SIGINT/SIGHUP
//! to it and exits with its status. Should the guard die first, the kernel
//! answers virtiofsd's symlinks with `ENOSYS`: refused, never allowed.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The longest target or link path read from the caller (`PATH_MAX`).
const MAX_PATH: usize = 4096;

/// Whether a symlink made `depth` directories below the share's root,
/// pointing at `target`, stays in the share whose path (on the desktop and
/// in the guest) is `root`.
pub fn stays_inside(root: &Path, depth: usize, target: &[u8]) -> bool {
    if target.is_empty() {
        return false;
    }
    if target[0] == b'/' {
        let mut normal = PathBuf::from("/");
        for component in Path::new(OsStr::from_bytes(target)).components() {
            match component {
                Component::Normal(part) => normal.push(part),
                Component::ParentDir => {
                    normal.pop();
                }
                _ => {}
            }
        }
        return normal.starts_with(root);
    }
    let mut level = depth as isize;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                level -= 1;
                if level < 0 {
                    return false;
                }
            }
            _ => level += 1,
        }
    }
    true
}

/// Runs `command` under the filter and judges its symlinks until it exits;
/// answers the exit code to leave with.
pub fn run(root: &Path, command: &[OsString]) -> io::Result<i32> {
    let Some((program, args)) = command.split_first() else {
        return Err(io::Error::other("no command to guard"));
    };
    let meta = std::fs::metadata(root)?;
    let share = Share {
        path: root.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    let (ours, theirs) = UnixStream::pair()?;
    let filter = super::seccomp::program_notifying_symlinks();
    let their_fd = theirs.as_raw_fd();
    let forwarded = signals();
    block(&forwarded, libc::SIG_BLOCK)?;
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: only async-signal-safe calls (sigprocmask, prctl, seccomp,
    // sendmsg, close) on memory the closure owns.
    unsafe {
        command.pre_exec(move || {
            let empty = std::mem::zeroed::<libc::sigset_t>();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            let listener = super::seccomp::install_listening(&filter)?;
            send_fd(their_fd, listener)?;
            libc::close(listener);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(theirs);
    let listener = recv_fd(&ours).map_err(|e| {
        let _ = child.kill();
        io::Error::other(format!("the server did not start under the filter: {e}"))
    })?;
    std::thread::spawn(move || serve(listener, share));
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        if let Some(signal) = wait_signal(&forwarded, 100) {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }
}

/// The signals the guard passes on.
fn signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

fn block(set: &libc::sigset_t, how: libc::c_int) -> io::Result<()> {
    // SAFETY: changes this thread's mask only.
    match unsafe { libc::pthread_sigmask(how, set, std::ptr::null_mut()) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A pending signal of `set`, waiting at most `ms`.
fn wait_signal(set: &libc::sigset_t, ms: i64) -> Option<libc::c_int> {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: ms * 1_000_000,
    };
    // SAFETY: waits on this thread's blocked set.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
    (signal > 0).then_some(signal)
}

/// Passes `fd` over `socket` (async-signal-safe: no allocation).
fn send_fd(socket: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut control = [0u64; 4];
    // SAFETY: a msghdr with one iovec and one SCM_RIGHTS message, all on
    // this stack frame, sized with CMSG_SPACE.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut msg = std::mem::zeroed::<libc::msghdr>();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(socket, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The descriptor [`send_fd`] passed; an error when the peer closed first.
fn recv_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut control = [0u64; 4];
    // SAFETY: as in send_fd; the kernel fills the control buffer.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut msg = std::mem::zeroed::<libc::msghdr>();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n == 0 || cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::other("no listener came"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The share a guard keeps symlinks inside.
struct Share {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

/// Answers notifications until the listener closes (the child exited).
fn serve(listener: OwnedFd, share: Share) {
    loop {
        // SAFETY: the kernel wants a zeroed struct to fill.
        let mut notif = unsafe { std::mem::zeroed::<libc::seccomp_notif>() };
        // SAFETY: the ioctl writes into `notif`.
        let got = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                &mut notif,
            )
        };
        if got < 0 {
            match io::Error::last_os_error().raw_os_error() {
                // A caller killed while waiting, or a signal to us.
                Some(libc::ENOENT) | Some(libc::EINTR) => continue,
                _ => return,
            }
        }
        let allowed = match judge(&notif, &share) {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot judge a symlink; refused");
                false
            }
        };
        // The answer only counts if the caller is still the one that asked
        // (its memory was read for a live call).
        let mut id = notif.id;
        // SAFETY: reads `id`.
        let valid = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
                &mut id,
            )
        } == 0;
        if !valid {
            continue;
        }
        let mut response = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: if allowed { 0 } else { -libc::EPERM },
            flags: if allowed {
                libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
            } else {
                0
            },
        };
        // SAFETY: reads `response`.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                &mut response,
            )
        };
    }
}

/// Whether the symlink of `notif` stays in `share`.
fn judge(notif: &libc::seccomp_notif, share: &Share) -> io::Result<bool> {
    let pid = notif.pid;
    let args = notif.data.args;
    // symlinkat(target, newdirfd, linkpath); symlink(target, linkpath).
    let (target, dirfd, linkpath) = if i64::from(notif.data.nr) == libc::SYS_symlinkat {
        (args[0], args[1] as i32, args[2])
    } else {
        (args[0], libc::AT_FDCWD, args[1])
    };
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let target = read_cstr(&mem, target)?;
    let linkpath = read_cstr(&mem, linkpath)?;
    let Some(depth) = link_depth(pid, dirfd, &linkpath, share)? else {
        tracing::warn!(share = %share.path.display(), "a symlink outside the share's tree; refused");
        return Ok(false);
    };
    let inside = stays_inside(&share.path, depth, &target);
    if !inside {
        tracing::warn!(
            share = %share.path.display(),
            target = %String::from_utf8_lossy(&target),
            "a symlink out of the share; refused"
        );
    }
    Ok(inside)
}

/// A NUL-terminated string at `address` of the process whose memory `mem` is.
fn read_cstr(mem: &std::fs::File, address: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; MAX_PATH];
    let mut got = 0;
    while got < buf.len() {
        // A page boundary may end a read early; read on from there.
        match mem.read_at(&mut buf[got..], address + got as u64) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(end) = buf[got..got + n].iter().position(|b| *b == 0) {
                    buf.truncate(got + end);
                    return Ok(buf);
                }
                got += n;
            }
            Err(e) if got > 0 => return Err(e),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("a path longer than PATH_MAX"))
}

/// How many directories below the share's root the link would be made, or
/// `None` when its directory is not in the share at all.
fn link_depth(pid: u32, dirfd: i32, linkpath: &[u8], share: &Share) -> io::Result<Option<usize>> {
    let link = Path::new(OsStr::from_bytes(linkpath));
    let base = if link.is_absolute() {
        PathBuf::from(format!("/proc/{pid}/root"))
    } else if dirfd == libc::AT_FDCWD {
        PathBuf::from(format!("/proc/{pid}/cwd"))
    } else {
        PathBuf::from(format!("/proc/{pid}/fd/{dirfd}"))
    };
    let parent = link
        .parent()
        .map(|p| p.strip_prefix("/").unwrap_or(p))
        .unwrap_or(Path::new(""));
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(base.join(parent))?;
    let mut current: OwnedFd = dir.into();
    for depth in 0..MAX_PATH {
        let meta = std::fs::File::from(current.try_clone()?).metadata()?;
        if meta.dev() == share.dev && meta.ino() == share.ino {
            return Ok(Some(depth));
        }
        let up = open_parent(&current)?;
        let up_meta = std::fs::File::from(up.try_clone()?).metadata()?;
        if up_meta.dev() == meta.dev() && up_meta.ino() == meta.ino() {
            return Ok(None);
        }
        current = up;
    }
    Ok(None)
}

fn open_parent(dir: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: openat on a valid directory descriptor and a static name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c"..".as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_judged_from_where_the_link_sits() {
        let root = Path::new("/home/ann/src");
        let inside = |depth, target: &str| stays_inside(root, depth, target.as_bytes());
        assert!(inside(0, "file"));
        assert!(inside(0, "a/b/../c"));
        assert!(inside(2, "../../x"));
        assert!(inside(1, "./../y"));
        assert!(!inside(0, "../x"));
        assert!(!inside(1, "a/../../../x"));
        assert!(!inside(2, "../../../src/x"), "out and back in is still out");
        assert!(inside(0, "/home/ann/src/lib"));
        assert!(inside(3, "/home/ann/src"));
        assert!(!inside(0, "/home/ann/.ssh/id_rsa"));
        assert!(!inside(0, "/home/ann/src/../.ssh"));
        assert!(!inside(0, "/home/ann/srcx"));
        assert!(!inside(0, ""));
    }

    #[test]
    fn a_guarded_process_makes_only_symlinks_that_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("share");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let outside = root.parent().unwrap().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let script = format!(
            "cd {root} && ln -s file ok1 && ln -s ../file sub/ok2 && ln -s {root}/sub ok3 \
             && cd sub && ln -s ../sub/../file ok4; \
             cd {root}; ln -s ../outside bad1; ln -s /etc/passwd bad2; ln -s ../../x sub/bad3; \
             ln -s {root}/../outside bad4; ln -s file {outside}/bad5; true",
            root = root.display(),
            outside = outside.display(),
        );
        let command: Vec<OsString> = ["sh", "-c", &script].iter().map(OsString::from).collect();
        assert_eq!(run(&root, &command).unwrap(), 0);
        for ok in ["ok1", "sub/ok2", "ok3", "sub/ok4"] {
            assert!(root.join(ok).symlink_metadata().is_ok(), "{ok} was refused");
        }
        for bad in ["bad1", "bad2", "sub/bad3", "bad4"] {
            assert!(root.join(bad).symlink_metadata().is_err(), "{bad} was made");
        }
        assert!(
            outside.join("bad5").symlink_metadata().is_err(),
            "a link outside the share's tree was made"
        );
        let code = run(&root, &["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        assert_eq!(code, 7);
    }
}
