//! probe: a hostile container's view of its own confinement. A single
//! std-only file, built static (`vmctl_tests::probe`) so it runs in a
//! scratch image.
//!
//!   probe report       prints what confines this process (below)
//!   probe serve        prints the report, then "ready", then sleeps (an init)
//!   probe vsock        tries to open an AF_VSOCK socket by every route it
//!                      knows, one line per route: `ROUTE RESULT`, RESULT
//!                      being `ok`, `errno=N` or `killed` (the route's
//!                      entry does not exist on this kernel)
//!   probe whoami       prints `uid gid cwd FOO=$FOO` (for honest exec use)
//!
//! The report: the lines of /proc/self/status that say what confines a
//! process (Seccomp, Seccomp_filters, the capability sets, NoNewPrivs,
//! Uid, Gid, Groups, Umask), then /proc/self/limits and /proc/self/cgroup,
//! each line prefixed with the file it comes from.
//!
//! Vsock routes: socket(2) and socketpair(2) with family 40, also with high
//! bits the kernel ignores (it reads an int); on x86_64 the x32 ABI and the
//! x86-32 entry (`int 0x80`: socket, socketpair, the socketcall
//! multiplexer), each in a child process since a kernel without IA32
//! emulation kills it; io_uring_setup (which could create sockets behind
//! the filter). Routes named `control-*` open a socket that is allowed, to
//! show the probe itself works.

use std::io::Write;
#[cfg(target_arch = "x86_64")]
use std::process::Command;

extern "C" {
    /// glibc's syscall(2): every argument is passed as a full register.
    fn syscall(number: i64, ...) -> i64;
}

const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_VSOCK: u64 = 40;
const SOCK_STREAM: u64 = 1;
const SOCK_DGRAM: u64 = 2;

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const SOCKET: i64 = 41;
    pub const SOCKETPAIR: i64 = 53;
    pub const IO_URING_SETUP: i64 = 425;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const SOCKET: i64 = 198;
    pub const SOCKETPAIR: i64 = 199;
    pub const IO_URING_SETUP: i64 = 425;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("report") => report(),
        Some("serve") => {
            report();
            println!("ready");
            let _ = std::io::stdout().flush();
            loop {
                std::thread::park();
            }
        }
        Some("vsock") => vsock(),
        Some("whoami") => whoami(),
        Some("int80") => int80_route(args.get(2).map(String::as_str).unwrap_or_default()),
        _ => {
            eprintln!("usage: probe report|serve|vsock|whoami");
            std::process::exit(2);
        }
    }
}

const STATUS_FIELDS: [&str; 12] = [
    "Seccomp:",
    "Seccomp_filters:",
    "CapInh:",
    "CapPrm:",
    "CapEff:",
    "CapBnd:",
    "CapAmb:",
    "NoNewPrivs:",
    "Uid:",
    "Gid:",
    "Groups:",
    "Umask:",
];

fn report() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut out = String::new();
    for field in STATUS_FIELDS {
        let line = status.lines().find(|l| l.starts_with(field));
        out.push_str(&format!("status {}\n", line.unwrap_or(field)));
    }
    for file in ["limits", "cgroup"] {
        let text = std::fs::read_to_string(format!("/proc/self/{file}")).unwrap_or_default();
        for line in text.lines() {
            out.push_str(&format!("{file} {line}\n"));
        }
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

fn whoami() {
    // SAFETY: getuid(2) and getgid(2) have no arguments and cannot fail.
    let (uid, gid) = unsafe { (getuid(), getgid()) };
    let cwd = std::env::current_dir().map(|p| p.display().to_string());
    let foo_value = std::env::var("FOO").unwrap_or_default();
    println!("{uid} {gid} {} FOO={foo_value}", cwd.unwrap_or_default());
}

extern "C" {
    fn getuid() -> u32;
    fn getgid() -> u32;
}

/// The result of a libc-style return value.
fn result(ret: i64) -> String {
    if ret < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
        format!("errno={errno}")
    } else {
        "ok".into()
    }
}

fn socket(family: u64, kind: u64) -> String {
    // SAFETY: socket(2) with integer arguments; the fd is left open.
    result(unsafe { syscall(nr::SOCKET, family, kind, 0u64) })
}

fn socketpair(family: u64) -> String {
    let mut pair = [0i32; 2];
    // SAFETY: socketpair(2) writing two ints into `pair`.
    result(unsafe { syscall(nr::SOCKETPAIR, family, SOCK_STREAM, 0u64, pair.as_mut_ptr()) })
}

fn io_uring_setup() -> String {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(2) with a zeroed params struct it may write.
    result(unsafe { syscall(nr::IO_URING_SETUP, 4u64, params.as_mut_ptr()) })
}

fn vsock() {
    const HIGH: [(&str, u64); 3] = [
        ("", 0),
        ("-high1", 1 << 32),
        ("-highall", 0xffff_ffff_0000_0000),
    ];
    let mut lines = vec![
        (
            "control-socket-unix".to_owned(),
            socket(AF_UNIX, SOCK_STREAM),
        ),
        (
            "control-socket-inet".to_owned(),
            socket(AF_INET, SOCK_DGRAM),
        ),
    ];
    for (suffix, high) in HIGH {
        let family = AF_VSOCK | high;
        lines.push((
            format!("vsock-socket-stream{suffix}"),
            socket(family, SOCK_STREAM),
        ));
        lines.push((
            format!("vsock-socket-dgram{suffix}"),
            socket(family, SOCK_DGRAM),
        ));
        lines.push((format!("vsock-socketpair{suffix}"), socketpair(family)));
    }
    lines.push(("vsock-io_uring_setup".into(), io_uring_setup()));
    lines.extend(compat_routes());
    for (route, outcome) in lines {
        println!("{route} {outcome}");
    }
}

/// The x32 and x86-32 routes, each in a child (`probe int80 ROUTE`).
#[cfg(target_arch = "x86_64")]
fn compat_routes() -> Vec<(String, String)> {
    let routes = [
        "control-int80-socket-unix",
        "vsock-int80-socket",
        "vsock-int80-socketpair",
        "vsock-int80-socketcall",
        "vsock-x32-socket",
    ];
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    routes
        .iter()
        .map(|route| {
            let outcome = match Command::new(&exe).args(["int80", route]).output() {
                Ok(out) if out.status.code().is_some() => {
                    String::from_utf8_lossy(&out.stdout).trim().to_owned()
                }
                Ok(_) => "killed".to_owned(),
                Err(e) => format!("spawn-failed:{e}"),
            };
            (route.to_string(), outcome)
        })
        .collect()
}

#[cfg(not(target_arch = "x86_64"))]
fn compat_routes() -> Vec<(String, String)> {
    Vec::new()
}

/// One x86-32 or x32 route, in this (child) process.
#[cfg(target_arch = "x86_64")]
fn int80_route(route: &str) {
    const SOCKETCALL: u32 = 102;
    const SOCKET: u32 = 359;
    const SOCKETPAIR: u32 = 360;
    const SYS_SOCKET: u32 = 1;
    const X32_SYSCALL_BIT: i64 = 0x4000_0000;
    let outcome = match route {
        "control-int80-socket-unix" => int80(SOCKET, AF_UNIX as u32, SOCK_STREAM as u32, 0),
        "vsock-int80-socket" => int80(SOCKET, AF_VSOCK as u32, SOCK_STREAM as u32, 0),
        // No room for the fourth argument (the pair): refused before it is read.
        "vsock-int80-socketpair" => int80(SOCKETPAIR, AF_VSOCK as u32, SOCK_STREAM as u32, 0),
        "vsock-int80-socketcall" => {
            let block = low_memory();
            // SAFETY: `block` is a fresh writable page below 4 GiB.
            unsafe {
                let args = block as *mut u32;
                args.write(AF_VSOCK as u32);
                args.add(1).write(SOCK_STREAM as u32);
                args.add(2).write(0);
            }
            int80(SOCKETCALL, SYS_SOCKET, block as u32, 0)
        }
        "vsock-x32-socket" => {
            // SAFETY: the x32 socket call with integer arguments.
            result(unsafe { syscall(X32_SYSCALL_BIT | nr::SOCKET, AF_VSOCK, SOCK_STREAM, 0u64) })
        }
        _ => "unknown-route".into(),
    };
    println!("{outcome}");
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_route(_route: &str) {
    println!("unknown-route");
}

/// A writable page below 4 GiB (x86-32 pointers are 32 bits).
#[cfg(target_arch = "x86_64")]
fn low_memory() -> u64 {
    const MMAP: i64 = 9;
    const PROT_RW: u64 = 0x3;
    const MAP_PRIVATE_ANON_32BIT: u64 = 0x02 | 0x20 | 0x40;
    // SAFETY: an anonymous private mapping; nothing else uses it.
    let ret = unsafe {
        syscall(
            MMAP,
            0u64,
            4096u64,
            PROT_RW,
            MAP_PRIVATE_ANON_32BIT,
            -1i64,
            0u64,
        )
    };
    if ret < 0 {
        println!("{}", result(ret));
        std::process::exit(0);
    }
    ret as u64
}

/// A syscall through the x86-32 entry: `ok` or `errno=N`.
#[cfg(target_arch = "x86_64")]
fn int80(number: u32, a: u32, b: u32, c: u32) -> String {
    let ret: i32;
    // SAFETY: `int 0x80` with integer (or 32-bit pointer) arguments; rbx
    // is reserved by LLVM, so `a` is swapped in and out of it.
    unsafe {
        std::arch::asm!(
            "xchg {a:r}, rbx",
            "int 0x80",
            "xchg {a:r}, rbx",
            a = inout(reg) u64::from(a) => _,
            inlateout("eax") number => ret,
            in("ecx") b,
            in("edx") c,
        );
    }
    if ret < 0 {
        format!("errno={}", -ret)
    } else {
        "ok".into()
    }
}
