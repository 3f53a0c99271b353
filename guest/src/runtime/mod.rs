//! The low-level isolation of a container: the OCI spec the engine builds,
//! and the per-container monitor process that runs it with libcontainer.

pub mod caps;
pub mod cgroups;
pub mod cp;
pub mod in_root;
pub mod init;
pub mod loopback;
pub mod monitor;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod user;
