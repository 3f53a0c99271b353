//! netpeer: the far end of forwarded traffic in VM tests and benchmarks. A
//! single std-only file, built static (`vmctl_tests::netpeer`) so it runs in
//! a scratch container image inside the VM.
//!
//!   netpeer udp-echo PORT      answers every datagram with "echo:" + it
//!   netpeer tcp-echo PORT      echoes each connection's bytes, half-close kept
//!   netpeer tcp-sink PORT      per connection: an 8-byte big-endian length N,
//!                              N bytes read and dropped, N echoed back as the
//!                              8-byte answer (no half-close needed: raw
//!                              hybrid vsock has none)
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
    }
    let (mode, port) = match args.as_slice() {
        [_, mode, port] => (mode.as_str(), port.parse::<u32>().expect("PORT")),
        _ => {
            eprintln!("usage: netpeer udp-echo|tcp-echo|tcp-sink|vsock-echo|vsock-sink PORT");
            std::process::exit(2);
        }
    };
    match mode {
        "udp-echo" => udp_echo(port as u16),
        "tcp-echo" => serve_tcp(port as u16, echo),
        "tcp-sink" => serve_tcp(port as u16, sink),
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

/// A connected stream of either family.
trait Stream: Read + Write + Send + 'static {
    fn close_write(&self);
}

impl Stream for std::net::TcpStream {
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

fn serve_tcp(port: u16, handle: fn(Box<dyn Stream>)) {
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
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
}

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

fn serve_vsock(port: u32, handle: fn(Box<dyn Stream>)) {
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
    let length = std::mem::size_of::<SockaddrVm>() as u32;
    check("bind", unsafe { bind(fd, &address, length) });
    check("listen", unsafe { listen(fd, 128) });
    ready();
    loop {
        // SAFETY: accept4 without a peer address.
        let client =
            unsafe { accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), SOCK_CLOEXEC) };
        if client < 0 {
            continue;
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(client) });
        std::thread::spawn(move || handle(Box::new(Vsock(file))));
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
