//! `vmctl-image`: builds vmctl's images.
//!
//! Today this is the built-in container image `hello:latest` ([`hello`]),
//! written with `vmctl-oci`'s image tarball writer and OCI documents (the
//! guest engine's `docker save` and loader use the same crate, so they cannot
//! drift), and [`vm`], the VM image: kernel, initramfs with vmctl-guest as
//! `/init`, its modules and tools, for amd64 or arm64 ([`busybox`] reads
//! the applets of a busybox that cannot run here).

pub mod busybox;
pub mod hello;
pub mod vm;
