//! The per-boot vsock secret inside the VM (`vmctl_proto::auth`): where it
//! comes from and how it reaches the processes that serve vsock.
//!
//! QEMU carries it as the fw_cfg file `opt/vmctl/secret`; PID 1 reads it
//! from sysfs after loading `qemu_fw_cfg`, before any container exists, then
//! unloads the module so the file is gone from every later `sysfs` (the
//! containers' `/sys/firmware` is masked besides). It never touches the
//! kernel command line, argv, the environment or a file: PID 1 keeps it in
//! memory and hands each child (`vm-engine`, `vm-forward`) its own pipe,
//! inherited as an fd whose number is in [`FD_ENV`]; the child reads the 32
//! bytes once at startup and closes the pipe before anything else runs, so
//! no container or exec it starts later inherits it.
//!
//! Virtualization.framework has no fw_cfg: there the kernel command line
//! says `vmctl.secret=vsock`, and PID 1 connects to host CID 2 port
//! [`SECRET_PORT`] (the VMM process, `vmctl-vz`), which hands the 32 bytes
//! to the first connection only and then stops listening for good ([`from_vsock`]).
//! [`from_host`] picks the way: the fw_cfg file when it is there, else the
//! vsock handoff when the command line asks for it.
//!
//! A VM without the secret (a host too old to send it) serves nothing: PID 1
//! says so on the console and powers off.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;

use std::time::{Duration, Instant};

use vmctl_proto::auth::{
    AuthError, Secret, CMDLINE_SECRET, CMDLINE_SECRET_VSOCK, SECRET_LEN, SECRET_PORT,
};

/// Where `qemu_fw_cfg` shows the secret.
pub const FW_CFG_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/vmctl/secret/raw";

/// The kernel module that shows fw_cfg files in sysfs.
const FW_CFG_MODULE: &std::ffi::CStr = c"qemu_fw_cfg";

/// Environment variable naming the inherited fd a child reads the secret from.
pub const FD_ENV: &str = "VMCTL_SECRET_FD";

/// How long PID 1 tries to get the secret over vsock (connect and read).
const VSOCK_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the vsock secret at {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the vsock secret at {path} is malformed")]
    Malformed {
        path: String,
        #[source]
        source: AuthError,
    },
    #[error("cannot make a pipe for the vsock secret")]
    Pipe(#[source] std::io::Error),
    #[error("no vsock secret was handed to this process ({FD_ENV} is not an fd number)")]
    NotHanded,
    #[error("cannot reach the host's secret on vsock port {SECRET_PORT}")]
    Vsock(#[source] std::io::Error),
}

/// Where this boot's secret is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// QEMU's fw_cfg file ([`FW_CFG_PATH`]).
    Firmware,
    /// The VMM's one-shot vsock port ([`SECRET_PORT`]).
    Vsock,
}

/// The fw_cfg file when it is there, else the vsock handoff when the kernel
/// command line asks for it (`vmctl.secret=vsock`), else fw_cfg (which then
/// fails, saying where it looked).
pub fn source(cmdline: &str, firmware_present: bool) -> Source {
    if !firmware_present
        && super::cmdline::value(cmdline, CMDLINE_SECRET) == Some(CMDLINE_SECRET_VSOCK)
    {
        Source::Vsock
    } else {
        Source::Firmware
    }
}

/// PID 1's secret, from wherever the hypervisor put it ([`source`]);
/// fw_cfg is forgotten once read.
pub fn from_host(cmdline: &str) -> Result<Secret, SecretError> {
    match source(cmdline, Path::new(FW_CFG_PATH).exists()) {
        Source::Firmware => {
            let secret = from_firmware()?;
            forget_firmware();
            Ok(secret)
        }
        Source::Vsock => from_vsock(VSOCK_LIMIT),
    }
}

/// Connects to host port [`SECRET_PORT`] (retrying until `limit`: the
/// guest's vsock driver may still be coming up) and reads exactly the
/// secret, then the host's close.
pub fn from_vsock(limit: Duration) -> Result<Secret, SecretError> {
    let deadline = Instant::now() + limit;
    let stream = loop {
        match connect_host(limit) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() >= deadline => return Err(SecretError::Vsock(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    read_secret(stream, format!("vsock port {SECRET_PORT}"))
}

/// A vsock stream to the host's secret port whose reads give up after `limit`.
fn connect_host(limit: Duration) -> std::io::Result<std::fs::File> {
    super::vsock::connect_host(SECRET_PORT, limit).map(std::fs::File::from)
}

/// Reads the secret the host put in fw_cfg.
pub fn from_firmware() -> Result<Secret, SecretError> {
    read_file(Path::new(FW_CFG_PATH))
}

fn read_file(path: &Path) -> Result<Secret, SecretError> {
    let shown = path.display().to_string();
    match std::fs::File::open(path) {
        Ok(file) => read_secret(file, shown),
        Err(source) => Err(SecretError::Read {
            path: shown,
            source,
        }),
    }
}

/// Reads one secret (at most one byte more, to tell a longer one) from
/// `source`, named `shown` in errors.
fn read_secret(source: impl Read, shown: String) -> Result<Secret, SecretError> {
    let mut bytes = Vec::with_capacity(SECRET_LEN);
    source
        .take(SECRET_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
    Secret::from_bytes(&bytes).map_err(|source| SecretError::Malformed {
        path: shown,
        source,
    })
}

/// Unloads `qemu_fw_cfg` once the secret is read: nothing in the VM needs
/// fw_cfg after that. A module built into the kernel stays (logged).
pub fn forget_firmware() {
    // SAFETY: delete_module takes a NUL-terminated name and flags; it
    // touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_delete_module,
            FW_CFG_MODULE.as_ptr(),
            libc::O_NONBLOCK,
        )
    };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot unload qemu_fw_cfg: the secret stays readable by the VM's root in /sys/firmware"
        );
    }
}

/// The read end of a pipe holding the secret, for one child; keep it until
/// the child is spawned.
pub struct Handoff {
    read: OwnedFd,
}

/// Arranges for `command`'s child to inherit the secret: a pipe with the 32
/// bytes in it, its read end left open across exec and named in [`FD_ENV`].
pub fn hand_to(command: &mut Command, secret: &Secret) -> Result<Handoff, SecretError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SecretError::Pipe(e.into()))?;
    // 32 bytes fit in any pipe's buffer: this never blocks.
    std::fs::File::from(write)
        .write_all(secret.as_bytes())
        .map_err(SecretError::Pipe)?;
    let fd: RawFd = read.as_raw_fd();
    command.env(FD_ENV, fd.to_string());
    use std::os::unix::process::CommandExt;
    // SAFETY: fcntl is async-signal-safe, and the closure touches nothing
    // but an fd number; it clears close-on-exec on this one fd only.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(Handoff { read })
}

impl Handoff {
    /// Closes PID 1's copy once the child runs.
    pub fn done(self) {
        drop(self.read);
    }
}

/// In a child: takes the secret PID 1 handed over and closes its fd. Call
/// first thing, before any thread or child exists.
pub fn inherited() -> Result<Secret, SecretError> {
    let fd: RawFd = std::env::var(FD_ENV)
        .ok()
        .and_then(|text| text.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or(SecretError::NotHanded)?;
    std::env::remove_var(FD_ENV);
    // The fd must be an open pipe, not something else that got this number.
    let stat = nix::sys::stat::fstat(fd).map_err(|_| SecretError::NotHanded)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(SecretError::NotHanded);
    }
    // SAFETY: PID 1 left this fd open for us alone; we take ownership and
    // close it when done (nothing else in this process knows it).
    take(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the secret from a handed pipe and closes it.
fn take(pipe: OwnedFd) -> Result<Secret, SecretError> {
    let shown = format!("fd {}", pipe.as_raw_fd());
    read_secret(std::fs::File::from(pipe), shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_must_hold_exactly_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw");
        std::fs::write(&path, [7u8; SECRET_LEN]).unwrap();
        assert_eq!(read_file(&path).unwrap().as_bytes(), &[7u8; SECRET_LEN]);
        for bad in [
            &[7u8; SECRET_LEN - 1][..],
            &[7u8; SECRET_LEN + 1][..],
            &[][..],
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(
                read_file(&path),
                Err(SecretError::Malformed { .. })
            ));
        }
        assert!(matches!(
            read_file(&dir.path().join("absent")),
            Err(SecretError::Read { .. })
        ));
    }

    #[test]
    fn a_child_reads_the_handed_secret_and_no_other_child_inherits_it() {
        let secret = Secret::from_bytes(&[9u8; SECRET_LEN]).unwrap();
        let mut command = Command::new("/bin/sh");
        // Through /proc: dash's `<&N` takes one digit only, and with other
        // tests running the fd is often 10 or more.
        command.args([
            "-c",
            "od -An -v -tx1 /proc/self/fd/$VMCTL_SECRET_FD | tr -d ' \\n'",
        ]);
        let handoff = hand_to(&mut command, &secret).unwrap();
        let fd = handoff.read.as_raw_fd();
        // A child spawned meanwhile without the handoff does not get the fd.
        let plain = Command::new("/bin/sh")
            .args([
                "-c",
                &format!("test -e /proc/self/fd/{fd} && echo open || echo closed"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), "closed");
        let out = command.output().unwrap();
        handoff.done();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "09".repeat(SECRET_LEN),
            "the child read the 32 bytes from its inherited fd"
        );
    }

    #[test]
    fn fw_cfg_wins_and_vsock_only_when_the_command_line_asks() {
        let vz = "console=hvc0 quiet vmctl.secret=vsock vmctl.data=/dev/vda";
        assert_eq!(source(vz, false), Source::Vsock);
        assert_eq!(source(vz, true), Source::Firmware, "fw_cfg present: QEMU");
        assert_eq!(source("console=ttyS0 quiet", false), Source::Firmware);
        assert_eq!(
            source("vmctl.secret=carrier-pigeon", false),
            Source::Firmware
        );
    }

    #[test]
    fn a_stream_must_carry_exactly_the_secret_then_close() {
        use std::os::unix::net::UnixStream;
        let (mut host, guest) = UnixStream::pair().unwrap();
        host.write_all(&[6u8; SECRET_LEN]).unwrap();
        drop(host);
        assert_eq!(
            read_secret(guest, "t".into()).unwrap().as_bytes(),
            &[6u8; SECRET_LEN]
        );
        // A host that sends the bytes but never closes: the read gives up.
        let (mut host, guest) = UnixStream::pair().unwrap();
        guest
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        host.write_all(&[6u8; SECRET_LEN]).unwrap();
        assert!(matches!(
            read_secret(&guest, "t".into()),
            Err(SecretError::Read { .. })
        ));
        drop(host);
    }

    #[test]
    fn a_handed_pipe_yields_the_secret_and_is_closed() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        std::fs::File::from(write)
            .write_all(&[5u8; SECRET_LEN])
            .unwrap();
        assert_eq!(take(read).unwrap().as_bytes(), &[5u8; SECRET_LEN]);
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        std::fs::File::from(write).write_all(b"short").unwrap();
        assert!(matches!(take(read), Err(SecretError::Malformed { .. })));
    }
}
