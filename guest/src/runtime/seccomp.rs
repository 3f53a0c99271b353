//! The default seccomp profile of a container, equivalent to Docker's.
//!
//! Docker's default profile refuses every syscall with `EPERM` unless it is
//! on an allowlist of about 350 names; some more are allowed only when the
//! container holds the capability that guards them (`mount` and `unshare`
//! need `CAP_SYS_ADMIN`, `ptrace`'s relatives `CAP_SYS_PTRACE`, …). Without
//! `CAP_SYS_ADMIN`, `clone` may not create namespaces (flags checked with a
//! mask) and `clone3`, whose flags live in memory seccomp cannot read, fails
//! with `ENOSYS` so that libcs fall back to `clone`.
//!
//! vmctl narrows it in three places, all to keep a container away from the
//! VM's vsock services (the host API, port forwards):
//! - `socket` and `socketpair` with `AF_VSOCK` (40) fail with `EPERM`;
//! - `socketcall`, the x86-32 multiplexer whose arguments live in memory
//!   seccomp cannot read, fails with `ENOSYS` (32-bit programs have had the
//!   direct socket calls since Linux 4.3; one whose libc speaks only
//!   `socketcall`, as an i386 glibc built for older kernels does, cannot
//!   open sockets here, a difference from Docker, which allows it);
//! - the `io_uring_*` calls are refused, since io_uring can create sockets
//!   without going through the syscall filter (Docker 25 refuses them too).
//!
//! # Argument rules compare what the kernel reads
//!
//! Seccomp sees each argument as the full 64-bit register, while the kernel
//! often reads only part of it; a rule must hold for the part the kernel
//! reads, or fail closed. Every argument rule of the profile, reviewed:
//! - `socket`/`socketpair` `family` is an `int`: the kernel reads the low 32
//!   bits. libseccomp has no masked not-equal, so "low 32 bits != 40" is 32
//!   `ALLOW` rules, one per bit, each `(family & bit) == (!40 & bit)`: a
//!   family is allowed when any one of its low 32 bits differs from 40's,
//!   whatever its high bits say (`0x1_0000_0028` is refused).
//! - `personality`'s `persona` is an `unsigned int`; the rules are `==` on
//!   the whole register, so high bits make a value unequal to every allowed
//!   one: refused, which fails closed.
//! - `clone`'s `flags` is an `unsigned long`, of which `clone(2)` uses the
//!   low 32 bits; the namespace mask lies inside them, so the masked compare
//!   checks exactly the flags the kernel acts on.
//! - On x86-32, libseccomp turns a `socket` rule into both the direct call
//!   (359) and `socketcall(SYS_SOCKET, …)`, replacing the family test with
//!   the call number: an argument rule on `socket` alone would let
//!   `socketcall(SYS_SOCKET, {AF_VSOCK, …})` through. The unconditional
//!   `socketcall` rule above overrides those generated rules.
//!
//! # Architectures
//!
//! The profile lists the ABIs the guest's kernel runs: on x86_64 the
//! native one, x86-32 (`int 0x80`) and x32; on aarch64 the native one and
//! 32-bit ARM. libcontainer resolves each name on the native architecture
//! and libseccomp translates it for the others, so a name a kernel lacks
//! (`arch_prctl` on aarch64, `open` there too) is skipped, not an error.
//!
//! The profile is built as an OCI `LinuxSeccomp` for libcontainer. Whether a
//! container gets it at all (`--privileged`, `seccomp=unconfined`) is the
//! spec builder's decision; `docker exec` processes get the container's
//! (see the monitor's `spawn_exec`).

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// Errors of profile building.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The argument filter of a rule did not build.
    #[error("cannot build the seccomp rule for {name}")]
    Rule {
        name: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// `AF_VSOCK`, the address family of virtio sockets.
pub const AF_VSOCK: u64 = 40;

/// `EPERM`, the answer to a refused syscall.
const EPERM: u32 = 1;

/// `ENOSYS`, the answer to `clone3` without `CAP_SYS_ADMIN`.
const ENOSYS: u32 = 38;

/// The `clone` flags that create namespaces: `CLONE_NEWNS`,
/// `CLONE_NEWCGROUP`, `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`,
/// `CLONE_NEWPID` and `CLONE_NEWNET`.
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The `personality` values a container may set: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, `PER_LINUX32|UNAME26`, and the query `0xffffffff`.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Syscalls every container may make.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "capget", "capset",
    "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64", "clock_getres",
    "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat",
    "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
    "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2",
    "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr",
    "flock", "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64",
    "futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32",
    "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid",
    "getppid", "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32",
    "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt",
    "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel",
    "ioctl", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get",
    "ioprio_set", "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr",
    "link", "linkat", "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek",
    "lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
    "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
    "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open",
    "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl",
    "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease", "process_vm_readv",
    "process_vm_writev", "pselect6", "pselect6_time64", "ptrace", "pwrite64", "pwritev",
    "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
    "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64",
    "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid",
    "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid",
    "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
    "setreuid32", "setrlimit", "set_robust_list", "setsid", "setsockopt", "set_thread_area",
    "set_tid_address", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "splice",
    "stat", "stat64", "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync",
    "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create",
    "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
    "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
    // x86 only: thread-local storage and segment descriptors.
    "arch_prctl", "modify_ldt",
];

/// Syscalls allowed only to a container that holds a capability.
#[rustfmt::skip]
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// A rule with the given action for `names`.
fn rule(names: Vec<String>, action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut syscall = LinuxSyscall::default();
    syscall.set_names(names);
    syscall.set_action(action);
    syscall.set_errno_ret(errno);
    syscall
}

/// A rule allowing `name` when argument `index` compares to `value` by `op`.
fn allow_if(
    name: &str,
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
) -> Result<LinuxSyscall, SeccompError> {
    let arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value)
        .build()
        .map_err(|source| SeccompError::Rule {
            name: name.into(),
            source,
        })?;
    let mut syscall = rule(vec![name.into()], LinuxSeccompAction::ScmpActAllow, None);
    syscall.set_args(Some(vec![arg]));
    Ok(syscall)
}

/// A rule allowing `name` when `arg[index] & mask == datum`.
///
/// libcontainer 0.7 reads `SCMP_CMP_MASKED_EQ` with the datum in `value`
/// and the mask in `valueTwo` (runc reads them the other way round); this
/// spec is only ever run by libcontainer, so it follows libcontainer.
fn allow_if_masked(
    name: &str,
    index: usize,
    mask: u64,
    datum: u64,
) -> Result<LinuxSyscall, SeccompError> {
    let arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .value(datum)
        .value_two(mask)
        .build()
        .map_err(|source| SeccompError::Rule {
            name: name.into(),
            source,
        })?;
    let mut syscall = rule(vec![name.into()], LinuxSeccompAction::ScmpActAllow, None);
    syscall.set_args(Some(vec![arg]));
    Ok(syscall)
}

/// The instruction set of the guest the engine runs in, which decides the
/// ABIs a container's programs can enter the kernel by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestArch {
    X86_64,
    Aarch64,
}

impl GuestArch {
    /// The guest this engine was built for.
    #[cfg(target_arch = "x86_64")]
    pub const NATIVE: GuestArch = GuestArch::X86_64;
    /// The guest this engine was built for.
    #[cfg(target_arch = "aarch64")]
    pub const NATIVE: GuestArch = GuestArch::Aarch64;

    /// The seccomp architectures of its kernel's syscall ABIs, native first.
    pub fn seccomp_arches(self) -> Vec<Arch> {
        match self {
            GuestArch::X86_64 => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
            GuestArch::Aarch64 => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        }
    }
}

/// The rules allowing `name` (`socket`, `socketpair`) when the low 32 bits
/// of its `family` argument, the `int` the kernel reads, are not `AF_VSOCK`:
/// one rule per bit, each true when that bit differs from `AF_VSOCK`'s
/// (libseccomp ORs rules of one syscall).
fn allow_family_not_vsock(name: &str) -> Result<Vec<LinuxSyscall>, SeccompError> {
    (0..32)
        .map(|bit| {
            let mask = 1u64 << bit;
            allow_if_masked(name, 0, mask, !AF_VSOCK & mask)
        })
        .collect()
}

/// The default profile, for the guest this engine was built for, of a
/// container whose process holds `caps` (its bounding set).
pub fn default_profile(caps: &[Capability]) -> Result<LinuxSeccomp, SeccompError> {
    profile_for(GuestArch::NATIVE, caps)
}

/// The default profile on `arch` of a container whose process holds `caps`
/// (its bounding set).
pub fn profile_for(arch: GuestArch, caps: &[Capability]) -> Result<LinuxSeccomp, SeccompError> {
    let mut names: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
    for (cap, extra) in BY_CAPABILITY {
        if caps.contains(cap) {
            for name in extra.iter() {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
    }
    let mut syscalls = vec![rule(names, LinuxSeccompAction::ScmpActAllow, None)];
    for family in ["socket", "socketpair"] {
        syscalls.extend(allow_family_not_vsock(family)?);
    }
    for persona in PERSONALITIES {
        syscalls.push(allow_if(
            "personality",
            0,
            LinuxSeccompOperator::ScmpCmpEq,
            persona,
        )?);
    }
    if !caps.contains(&Capability::SysAdmin) {
        syscalls.push(allow_if_masked("clone", 0, CLONE_NAMESPACE_FLAGS, 0)?);
        syscalls.push(rule(
            vec!["clone3".into()],
            LinuxSeccompAction::ScmpActErrno,
            Some(ENOSYS),
        ));
    }
    // Last and unconditional, so that it replaces the `socketcall` rules
    // libseccomp derives from the socket calls above on x86-32 (an `EPERM`
    // rule would be dropped as equal to the default action).
    syscalls.push(rule(
        vec!["socketcall".into()],
        LinuxSeccompAction::ScmpActErrno,
        Some(ENOSYS),
    ));

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    profile.set_architectures(Some(arch.seccomp_arches()));
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::caps;

    /// Every rule that names `name`.
    fn rules<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        profile
            .syscalls()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn unconditional_allow(profile: &LinuxSeccomp, name: &str) -> bool {
        rules(profile, name)
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
    }

    /// Whether some `ALLOW` rule of `name` lets a call whose first argument
    /// register holds `arg0` through, reading the rules as libcontainer
    /// hands them to libseccomp (masked: datum in `value`, mask in
    /// `valueTwo`).
    fn allows_arg0(profile: &LinuxSeccomp, name: &str, arg0: u64) -> bool {
        rules(profile, name).iter().any(|r| {
            r.action() == LinuxSeccompAction::ScmpActAllow
                && r.args().as_deref().unwrap_or_default().iter().all(|a| {
                    assert_eq!(a.index(), 0);
                    match a.op() {
                        LinuxSeccompOperator::ScmpCmpEq => arg0 == a.value(),
                        LinuxSeccompOperator::ScmpCmpNe => arg0 != a.value(),
                        LinuxSeccompOperator::ScmpCmpMaskedEq => {
                            arg0 & a.value_two().unwrap() == a.value()
                        }
                        op => panic!("unexpected operator {op:?}"),
                    }
                })
        })
    }

    fn profile(caps: &[Capability]) -> LinuxSeccomp {
        default_profile(caps).unwrap()
    }

    fn with(extra: Capability) -> Vec<Capability> {
        let mut caps = caps::DEFAULT.to_vec();
        caps.push(extra);
        caps
    }

    #[test]
    fn refuses_by_default_with_eperm() {
        let p = profile(&caps::DEFAULT);
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert_eq!(
            p.architectures().as_deref(),
            Some(&GuestArch::NATIVE.seccomp_arches()[..])
        );
    }

    #[test]
    fn architectures_follow_the_guest() {
        let x86 = profile_for(GuestArch::X86_64, &caps::DEFAULT).unwrap();
        assert_eq!(
            x86.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let arm = profile_for(GuestArch::Aarch64, &caps::DEFAULT).unwrap();
        assert_eq!(
            arm.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        // The same rules: names are resolved per architecture by libseccomp.
        assert_eq!(x86.syscalls(), arm.syscalls());
        assert_eq!(x86.default_action(), arm.default_action());
        assert_eq!(x86.default_errno_ret(), arm.default_errno_ret());
        for name in ["socket", "socketpair"] {
            assert!(!allows_arg0(&arm, name, AF_VSOCK), "{name}");
            assert!(!allows_arg0(&arm, name, AF_VSOCK | 1 << 32), "{name}");
            assert!(allows_arg0(&arm, name, 1), "{name}");
        }
        // aarch64 has no `open`, `fork` or `arch_prctl`, only `openat`,
        // `clone`; both are listed, and libcontainer skips the unknown.
        for name in ["openat", "clone3", "execve", "getrandom"] {
            assert!(!rules(&arm, name).is_empty(), "{name}");
        }
        assert!(rules(&arm, "io_uring_setup").is_empty());
    }

    #[test]
    fn allows_the_common_syscalls() {
        let p = profile(&caps::DEFAULT);
        for name in [
            "read", "write", "openat", "execve", "futex", "mmap", "wait4", "chown",
        ] {
            assert!(unconditional_allow(&p, name), "{name}");
        }
        assert!(ALLOWED.len() > 300);
    }

    #[test]
    fn socket_refuses_vsock_on_the_low_32_bits() {
        let p = profile(&caps::DEFAULT);
        for name in ["socket", "socketpair"] {
            let found = rules(&p, name);
            assert_eq!(found.len(), 32, "{name}");
            for r in &found {
                let args = r.args().as_deref().unwrap();
                assert_eq!(args.len(), 1);
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
                assert_eq!(args[0].value_two().map(u64::count_ones), Some(1));
            }
            for family in 0..64u64 {
                assert_eq!(
                    allows_arg0(&p, name, family),
                    family != 40,
                    "{name} {family}"
                );
            }
            for high in [1u64 << 32, 0xffff_ffff_0000_0000, 0x8000_0000_0000_0000] {
                assert!(!allows_arg0(&p, name, AF_VSOCK | high), "{name} {high:#x}");
                assert!(allows_arg0(&p, name, 1 | high), "{name} {high:#x}");
            }
            assert!(allows_arg0(&p, name, 40 + (1 << 31)), "{name}");
        }
        assert!(rules(&p, "io_uring_setup").is_empty());
    }

    #[test]
    fn socketcall_is_refused_last_and_unconditionally() {
        let p = profile(&caps::DEFAULT);
        let last = p.syscalls().as_deref().unwrap().last().unwrap();
        assert_eq!(last.names(), &["socketcall".to_string()]);
        assert_eq!(last.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(last.errno_ret(), Some(ENOSYS));
        assert!(last.args().is_none());
        assert_eq!(rules(&p, "socketcall").len(), 1);
    }

    #[test]
    fn namespaces_need_sys_admin() {
        let p = profile(&caps::DEFAULT);
        for name in ["unshare", "setns", "mount", "umount2", "bpf"] {
            assert!(rules(&p, name).is_empty(), "{name}");
        }
        let clone = rules(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_deref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!((arg.value(), arg.value_two()), (0, Some(0x7E02_0000)));
        // clone(2) reads the low 32 bits of its flags: the mask lies there.
        assert_eq!(CLONE_NAMESPACE_FLAGS >> 32, 0);
        let clone3 = rules(&p, "clone3");
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));

        let p = profile(&with(Capability::SysAdmin));
        for name in ["unshare", "setns", "mount", "clone", "clone3"] {
            assert!(unconditional_allow(&p, name), "{name}");
            assert_eq!(rules(&p, name).len(), 1, "{name}");
        }
    }

    #[test]
    fn capability_groups() {
        let p = profile(&caps::DEFAULT);
        for name in ["ptrace", "process_vm_readv", "chroot"] {
            assert!(unconditional_allow(&p, name), "{name}");
        }
        for name in [
            "kcmp",
            "reboot",
            "init_module",
            "settimeofday",
            "iopl",
            "mbind",
            "acct",
        ] {
            assert!(rules(&p, name).is_empty(), "{name}");
        }
        assert!(unconditional_allow(
            &profile(&with(Capability::SysPtrace)),
            "kcmp"
        ));
        assert!(unconditional_allow(
            &profile(&with(Capability::SysTime)),
            "clock_settime"
        ));
        assert!(unconditional_allow(
            &profile(&with(Capability::SysModule)),
            "finit_module"
        ));
        assert!(unconditional_allow(
            &profile(&with(Capability::SysBoot)),
            "reboot"
        ));
        assert!(unconditional_allow(
            &profile(&with(Capability::SysNice)),
            "mbind"
        ));
        assert!(unconditional_allow(&profile(&with(Capability::Bpf)), "bpf"));
        assert!(unconditional_allow(
            &profile(&with(Capability::Syslog)),
            "syslog"
        ));
        let no_chroot: Vec<_> = caps::DEFAULT
            .into_iter()
            .filter(|c| *c != Capability::SysChroot)
            .collect();
        assert!(rules(&profile(&no_chroot), "chroot").is_empty());
    }

    #[test]
    fn personality_values() {
        let p = profile(&caps::DEFAULT);
        let values: Vec<u64> = rules(&p, "personality")
            .iter()
            .map(|r| r.args().as_deref().unwrap()[0].value())
            .collect();
        assert_eq!(values, PERSONALITIES.to_vec());
        // High bits make a persona unequal to every allowed one: refused.
        assert!(!allows_arg0(&p, "personality", 8 | 1 << 32));
    }

    /// A probe run in the forked child: its errno, 0 for success.
    type Probe<'a> = &'a dyn Fn() -> i32;

    /// The errno of a libc-style return value (0 when it succeeded).
    fn errno_of(ret: i64) -> i32 {
        if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    /// Runs `probes` in a forked child, under `profile` loaded with
    /// libcontainer's loader (or under no filter), and returns the errno of
    /// each (0 for success).
    fn errnos_under(profile: Option<&LinuxSeccomp>, probes: &[Probe]) -> Vec<i32> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only loads the filter, runs the probes and
        // writes to the pipe before _exit; glibc makes malloc usable after
        // fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let loaded = profile.map_or(Ok(None), libcontainer::seccomp::initialize_seccomp);
            let mut out = Vec::new();
            let code = match loaded {
                Ok(_) => {
                    for probe in probes {
                        out.extend_from_slice(&probe().to_le_bytes());
                    }
                    0
                }
                Err(_) => 1,
            };
            // SAFETY: writes our own buffer to our pipe, then leaves at once.
            unsafe {
                libc::write(fds[1], out.as_ptr().cast(), out.len());
                libc::_exit(code);
            }
        }
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut file = unsafe_file(fds[0]);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "the child could not load the filter");
        bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn errnos_under_filter(caps: &[Capability], probes: &[Probe]) -> Vec<i32> {
        errnos_under(Some(&profile(caps)), probes)
    }

    fn unsafe_file(fd: i32) -> std::fs::File {
        use std::os::fd::FromRawFd;
        // SAFETY: `fd` is the read end of a pipe we own and nobody else uses.
        unsafe { std::fs::File::from_raw_fd(fd) }
    }

    /// socket(2) through syscall(2), so that all 64 bits of `family` reach
    /// the kernel; the fd is left to _exit.
    fn raw_socket(family: u64, kind: i32) -> i32 {
        // SAFETY: socket(2) with integer arguments.
        errno_of(unsafe { libc::syscall(libc::SYS_socket, family, kind, 0) })
    }

    /// socketpair(2) through syscall(2), as above.
    fn raw_socketpair(family: u64) -> i32 {
        let mut pair = [0i32; 2];
        // SAFETY: socketpair(2) writing two ints into `pair`.
        errno_of(unsafe {
            libc::syscall(
                libc::SYS_socketpair,
                family,
                libc::SOCK_STREAM,
                0,
                pair.as_mut_ptr(),
            )
        })
    }

    fn unshare_mount() -> i32 {
        // SAFETY: unshare(2) of the child's own mount namespace.
        errno_of(unsafe { libc::unshare(libc::CLONE_NEWNS) } as i64)
    }

    fn plain_fork() -> i32 {
        // SAFETY: the grandchild exits at once; we reap it.
        errno_of(unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(0);
            }
            if pid > 0 {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            pid as i64
        })
    }

    fn clone_newuser() -> i32 {
        // SAFETY: raw clone with CLONE_NEWUSER|SIGCHLD and no new stack:
        // the child (if any) exits at once.
        errno_of(unsafe {
            let pid = libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWUSER | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            );
            if pid == 0 {
                libc::_exit(0);
            }
            if pid > 0 {
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
            pid
        })
    }

    fn io_uring_setup() -> i32 {
        let mut params = [0u8; 120];
        // SAFETY: io_uring_setup(2) with a zeroed params struct it may write.
        errno_of(unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) })
    }

    fn root() -> bool {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root to load a filter");
            return false;
        }
        true
    }

    #[test]
    fn the_kernel_enforces_the_profile() {
        if !root() {
            return;
        }
        let probes: [Probe; 5] = [
            &|| raw_socket(AF_VSOCK, libc::SOCK_STREAM),
            &|| raw_socket(libc::AF_UNIX as u64, libc::SOCK_STREAM),
            &unshare_mount,
            &plain_fork,
            &clone_newuser,
        ];
        let got = errnos_under_filter(&caps::DEFAULT, &probes);
        assert_eq!(got, vec![libc::EPERM, 0, libc::EPERM, 0, libc::EPERM]);
        let got = errnos_under_filter(&with(Capability::SysAdmin), &probes);
        assert_eq!(
            got[0],
            libc::EPERM,
            "AF_VSOCK stays refused with CAP_SYS_ADMIN"
        );
        assert_eq!(got[2], 0, "unshare is allowed with CAP_SYS_ADMIN");
    }

    /// The kernel reads the family's low 32 bits: with high bits set, vsock
    /// is still refused, and every other family behaves as unfiltered.
    #[test]
    fn the_kernel_refuses_vsock_whatever_the_high_bits() {
        if !root() {
            return;
        }
        let mut probes: Vec<Box<dyn Fn() -> i32>> = Vec::new();
        for high in [0u64, 1 << 32, 0xffff_ffff_0000_0000] {
            for family in 0..64u64 {
                probes.push(Box::new(move || {
                    raw_socket(family | high, libc::SOCK_DGRAM)
                }));
            }
            for family in [libc::AF_UNIX as u64, AF_VSOCK] {
                probes.push(Box::new(move || raw_socketpair(family | high)));
            }
        }
        probes.push(Box::new(io_uring_setup));
        let probes: Vec<Probe> = probes.iter().map(|p| p.as_ref() as Probe).collect();
        let filtered = errnos_under_filter(&caps::DEFAULT, &probes);
        let unfiltered = errnos_under(None, &probes);
        let per_high = 64 + 2;
        for (i, (got, free)) in filtered.iter().zip(&unfiltered).enumerate() {
            let (round, slot) = (i / per_high, i % per_high);
            match (round, slot) {
                (3, 0) => assert_eq!(*got, libc::EPERM, "io_uring_setup"),
                (_, 40) => assert_eq!(*got, libc::EPERM, "socket(40) round {round}"),
                (_, 65) => assert_eq!(*got, libc::EPERM, "socketpair(40) round {round}"),
                (_, 64) => assert_eq!(*got, 0, "socketpair(AF_UNIX) round {round}"),
                _ => assert_eq!(got, free, "socket({slot}) round {round}"),
            }
        }
        // Families the kernel knows were really created, not refused.
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            let family = family as usize;
            assert_eq!(filtered[family], 0, "socket({family})");
            assert_eq!(filtered[2 * per_high + family], 0, "socket({family}|high)");
        }
    }

    /// The x86-32 entry (`int 0x80`) from a 64-bit process, and x32.
    #[cfg(target_arch = "x86_64")]
    mod compat {
        use super::*;

        const I386_SOCKETCALL: u32 = 102;
        const I386_SOCKET: u32 = 359;
        const I386_SOCKETPAIR: u32 = 360;
        const SYS_SOCKET: u32 = 1;
        const X32_SYSCALL_BIT: i64 = 0x4000_0000;

        /// A syscall through the x86-32 entry: its errno, 0 for success.
        fn int80(nr: u32, a: u32, b: u32, c: u32) -> i32 {
            let ret: i32;
            // SAFETY: `int 0x80` with integer (or 32-bit pointer) arguments;
            // rbx is reserved by LLVM, so `a` is swapped in and out of it.
            unsafe {
                std::arch::asm!(
                    "xchg {a:r}, rbx",
                    "int 0x80",
                    "xchg {a:r}, rbx",
                    a = inout(reg) u64::from(a) => _,
                    inlateout("eax") nr => ret,
                    in("ecx") b,
                    in("edx") c,
                );
            }
            if ret < 0 {
                -ret
            } else {
                0
            }
        }

        /// socketcall(SYS_SOCKET, {family, SOCK_STREAM, 0}), its argument
        /// block in memory below 4 GiB.
        fn socketcall_socket(family: u32) -> i32 {
            // SAFETY: an anonymous private mapping below 4 GiB, written
            // through the pointer mmap returned; left to _exit.
            unsafe {
                let block = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                    -1,
                    0,
                );
                assert_ne!(block, libc::MAP_FAILED);
                let args = block.cast::<u32>();
                args.write(family);
                args.add(1).write(libc::SOCK_STREAM as u32);
                args.add(2).write(0);
                int80(I386_SOCKETCALL, SYS_SOCKET, block as u64 as u32, 0)
            }
        }

        /// Whether this kernel runs x86-32 code (tried in a child, which a
        /// kernel without IA32 emulation kills).
        fn ia32_available() -> bool {
            // SAFETY: the child makes one syscall and exits; we reap it.
            unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(if int80(20, 0, 0, 0) == 0 { 0 } else { 1 });
                }
                let mut status = 0;
                libc::waitpid(pid, &mut status, 0);
                status == 0
            }
        }

        #[test]
        fn the_32_bit_entries_refuse_vsock() {
            if !root() {
                return;
            }
            let x32: Probe = &|| {
                // SAFETY: the x32 socket call with integer arguments.
                errno_of(unsafe {
                    libc::syscall(
                        X32_SYSCALL_BIT | libc::SYS_socket,
                        AF_VSOCK,
                        libc::SOCK_STREAM,
                        0,
                    )
                })
            };
            assert_eq!(errnos_under_filter(&caps::DEFAULT, &[x32]), [libc::EPERM]);
            if !ia32_available() {
                eprintln!("SKIPPED the int 0x80 probes: this kernel runs no x86-32 code");
                return;
            }
            let unix = libc::AF_UNIX as u32;
            let vsock = AF_VSOCK as u32;
            let probes: [Probe; 6] = [
                &|| int80(I386_SOCKET, unix, libc::SOCK_STREAM as u32, 0),
                &|| int80(I386_SOCKET, vsock, libc::SOCK_STREAM as u32, 0),
                &|| int80(I386_SOCKETPAIR, vsock, libc::SOCK_STREAM as u32, 0),
                &|| socketcall_socket(vsock),
                &|| socketcall_socket(unix),
                &|| int80(20, 0, 0, 0),
            ];
            let free = errnos_under(None, &probes);
            assert_eq!(free[0], 0, "i386 socket(AF_UNIX) unfiltered");
            assert_eq!(free[4], 0, "i386 socketcall(AF_UNIX) unfiltered");
            let got = errnos_under_filter(&caps::DEFAULT, &probes);
            assert_eq!(
                got,
                [0, libc::EPERM, libc::EPERM, libc::ENOSYS, libc::ENOSYS, 0],
                "i386 socket(unix), socket(vsock), socketpair(vsock), \
                 socketcall(vsock), socketcall(unix), getpid"
            );
        }
    }
}
