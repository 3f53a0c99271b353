//! `vmctl __forward-link SOCKET`: the forward link's namespace and tap
//! (see the module above). The daemon starts it before the VMM; it lives
//! on across daemon restarts (a new daemon finds it on the same socket) and
//! ends once the tap is gone, that is once the VMM and the daemon both
//! closed it.
//!
//! It makes a network namespace (inside a user namespace unless it runs as
//! root) holding loopback and the tap `vmctl0`: MTU
//! [`LINK_MTU`](vmctl_proto::forward::LINK_MTU), the desktop's link address,
//! and one route, the default one, through the guest. Nothing in it
//! listens: what reaches it from the guest finds closed ports, and it has
//! no way to the desktop's network.

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use vmctl_proto::forward::{LINK_GUEST, LINK_HOST, LINK_MTU, LINK_PREFIX};

/// The tap's name inside the namespace (the only one there).
const TAP: &str = "vmctl0";

/// Starts the helper on `socket` and waits for its word that it listens.
pub fn spawn(socket: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("__forward-link")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() == "ready" {
        // Reaped when it ends, whenever that is.
        std::thread::spawn(move || child.wait());
        return Ok(());
    }
    let status = child.wait()?;
    Err(std::io::Error::other(format!(
        "the link helper ended ({status}) before it listened; its reason is in the daemon log"
    )))
}

/// The helper's life: namespace, tap, then requests until the tap is gone.
pub fn run(socket: &Path) -> Result<i32, String> {
    // A daemon that gives up on an answer must not kill the helper with
    // SIGPIPE: the write fails, the next request is served.
    // SAFETY: setting a signal disposition in this single-threaded process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    enter_namespace().map_err(|e| format!("cannot make the link's namespace: {e}"))?;
    let tap = open_tap().map_err(|e| format!("cannot make the link's tap: {e}"))?;
    // IPv4 only: no router solicitations and neighbour chatter from here.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{TAP}/disable_ipv6"), "1");
    configure().map_err(|e| format!("cannot configure the link: {e}"))?;
    let _ = std::fs::remove_file(socket);
    let listener =
        listen(socket).map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    // Only the desktop user (the run directory is private too).
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
    let ours = inode(socket);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .map_err(|e| e.to_string())?;
    serve(&listener, Some(tap));
    // Only our own socket: a machine started again at once has a new
    // helper listening at the same path already.
    if ours.is_some() && inode(socket) == ours {
        let _ = std::fs::remove_file(socket);
    }
    Ok(0)
}

/// The helper's socket, with room for a burst of requests waiting.
fn listen(path: &Path) -> std::io::Result<UnixListener> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// A network namespace of our own; a user namespace first where we are not
/// root (mapping us to its root, which may then configure the network).
fn enter_namespace() -> std::io::Result<()> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    if uid.is_root() {
        return unshare(CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from);
    }
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// An `ifreq` naming `name`, the rest zero.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    request
}

/// The tap `vmctl0`: Ethernet frames behind a virtio-net header (QEMU
/// then offers the guest checksum and segmentation offloads), no packet
/// information header.
fn open_tap() -> std::io::Result<OwnedFd> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut request = ifreq(TAP);
    request.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the ifreq we own.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(tun.into())
}

fn ioctl(
    socket: &OwnedFd,
    request: libc::Ioctl,
    argument: *mut libc::c_void,
) -> std::io::Result<()> {
    // SAFETY: each caller passes the structure its request reads.
    if unsafe { libc::ioctl(socket.as_raw_fd(), request, argument) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(address: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads
    // it as the family says.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

fn up(socket: &OwnedFd, name: &str) -> std::io::Result<()> {
    let mut request = ifreq(name);
    ioctl(socket, libc::SIOCGIFFLAGS, (&raw mut request).cast())?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl(socket, libc::SIOCSIFFLAGS, (&raw mut request).cast())
}

/// Loopback up; the tap with its MTU, address and the default route through
/// the guest.
fn configure() -> std::io::Result<()> {
    let socket: OwnedFd =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?.into();
    up(&socket, "lo")?;
    let mut request = ifreq(TAP);
    request.ifr_ifru.ifru_mtu = LINK_MTU as libc::c_int;
    ioctl(&socket, libc::SIOCSIFMTU, (&raw mut request).cast())?;
    let mut request = ifreq(TAP);
    request.ifr_ifru.ifru_addr = sockaddr(LINK_HOST);
    ioctl(&socket, libc::SIOCSIFADDR, (&raw mut request).cast())?;
    let mask = Ipv4Addr::from(u32::MAX << (32 - u32::from(LINK_PREFIX)));
    let mut request = ifreq(TAP);
    request.ifr_ifru.ifru_netmask = sockaddr(mask);
    ioctl(&socket, libc::SIOCSIFNETMASK, (&raw mut request).cast())?;
    up(&socket, TAP)?;
    // SAFETY: rtentry is plain data; all zeroes is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(LINK_GUEST);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    let mut device = std::ffi::CString::new(TAP)
        .expect("no NUL")
        .into_bytes_with_nul();
    route.rt_dev = device.as_mut_ptr().cast();
    ioctl(&socket, libc::SIOCADDRT, (&raw mut route).cast())
}

/// Answers requests until the tap is gone (checked each second while idle).
fn serve(listener: &UnixListener, mut tap: Option<OwnedFd>) {
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {
                if tap.is_none() && nix::net::if_::if_nametoindex(TAP).is_err() {
                    return;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("vmctl forward link: poll: {e}");
                return;
            }
        }
        let Ok((mut client, _)) = listener.accept() else {
            continue;
        };
        let _ = client.set_read_timeout(Some(Duration::from_secs(1)));
        let mut kind = [0u8; 1];
        if client.read_exact(&mut kind).is_err() {
            continue;
        }
        // The daemon stopped its VM: gone at once (the tap may outlive the
        // VMM a moment in the daemon's hands).
        if kind[0] == b'Q' {
            let _ = client.write_all(&[0]);
            return;
        }
        let _ = answer(kind[0], &mut client, &mut tap);
    }
}

/// One request: the tap (once), or a connecting socket.
fn answer(kind: u8, client: &mut UnixStream, tap: &mut Option<OwnedFd>) -> std::io::Result<()> {
    match kind {
        // Handed over, then closed here: the tap lives while the daemon or
        // the VMM holds it, and this helper ends when neither does.
        b'T' => match tap.take() {
            Some(fd) => send(client, &fd),
            None => refuse(client, libc::ENOENT),
        },
        kind @ (b'C' | b'U') => {
            let mut target = [0u8; 6];
            client.read_exact(&mut target)?;
            let address = Ipv4Addr::new(target[0], target[1], target[2], target[3]);
            let port = u16::from_be_bytes([target[4], target[5]]);
            let socket_type = if kind == b'C' {
                socket2::Type::STREAM
            } else {
                socket2::Type::DGRAM
            };
            match connect(socket_type, SocketAddrV4::new(address, port)) {
                Ok(fd) => send(client, &fd),
                Err(e) => refuse(client, e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
        _ => refuse(client, libc::EINVAL),
    }
}

/// A socket of the namespace connected to `target`: TCP (the connection
/// in progress) or UDP.
fn connect(socket_type: socket2::Type, target: SocketAddrV4) -> std::io::Result<OwnedFd> {
    let tcp = socket_type == socket2::Type::STREAM;
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket_type.nonblocking().cloexec(),
        None,
    )?;
    if tcp {
        let _ = socket.set_tcp_nodelay(true);
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

fn send(client: &UnixStream, fd: &OwnedFd) -> std::io::Result<()> {
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(&[0u8])];
    sendmsg::<()>(
        client.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

fn refuse(client: &mut UnixStream, errno: i32) -> std::io::Result<()> {
    let mut answer = [1u8; 5];
    answer[1..].copy_from_slice(&errno.to_be_bytes());
    client.write_all(&answer)
}
