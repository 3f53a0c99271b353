//! The pinned inputs (`image-build/pins.json`): the exact kernel package a
//! build expects per architecture and, for arm64 (whose programs cannot come
//! from this amd64 host), the exact Debian packages of its userland.
//! `fetch-kernel.sh` and `fetch-userland.sh` download them; the builder
//! refuses any other unless told `--unpinned`.

use serde::Deserialize;

use super::arch::Arch;

/// One pinned Debian package.
#[derive(Debug, Clone, Deserialize)]
pub struct Pin<'a> {
    pub package: &'a str,
    pub version: &'a str,
    pub sha256: &'a str,
}

/// Kept under its old name: the amd64 kernel's pin.
pub type KernelPin<'a> = Pin<'a>;

#[derive(Deserialize)]
struct Foreign<'a> {
    #[serde(borrow)]
    kernel: Pin<'a>,
    #[serde(borrow)]
    userland: Vec<Pin<'a>>,
}

#[derive(Deserialize)]
struct Pins<'a> {
    /// amd64's kernel (the key `tests/run` reads).
    #[serde(borrow)]
    kernel: Pin<'a>,
    #[serde(borrow)]
    arm64: Foreign<'a>,
}

const PINS: &str = include_str!("../../pins.json");

fn pins() -> Pins<'static> {
    match serde_json::from_str::<Pins>(PINS) {
        Ok(pins) => pins,
        // pins.json is part of the source; the unit test below keeps it valid.
        Err(e) => panic!("image-build/pins.json is malformed: {e}"),
    }
}

/// The pinned amd64 kernel package.
pub fn kernel() -> Pin<'static> {
    pins().kernel
}

/// The pinned kernel package of `arch`.
pub fn kernel_for(arch: Arch) -> Pin<'static> {
    match arch {
        Arch::Amd64 => pins().kernel,
        Arch::Arm64 => pins().arm64.kernel,
    }
}

/// The pinned userland packages of `arch` (none for amd64: the host's own).
pub fn userland(arch: Arch) -> Vec<Pin<'static>> {
    match arch {
        Arch::Amd64 => Vec::new(),
        Arch::Arm64 => pins().arm64.userland,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        let pin = super::kernel();
        assert!(pin.package.starts_with("linux-image-"));
        assert_eq!(pin.sha256.len(), 64);
        let arm64 = kernel_for(Arch::Arm64);
        assert!(arm64.package.ends_with("-arm64"), "{}", arm64.package);
        let userland = userland(Arch::Arm64);
        for needed in [
            "busybox-static",
            "nftables",
            "e2fsprogs",
            "libc6",
            "libseccomp2",
        ] {
            assert!(
                userland.iter().any(|p| p.package == needed),
                "{needed} is not pinned"
            );
        }
        assert!(userland.iter().all(|p| p.sha256.len() == 64));
    }
}
