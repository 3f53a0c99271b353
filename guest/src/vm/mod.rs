//! PID-1 duties inside the VM: [`init`] (mounts, clock, modules, network,
//! data disk, the engine and forwarder children, reaping, power-off), the
//! engine process's VM side in [`engine`]: the API on vsock 2375 and the
//! host's control service ([`control`], [`shell`]) on vsock 1025, and the
//! published-port forwarder ([`forward`]) on vsock 1026.
//!
//! Kernel command-line options (keys in `vmctl_proto::control`):
//!
//! | option | meaning |
//! |---|---|
//! | `vmctl.time=<secs>.<nanos>` | the host's clock at launch |
//! | `vmctl.data=/dev/vda` | the data disk: formatted on first boot, mounted at `/var/lib/vmctl` |
//! | `vmctl.log=<filter>` | log filter (`VMCTL_LOG` syntax), default `info` |
//! | `vmctl.bind=<ip>` | where ports published without a host IP listen on the desktop (the machine's `port-bind-address`) |

pub mod clock;
pub mod cmdline;
pub mod control;
pub mod dhcp;
pub mod disk;
pub mod engine;
pub mod forward;
pub mod init;
pub mod modules;
pub mod mounts;
pub mod power;
pub mod shell;

/// A vsock listener on `port` (any CID) whose accept queue holds
/// [`BACKLOG`] connections: the vsock crate listens with 128, and a burst
/// beyond the queue is refused outright (vsock has no SYN retry), so 200
/// clients connecting at once through one forward would lose some.
pub fn vsock_listener(port: u32) -> anyhow::Result<tokio_vsock::VsockListener> {
    use anyhow::Context;
    use std::os::fd::AsFd;
    let listener = tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
        tokio_vsock::VMADDR_CID_ANY,
        port,
    ))
    .with_context(|| format!("cannot listen on vsock port {port}"))?;
    // listen(2) again on a listening socket only changes its queue length.
    let backlog =
        nix::sys::socket::Backlog::new(BACKLOG).unwrap_or(nix::sys::socket::Backlog::MAXCONN);
    nix::sys::socket::listen(&listener.as_fd(), backlog)
        .with_context(|| format!("cannot deepen the accept queue of vsock port {port}"))?;
    Ok(listener)
}

/// Accept queue of the guest's vsock services (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;
