//! `vmctl-image`: builds vmctl's images.
//!
//! Today this is the built-in container image `hello:latest` ([`hello`]) and the
//! writer of image tarballs it uses ([`archive`]), which the guest engine also
//! uses for `docker save`. The OCI and docker-archive JSON documents both sides
//! read and write live in [`oci`], so the writer and the guest's loader cannot
//! drift. [`vm`] builds the VM image: kernel, initramfs with vmctl-guest as
//! `/init`, its modules and tools, for amd64 or arm64 ([`busybox`] reads
//! the applets of a busybox that cannot run here).

pub mod archive;
pub mod busybox;
pub mod hello;
pub mod oci;
pub mod vm;
