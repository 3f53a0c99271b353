//! `vmctl-init`: the tiny init that `docker run --init` puts at PID 1 of a
//! container (mounted at `/sbin/docker-init`), in the role of Docker's tini.
//!
//! Usage: `vmctl-init -- PROGRAM [ARGS…]`. It starts the program as its
//! child, in its own process group (made the terminal's foreground group
//! when there is a terminal), forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT,
//! SIGUSR1, SIGUSR2 and SIGWINCH to it, reaps every process that dies below
//! it (orphans are re-parented to PID 1; outside a PID namespace it makes
//! itself a child subreaper), and exits with the child's exit code, or 128
//! plus the signal number when the child was killed by a signal.
//!
//! It is built by `guest/build.rs` as a static binary with `rustc` alone, so
//! it runs in any image (busybox, scratch): only `std`, plus the few libc
//! calls declared by hand below. Signal numbers are those of x86 and the
//! generic Linux ABI (arm, aarch64, riscv).

use std::ffi::c_int;
use std::os::unix::process::CommandExt;
use std::process::{exit, Command};

/// `sigset_t` of glibc and musl: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

const SIGHUP: c_int = 1;
const SIGINT: c_int = 2;
const SIGQUIT: c_int = 3;
const SIGUSR1: c_int = 10;
const SIGUSR2: c_int = 12;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const SIGTTOU: c_int = 22;
const SIGWINCH: c_int = 28;

/// The signals passed on to the child.
const FORWARDED: [c_int; 7] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH];

const SIG_BLOCK: c_int = 0;
const SIG_UNBLOCK: c_int = 1;
const WNOHANG: c_int = 1;
const EINTR: c_int = 4;
const ECHILD: c_int = 10;
const PR_SET_CHILD_SUBREAPER: c_int = 36;

extern "C" {
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, signum: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwaitinfo(set: *const SigSet, info: *mut u8) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
    fn setpgid(pid: c_int, pgid: c_int) -> c_int;
    fn tcsetpgrp(fd: c_int, pgrp: c_int) -> c_int;
    fn getpid() -> c_int;
    fn prctl(option: c_int, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> c_int;
    fn __errno_location() -> *mut c_int;
}

/// The set of `signals`.
fn sigset(signals: &[c_int]) -> SigSet {
    let mut set = SigSet([0; 16]);
    // SAFETY: `set` is a valid, writable sigset_t-sized buffer.
    unsafe { sigemptyset(&mut set) };
    for &sig in signals {
        // SAFETY: as above; `sig` is a valid signal number.
        unsafe { sigaddset(&mut set, sig) };
    }
    set
}

/// The calling thread's last error number.
fn errno() -> c_int {
    // SAFETY: glibc and musl return a valid pointer to this thread's errno.
    unsafe { *__errno_location() }
}

/// The exit code for a wait status: the exit status, or 128 + signal.
fn exit_code(status: c_int) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        (status >> 8) & 0xff
    } else {
        128 + signal
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let program = match args.iter().position(|a| a == "--") {
        Some(i) => &args[i + 1..],
        None => &args[..],
    };
    let Some((path, rest)) = program.split_first() else {
        eprintln!("usage: vmctl-init -- PROGRAM [ARGS...]");
        exit(1);
    };

    // Block what we wait for, so that nothing is lost before the wait loop;
    // the child starts with an empty mask (std resets it before exec).
    let mut waited = FORWARDED.to_vec();
    waited.push(SIGCHLD);
    let waited = sigset(&waited);
    // SAFETY: `waited` is a valid sigset; no old mask is asked for.
    unsafe { sigprocmask(SIG_BLOCK, &waited, std::ptr::null_mut()) };
    // SAFETY: plain prctl with integer arguments.
    unsafe { prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let mut command = Command::new(path);
    command.args(rest);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (setpgid, sigprocmask, tcsetpgrp).
    unsafe {
        command.pre_exec(|| {
            setpgid(0, 0);
            // Taking the terminal from a background group raises SIGTTOU
            // unless it is blocked; no terminal just fails with ENOTTY.
            let ttou = sigset(&[SIGTTOU]);
            sigprocmask(SIG_BLOCK, &ttou, std::ptr::null_mut());
            tcsetpgrp(0, getpid());
            sigprocmask(SIG_UNBLOCK, &ttou, std::ptr::null_mut());
            Ok(())
        })
    };
    let child = match command.spawn() {
        Ok(child) => child.id() as c_int,
        Err(e) => {
            eprintln!("vmctl-init: cannot exec {path}: {e}");
            exit(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 });
        }
    };

    loop {
        if let Some(code) = reap(child) {
            exit(code);
        }
        // SAFETY: `waited` is a valid sigset; no siginfo is asked for.
        let sig = unsafe { sigwaitinfo(&waited, std::ptr::null_mut()) };
        if sig < 0 {
            if errno() == EINTR {
                continue;
            }
            eprintln!("vmctl-init: sigwaitinfo failed: errno {}", errno());
            exit(1);
        }
        if sig != SIGCHLD {
            // SAFETY: plain kill(2) with integer arguments.
            unsafe { kill(child, sig) };
        }
    }
}

/// Reaps every dead process; the exit code once `child` is among them (or
/// gone without a trace).
fn reap(child: c_int) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status: c_int = 0;
        // SAFETY: `status` is a valid, writable int.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        if pid == child {
            code = Some(exit_code(status));
        } else if pid == 0 {
            return code;
        } else if pid < 0 {
            return match errno() {
                EINTR => continue,
                ECHILD => code.or(Some(1)),
                _ => code,
            };
        }
    }
}
