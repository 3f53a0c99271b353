//! PID-1 duties inside the VM: [`init`] (mounts, clock, modules, network,
//! data disk, the engine and forwarder children, reaping, power-off), the
//! engine process's VM side in [`engine`]: the API on vsock 2375 and the
//! host's control service ([`control`], [`shell`]) on vsock 1025, and the
//! published-port forwarder ([`forward`]) on vsock 1026. Each of those
//! vsock services takes only streams that prove the host's per-boot secret
//! ([`vsock`]); the secret comes from QEMU's fw_cfg, never from the kernel
//! command line, and PID 1 hands it to its children by pipe ([`secret`]).
//!
//! Kernel command-line options (keys in `vmctl_proto::control`):
//!
//! | option | meaning |
//! |---|---|
//! | `vmctl.time=<secs>.<nanos>` | the host's clock at launch |
//! | `vmctl.data=/dev/vda` | the data disk: formatted on first boot, mounted at `/var/lib/vmctl` |
//! | `vmctl.log=<filter>` | log filter (`VMCTL_LOG` syntax), default `info` |
//! | `vmctl.bind=<ip>` | where ports published without a host IP listen on the desktop (the machine's `port-bind-address`) |
//! | `vmctl.secret=vsock` | no fw_cfg (VZ): the per-boot secret comes from host vsock port 1028 ([`secret`]) |
//! | `vmctl.share=<tag>:<path>` | a virtio-fs share mounted at the same path ([`shares`]) |

pub mod clock;
pub mod cmdline;
pub mod control;
pub mod dhcp;
pub mod disk;
pub mod engine;
pub mod ethtool;
pub mod file_events;
pub mod forward;
pub mod init;
pub mod modules;
pub mod mounts;
pub mod power;
pub mod secret;
pub mod shares;
pub mod shell;
pub mod vsock;
