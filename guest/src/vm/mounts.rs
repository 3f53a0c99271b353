//! The file systems PID 1 mounts before anything else runs: proc, sysfs,
//! devtmpfs, devpts, tmpfs for /dev/shm, /run and /tmp, and the cgroup v2
//! hierarchy with every controller delegated to the root's children.

use nix::mount::{mount, MsFlags};

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

fn table() -> [Mount; 8] {
    [
        Mount {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
        },
        Mount {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
        },
        Mount {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        Mount {
            source: "devpts",
            target: "/dev/pts",
            fstype: "devpts",
            flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
            data: Some("newinstance,ptmxmode=0666,mode=0620"),
        },
        Mount {
            source: "shm",
            target: "/dev/shm",
            fstype: "tmpfs",
            flags: NOSUID_NODEV_NOEXEC,
            data: Some("mode=1777"),
        },
        Mount {
            source: "run",
            target: "/run",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
            data: Some("mode=0755"),
        },
        Mount {
            source: "tmp",
            target: "/tmp",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
            data: Some("mode=1777"),
        },
        Mount {
            source: "cgroup2",
            target: "/sys/fs/cgroup",
            fstype: "cgroup2",
            flags: NOSUID_NODEV_NOEXEC,
            data: Some("nsdelegate"),
        },
    ]
}

/// Puts a bind mount of the initramfs over `/` and enters it. The kernel's
/// rootfs has no parent mount, and `pivot_root(2)` refuses to move a root
/// like that: without this, no container could start. (The classic
/// `switch_root` copies the initramfs into a tmpfs instead; a bind mount
/// costs nothing.)
pub fn leave_rootfs() -> nix::Result<()> {
    let new_root = "/.vmroot";
    let _ = std::fs::create_dir(new_root);
    mount(
        Some("/"),
        new_root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    nix::unistd::chdir(new_root)?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
    nix::unistd::chroot(".")?;
    nix::unistd::chdir("/")
}

/// Mounts the table; a failure is logged with its target and boot goes on.
pub fn mount_all() {
    for m in table() {
        let _ = std::fs::create_dir_all(m.target);
        if let Err(e) = mount(Some(m.source), m.target, Some(m.fstype), m.flags, m.data) {
            tracing::warn!(target = m.target, error = %e, "mount failed");
        }
    }
    let _ = std::fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    let _ = std::fs::create_dir_all("/var");
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        // Where containers expect the engine's socket (`-v
        // /var/run/docker.sock:/var/run/docker.sock`): this VM's engine.
        ("/run/docker.sock", "vmctl/docker.sock"),
        ("/var/run", "../run"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    delegate_controllers();
}

/// Enables every available controller for the root's children, so the
/// engine's container cgroups get memory, cpu, pids and io limits.
fn delegate_controllers() {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let Ok(available) = std::fs::read_to_string(root.join("cgroup.controllers")) else {
        return;
    };
    for controller in available.split_whitespace() {
        if let Err(e) = std::fs::write(
            root.join("cgroup.subtree_control"),
            format!("+{controller}"),
        ) {
            tracing::debug!(controller, error = %e, "controller not delegated");
        }
    }
}
