//! netpeer: the far end of forwarded traffic in VM tests and benchmarks. A
//! single std-only file, built static (`vmctl_tests::netpeer`) so it runs in
//! a scratch container image inside the VM.
//!
//!   netpeer udp-echo PORT      answers every datagram with "echo:" + it
//!   netpeer udp-sink PORT      counts the bytes of the datagrams it gets;
//!                              answers `?` with the count (8 bytes,
//!                              big-endian), `!` resets it
//!   netpeer tcp-echo PORT      echoes each connection's bytes, half-close kept
//!   netpeer tcp-sink PORT      per connection: an 8-byte big-endian length N,
//!                              N bytes read and dropped, N echoed back as the
//!                              8-byte answer (no half-close needed: raw
//!                              hybrid vsock has none)
//!   netpeer tcp-peer PORT      per connection: `peer ADDR:PORT` (where it
//!                              came from), then closes
//!   netpeer udp-peer PORT      answers each datagram with `peer ADDR:PORT`
//!   netpeer vsock-echo PORT    tcp-echo on AF_VSOCK (any CID)
//!   netpeer vsock-sink PORT    tcp-sink on AF_VSOCK
//!   netpeer vsock-forge CID PORT MESSAGE
//!                              a client without the secret: connects to
//!                              CID:PORT, reads the peer's first frame, sends
//!                              MESSAGE as one frame (the framing every
//!                              host ↔ guest stream speaks), reads until the
//!                              peer closes, and reports each step on stdout
//!                              (`connected`, `first-frame N HEX`,
//!                              `answer-bytes N`, `answer TEXT`, `end …`)
//!   netpeer tcp-get ADDR:PORT  a client: connects (5 s limit), sends an HTTP
//!                              GET, and prints `answer TEXT` or `error …`
//!   netpeer udp-send ADDR:PORT sends `knock` three times, 0.1 s apart, and
//!                              prints `sent N` or `error …`
//!   netpeer vsock-relay PORT ADDR:PORT copy|splice
//!                              a bare relay (the forward bench's ideas, no
//!                              framing, no secret): each AF_VSOCK
//!                              connection on PORT is joined to a TCP
//!                              connection to ADDR:PORT, half-close kept;
//!                              `copy` moves bytes through a buffer with
//!                              read/write, `splice` through a pipe
//!                              without a user-space copy
//!
//! `NETPEER_VSOCK_BUFFER=BYTES` sets the vsock listeners' receive buffer
//! (`SO_VM_SOCKETS_BUFFER_SIZE`; the kernel's default is 256 KiB).
//!
//! Every server prints "ready" on stdout once it listens.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, cid, port, message] = args.as_slice() {
        if mode == "vsock-forge" {
            let cid = cid.parse().expect("CID");
            let port = port.parse().expect("PORT");
            return forge_vsock(cid, port, message.as_bytes());
        }
    }
    if let [_, mode, target] = args.as_slice() {
        if mode == "tcp-get" {
            return tcp_get(target);
        }
        if mode == "udp-send" {
            return udp_send(target);
        }
    }
    if let [_, mode, port, target, how] = args.as_slice() {
        if mode == "vsock-relay" {
            let port = port.parse().expect("PORT");
            let target: std::net::SocketAddr = target.parse().expect("ADDR:PORT");
            let splice = match how.as_str() {
                "copy" => false,
                "splice" => true,
                other => panic!("vsock-relay: copy or splice, not {other}"),
            };
            let listener = listen_vsock(port);
            ready();
            loop {
                let Some(file) = accept_vsock(listener) else {
                    continue;
                };
                std::thread::spawn(move || relay(file, target, splice));
            }
        }
    }
    let (mode, port) = match args.as_slice() {
        [_, mode, port] => (mode.as_str(), port.parse::<u32>().expect("PORT")),
        _ => {
            eprintln!("usage: netpeer udp-echo|udp-peer|tcp-echo|tcp-sink|tcp-peer|vsock-echo|vsock-sink PORT");
            std::process::exit(2);
        }
    };
    match mode {
        "udp-echo" => udp_echo(port as u16),
        "udp-sink" => udp_sink(port as u16),
        "tcp-echo" => serve_tcp(port as u16, echo),
        "tcp-sink" => serve_tcp(port as u16, sink),
        "tcp-peer" => tcp_peer(port as u16),
        "udp-peer" => udp_peer(port as u16),
        "vsock-echo" => serve_vsock(port, echo),
        "vsock-sink" => serve_vsock(port, sink),
        _ => {
            eprintln!("netpeer: unknown mode {mode}");
            std::process::exit(2);
        }
    }
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn udp_echo(port: u16) {
    let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    ready();
    let mut buffer = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let mut answer = b"echo:".to_vec();
        answer.extend_from_slice(&buffer[..n]);
        let _ = socket.send_to(&answer, from);
    }
}

fn udp_sink(port: u16) {
    let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    ready();
    let mut buffer = vec![0u8; 65536];
    let mut count = 0u64;
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        match &buffer[..n] {
            b"?" => {
                let _ = socket.send_to(&count.to_be_bytes(), from);
            }
            b"!" => count = 0,
            _ => count += n as u64,
        }
    }
}

/// A connected stream of either family.
trait Stream: Read + Write + Send + 'static {
    fn close_write(&self);
}

impl Stream for std::net::TcpStream {
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Tells each connection the address it came from (`peer ADDR:PORT`), then
/// closes it: which way a forwarded connection arrived.
fn tcp_peer(port: u16) {
    let listener = tcp_listen(port);
    ready();
    for mut stream in listener.incoming().flatten() {
        if let Ok(peer) = stream.peer_addr() {
            let _ = writeln!(stream, "peer {peer}");
        }
    }
}

/// Answers each datagram with `peer ADDR:PORT`, where it came from.
fn udp_peer(port: u16) {
    let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    ready();
    let mut buffer = vec![0u8; 65536];
    loop {
        if let Ok((_, from)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(format!("peer {from}").as_bytes(), from);
        }
    }
}

/// A TCP listener on every address with a real server's backlog (Go's
/// servers take the kernel's maximum, nginx 511): std's 128 overflows when
/// 200 connections arrive at once, and the kernel then answers with SYN
/// cookies and resets whoever sent data before being accepted.
fn tcp_listen(port: u16) -> TcpListener {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn listen(socket: i32, backlog: i32) -> i32;
    }
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    // SAFETY: listen on our own listening socket only changes its backlog.
    let _ = unsafe { listen(listener.as_raw_fd(), 1024) };
    listener
}

fn serve_tcp(port: u16, handle: fn(Box<dyn Stream>)) {
    let listener = tcp_listen(port);
    ready();
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || handle(Box::new(stream)));
    }
}

/// Copies the connection back to itself until EOF, then closes the write side.
fn echo(mut stream: Box<dyn Stream>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
        }
    }
    stream.close_write();
}

/// Reads a length, then that many bytes; answers the length.
fn sink(mut stream: Box<dyn Stream>) {
    let mut length = [0u8; 8];
    if stream.read_exact(&mut length).is_err() {
        return;
    }
    let mut left = u64::from_be_bytes(length);
    let mut buffer = vec![0u8; 256 * 1024];
    while left > 0 {
        let want = buffer.len().min(left as usize);
        match stream.read(&mut buffer[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => left -= n as u64,
        }
    }
    let _ = stream.write_all(&length);
}

// AF_VSOCK without the libc crate: this file builds with plain rustc.
const AF_VSOCK: i32 = 40;
const SOCK_STREAM: i32 = 1;
const SOCK_CLOEXEC: i32 = 0o2000000;
const VMADDR_CID_ANY: u32 = u32::MAX;

#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    flags: u8,
    zero: [u8; 3],
}

extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn bind(fd: i32, address: *const SockaddrVm, length: u32) -> i32;
    fn listen(fd: i32, backlog: i32) -> i32;
    fn accept4(fd: i32, address: *mut u8, length: *mut u32, flags: i32) -> i32;
    fn shutdown(fd: i32, how: i32) -> i32;
    fn connect(fd: i32, address: *const SockaddrVm, length: u32) -> i32;
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const u64, length: u32) -> i32;
    fn read(fd: i32, buffer: *mut u8, count: usize) -> isize;
    fn write(fd: i32, buffer: *const u8, count: usize) -> isize;
    fn pipe2(fds: *mut i32, flags: i32) -> i32;
    fn fcntl(fd: i32, command: i32, argument: i32) -> i32;
    fn close(fd: i32) -> i32;
    fn splice(
        fd_in: i32,
        off_in: *mut i64,
        fd_out: i32,
        off_out: *mut i64,
        length: usize,
        flags: u32,
    ) -> isize;
}

const SO_VM_SOCKETS_BUFFER_SIZE: i32 = 0;
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: i32 = 2;
const F_SETPIPE_SZ: i32 = 1031;

struct Vsock(std::fs::File);

impl Read for Vsock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Vsock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Stream for Vsock {
    fn close_write(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on a descriptor this value owns.
        unsafe { shutdown(self.0.as_raw_fd(), 1) };
    }
}

fn check(what: &str, result: i32) -> i32 {
    if result < 0 {
        eprintln!("netpeer: {what}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    result
}

/// A listening AF_VSOCK socket on `port` (any CID), its buffer set from
/// `NETPEER_VSOCK_BUFFER` (accepted sockets inherit it).
fn listen_vsock(port: u32) -> i32 {
    let address = SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid: VMADDR_CID_ANY,
        flags: 0,
        zero: [0; 3],
    };
    // SAFETY: plain socket calls with a correctly sized sockaddr_vm.
    let fd = check("socket", unsafe {
        socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0)
    });
    if let Some(size) = std::env::var("NETPEER_VSOCK_BUFFER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let length = std::mem::size_of::<u64>() as u32;
        // SAFETY: setsockopt with a u64 value, as AF_VSOCK's options take.
        // The maximum first: a size above it is clamped.
        check("buffer max", unsafe {
            setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, &size, length)
        });
        check("buffer size", unsafe {
            setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &size, length)
        });
    }
    let length = std::mem::size_of::<SockaddrVm>() as u32;
    check("bind", unsafe { bind(fd, &address, length) });
    check("listen", unsafe { listen(fd, 128) });
    fd
}

fn accept_vsock(listener: i32) -> Option<std::fs::File> {
    // SAFETY: accept4 without a peer address.
    let client = unsafe {
        accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            SOCK_CLOEXEC,
        )
    };
    if client < 0 {
        return None;
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Some(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(client) }))
}

fn serve_vsock(port: u32, handle: fn(Box<dyn Stream>)) {
    let listener = listen_vsock(port);
    ready();
    loop {
        if let Some(file) = accept_vsock(listener) {
            std::thread::spawn(move || handle(Box::new(Vsock(file))));
        }
    }
}

/// `vsock-relay`: one vsock connection joined to one TCP connection.
fn relay(vsock: std::fs::File, target: std::net::SocketAddr, splice: bool) {
    use std::os::fd::AsRawFd;
    let Ok(tcp) = std::net::TcpStream::connect(target) else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let (vsock_in, tcp_in) = (vsock.as_raw_fd(), tcp.as_raw_fd());
    let pump = move |from: i32, to: i32| {
        if splice {
            pump_splice(from, to)
        } else {
            pump_copy(from, to)
        }
        // SAFETY: shutdown(2) of the write side of a descriptor alive
        // for the whole relay (both threads end before the drops below).
        unsafe { shutdown(to, 1) };
    };
    let back = std::thread::spawn(move || pump(tcp_in, vsock_in));
    pump(vsock_in, tcp_in);
    let _ = back.join();
    drop((vsock, tcp));
}

fn pump_copy(from: i32, to: i32) {
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        // SAFETY: read(2)/write(2) into and out of a buffer we own.
        let n = unsafe { read(from, buffer.as_mut_ptr(), buffer.len()) };
        if n <= 0 {
            return;
        }
        let mut done = 0;
        while done < n as usize {
            let m = unsafe { write(to, buffer[done..].as_ptr(), n as usize - done) };
            if m <= 0 {
                return;
            }
            done += m as usize;
        }
    }
}

fn pump_splice(from: i32, to: i32) {
    const SPLICE_F_MOVE: u32 = 1;
    let mut pipe = [0i32; 2];
    // SAFETY: pipe2 fills the two descriptors.
    check("pipe2", unsafe { pipe2(pipe.as_mut_ptr(), SOCK_CLOEXEC) });
    // A pipe of 1 MiB: a splice moves up to that much at once.
    unsafe { fcntl(pipe[1], F_SETPIPE_SZ, 1 << 20) };
    let null = std::ptr::null_mut();
    loop {
        // SAFETY: splice(2) between descriptors we hold.
        let n = unsafe { splice(from, null, pipe[1], null, 1 << 20, SPLICE_F_MOVE) };
        if n <= 0 {
            break;
        }
        let mut left = n as usize;
        while left > 0 {
            let m = unsafe { splice(pipe[0], null, to, null, left, SPLICE_F_MOVE) };
            if m <= 0 {
                left = usize::MAX;
                break;
            }
            left -= m as usize;
        }
        if left == usize::MAX {
            break;
        }
    }
    // SAFETY: the pipe's two descriptors, closed once.
    unsafe {
        close(pipe[0]);
        close(pipe[1]);
    }
}

/// A client that knows the framing but not the secret.
fn forge_vsock(cid: u32, port: u32, message: &[u8]) {
    let address = SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid,
        flags: 0,
        zero: [0; 3],
    };
    // SAFETY: plain socket calls with a correctly sized sockaddr_vm.
    let fd = check("socket", unsafe {
        socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0)
    });
    let length = std::mem::size_of::<SockaddrVm>() as u32;
    check("connect", unsafe { connect(fd, &address, length) });
    println!("connected");
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let mut stream = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header) {
        Ok(()) => {
            let length = u32::from_be_bytes(header) as usize;
            let mut first = vec![0u8; length.min(1 << 16)];
            let got = stream.read_exact(&mut first).is_ok();
            let hex: String = first.iter().map(|b| format!("{b:02x}")).collect();
            println!(
                "first-frame {length} {}",
                if got { hex } else { "cut".into() }
            );
        }
        Err(e) => println!("first-frame none {e}"),
    }
    let mut frame = (message.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(message);
    if let Err(e) = stream.write_all(&frame) {
        println!("send-error {e}");
    }
    let mut answer = Vec::new();
    let end = match stream.read_to_end(&mut answer) {
        Ok(_) => "end eof".to_owned(),
        Err(e) => format!("end error {e}"),
    };
    println!("answer-bytes {}", answer.len());
    println!(
        "answer {}",
        String::from_utf8_lossy(&answer).replace('\n', " ")
    );
    println!("{end}");
}

/// `udp-send`: three datagrams to `target`, reported on stdout.
fn udp_send(target: &str) {
    let result = (|| -> std::io::Result<usize> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        let mut sent = 0;
        for _ in 0..3 {
            sent += socket.send_to(b"knock", target).map(|_| 1)?;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(sent)
    })();
    match result {
        Ok(sent) => println!("sent {sent}"),
        Err(e) => println!("error {e}"),
    }
}

/// `tcp-get`: one HTTP GET to `target`, reported on stdout.
fn tcp_get(target: &str) {
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;
    let address: SocketAddr = target.parse().expect("ADDR:PORT");
    let result = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: netpeer\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    })();
    match result {
        Ok(answer) => println!("answer {answer}"),
        Err(e) => println!("error {e}"),
    }
}
