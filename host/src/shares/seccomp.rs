//! What a share's `virtiofsd` may not do on the desktop, whatever the guest
//! asks: a seccomp filter installed before it starts (it stacks with
//! virtiofsd's own allow-list; the stricter answer wins).
//!
//! A container can be root in the VM and ask virtio-fs for anything root
//! may do. On the desktop that would be a setuid or setgid file (with
//! vmctl run as root: a setuid-root program any local user could run) or a
//! device node (a raw view of the desktop's disks). So the daemon's filter
//! answers `EPERM` to:
//!
//! - `chmod`, `fchmod`, `fchmodat`, `fchmodat2` with `S_ISUID` or `S_ISGID`
//!   in the mode;
//! - `open`, `openat`, `creat` that create a file (`O_CREAT`, `O_TMPFILE`)
//!   with either bit;
//! - `mknod`, `mknodat` of a character or block device, or with either bit.
//!
//! and `ENOSYS` to `openat2`, whose mode sits in a struct a filter cannot
//! read: virtiofsd then opens with `openat` (it checks for `openat2` at
//! start; its namespace sandbox already confines paths to the share).
//! Extended attributes (`security.capability`) stay off: virtiofsd runs
//! without `--xattr`.

use std::io;

// Classic BPF, as seccomp takes it.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// `struct seccomp_data`: `nr` at 0, `arch` at 4, `args[i]` at 16 + 8i
/// (the low 32 bits first on these little-endian machines).
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg(i: u32) -> u32 {
    16 + 8 * i
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// `fchmodat2(2)` (Linux 6.6), the same number on every architecture.
const SYS_FCHMODAT2: i64 = 452;

const SET_ID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;
const CREATE_FLAGS: u32 = (libc::O_CREAT | libc::O_TMPFILE) as u32;
const S_IFMT: u32 = libc::S_IFMT;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn load(offset: u32) -> libc::sock_filter {
    insn(BPF_LD_W_ABS, 0, 0, offset)
}

fn errno(code: i32) -> libc::sock_filter {
    insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | (code as u32 & 0xffff))
}

/// One syscall's rule, compiled on its own (it starts by loading the
/// syscall number, so rules follow each other in any order).
enum Rule {
    /// Refused outright.
    Always { nr: i64, errno: i32 },
    /// Refused when `arg & mask != 0`.
    Bits { nr: i64, arg: u32, mask: u32 },
    /// Refused when `flags_arg & flags != 0` and `mode_arg & mask != 0`.
    CreateBits {
        nr: i64,
        flags_arg: u32,
        mode_arg: u32,
    },
    /// Refused when the file type in `arg` is a device, or it has set-id bits.
    Device { nr: i64, arg: u32 },
    /// Handed to the supervisor holding the filter's listener
    /// ([`super::guard`]), which lets it go on or refuses it.
    Notify { nr: i64 },
}

impl Rule {
    fn compile(&self, out: &mut Vec<libc::sock_filter>) {
        let nr = |nr: i64| nr as u32;
        match *self {
            Rule::Always { nr: n, errno: e } => {
                out.push(load(NR));
                out.push(insn(BPF_JEQ_K, 0, 1, nr(n)));
                out.push(errno(e));
            }
            Rule::Bits {
                nr: n,
                arg: a,
                mask,
            } => {
                out.push(load(NR));
                out.push(insn(BPF_JEQ_K, 0, 3, nr(n)));
                out.push(load(arg(a)));
                out.push(insn(BPF_JSET_K, 0, 1, mask));
                out.push(errno(libc::EPERM));
            }
            Rule::CreateBits {
                nr: n,
                flags_arg,
                mode_arg,
            } => {
                out.push(load(NR));
                out.push(insn(BPF_JEQ_K, 0, 5, nr(n)));
                out.push(load(arg(flags_arg)));
                out.push(insn(BPF_JSET_K, 0, 3, CREATE_FLAGS));
                out.push(load(arg(mode_arg)));
                out.push(insn(BPF_JSET_K, 0, 1, SET_ID_BITS));
                out.push(errno(libc::EPERM));
            }
            Rule::Notify { nr: n } => {
                out.push(load(NR));
                out.push(insn(BPF_JEQ_K, 0, 1, nr(n)));
                out.push(insn(BPF_RET_K, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
            }
            Rule::Device { nr: n, arg: a } => {
                out.push(load(NR));
                out.push(insn(BPF_JEQ_K, 0, 7, nr(n)));
                out.push(load(arg(a)));
                out.push(insn(BPF_JSET_K, 4, 0, SET_ID_BITS));
                out.push(insn(BPF_ALU_AND_K, 0, 0, S_IFMT));
                out.push(insn(BPF_JEQ_K, 2, 0, libc::S_IFCHR));
                out.push(insn(BPF_JEQ_K, 1, 0, libc::S_IFBLK));
                // Neither: skip the refusal.
                out.push(insn(BPF_JEQ_K, 1, 1, 0));
                out.push(errno(libc::EPERM));
            }
        }
    }
}

fn rules() -> Vec<Rule> {
    let mut rules = vec![
        Rule::Always {
            nr: libc::SYS_openat2,
            errno: libc::ENOSYS,
        },
        Rule::Bits {
            nr: libc::SYS_fchmod,
            arg: 1,
            mask: SET_ID_BITS,
        },
        Rule::Bits {
            nr: libc::SYS_fchmodat,
            arg: 2,
            mask: SET_ID_BITS,
        },
        Rule::Bits {
            nr: SYS_FCHMODAT2,
            arg: 2,
            mask: SET_ID_BITS,
        },
        Rule::CreateBits {
            nr: libc::SYS_openat,
            flags_arg: 2,
            mode_arg: 3,
        },
        Rule::Device {
            nr: libc::SYS_mknodat,
            arg: 2,
        },
    ];
    #[cfg(target_arch = "x86_64")]
    rules.extend([
        Rule::Bits {
            nr: libc::SYS_chmod,
            arg: 1,
            mask: SET_ID_BITS,
        },
        Rule::Bits {
            nr: libc::SYS_creat,
            arg: 1,
            mask: SET_ID_BITS,
        },
        Rule::CreateBits {
            nr: libc::SYS_open,
            flags_arg: 1,
            mode_arg: 2,
        },
        Rule::Device {
            nr: libc::SYS_mknod,
            arg: 1,
        },
    ]);
    rules
}

/// The whole program: other architectures' calls pass (virtiofsd's own
/// filter refuses them), then each rule, then allow.
pub fn program() -> Vec<libc::sock_filter> {
    compile(rules())
}

/// [`program`], and every symlink the process makes goes to the listener
/// first ([`super::guard`]: a symlink may not lead out of the share).
pub fn program_notifying_symlinks() -> Vec<libc::sock_filter> {
    let mut rules = rules();
    rules.push(Rule::Notify {
        nr: libc::SYS_symlinkat,
    });
    #[cfg(target_arch = "x86_64")]
    rules.push(Rule::Notify {
        nr: libc::SYS_symlink,
    });
    compile(rules)
}

fn compile(rules: Vec<Rule>) -> Vec<libc::sock_filter> {
    let mut out = vec![load(ARCH), insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH)];
    out.push(insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW));
    for rule in rules {
        rule.compile(&mut out);
    }
    out.push(insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW));
    out
}

/// Installs `filter` on the calling thread, after `no_new_privs` (which
/// seccomp needs without CAP_SYS_ADMIN). Async-signal-safe: it allocates
/// nothing, so it can run between fork and exec.
pub fn install(filter: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `prog` points at `filter`, alive for the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Installs `filter`, which has [`Rule::Notify`] rules, like [`install`];
/// answers the listener its notifications come to. Async-signal-safe.
pub fn install_listening(filter: &[libc::sock_filter]) -> io::Result<std::os::fd::RawFd> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl and seccomp calls; `prog` points at `filter`.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd as std::os::fd::RawFd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// Runs `f` in a forked child under the filter; answers its exit code.
    fn confined(f: impl FnOnce() -> i32) -> i32 {
        let filter = program();
        // SAFETY: the child only installs the filter, runs `f` (plain
        // syscalls) and exits without unwinding.
        match unsafe { libc::fork() } {
            0 => {
                let code = match install(&filter) {
                    Ok(()) => f(),
                    Err(_) => 100,
                };
                // SAFETY: leaves the forked child without unwinding.
                unsafe { libc::_exit(code) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waits for the child forked above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WEXITSTATUS(status)
            }
        }
    }

    fn errno_of(ret: libc::c_int) -> i32 {
        if ret < 0 {
            io::Error::last_os_error().raw_os_error().unwrap_or(1)
        } else {
            0
        }
    }

    fn c(path: &std::path::Path) -> CString {
        CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
    }

    #[test]
    fn set_id_bits_and_devices_are_refused_the_rest_passes() {
        let dir = tempfile::tempdir().unwrap();
        let file = c(&dir.path().join("f"));
        let suid = c(&dir.path().join("suid"));
        let node = c(&dir.path().join("node"));
        let fifo = c(&dir.path().join("fifo"));
        // SAFETY: plain syscalls on C strings that live through the call.
        let code = confined(|| unsafe {
            // A plain file is made and its mode changed.
            let fd = libc::open(file.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
            if fd < 0 {
                return 1;
            }
            if libc::fchmod(fd, 0o755) != 0 || libc::chmod(file.as_ptr(), 0o700) != 0 {
                return 2;
            }
            let at = libc::AT_FDCWD;
            if libc::fchmodat(at, file.as_ptr(), 0o600, 0) != 0 {
                return 3;
            }
            // Set-id bits, by every call.
            if errno_of(libc::fchmod(fd, 0o4755)) != libc::EPERM
                || errno_of(libc::fchmodat(at, file.as_ptr(), 0o2755, 0)) != libc::EPERM
                || errno_of(libc::chmod(file.as_ptr(), 0o6755)) != libc::EPERM
            {
                return 4;
            }
            let made = libc::openat(at, suid.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o4755);
            if errno_of(made) != libc::EPERM {
                return 5;
            }
            // Opening without creating ignores the mode argument.
            if libc::openat(at, file.as_ptr(), libc::O_RDONLY, 0o4755) < 0 {
                return 6;
            }
            // Devices no, FIFOs yes.
            let dev = libc::makedev(1, 3);
            if errno_of(libc::mknodat(at, node.as_ptr(), libc::S_IFCHR | 0o666, dev)) != libc::EPERM
                || errno_of(libc::mknodat(at, node.as_ptr(), libc::S_IFBLK | 0o666, dev))
                    != libc::EPERM
                || errno_of(libc::mknodat(at, node.as_ptr(), libc::S_IFREG | 0o4755, 0))
                    != libc::EPERM
            {
                return 7;
            }
            if libc::mknodat(at, fifo.as_ptr(), libc::S_IFIFO | 0o644, 0) != 0 {
                return 8;
            }
            // openat2 is "not there", so callers fall back to openat.
            let how: libc::open_how = std::mem::zeroed();
            let ret = libc::syscall(
                libc::SYS_openat2,
                at,
                file.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            );
            if errno_of(ret as libc::c_int) != libc::ENOSYS {
                return 9;
            }
            0
        });
        assert_eq!(code, 0, "step {code} of the confined child failed");
        let mode = std::fs::metadata(dir.path().join("f")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o7777, 0o600);
        assert!(!dir.path().join("suid").exists());
        assert!(!dir.path().join("node").exists());
    }
}
