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
//! - `socketcall`, the x86-32 multiplexer whose arguments seccomp cannot
//!   read, is refused (32-bit programs use the direct socket calls since
//!   Linux 4.3);
//! - the `io_uring_*` calls are refused, since io_uring can create sockets
//!   without going through the syscall filter (Docker 25 refuses them too).
//!
//! The profile is built as an OCI `LinuxSeccomp` for libcontainer. Whether a
//! container gets it at all (`--privileged`, `seccomp=unconfined`) is the
//! spec builder's decision.

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

/// The default profile for a container whose process holds `caps` (its
/// bounding set).
pub fn default_profile(caps: &[Capability]) -> Result<LinuxSeccomp, SeccompError> {
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
        syscalls.push(allow_if(
            family,
            0,
            LinuxSeccompOperator::ScmpCmpNe,
            AF_VSOCK,
        )?);
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

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    profile.set_architectures(Some(vec![
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX86,
        Arch::ScmpArchX32,
    ]));
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
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
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
    fn socket_refuses_vsock_only() {
        let p = profile(&caps::DEFAULT);
        for name in ["socket", "socketpair"] {
            let found = rules(&p, name);
            assert_eq!(found.len(), 1, "{name}");
            let args = found[0].args().as_deref().unwrap();
            assert_eq!(args.len(), 1);
            assert_eq!(args[0].index(), 0);
            assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpNe);
            assert_eq!(args[0].value(), 40);
        }
        assert!(rules(&p, "socketcall").is_empty());
        assert!(rules(&p, "io_uring_setup").is_empty());
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

    /// Loads `caps`' profile with libcontainer's loader in a forked child and
    /// returns the errno of each probe run under it (0 for success).
    fn errnos_under_filter(caps: &[Capability], probes: &[fn() -> i64]) -> Vec<i32> {
        let profile = profile(caps);
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only loads the filter, runs the probes and
        // writes to the pipe before _exit; glibc makes malloc usable after
        // fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut out = Vec::new();
            let code = match libcontainer::seccomp::initialize_seccomp(&profile) {
                Ok(_) => {
                    for probe in probes {
                        let ret = probe();
                        let errno = if ret < 0 {
                            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
                        } else {
                            0
                        };
                        out.extend_from_slice(&errno.to_le_bytes());
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

    fn unsafe_file(fd: i32) -> std::fs::File {
        use std::os::fd::FromRawFd;
        // SAFETY: `fd` is the read end of a pipe we own and nobody else uses.
        unsafe { std::fs::File::from_raw_fd(fd) }
    }

    fn vsock_socket() -> i64 {
        // SAFETY: socket(2) with integer arguments; the fd is left to _exit.
        unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as i64 }
    }

    fn unix_socket() -> i64 {
        // SAFETY: as above.
        unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) as i64 }
    }

    fn unshare_mount() -> i64 {
        // SAFETY: unshare(2) of the child's own mount namespace.
        unsafe { libc::unshare(libc::CLONE_NEWNS) as i64 }
    }

    fn plain_fork() -> i64 {
        // SAFETY: the grandchild exits at once; we reap it.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(0);
            }
            if pid > 0 {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            pid as i64
        }
    }

    fn clone_newuser() -> i64 {
        // SAFETY: raw clone with CLONE_NEWUSER|SIGCHLD and no new stack:
        // the child (if any) exits at once.
        unsafe {
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
        }
    }

    #[test]
    fn the_kernel_enforces_the_profile() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED the_kernel_enforces_the_profile: needs root to load a filter");
            return;
        }
        let probes: [fn() -> i64; 5] = [
            vsock_socket,
            unix_socket,
            unshare_mount,
            plain_fork,
            clone_newuser,
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

    #[test]
    fn personality_values() {
        let p = profile(&caps::DEFAULT);
        let values: Vec<u64> = rules(&p, "personality")
            .iter()
            .map(|r| r.args().as_deref().unwrap()[0].value())
            .collect();
        assert_eq!(values, PERSONALITIES.to_vec());
    }
}
